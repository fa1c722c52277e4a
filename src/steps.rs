//! The rotation steps — createSecret, setSecret, testSecret, finishSecret and rollback — written
//! once against the ports and the [`CredentialKind`] trait. Every step describes the secret
//! first and checks the token against `VersionIdsToStages`, so each is safe to re-run at any
//! point; each logs one structured line (secret ARN, token, step, outcome, ms).

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use crate::error::{Result, RotorError};
use crate::event::{RotationEvent, SecretId, Step, Token};
use crate::kinds::{self, Applied, CredentialKind, KindContext, KindSettings};
use crate::policy::GeneratorPolicy;
use crate::ports::{CaSigner, PutOutcome, SecretMeta, SecretStore, AWSCURRENT, AWSPENDING};

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// createSecret stored a new pending value.
    Created,
    /// createSecret found a value under the token already.
    AlreadyCreated,
    /// setSecret changed the target.
    Applied,
    /// setSecret found the target already accepting the pending credential.
    AlreadyApplied,
    /// setSecret: the kind has no target.
    NoTarget,
    /// testSecret proved the pending credential.
    Tested,
    /// finishSecret made the token AWSCURRENT.
    Finished,
    /// The token is already AWSCURRENT: nothing to do.
    AlreadyCurrent,
    /// rollback removed AWSPENDING (and reverted the target where the kind changed it).
    RolledBack,
    /// rollback found nothing pending to undo.
    NothingToRollBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::AlreadyCreated => "alreadyCreated",
            Outcome::Applied => "applied",
            Outcome::AlreadyApplied => "alreadyApplied",
            Outcome::NoTarget => "noTarget",
            Outcome::Tested => "tested",
            Outcome::Finished => "finished",
            Outcome::AlreadyCurrent => "alreadyCurrent",
            Outcome::RolledBack => "rolledBack",
            Outcome::NothingToRollBack => "nothingToRollBack",
        }
    }
}

/// The result of one step, as returned to the caller (never holds a value).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub step: &'static str,
    pub secret_arn: String,
    pub token: String,
    pub outcome: Outcome,
    /// finishSecret of a kind whose credentials expire: when the new AWSCURRENT must be
    /// replaced by (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_by: Option<i64>,
}

/// Runs rotation steps against a secret store. Build once per process.
#[derive(Clone)]
pub struct Rotator {
    secrets: Arc<dyn SecretStore>,
    defaults: Arc<GeneratorPolicy>,
    settings: Arc<KindSettings>,
    signer: Option<Arc<dyn CaSigner>>,
}

/// Where the token stands among the secret's versions.
enum TokenState {
    /// Not a version yet (Rotor starts the rotation; only createSecret accepts this).
    Absent,
    /// Staged AWSPENDING.
    Pending,
    /// Already AWSCURRENT (a finished rotation being re-run).
    Current,
}

impl Rotator {
    pub fn new(secrets: Arc<dyn SecretStore>, defaults: GeneratorPolicy) -> Self {
        Rotator {
            secrets,
            defaults: Arc::new(defaults),
            settings: Arc::new(KindSettings::default()),
            signer: None,
        }
    }

    /// The same rotator with a CA signer in custody (certificate kinds).
    pub fn with_signer(mut self, signer: Arc<dyn CaSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The same rotator with these kind settings (CA bundle, timeouts).
    pub fn with_settings(mut self, settings: KindSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// A rotator configured from `config`.
    pub fn from_config(secrets: Arc<dyn SecretStore>, config: &crate::config::Config) -> Self {
        Self::new(secrets, config.policy.clone()).with_settings(config.kinds.clone())
    }

    /// Runs one step and logs its line. Errors are logged with their `errorType`, never a value.
    pub async fn run(&self, event: &RotationEvent) -> Result<StepReport> {
        self.run_as(event, None).await
    }

    /// Runs one step; `kind` is the inventory's kind for the secret, used when the secret has
    /// no `rotor:kind` tag.
    pub async fn run_as(&self, event: &RotationEvent, kind: Option<&str>) -> Result<StepReport> {
        let started = Instant::now();
        let (id, t) = (&event.secret_id, &event.token);
        let mut renew_by = None;
        let result = match event.step {
            Step::Create => self.create(id, t, kind).await,
            Step::Set => self.set(id, t, kind).await,
            Step::Test => self.test(id, t, kind).await,
            Step::Finish => self.finish(id, t, kind).await.map(|(arn, outcome, renew)| {
                renew_by = renew;
                (arn, outcome)
            }),
        };
        log_step(
            event.step.as_str(),
            &event.secret_id,
            &event.token,
            started,
            &result,
        );
        result.map(|(arn, outcome)| StepReport {
            step: event.step.as_str(),
            secret_arn: arn,
            token: event.token.to_string(),
            outcome,
            renew_by,
        })
    }

    /// A whole rotation in-process, as the CLI runs it: a fresh token, the four steps in order,
    /// and a rollback if any step after createSecret fails (the step's error is returned).
    pub async fn rotate(&self, secret_id: &SecretId) -> Result<Vec<StepReport>> {
        let token = Token::generate()?;
        let mut reports = Vec::with_capacity(4);
        for step in Step::ALL {
            let event = RotationEvent {
                step,
                secret_id: secret_id.clone(),
                token: token.clone(),
            };
            match self.run(&event).await {
                Ok(r) => reports.push(r),
                Err(e) => {
                    if step != Step::Create {
                        // Best effort: the rollback logs its own outcome; AWSCURRENT is never
                        // touched before finishSecret, so it keeps working either way.
                        let _ = self.rollback(secret_id, &token).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(reports)
    }

    /// Rollback after a failure past createSecret: reverts the target where the kind changed it
    /// and removes AWSPENDING from the token. Never touches AWSCURRENT; a token that is already
    /// current (the rotation finished) is left alone.
    pub async fn rollback(&self, secret_id: &SecretId, token: &Token) -> Result<StepReport> {
        self.rollback_as(secret_id, token, None).await
    }

    /// [`Rotator::rollback`] with the inventory's kind for untagged secrets.
    pub async fn rollback_as(
        &self,
        secret_id: &SecretId,
        token: &Token,
        kind: Option<&str>,
    ) -> Result<StepReport> {
        let started = Instant::now();
        let result = self.rollback_inner(secret_id, token, kind).await;
        log_step("rollback", secret_id, token, started, &result);
        result.map(|(arn, outcome)| StepReport {
            step: "rollback",
            secret_arn: arn,
            token: token.to_string(),
            outcome,
            renew_by: None,
        })
    }

    async fn rollback_inner(
        &self,
        id: &SecretId,
        token: &Token,
        known: Option<&str>,
    ) -> Result<(String, Outcome)> {
        let meta = self.secrets.describe(id).await?;
        if meta.has_stage(token.as_str(), AWSCURRENT) || !meta.has_stage(token.as_str(), AWSPENDING)
        {
            return Ok((meta.arn, Outcome::NothingToRollBack));
        }
        let kind = kinds::for_secret(&meta, known)?;
        if kind.has_target() {
            let policy = self.policy(&meta)?;
            let current = self.current_value(&meta).await?;
            let pending = self
                .secrets
                .get_value(&meta.arn, Some(token.as_str()), AWSPENDING)
                .await?;
            kind.revert(&self.ctx(&meta, &policy), pending.as_ref(), &current)
                .await?;
        }
        self.secrets
            .update_stage(&meta.arn, AWSPENDING, None, Some(token.as_str()))
            .await?;
        Ok((meta.arn, Outcome::RolledBack))
    }

    async fn create(
        &self,
        id: &SecretId,
        token: &Token,
        known: Option<&str>,
    ) -> Result<(String, Outcome)> {
        // The current value is read alongside the describe (one round trip, not two); it is
        // only used once the token has been checked.
        let (checked, current) = tokio::join!(
            self.check(id, token, true),
            self.secrets.get_value(id.as_str(), None, AWSCURRENT)
        );
        let (meta, state) = checked?;
        match state {
            TokenState::Current => return Ok((meta.arn, Outcome::AlreadyCurrent)),
            TokenState::Pending => {
                if self
                    .secrets
                    .get_value(&meta.arn, Some(token.as_str()), AWSPENDING)
                    .await?
                    .is_some()
                {
                    return Ok((meta.arn, Outcome::AlreadyCreated));
                }
            }
            TokenState::Absent => {}
        }
        let kind = kinds::for_secret(&meta, known)?;
        let policy = self.policy(&meta)?;
        let current = current?.ok_or_else(|| RotorError::NoCurrentValue(meta.arn.clone()))?;
        let next = kind.generate(&self.ctx(&meta, &policy), &current).await?;
        let outcome = match self
            .secrets
            .put_pending(&meta.arn, token.as_str(), &next)
            .await?
        {
            PutOutcome::Created => Outcome::Created,
            PutOutcome::AlreadyExists => Outcome::AlreadyCreated,
        };
        Ok((meta.arn, outcome))
    }

    async fn set(
        &self,
        id: &SecretId,
        token: &Token,
        known: Option<&str>,
    ) -> Result<(String, Outcome)> {
        let (meta, state) = self.check(id, token, false).await?;
        if let TokenState::Current = state {
            return Ok((meta.arn, Outcome::AlreadyCurrent));
        }
        let kind = kinds::for_secret(&meta, known)?;
        if !kind.has_target() {
            return Ok((meta.arn, Outcome::NoTarget));
        }
        let policy = self.policy(&meta)?;
        let pending = self.pending_value(&meta, token).await?;
        let current = self.current_value(&meta).await?;
        let outcome = match kind
            .apply(&self.ctx(&meta, &policy), &pending, &current)
            .await?
        {
            Applied::Changed => Outcome::Applied,
            Applied::AlreadyAccepted => Outcome::AlreadyApplied,
            Applied::NoTarget => Outcome::NoTarget,
        };
        Ok((meta.arn, outcome))
    }

    async fn test(
        &self,
        id: &SecretId,
        token: &Token,
        known: Option<&str>,
    ) -> Result<(String, Outcome)> {
        // Both values are read alongside the describe (one round trip, not three); they are
        // only looked at once the token has been checked.
        let (checked, pending, current) = tokio::join!(
            self.check(id, token, false),
            self.secrets
                .get_value(id.as_str(), Some(token.as_str()), AWSPENDING),
            self.secrets.get_value(id.as_str(), None, AWSCURRENT)
        );
        let (meta, state) = checked?;
        if let TokenState::Current = state {
            return Ok((meta.arn, Outcome::AlreadyCurrent));
        }
        let kind = kinds::for_secret(&meta, known)?;
        let policy = self.policy(&meta)?;
        let pending = pending?.ok_or_else(|| RotorError::NoPendingValue {
            secret: meta.arn.clone(),
            token: token.to_string(),
        })?;
        let current = current?.ok_or_else(|| RotorError::NoCurrentValue(meta.arn.clone()))?;
        kind.verify(&self.ctx(&meta, &policy), &pending, &current)
            .await?;
        Ok((meta.arn, Outcome::Tested))
    }

    async fn finish(
        &self,
        id: &SecretId,
        token: &Token,
        known: Option<&str>,
    ) -> Result<(String, Outcome, Option<i64>)> {
        let (meta, state) = self.check(id, token, false).await?;
        let t = token.as_str();
        let outcome = if let TokenState::Current = state {
            // A re-run after AWSCURRENT moved: only AWSPENDING may still need removing.
            if meta.has_stage(t, AWSPENDING) {
                self.secrets
                    .update_stage(&meta.arn, AWSPENDING, None, Some(t))
                    .await?;
            }
            Outcome::AlreadyCurrent
        } else {
            let old = meta.version_with(AWSCURRENT).map(str::to_string);
            self.secrets
                .update_stage(&meta.arn, AWSCURRENT, Some(t), old.as_deref())
                .await?;
            self.secrets
                .update_stage(&meta.arn, AWSPENDING, None, Some(t))
                .await?;
            Outcome::Finished
        };
        let renew_by = self.renew_by(&meta, token, known).await;
        Ok((meta.arn, outcome, renew_by))
    }

    /// For kinds whose credentials expire: when the token's value (now AWSCURRENT) must be
    /// replaced by. The rotation is done either way, so a failure here only logs a warning.
    async fn renew_by(&self, meta: &SecretMeta, token: &Token, known: Option<&str>) -> Option<i64> {
        let kind = kinds::for_secret(meta, known).ok()?;
        if !kind.expires() {
            return None;
        }
        match self
            .secrets
            .get_value(&meta.arn, Some(token.as_str()), AWSCURRENT)
            .await
        {
            Ok(Some(v)) => kind.renew_by(&v),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(secret_arn = %meta.arn, error_type = e.error_type(), error = %e, "could not read the new certificate's expiry");
                None
            }
        }
    }

    /// Describes the secret and places the token among its versions. A token that is not a
    /// version is an error except for createSecret (`absent_ok`), which creates it.
    async fn check(
        &self,
        id: &SecretId,
        token: &Token,
        absent_ok: bool,
    ) -> Result<(SecretMeta, TokenState)> {
        let meta = self.secrets.describe(id).await?;
        let state = match meta.stages(token.as_str()) {
            None if absent_ok => TokenState::Absent,
            None => {
                return Err(RotorError::TokenNotAVersion {
                    secret: meta.arn.clone(),
                    token: token.to_string(),
                })
            }
            Some(s) if s.iter().any(|x| x == AWSCURRENT) => TokenState::Current,
            Some(s) if s.iter().any(|x| x == AWSPENDING) => TokenState::Pending,
            Some(s) => {
                return Err(RotorError::VersionNotPending {
                    secret: meta.arn.clone(),
                    token: token.to_string(),
                    stages: if s.is_empty() {
                        "none".into()
                    } else {
                        s.join(",")
                    },
                })
            }
        };
        Ok((meta, state))
    }

    fn policy(&self, meta: &SecretMeta) -> Result<GeneratorPolicy> {
        self.defaults.with_tags(&meta.tags)
    }

    fn ctx<'a>(&'a self, meta: &'a SecretMeta, policy: &'a GeneratorPolicy) -> KindContext<'a> {
        KindContext {
            meta,
            policy,
            secrets: self.secrets.as_ref(),
            settings: &self.settings,
            signer: self.signer.as_deref(),
        }
    }

    async fn current_value(&self, meta: &SecretMeta) -> Result<SecretString> {
        self.secrets
            .get_value(&meta.arn, None, AWSCURRENT)
            .await?
            .ok_or_else(|| RotorError::NoCurrentValue(meta.arn.clone()))
    }

    async fn pending_value(&self, meta: &SecretMeta, token: &Token) -> Result<SecretString> {
        self.secrets
            .get_value(&meta.arn, Some(token.as_str()), AWSPENDING)
            .await?
            .ok_or_else(|| RotorError::NoPendingValue {
                secret: meta.arn.clone(),
                token: token.to_string(),
            })
    }
}

fn log_step(
    step: &str,
    id: &SecretId,
    token: &Token,
    started: Instant,
    result: &Result<(String, Outcome)>,
) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((arn, outcome)) => tracing::info!(
            secret_arn = %arn,
            token = %token,
            step,
            outcome = outcome.as_str(),
            ms,
            "step succeeded"
        ),
        Err(e) => tracing::warn!(
            secret_id = %id,
            token = %token,
            step,
            outcome = "failed",
            error_type = e.error_type(),
            error = %e,
            ms,
            "step failed"
        ),
    }
}

/// The kind resolved for a secret (exposed for the CLI's output).
pub fn kind_name(meta: &SecretMeta) -> Result<&'static str> {
    kinds::for_secret(meta, None).map(|k: &dyn CredentialKind| k.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::memory::MemorySecrets;

    const T: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    fn setup(value: &str) -> (Arc<MemorySecrets>, Rotator) {
        let m = Arc::new(MemorySecrets::default());
        m.create("s", value, &[]);
        let r = Rotator::new(m.clone(), GeneratorPolicy::default());
        (m, r)
    }

    fn ev(step: Step) -> RotationEvent {
        RotationEvent {
            step,
            secret_id: SecretId::parse("s").unwrap(),
            token: Token::parse(T).unwrap(),
        }
    }

    #[tokio::test]
    async fn full_rotation_and_reruns() {
        let (m, r) = setup("old-value");
        for step in Step::ALL {
            r.run(&ev(step)).await.unwrap();
            let after = m.meta("s").unwrap();
            r.run(&ev(step)).await.unwrap();
            assert_eq!(m.meta("s").unwrap(), after, "{step} re-run changed state");
        }
        let meta = m.meta("s").unwrap();
        assert_eq!(meta.stages(T).unwrap(), &[AWSCURRENT.to_string()]);
        assert_eq!(meta.stages("v1").unwrap(), &["AWSPREVIOUS".to_string()]);
        assert_ne!(m.value_of("s", T).unwrap(), "old-value");
    }

    #[tokio::test]
    async fn secrets_manager_started_rotation() {
        let (m, r) = setup("old-value");
        m.stage_empty_pending("s", T);
        assert_eq!(
            r.run(&ev(Step::Create)).await.unwrap().outcome,
            Outcome::Created
        );
        assert_eq!(
            r.run(&ev(Step::Create)).await.unwrap().outcome,
            Outcome::AlreadyCreated
        );
    }

    #[tokio::test]
    async fn steps_other_than_create_need_a_version() {
        let (_m, r) = setup("old-value");
        for step in [Step::Set, Step::Test, Step::Finish] {
            let e = r.run(&ev(step)).await.unwrap_err();
            assert_eq!(e.error_type(), "TokenNotAVersion");
        }
    }

    #[tokio::test]
    async fn rollback_drops_pending_and_keeps_current() {
        let (m, r) = setup("old-value");
        r.run(&ev(Step::Create)).await.unwrap();
        let out = r
            .rollback(&ev(Step::Create).secret_id, &ev(Step::Create).token)
            .await
            .unwrap();
        assert_eq!(out.outcome, Outcome::RolledBack);
        let meta = m.meta("s").unwrap();
        assert_eq!(meta.version_with(AWSCURRENT), Some("v1"));
        assert_eq!(meta.version_with(AWSPENDING), None);
    }
}
