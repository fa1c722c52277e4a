//! The X.509 kind (`rotor:kind=x509`): a short-lived certificate for mTLS, issued by the CA
//! whose private key never leaves KMS (`crate::ca`).
//!
//! The secret is a JSON object. Its *profile* — who the certificate is for — is set by the
//! owner and carried over by every rotation, with every other field:
//! `common_name`, `organization`, `dns_names`, `ip_addresses`, `uris` (e.g. `spiffe://…`),
//! `usages` (`client`, `server`; default both), `validity` (e.g. `24h`; default
//! `ROTOR_CERT_VALIDITY`), `key_algorithm` (`ECDSA_P256` default, `ECDSA_P384`). Each rotation
//! writes the *issued* fields: `certificate`, `private_key` (PKCS#8 PEM), `chain` (PEM, the
//! certificate then the CA), `serial` (hex), `not_before`, `not_after` (RFC 3339), `issuer`.
//!
//! createSecret makes a fresh key pair (never reused) and has the CA sign a certificate with a
//! random 128-bit serial, valid from five minutes ago. There is no target (setSecret has nothing
//! to do). testSecret validates the path to the CA certificate with webpki, checks names, usages
//! and that the private key is the certificate's, then runs an mTLS handshake on loopback with
//! rustls: a server and a client presenting the new certificate, each trusting only the CA.
//! finishSecret reports when the certificate must be renewed: two thirds into its lifetime.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{self, CaCertificate, BACKDATE_SECS};
use crate::error::{Result, RotorError};
use crate::ports::AWSCURRENT;

use super::{invalid, json_object, Applied, CredentialKind, KindContext};

/// The X.509 certificate kind.
pub struct X509;

/// Fields a rotation writes (everything else in the secret carries over).
const ISSUED: [&str; 7] = [
    "certificate",
    "private_key",
    "chain",
    "serial",
    "not_before",
    "not_after",
    "issuer",
];

/// Most SANs one certificate may carry.
const MAX_NAMES: usize = 100;
/// How long the handshake test may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses a certificate lifetime (`24h`, `7d`, `90m`): from 5 minutes to 397 days.
pub fn parse_validity(v: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("{v:?} is not a duration like 24h: {e}"))?;
    if d < Duration::from_secs(300) || d > Duration::from_secs(397 * 86400) {
        return Err(format!("{v:?} is outside 5m..397d"));
    }
    Ok(d)
}

/// Who the certificate is for: the profile fields of the secret. Holds no secret.
#[derive(Debug, Clone, PartialEq)]
struct Profile {
    common_name: String,
    organization: Option<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    uris: Vec<String>,
    client: bool,
    server: bool,
    validity: Option<Duration>,
    algorithm: &'static SignatureAlgorithm,
}

fn strings(m: &Map<String, Value>, field: &str) -> std::result::Result<Vec<String>, String> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{field} must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{field} must be a list of strings")),
    }
}

fn opt_string(m: &Map<String, Value>, field: &str) -> std::result::Result<Option<String>, String> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(format!("{field} must be a non-empty string")),
    }
}

impl Profile {
    fn from_json(m: &Map<String, Value>) -> std::result::Result<Self, String> {
        let dns_names: Vec<String> = strings(m, "dns_names")?
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        for d in &dns_names {
            if ServerName::try_from(d.as_str()).is_err() || d.parse::<IpAddr>().is_ok() {
                return Err(format!("dns_names: {d:?} is not a DNS name"));
            }
        }
        let ip_addresses = strings(m, "ip_addresses")?
            .iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| format!("ip_addresses: {s:?} is not an IP address"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let uris = strings(m, "uris")?;
        for u in &uris {
            let scheme_ok = u.split_once(':').is_some_and(|(s, rest)| {
                !s.is_empty()
                    && !rest.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            });
            if !scheme_ok || !u.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("uris: {u:?} is not an absolute URI"));
            }
        }
        let names = dns_names.len() + ip_addresses.len() + uris.len();
        if names == 0 {
            return Err(
                "the certificate profile names no dns_names, ip_addresses or uris".to_string(),
            );
        }
        if names > MAX_NAMES {
            return Err(format!("more than {MAX_NAMES} names"));
        }
        let usages = strings(m, "usages")?;
        let (mut client, mut server) = (usages.is_empty(), usages.is_empty());
        for u in &usages {
            match u.as_str() {
                "client" => client = true,
                "server" => server = true,
                other => {
                    return Err(format!(
                        "usages: {other:?} is not one of \"client\", \"server\""
                    ))
                }
            }
        }
        let validity = opt_string(m, "validity")?
            .map(|v| parse_validity(&v).map_err(|e| format!("validity: {e}")))
            .transpose()?;
        let algorithm = match opt_string(m, "key_algorithm")?.as_deref() {
            None | Some("ECDSA_P256") => &rcgen::PKCS_ECDSA_P256_SHA256,
            Some("ECDSA_P384") => &rcgen::PKCS_ECDSA_P384_SHA384,
            Some(other) => {
                return Err(format!(
                    "key_algorithm: {other:?} is not ECDSA_P256 or ECDSA_P384"
                ))
            }
        };
        let common_name = match opt_string(m, "common_name")? {
            Some(cn) => cn,
            None => dns_names
                .first()
                .cloned()
                .or_else(|| uris.first().cloned())
                .or_else(|| ip_addresses.first().map(|i| i.to_string()))
                .unwrap_or_default(),
        };
        Ok(Profile {
            common_name,
            organization: opt_string(m, "organization")?,
            dns_names,
            ip_addresses,
            uris,
            client,
            server,
            validity,
            algorithm,
        })
    }

    /// The certificate parameters for this profile.
    fn params(
        &self,
        serial: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> std::result::Result<CertificateParams, String> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        p.distinguished_name = dn;
        let ia5 =
            |s: &str| rcgen::string::Ia5String::try_from(s).map_err(|e| format!("name {s:?}: {e}"));
        for d in &self.dns_names {
            p.subject_alt_names.push(SanType::DnsName(ia5(d)?));
        }
        for ip in &self.ip_addresses {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for u in &self.uris {
            p.subject_alt_names.push(SanType::URI(ia5(u)?));
        }
        p.serial_number = Some(SerialNumber::from_slice(serial));
        p.not_before = ca::to_datetime(not_before).map_err(|e| e.to_string())?;
        p.not_after = ca::to_datetime(not_after).map_err(|e| e.to_string())?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }
}

fn rejected(ctx: &KindContext<'_>, reason: impl Into<String>) -> RotorError {
    RotorError::CertificateRejected {
        secret: ctx.meta.arn.clone(),
        reason: reason.into(),
    }
}

/// The secret's JSON object (errors name a position, never the content).
fn object(value: &SecretString) -> std::result::Result<Map<String, Value>, String> {
    json_object(value.expose_secret())
}

fn now() -> i64 {
    crate::fleet::now()
}

/// How long a process reuses a CA certificate it read. The certificate is public, so this is a
/// cache of public data (never of key material); a renewed CA certificate is picked up after
/// this long, and certificates issued meanwhile name the same key and subject.
const CA_CACHE_TTL: Duration = Duration::from_secs(300);

type CaCache =
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, CaCertificate)>>;
static CA_CACHE: std::sync::LazyLock<CaCache> = std::sync::LazyLock::new(Default::default);

/// The CA certificate, from the secret `rotor ca init` published it in (read at most once per
/// [`CA_CACHE_TTL`] per process); it must be valid now.
async fn load_ca(ctx: &KindContext<'_>) -> Result<CaCertificate> {
    let name = &ctx.settings.ca_cert_secret;
    let cached = CA_CACHE.lock().ok().and_then(|c| {
        c.get(name)
            .filter(|(at, _)| at.elapsed() < CA_CACHE_TTL)
            .map(|(_, ca)| ca.clone())
    });
    if let Some(ca) = cached {
        ca.check_valid_at(now())?;
        return Ok(ca);
    }
    let pem = match ctx.secrets.get_value(name, None, AWSCURRENT).await {
        Ok(Some(v)) => v,
        Ok(None) | Err(RotorError::SecretNotFound(_)) => {
            return Err(RotorError::CaUnavailable(format!(
                "no CA certificate in secret {name} (run `rotor ca init`)"
            )))
        }
        Err(e) => return Err(e),
    };
    let ca = CaCertificate::from_pem(pem.expose_secret())?;
    ca.check_valid_at(now())?;
    if let Ok(mut c) = CA_CACHE.lock() {
        c.insert(name.clone(), (std::time::Instant::now(), ca.clone()));
    }
    Ok(ca)
}

/// What a certificate says, read back with x509-parser.
struct Issued {
    spki: Vec<u8>,
    not_before: i64,
    not_after: i64,
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    uris: BTreeSet<String>,
    other_names: usize,
    server_auth: bool,
    client_auth: bool,
    any_eku: bool,
}

fn read_certificate(der: &[u8]) -> std::result::Result<Issued, String> {
    let (_, x) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate is not X.509: {e}"))?;
    let mut out = Issued {
        spki: x.public_key().raw.to_vec(),
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        dns: BTreeSet::new(),
        ips: BTreeSet::new(),
        uris: BTreeSet::new(),
        other_names: 0,
        server_auth: false,
        client_auth: false,
        any_eku: false,
    };
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    out.dns.insert(d.to_ascii_lowercase());
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        out.ips
                            .insert(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()));
                    }
                    16 => {
                        out.ips
                            .insert(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()));
                    }
                    _ => out.other_names += 1,
                },
                GeneralName::URI(u) => {
                    out.uris.insert(u.to_string());
                }
                _ => out.other_names += 1,
            }
        }
    }
    if let Ok(Some(eku)) = x.extended_key_usage() {
        out.server_auth = eku.value.server_auth;
        out.client_auth = eku.value.client_auth;
        out.any_eku = eku.value.any;
    }
    Ok(out)
}

fn certificates(pem: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| "is not PEM certificates".to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> std::result::Result<&'a str, String> {
    m.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("field {name:?} is missing"))
}

#[async_trait]
impl CredentialKind for X509 {
    fn name(&self) -> &'static str {
        "x509"
    }

    fn has_target(&self) -> bool {
        false
    }

    async fn generate(
        &self,
        ctx: &KindContext<'_>,
        current: &SecretString,
    ) -> Result<SecretString> {
        let mut value = object(current).map_err(|r| invalid(ctx, "current", r))?;
        let profile = Profile::from_json(&value).map_err(|r| invalid(ctx, "current", r))?;
        let signer = ctx.signer.ok_or_else(|| {
            RotorError::CaUnavailable("this function has no CA signer configured".into())
        })?;
        let ca = load_ca(ctx).await?;
        let at = now();
        let lifetime = profile.validity.unwrap_or(ctx.settings.cert_validity);
        let not_before = at - BACKDATE_SECS;
        let mut not_after = at + lifetime.as_secs() as i64;
        if not_after > ca.not_after {
            tracing::warn!(secret_arn = %ctx.meta.arn, ca_not_after = %ca::rfc3339(ca.not_after), "certificate lifetime cut to the CA's expiry");
            not_after = ca.not_after;
        }
        let serial = ca::random_serial()?;
        let params = profile
            .params(&serial, not_before, not_after)
            .map_err(|r| invalid(ctx, "current", r))?;
        // A fresh key pair every rotation: a key is never reused across certificates.
        let key = KeyPair::generate_for(profile.algorithm)
            .map_err(|e| RotorError::Certificate(format!("generating the key pair: {e}")))?;
        let der = ca::issue(signer, &ctx.settings.ca_key_id, &ca, &params, &key).await?;
        let certificate = ca::pem_certificate(&der);
        for f in ISSUED {
            value.remove(f);
        }
        value.insert("certificate".into(), Value::String(certificate.clone()));
        value.insert("private_key".into(), Value::String(key.serialize_pem()));
        value.insert(
            "chain".into(),
            Value::String(format!("{certificate}{}", ca.pem())),
        );
        value.insert("serial".into(), Value::String(hex::encode(&serial)));
        value.insert("not_before".into(), Value::String(ca::rfc3339(not_before)));
        value.insert("not_after".into(), Value::String(ca::rfc3339(not_after)));
        value.insert("issuer".into(), Value::String(ca.subject.clone()));
        let out = serde_json::to_string(&value)
            .map_err(|e| RotorError::Certificate(format!("encoding the secret: {e}")))?;
        Ok(SecretString::from(out))
    }

    async fn apply(
        &self,
        _ctx: &KindContext<'_>,
        _pending: &SecretString,
        _current: &SecretString,
    ) -> Result<Applied> {
        Ok(Applied::NoTarget)
    }

    async fn verify(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        current: &SecretString,
    ) -> Result<()> {
        // The owner's profile (AWSCURRENT) is what the certificate must match.
        let profile = Profile::from_json(&object(current).map_err(|r| invalid(ctx, "current", r))?)
            .map_err(|r| invalid(ctx, "current", r))?;
        let value = object(pending).map_err(|r| invalid(ctx, "pending", r))?;
        let ca = load_ca(ctx).await?;
        let (cert_pem, key_pem, chain_pem) = (|| {
            Ok::<_, String>((
                field(&value, "certificate")?,
                field(&value, "private_key")?,
                field(&value, "chain")?,
            ))
        })()
        .map_err(|r| invalid(ctx, "pending", r))?;
        let leaf = certificates(cert_pem)
            .map_err(|r| rejected(ctx, format!("certificate {r}")))?
            .remove(0);
        let chain = certificates(chain_pem).map_err(|r| rejected(ctx, format!("chain {r}")))?;
        if chain[0] != leaf {
            return Err(rejected(ctx, "chain does not start with the certificate"));
        }
        if chain.len() > 1 && chain[chain.len() - 1].as_ref() != ca.der.as_slice() {
            return Err(rejected(ctx, "chain does not end with the CA certificate"));
        }
        let intermediates: Vec<CertificateDer<'static>> = chain[1..]
            .iter()
            .filter(|c| c.as_ref() != ca.der.as_slice())
            .cloned()
            .collect();
        let at = now();
        check_path(&ca, &leaf, &intermediates, &profile, at).map_err(|r| rejected(ctx, r))?;
        let issued = read_certificate(&leaf).map_err(|r| rejected(ctx, r))?;
        check_names(&issued, &profile).map_err(|r| rejected(ctx, r))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| rejected(ctx, "private_key is not a PEM private key"))?;
        if !matches!(key, PrivateKeyDer::Pkcs8(_)) {
            return Err(rejected(ctx, "private_key is not PKCS#8"));
        }
        let pair = KeyPair::from_pem(key_pem)
            .map_err(|_| rejected(ctx, "private_key cannot be loaded"))?;
        if pair.subject_public_key_info() != issued.spki {
            return Err(rejected(
                ctx,
                "private_key does not belong to the certificate",
            ));
        }
        let setup = Handshake {
            ca: CertificateDer::from(ca.der.clone()),
            chain,
            key,
            profile: profile.clone(),
        };
        tokio::task::spawn_blocking(move || setup.run())
            .await
            .map_err(|e| rejected(ctx, format!("mTLS handshake task failed: {e}")))?
            .map_err(|r| rejected(ctx, format!("mTLS handshake failed: {r}")))?;
        Ok(())
    }

    fn expires(&self) -> bool {
        true
    }

    fn renew_by(&self, value: &SecretString) -> Option<i64> {
        let m = object(value).ok()?;
        let leaf = certificates(field(&m, "certificate").ok()?).ok()?.remove(0);
        let c = read_certificate(&leaf).ok()?;
        Some(renew_at(c.not_before, c.not_after))
    }
}

/// Two thirds into a certificate's lifetime.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

/// webpki path validation to the CA for every usage in the profile, and each DNS/IP name.
fn check_path(
    ca: &CaCertificate,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    profile: &Profile,
    at: i64,
) -> std::result::Result<(), String> {
    let ca_der = CertificateDer::from(ca.der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der)
        .map_err(|e| format!("CA certificate is not a trust anchor: {e}"))?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("certificate cannot be parsed: {e}"))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at.max(0) as u64));
    let mut usages = vec![];
    if profile.server {
        usages.push(("serverAuth", webpki::KeyUsage::server_auth()));
    }
    if profile.client {
        usages.push(("clientAuth", webpki::KeyUsage::client_auth()));
    }
    for (name, usage) in usages {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            intermediates,
            time,
            usage,
            None,
            None,
        )
        .map_err(|e| format!("path validation to the CA failed for {name}: {e}"))?;
    }
    for d in &profile.dns_names {
        let name = ServerName::try_from(d.as_str()).map_err(|e| format!("{d}: {e}"))?;
        ee.verify_is_valid_for_subject_name(&name)
            .map_err(|e| format!("certificate is not valid for {d}: {e}"))?;
    }
    for ip in &profile.ip_addresses {
        ee.verify_is_valid_for_subject_name(&ServerName::IpAddress((*ip).into()))
            .map_err(|e| format!("certificate is not valid for {ip}: {e}"))?;
    }
    Ok(())
}

/// The certificate names exactly the profile's names and usages: none missing, none extra.
fn check_names(c: &Issued, p: &Profile) -> std::result::Result<(), String> {
    let want_dns: BTreeSet<String> = p.dns_names.iter().cloned().collect();
    let want_ips: BTreeSet<IpAddr> = p.ip_addresses.iter().copied().collect();
    let want_uris: BTreeSet<String> = p.uris.iter().cloned().collect();
    if c.dns != want_dns {
        return Err(format!(
            "DNS names {:?} are not the profile's {:?}",
            c.dns, want_dns
        ));
    }
    if c.ips != want_ips {
        return Err(format!(
            "IP addresses {:?} are not the profile's {:?}",
            c.ips, want_ips
        ));
    }
    if c.uris != want_uris {
        return Err(format!(
            "URIs {:?} are not the profile's {:?}",
            c.uris, want_uris
        ));
    }
    if c.other_names > 0 {
        return Err(format!(
            "{} unexpected subject alternative names",
            c.other_names
        ));
    }
    if c.any_eku || c.server_auth != p.server || c.client_auth != p.client {
        return Err(format!(
            "extended key usages (serverAuth {}, clientAuth {}, any {}) are not the profile's \
             (serverAuth {}, clientAuth {})",
            c.server_auth, c.client_auth, c.any_eku, p.server, p.client
        ));
    }
    if c.not_after <= c.not_before {
        return Err("validity period is empty".into());
    }
    Ok(())
}

/// An mTLS handshake on loopback. The side the certificate is for presents it (the server for
/// `server`, the client for `client`); the other side trusts only the CA. A usage the
/// certificate lacks is played by a throwaway self-signed certificate trusted for this one
/// handshake.
struct Handshake {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    profile: Profile,
}

const PING: &[u8; 10] = b"rotor-ping";
const PONG: &[u8; 10] = b"rotor-pong";

impl Handshake {
    fn run(self) -> std::result::Result<(), String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut ca_roots = RootCertStore::empty();
        ca_roots
            .add(self.ca.clone())
            .map_err(|e| format!("CA certificate: {e}"))?;
        let ca_roots = Arc::new(ca_roots);
        let leaf = self.chain[0].clone();

        // The server side.
        let server_builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let server_builder = if self.profile.client {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(ca_roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?;
            server_builder.with_client_cert_verifier(verifier)
        } else {
            server_builder.with_no_client_auth()
        };
        let (server, client_roots, server_name) = if self.profile.server {
            let server = server_builder
                .with_single_cert(self.chain.clone(), self.key.clone_key())
                .map_err(|e| format!("server: {e}"))?;
            let name = match (
                self.profile.dns_names.first(),
                self.profile.ip_addresses.first(),
            ) {
                (Some(d), _) => ServerName::try_from(d.clone()).map_err(|e| e.to_string())?,
                (None, Some(ip)) => ServerName::IpAddress((*ip).into()),
                (None, None) => {
                    ServerName::try_from("rotor-handshake.invalid").map_err(|e| e.to_string())?
                }
            };
            (server, ca_roots.clone(), name)
        } else {
            let stand_in =
                rcgen::generate_simple_self_signed(vec!["rotor-handshake.invalid".to_string()])
                    .map_err(|e| format!("stand-in server certificate: {e}"))?;
            let cert = stand_in.cert.der().clone();
            let key = PrivateKeyDer::try_from(stand_in.signing_key.serialize_der())
                .map_err(|e| format!("stand-in server key: {e}"))?;
            let mut roots = RootCertStore::empty();
            roots.add(cert.clone()).map_err(|e| e.to_string())?;
            let server = server_builder
                .with_single_cert(vec![cert], key)
                .map_err(|e| format!("stand-in server: {e}"))?;
            let name =
                ServerName::try_from("rotor-handshake.invalid").map_err(|e| e.to_string())?;
            (server, Arc::new(roots), name)
        };

        // The client side: trusts only the CA (or the stand-in), checks the name unless the
        // certificate names no host (a URI-only identity such as SPIFFE).
        let client_builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let names_host =
            !self.profile.dns_names.is_empty() || !self.profile.ip_addresses.is_empty();
        let client_builder = if self.profile.server && !names_host {
            let inner = WebPkiServerVerifier::builder_with_provider(client_roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            client_builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UriIdentityVerifier(inner)))
        } else {
            client_builder.with_root_certificates(client_roots)
        };
        let client = if self.profile.client {
            client_builder
                .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
                .map_err(|e| format!("client: {e}"))?
        } else {
            client_builder.with_no_client_auth()
        };

        let seen_by_server = exchange(Arc::new(server), Arc::new(client), server_name)?;
        if self.profile.client && seen_by_server.as_deref() != Some(leaf.as_ref()) {
            return Err("the server did not see the new certificate from the client".into());
        }
        Ok(())
    }
}

/// Connects a rustls client to a rustls server on loopback, sends a ping and reads a pong.
/// Returns the certificate the client presented, as the server saw it.
fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let serve = std::thread::spawn(move || -> std::result::Result<Option<Vec<u8>>, String> {
        let (sock, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        let conn = rustls::ServerConnection::new(server).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 10];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf != PING {
            return Err("unexpected bytes from the client".into());
        }
        tls.write_all(PONG).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let peer = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(peer)
    });
    let talk = || -> std::result::Result<(), String> {
        let sock = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        let conn = rustls::ClientConnection::new(client, name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(PING).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let mut buf = [0u8; 10];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf != PONG {
            return Err("unexpected bytes from the server".into());
        }
        Ok(())
    };
    let client_result = talk();
    if client_result.is_err() {
        // Unblock an accept that never saw the client.
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    }
    let server_result = serve
        .join()
        .map_err(|_| "the server thread panicked".to_string())?;
    match (client_result, server_result) {
        (Ok(()), Ok(peer)) => Ok(peer),
        (Err(c), Err(s)) => Err(format!("client: {c}; server: {s}")),
        (Err(c), Ok(_)) => Err(format!("client: {c}")),
        (Ok(()), Err(s)) => Err(format!("server: {s}")),
    }
}

/// Server-certificate verification for identities that name no host (URI SANs only): the
/// full webpki path validation to the CA, without the host-name match (the URIs were checked
/// against the profile before the handshake).
#[derive(Debug)]
struct UriIdentityVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for UriIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindSettings;
    use crate::policy::GeneratorPolicy;
    use crate::ports::memory::{MemoryCaSigner, MemorySecrets};
    use crate::ports::{CaSigner, SecretMeta};
    use serde_json::json;

    struct Fixture {
        secrets: MemorySecrets,
        signer: MemoryCaSigner,
        settings: KindSettings,
        meta: SecretMeta,
        policy: GeneratorPolicy,
    }

    impl Fixture {
        async fn new() -> Self {
            let secrets = MemorySecrets::default();
            let signer = MemoryCaSigner::new().unwrap();
            let spec = ca::CaSpec {
                common_name: "Unit CA".into(),
                organization: None,
                validity: Duration::from_secs(30 * 86400),
            };
            let pem = ca::self_signed(&signer, "k", &spec, now()).await.unwrap();
            // A CA secret per fixture: the process caches CA certificates by secret name.
            let settings = KindSettings {
                ca_cert_secret: format!("ca/{}", hex::encode(crate::ca::random_serial().unwrap())),
                ..Default::default()
            };
            secrets.create(&settings.ca_cert_secret, &pem, &[]);
            Fixture {
                secrets,
                signer,
                settings,
                meta: SecretMeta {
                    arn: "arn:aws:secretsmanager:us-east-1:1:secret:svc".into(),
                    ..Default::default()
                },
                policy: GeneratorPolicy::default(),
            }
        }

        fn ctx(&self) -> KindContext<'_> {
            KindContext {
                meta: &self.meta,
                policy: &self.policy,
                secrets: &self.secrets,
                settings: &self.settings,
                signer: Some(&self.signer as &dyn CaSigner),
            }
        }
    }

    fn secret(v: Value) -> SecretString {
        SecretString::from(v.to_string())
    }

    fn profile() -> Value {
        json!({"dns_names": ["svc.internal"], "ip_addresses": ["127.0.0.1"],
               "uris": ["spiffe://example.org/svc"], "owner_note": "kept"})
    }

    #[tokio::test]
    async fn issues_a_certificate_that_passes_its_test_and_carries_fields_over() {
        let f = Fixture::new().await;
        let current = secret(profile());
        let pending = X509.generate(&f.ctx(), &current).await.unwrap();
        let v = object(&pending).unwrap();
        assert_eq!(v["owner_note"], "kept");
        assert!(v["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(v["serial"].as_str().unwrap().len(), 32);
        X509.verify(&f.ctx(), &pending, &current).await.unwrap();
        let renew = X509.renew_by(&pending).unwrap();
        let issued =
            read_certificate(&certificates(v["certificate"].as_str().unwrap()).unwrap()[0])
                .unwrap();
        assert_eq!(
            issued.not_after - issued.not_before,
            24 * 3600 + BACKDATE_SECS
        );
        assert_eq!(renew, renew_at(issued.not_before, issued.not_after));
        // Rotating from the issued value: new key, new serial, same profile.
        let next = X509.generate(&f.ctx(), &pending).await.unwrap();
        let n = object(&next).unwrap();
        assert_ne!(n["private_key"], v["private_key"]);
        assert_ne!(n["serial"], v["serial"]);
        X509.verify(&f.ctx(), &next, &pending).await.unwrap();
        assert_eq!(
            f.signer.signs.load(std::sync::atomic::Ordering::Relaxed),
            3 // the CA and two certificates: one Sign each
        );
    }

    #[tokio::test]
    async fn client_only_server_only_and_uri_only_profiles_handshake() {
        let f = Fixture::new().await;
        for p in [
            json!({"dns_names": ["a.internal"], "usages": ["client"]}),
            json!({"dns_names": ["a.internal"], "usages": ["server"]}),
            json!({"uris": ["spiffe://example.org/a"]}),
            json!({"ip_addresses": ["::1"], "key_algorithm": "ECDSA_P384", "validity": "2h"}),
        ] {
            let current = secret(p.clone());
            let pending = X509.generate(&f.ctx(), &current).await.unwrap();
            X509.verify(&f.ctx(), &pending, &current)
                .await
                .unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[tokio::test]
    async fn a_profile_that_changed_since_issue_is_rejected() {
        let f = Fixture::new().await;
        let current = secret(profile());
        let pending = X509.generate(&f.ctx(), &current).await.unwrap();
        let moved = secret(
            json!({"dns_names": ["other.internal"], "ip_addresses": ["127.0.0.1"],
                                  "uris": ["spiffe://example.org/svc"]}),
        );
        let e = X509.verify(&f.ctx(), &pending, &moved).await.unwrap_err();
        assert_eq!(e.error_type(), "CertificateRejected");
        assert!(e.to_string().contains("other.internal"), "{e}");
    }

    #[test]
    fn bad_profiles_are_named_errors() {
        for (p, needle) in [
            (json!({}), "names no"),
            (json!({"dns_names": ["bad name"]}), "not a DNS name"),
            (json!({"dns_names": "a.b"}), "list of strings"),
            (json!({"ip_addresses": ["1.2.3"]}), "not an IP"),
            (json!({"uris": ["no-scheme"]}), "absolute URI"),
            (json!({"dns_names": ["a.b"], "usages": ["both"]}), "usages"),
            (json!({"dns_names": ["a.b"], "validity": "1s"}), "outside"),
            (
                json!({"dns_names": ["a.b"], "key_algorithm": "RSA"}),
                "key_algorithm",
            ),
        ] {
            let e = Profile::from_json(p.as_object().unwrap()).unwrap_err();
            assert!(e.contains(needle), "{p}: {e}");
        }
    }

    #[tokio::test]
    async fn without_a_ca_certificate_creation_fails_with_ca_unavailable() {
        let mut f = Fixture::new().await;
        f.settings.ca_cert_secret = "missing/ca".into();
        let e = X509
            .generate(&f.ctx(), &secret(profile()))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "CaUnavailable");
        assert!(e.to_string().contains("rotor ca init"));
    }
}
