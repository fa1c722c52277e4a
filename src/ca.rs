//! The certificate authority whose private key never leaves custody (KMS). This module owns the
//! CA certificate (self-signed through custody, parsed back from PEM), random serials, and
//! signing any certificate through the [`CaSigner`] port.
//!
//! rcgen builds the certificates, but its signing callback is synchronous and custody is a
//! network call, so every certificate is serialised twice: the first pass captures the
//! to-be-signed bytes, custody signs them (one KMS `Sign`, `MessageType RAW`), and the second
//! pass replays that signature. A second pass whose bytes differ from the first is refused, so
//! a signature is only ever attached to the exact bytes it was made over. No code path here
//! creates, holds or caches a CA private key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Result, RotorError};
use crate::ports::CaSigner;

/// The CA key `rotor ca init` creates (or adopts) when none is named (`ROTOR_CA_KEY_ID`).
pub const DEFAULT_CA_KEY: &str = "alias/rotor-ca";
/// The secret the CA certificate is published in (`ROTOR_CA_CERT_SECRET`).
pub const DEFAULT_CA_CERT_SECRET: &str = "rotor/ca-certificate";
/// Certificates start this long before they are issued, for clock skew between hosts.
pub const BACKDATE_SECS: i64 = 300;

/// A key in custody as rcgen sees it: the public point, and a signature replayed from custody.
/// Opaque outside this module.
#[derive(Clone)]
pub struct CustodyKey {
    point: Arc<Vec<u8>>,
    pass: Arc<Mutex<Pass>>,
}

enum Pass {
    /// First pass: record the to-be-signed bytes.
    Capture(Option<Vec<u8>>),
    /// Second pass: the signature custody made over exactly `tbs`.
    Replay { tbs: Vec<u8>, signature: Vec<u8> },
}

impl PublicKeyData for CustodyKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for CustodyKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let mut pass = self.pass.lock().map_err(|_| rcgen::Error::RemoteKeyError)?;
        match &mut *pass {
            Pass::Capture(slot) => {
                *slot = Some(msg.to_vec());
                // Only the to-be-signed bytes matter in this pass; the certificate is dropped.
                Ok(vec![0u8; 72])
            }
            Pass::Replay { tbs, signature } if tbs.as_slice() == msg => Ok(signature.clone()),
            Pass::Replay { .. } => Err(rcgen::Error::RemoteKeyError),
        }
    }
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> RotorError {
    RotorError::Certificate(format!("{what}: {e}"))
}

/// Builds a certificate with `build` and has custody sign it with `key_id`, whose public point
/// is `point` (uncompressed P-256). `build` must be deterministic: it runs twice. Returns DER.
pub async fn sign_through_custody<F>(
    signer: &dyn CaSigner,
    key_id: &str,
    point: &[u8],
    build: F,
) -> Result<Vec<u8>>
where
    F: Fn(&CustodyKey) -> std::result::Result<rcgen::Certificate, rcgen::Error>,
{
    let key = CustodyKey {
        point: Arc::new(point.to_vec()),
        pass: Arc::new(Mutex::new(Pass::Capture(None))),
    };
    build(&key).map_err(|e| cert_error("building the certificate", e))?;
    let tbs = match &mut *key.pass.lock().map_err(|_| cert_error("signing", "lock"))? {
        Pass::Capture(slot) => slot.take(),
        Pass::Replay { .. } => None,
    }
    .ok_or_else(|| cert_error("building the certificate", "nothing was signed"))?;
    let signature = signer.sign(key_id, &tbs).await?;
    *key.pass.lock().map_err(|_| cert_error("signing", "lock"))? = Pass::Replay { tbs, signature };
    let cert = build(&key).map_err(|e| {
        cert_error(
            "signing the certificate",
            format!("{e} (the certificate changed between passes)"),
        )
    })?;
    Ok(cert.der().to_vec())
}

/// The uncompressed P-256 point of a DER SubjectPublicKeyInfo (what KMS `GetPublicKey`
/// returns); anything but an EC P-256 key is refused.
pub fn p256_point(spki_der: &[u8]) -> Result<Vec<u8>> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| RotorError::CaUnavailable(format!("public key is not valid DER: {e}")))?;
    let point = spki.subject_public_key.data.to_vec();
    let is_ec = spki.algorithm.algorithm == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY;
    let on_p256 = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .is_some_and(|o| o == x509_parser::oid_registry::OID_EC_P256);
    if !is_ec || !on_p256 || point.len() != 65 || point[0] != 4 {
        return Err(RotorError::CaUnavailable(
            "the CA key is not an ECC_NIST_P256 key".into(),
        ));
    }
    Ok(point)
}

/// A random, positive 128-bit serial from the OS CSPRNG (RFC 5280 allows up to 20 octets).
pub fn random_serial() -> Result<Vec<u8>> {
    let mut b = vec![0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| RotorError::Config(format!("OS random number generator failed: {e}")))?;
    b[0] = (b[0] & 0x7f) | 0x40; // positive, and always 16 octets long
    Ok(b)
}

/// Unix seconds → the `time` crate's date (what rcgen takes).
pub fn to_datetime(unix: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| cert_error("certificate validity", e))
}

/// What `rotor ca init` puts in the CA certificate.
#[derive(Debug, Clone)]
pub struct CaSpec {
    pub common_name: String,
    pub organization: Option<String>,
    pub validity: Duration,
}

/// A self-signed CA certificate for the custody key `key_id`, signed through custody (one
/// `GetPublicKey`, one `Sign`). Path length 0: it signs leaf certificates only. PEM.
pub async fn self_signed(
    signer: &dyn CaSigner,
    key_id: &str,
    spec: &CaSpec,
    now: i64,
) -> Result<String> {
    let spki = signer.public_key(key_id).await?;
    let point = p256_point(&spki)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.as_str());
    if let Some(o) = &spec.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = to_datetime(now - BACKDATE_SECS)?;
    params.not_after = to_datetime(now + spec.validity.as_secs() as i64)?;
    let der = sign_through_custody(signer, key_id, &point, |k| params.self_signed(k)).await?;
    let ca = CaCertificate::from_der(der)?;
    ca.verify_self_signature()?;
    Ok(ca.pem())
}

/// Signs a leaf certificate: `params` for the subject key `subject` (the leaf's public key),
/// issued by `ca` through custody key `key_id`. DER.
pub async fn issue(
    signer: &dyn CaSigner,
    key_id: &str,
    ca: &CaCertificate,
    params: &CertificateParams,
    subject: &impl PublicKeyData,
) -> Result<Vec<u8>> {
    let ca_der = CertificateDer::from(ca.der.as_slice());
    sign_through_custody(signer, key_id, &ca.point, |k| {
        let issuer = Issuer::from_ca_cert_der(&ca_der, k)?;
        params.signed_by(subject, &issuer)
    })
    .await
}

/// A parsed CA certificate (public: it is the trust anchor consumers fetch).
#[derive(Debug, Clone)]
pub struct CaCertificate {
    pub der: Vec<u8>,
    /// Its public key (uncompressed P-256 point).
    point: Vec<u8>,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CaCertificate {
    /// Parses the first certificate of a PEM document; it must be a CA with a P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| RotorError::CaUnavailable(format!("CA certificate is not PEM: {e:?}")))?;
        Self::from_der(der.to_vec())
    }

    /// Parses a DER CA certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self> {
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| RotorError::CaUnavailable(format!("CA certificate is not X.509: {e}")))?;
        if !x.is_ca() {
            return Err(RotorError::CaUnavailable(
                "the CA certificate is not a CA (basicConstraints cA is false)".into(),
            ));
        }
        let point = p256_point(x.public_key().raw)?;
        let subject = x.subject().to_string();
        let not_before = x.validity().not_before.timestamp();
        let not_after = x.validity().not_after.timestamp();
        Ok(CaCertificate {
            point,
            subject,
            not_before,
            not_after,
            der,
        })
    }

    /// PEM of the certificate.
    pub fn pem(&self) -> String {
        pem_certificate(&self.der)
    }

    /// Whether this certificate's key is the custody key whose SPKI is `spki_der`.
    pub fn matches_key(&self, spki_der: &[u8]) -> bool {
        p256_point(spki_der).is_ok_and(|p| p == self.point)
    }

    /// Checks the certificate's signature with its own public key.
    pub fn verify_self_signature(&self) -> Result<()> {
        let (_, x) =
            X509Certificate::from_der(&self.der).map_err(|e| cert_error("CA certificate", e))?;
        x.verify_signature(None)
            .map_err(|e| cert_error("CA certificate signature does not verify", e))
    }

    /// An error unless the certificate is valid at `now`.
    pub fn check_valid_at(&self, now: i64) -> Result<()> {
        if now < self.not_before || now >= self.not_after {
            return Err(RotorError::CaUnavailable(format!(
                "the CA certificate ({}) is not valid now (valid {} to {})",
                self.subject,
                rfc3339(self.not_before),
                rfc3339(self.not_after)
            )));
        }
        Ok(())
    }
}

/// PEM of one DER certificate.
pub fn pem_certificate(der: &[u8]) -> String {
    let b64 = aws_smithy_types::base64::encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Unix seconds as RFC 3339 UTC (`2026-12-04T19:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::memory::MemoryCaSigner;

    #[tokio::test]
    async fn a_self_signed_ca_verifies_and_costs_one_sign() {
        let signer = MemoryCaSigner::new().unwrap();
        let spec = CaSpec {
            common_name: "Rotor test CA".into(),
            organization: Some("Rotor".into()),
            validity: Duration::from_secs(86400),
        };
        let pem = self_signed(&signer, "k", &spec, 1_800_000_000)
            .await
            .unwrap();
        let ca = CaCertificate::from_pem(&pem).unwrap();
        ca.verify_self_signature().unwrap();
        assert!(ca.subject.contains("Rotor test CA"));
        assert_eq!(ca.not_before, 1_800_000_000 - BACKDATE_SECS);
        assert_eq!(ca.not_after, 1_800_000_000 + 86400);
        assert!(ca.matches_key(&signer.public_key("k").await.unwrap()));
        assert_eq!(signer.signs.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(ca.check_valid_at(1_800_000_000).is_ok());
        assert_eq!(
            ca.check_valid_at(1_800_000_000 + 86400)
                .unwrap_err()
                .error_type(),
            "CaUnavailable"
        );
    }

    #[tokio::test]
    async fn a_signature_is_never_attached_to_other_bytes() {
        let signer = MemoryCaSigner::new().unwrap();
        let point = p256_point(&signer.public_key("k").await.unwrap()).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // A builder that is not deterministic (a fresh serial each pass) must be refused.
        let err = sign_through_custody(&signer, "k", &point, |k| {
            let mut p = CertificateParams::default();
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u64;
            p.serial_number = Some(SerialNumber::from(n + 1));
            p.self_signed(k)
        })
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), "CertificateError");
    }

    #[test]
    fn only_p256_keys_are_accepted_and_serials_are_positive_and_unique() {
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(p256_point(&rcgen::PublicKeyData::subject_public_key_info(&p384)).is_err());
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
        assert_ne!(a, b);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
