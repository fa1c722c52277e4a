//! The PostgreSQL kind, in the secret format of AWS's RDS PostgreSQL rotation templates
//! (`engine`, `host`, `port`, `username`, `password`, `dbname`, optional `ssl`, and `masterarn`
//! for alternating users), so a secret those templates rotate rotates with Rotor unchanged.
//!
//! - **Single user** (no `masterarn`): setSecret changes the role's own password (logging in with
//!   the current password, else the previous one); testSecret logs in with the pending one;
//!   rollback sets the password back.
//! - **Alternating users** (`masterarn`): two roles, `name` and `name_clone`, take turns. As the
//!   master, setSecret creates the other role on first use, sets its password, and
//!   re-synchronises its role memberships and its privileges on tables, sequences, schemas and the
//!   database with the current role's, on every rotation. The previous role keeps working until
//!   the next rotation.
//!
//! Passwords reach the server only as SCRAM-SHA-256 verifiers, computed here, so the plaintext
//! never appears in server logs or statistics. Identifiers and literals are quoted by the server
//! (`format('%I', …)`, `format('%L', …)` over bind parameters), never spliced. TLS follows `ssl`
//! as AWS's templates do — `true`: verified TLS (CA bundle, host name) or fail; `false`: plain;
//! absent: verified TLS, falling back to plain with a warning — and every connection and
//! statement is bounded by the configured timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio_postgres::{Client, NoTls};

use crate::error::{DbFailure, Result, RotorError};
use crate::event::SecretId;
use crate::ports::{AWSCURRENT, AWSPREVIOUS};

use super::generic::generate_value;
use super::{invalid, json_object, Applied, CredentialKind, KindContext};

/// The PostgreSQL kind (`rotor:kind` = `postgres`).
pub struct Postgres;

/// PostgreSQL's identifier limit, in bytes (longer names are silently truncated by the server).
const MAX_IDENT: usize = 63;
const CLONE_SUFFIX: &str = "_clone";

/// How to use TLS, from the secret's `ssl` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// `ssl: true`: verified TLS or fail.
    Required,
    /// `ssl: false`.
    Disabled,
    /// No `ssl` field: verified TLS, else plain (with a warning).
    Preferred,
}

/// Connection facts of one credential. Not `Debug`: it holds the password.
struct Conn {
    host: String,
    port: u16,
    username: String,
    password: SecretString,
    dbname: String,
    tls: Tls,
    masterarn: Option<String>,
}

fn parse_map(
    ctx: &KindContext<'_>,
    which: &'static str,
    value: &SecretString,
) -> Result<Map<String, Value>> {
    json_object(value.expose_secret()).map_err(|r| invalid(ctx, which, r))
}

fn conn_of(ctx: &KindContext<'_>, which: &'static str, m: &Map<String, Value>) -> Result<Conn> {
    let text = |k: &str| -> Result<Option<String>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(ctx, which, format!("field {k:?} is not a string"))),
        }
    };
    if let Some(engine) = text("engine")? {
        if !matches!(
            engine.as_str(),
            "postgres" | "postgresql" | "aurora-postgresql"
        ) {
            return Err(invalid(
                ctx,
                which,
                format!("engine {engine:?} is not postgres"),
            ));
        }
    }
    let required = |k: &str| -> Result<String> {
        text(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(ctx, which, format!("field {k:?} is missing")))
    };
    let port = match m.get("port") {
        None | Some(Value::Null) => 5432,
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(_) => 0,
    };
    if port == 0 {
        return Err(invalid(ctx, which, "field \"port\" is not a port number"));
    }
    let tls = match m.get("ssl") {
        None | Some(Value::Null) => Tls::Preferred,
        Some(Value::Bool(true)) => Tls::Required,
        Some(Value::Bool(false)) => Tls::Disabled,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Tls::Required,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Tls::Disabled,
        Some(_) => return Err(invalid(ctx, which, "field \"ssl\" must be true or false")),
    };
    let username = required("username")?;
    if username.len() > MAX_IDENT {
        return Err(invalid(
            ctx,
            which,
            format!(
                "username is {} bytes; PostgreSQL identifiers are at most {MAX_IDENT}",
                username.len()
            ),
        ));
    }
    Ok(Conn {
        host: required("host")?,
        port,
        password: SecretString::from(required("password")?),
        dbname: text("dbname")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres".into()),
        tls,
        masterarn: text("masterarn")?.filter(|s| !s.is_empty()),
        username,
    })
}

fn parse(
    ctx: &KindContext<'_>,
    which: &'static str,
    value: &SecretString,
) -> Result<(Map<String, Value>, Conn)> {
    let m = parse_map(ctx, which, value)?;
    let c = conn_of(ctx, which, &m)?;
    Ok((m, c))
}

/// The other role of an alternating pair: `name` ↔ `name_clone`.
fn alternate(ctx: &KindContext<'_>, username: &str) -> Result<String> {
    if let Some(base) = username.strip_suffix(CLONE_SUFFIX) {
        if !base.is_empty() {
            return Ok(base.to_string());
        }
    }
    if username.len() + CLONE_SUFFIX.len() > MAX_IDENT {
        return Err(invalid(
            ctx,
            "current",
            format!(
                "username is {} bytes: its alternate `{CLONE_SUFFIX}` role would exceed PostgreSQL's {MAX_IDENT}-byte identifier limit",
                username.len()
            ),
        ));
    }
    Ok(format!("{username}{CLONE_SUFFIX}"))
}

fn db_err(kind: DbFailure, context: String, e: impl std::fmt::Display) -> RotorError {
    RotorError::Database {
        kind,
        context,
        message: e.to_string(),
    }
}

/// A driver error as text: the server's message and SQLSTATE (never the statement, which may
/// hold a password verifier), or the client-side cause chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

fn classify(e: &tokio_postgres::Error) -> DbFailure {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            DbFailure::AuthFailed
        }
        Some(_) => DbFailure::Statement,
        None => {
            let text = e.to_string().to_ascii_lowercase();
            if text.contains("tls") || text.contains("ssl") || text.contains("certificate") {
                DbFailure::Tls
            } else {
                DbFailure::Unreachable
            }
        }
    }
}

/// The rustls configuration that verifies the server against the CA bundle.
fn tls_config(ctx: &KindContext<'_>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let path = match &ctx.settings.ca_bundle {
        Some(p) => p.clone(),
        None => [
            "/etc/pki/tls/cert.pem",
            "/etc/ssl/certs/ca-certificates.crt",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            db_err(
                DbFailure::Tls,
                "TLS".into(),
                "no CA bundle: set ROTOR_DB_CA_BUNDLE",
            )
        })?,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| db_err(DbFailure::Tls, format!("CA bundle {}", path.display()), e))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| db_err(DbFailure::Tls, format!("CA bundle {}", path.display()), e))?;
        roots
            .add(cert)
            .map_err(|e| db_err(DbFailure::Tls, format!("CA bundle {}", path.display()), e))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| db_err(DbFailure::Tls, "TLS".into(), e))
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Logs in with `c` (TLS as its `ssl` asks), within the timeout.
async fn connect(ctx: &KindContext<'_>, c: &Conn) -> Result<Client> {
    let timeout = ctx.settings.db_timeout;
    let who = format!("{}@{}:{}/{}", c.username, c.host, c.port, c.dbname);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&c.host)
        .port(c.port)
        .user(&c.username)
        .password(c.password.expose_secret())
        .dbname(&c.dbname)
        .application_name("rotor")
        .connect_timeout(timeout)
        .options(format!("-c statement_timeout={}", timeout.as_millis()));
    let bounded = |e: String| db_err(DbFailure::Unreachable, format!("login as {who}"), e);
    if c.tls == Tls::Disabled {
        return connect_plain(cfg, timeout, &who).await;
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ctx)?);
    let mut tls_cfg = cfg.clone();
    tls_cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let attempt = tokio::time::timeout(timeout, tls_cfg.connect(tls)).await;
    let err = match attempt {
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return Ok(client);
        }
        Ok(Err(e)) => e,
        Err(_) => return Err(bounded(format!("timed out after {}s", timeout.as_secs()))),
    };
    let kind = classify(&err);
    if kind == DbFailure::AuthFailed || c.tls == Tls::Required {
        return Err(db_err(
            kind,
            format!("login as {who} over TLS"),
            describe(&err),
        ));
    }
    tracing::warn!(host = %c.host, error = %describe(&err), "TLS failed and the secret does not set ssl: falling back to plain text");
    connect_plain(cfg, timeout, &who).await
}

async fn connect_plain(
    mut cfg: tokio_postgres::Config,
    timeout: Duration,
    who: &str,
) -> Result<Client> {
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| {
            db_err(
                DbFailure::Unreachable,
                format!("login as {who}"),
                format!("timed out after {}s", timeout.as_secs()),
            )
        })?
        .map_err(|e| db_err(classify(&e), format!("login as {who}"), describe(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn bounded<T>(
    ctx: &KindContext<'_>,
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    let t = ctx.settings.db_timeout;
    tokio::time::timeout(t + Duration::from_secs(1), f)
        .await
        .map_err(|_| {
            db_err(
                DbFailure::Unreachable,
                what.to_string(),
                format!("timed out after {}s", t.as_secs()),
            )
        })?
        .map_err(|e| db_err(classify(&e), what.to_string(), describe(&e)))
}

/// Runs a statement the server builds with `format()` from bind parameters.
async fn exec_formatted(
    ctx: &KindContext<'_>,
    client: &Client,
    what: &str,
    template: &str,
    args: &[&str],
) -> Result<()> {
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("${i}::text")).collect();
    let sql = format!("SELECT format('{template}', {})", placeholders.join(", "));
    let row = bounded(ctx, what, client.query_one(&sql, &params)).await?;
    let statement: String = row.get(0);
    bounded(ctx, what, client.batch_execute(&statement)).await
}

fn verifier(password: &SecretString) -> String {
    postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
}

async fn set_password(
    ctx: &KindContext<'_>,
    client: &Client,
    role: &str,
    password: &SecretString,
    create: bool,
) -> Result<()> {
    let template = if create {
        "CREATE ROLE %I WITH LOGIN PASSWORD %L"
    } else {
        // A role may change its own password but not its attributes: LOGIN only on creation.
        "ALTER ROLE %I WITH PASSWORD %L"
    };
    let v = verifier(password);
    exec_formatted(
        ctx,
        client,
        &format!("set the password of role {role}"),
        template,
        &[role, &v],
    )
    .await
}

async fn role_exists(ctx: &KindContext<'_>, client: &Client, role: &str) -> Result<bool> {
    let rows = bounded(
        ctx,
        "look up role",
        client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]),
    )
    .await?;
    Ok(!rows.is_empty())
}

/// What a role holds that the other of the pair must mirror: memberships and privileges.
async fn grants_of(
    ctx: &KindContext<'_>,
    client: &Client,
    role: &str,
) -> Result<std::collections::BTreeSet<(String, String, String)>> {
    // (kind, object, privilege). Objects are rendered by the server with quote_ident.
    let sql = r#"
        WITH r AS (SELECT oid FROM pg_roles WHERE rolname = $1)
        SELECT 'member', quote_ident(g.rolname), ''
          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid, r WHERE m.member = r.oid
        UNION ALL
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
               quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.privilege_type
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
               aclexplode(c.relacl) a, r
         WHERE a.grantee = r.oid AND c.relkind IN ('r','v','m','S','f','p')
        UNION ALL
        SELECT 'SCHEMA', quote_ident(n.nspname), a.privilege_type
          FROM pg_namespace n, aclexplode(n.nspacl) a, r WHERE a.grantee = r.oid
        UNION ALL
        SELECT 'DATABASE', quote_ident(d.datname), a.privilege_type
          FROM pg_database d, aclexplode(d.datacl) a, r
         WHERE a.grantee = r.oid AND d.datname = current_database()"#;
    let rows = bounded(
        ctx,
        &format!("read the grants of role {role}"),
        client.query(sql, &[&role]),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Privilege keywords that may appear in a GRANT (anything else is refused, not spliced).
const PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "USAGE",
    "CREATE",
    "CONNECT",
    "TEMPORARY",
    "MAINTAIN",
];

/// Makes `to`'s memberships and privileges equal to `from`'s (except membership in each other).
async fn sync_grants(
    ctx: &KindContext<'_>,
    client: &Client,
    from: &str,
    to: &str,
) -> Result<usize> {
    // Concurrent GRANTs on one object fail in PostgreSQL ("tuple concurrently updated"): Rotor's
    // grant changes on a server are serialised by a transaction-scoped advisory lock.
    bounded(
        ctx,
        "lock grant changes",
        client.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7262010)"),
    )
    .await?;
    let changes = sync_grants_locked(ctx, client, from, to).await?;
    bounded(ctx, "commit grant changes", client.batch_execute("COMMIT")).await?;
    Ok(changes)
}

async fn sync_grants_locked(
    ctx: &KindContext<'_>,
    client: &Client,
    from: &str,
    to: &str,
) -> Result<usize> {
    let want = grants_of(ctx, client, from).await?;
    let have = grants_of(ctx, client, to).await?;
    let quoted_pair: Vec<String> = {
        let row = bounded(
            ctx,
            "quote role names",
            client.query_one("SELECT quote_ident($1), quote_ident($2)", &[&from, &to]),
        )
        .await?;
        vec![row.get(0), row.get(1)]
    };
    let mut changes = 0;
    for (grant, (kind, object, privilege)) in want
        .difference(&have)
        .map(|g| (true, g))
        .chain(have.difference(&want).map(|g| (false, g)))
    {
        if kind == "member" && quoted_pair.contains(object) {
            continue;
        }
        // Every identifier here was quoted by the server (quote_ident) and `privilege` checked
        // against a fixed list of keywords: nothing from a secret is spliced unquoted.
        let role = &quoted_pair[1];
        let statement = match (grant, kind.as_str()) {
            (true, "member") => format!("GRANT {object} TO {role}"),
            (false, "member") => format!("REVOKE {object} FROM {role}"),
            (g, k) => {
                if !PRIVILEGES.contains(&privilege.as_str())
                    || !["TABLE", "SEQUENCE", "SCHEMA", "DATABASE"].contains(&k)
                {
                    continue;
                }
                if g {
                    format!("GRANT {privilege} ON {k} {object} TO {role}")
                } else {
                    format!("REVOKE {privilege} ON {k} {object} FROM {role}")
                }
            }
        };
        bounded(
            ctx,
            &format!("synchronise the grants of role {to}"),
            client.batch_execute(&statement),
        )
        .await?;
        changes += 1;
    }
    Ok(changes)
}

/// The master credential of an alternating-users secret, from `masterarn`'s AWSCURRENT.
async fn master(ctx: &KindContext<'_>, arn: &str, user: &Conn) -> Result<Conn> {
    let id = SecretId::parse(arn)?;
    let value = ctx
        .secrets
        .get_value(id.as_str(), None, AWSCURRENT)
        .await?
        .ok_or_else(|| RotorError::NoCurrentValue(arn.to_string()))?;
    let m = parse_map(ctx, "master", &value)?;
    let mut c = conn_of(ctx, "master", &m)?;
    if !m.contains_key("ssl") {
        c.tls = user.tls;
    }
    Ok(c)
}

#[async_trait]
impl CredentialKind for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn has_target(&self) -> bool {
        true
    }

    async fn generate(
        &self,
        ctx: &KindContext<'_>,
        current: &SecretString,
    ) -> Result<SecretString> {
        let (mut m, cur) = parse(ctx, "current", current)?;
        if cur.masterarn.is_some() {
            m.insert(
                "username".into(),
                Value::String(alternate(ctx, &cur.username)?),
            );
        }
        m.insert(
            "password".into(),
            Value::String(generate_value(ctx.policy)?),
        );
        serde_json::to_string(&m)
            .map(SecretString::from)
            .map_err(|_| invalid(ctx, "pending", "could not be serialised"))
    }

    async fn apply(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        current: &SecretString,
    ) -> Result<Applied> {
        let (_, pen) = parse(ctx, "pending", pending)?;
        let (_, cur) = parse(ctx, "current", current)?;
        let already = connect(ctx, &pen).await.is_ok();
        match &cur.masterarn {
            None => {
                if already {
                    return Ok(Applied::AlreadyAccepted);
                }
                let client = match connect(ctx, &cur).await {
                    Ok(c) => c,
                    Err(first) => {
                        let previous = ctx
                            .secrets
                            .get_value(&ctx.meta.arn, None, AWSPREVIOUS)
                            .await?;
                        let prev = previous
                            .as_ref()
                            .and_then(|p| parse(ctx, "previous", p).ok())
                            .map(|(_, c)| c);
                        match prev {
                            Some(p) if p.username == cur.username => {
                                connect(ctx, &p).await.map_err(|_| first)?
                            }
                            _ => return Err(first),
                        }
                    }
                };
                set_password(ctx, &client, &pen.username, &pen.password, false).await?;
                Ok(Applied::Changed)
            }
            Some(arn) => {
                let m = master(ctx, arn, &cur).await?;
                let client = connect(ctx, &m).await?;
                let exists = role_exists(ctx, &client, &pen.username).await?;
                if !(already && exists) {
                    set_password(ctx, &client, &pen.username, &pen.password, !exists).await?;
                }
                let changes = sync_grants(ctx, &client, &cur.username, &pen.username).await?;
                tracing::info!(secret_arn = %ctx.meta.arn, role = %pen.username, grant_changes = changes, "synchronised the alternate role");
                Ok(if already && changes == 0 {
                    Applied::AlreadyAccepted
                } else {
                    Applied::Changed
                })
            }
        }
    }

    async fn verify(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        _current: &SecretString,
    ) -> Result<()> {
        let (_, pen) = parse(ctx, "pending", pending)?;
        let client = connect(ctx, &pen)
            .await
            .map_err(|e| RotorError::TestFailed {
                secret: ctx.meta.arn.clone(),
                reason: format!(
                    "the pending credential does not log in ({}: {e})",
                    e.error_type()
                ),
            })?;
        let row = bounded(
            ctx,
            "test query",
            client.query_one("SELECT current_user::text", &[]),
        )
        .await?;
        let user: String = row.get(0);
        if user != pen.username {
            return Err(RotorError::TestFailed {
                secret: ctx.meta.arn.clone(),
                reason: format!("logged in as {user}, expected {}", pen.username),
            });
        }
        Ok(())
    }

    async fn revert(
        &self,
        ctx: &KindContext<'_>,
        pending: Option<&SecretString>,
        current: &SecretString,
    ) -> Result<()> {
        let Some(pending) = pending else {
            return Ok(());
        };
        let (_, pen) = parse(ctx, "pending", pending)?;
        let (_, cur) = parse(ctx, "current", current)?;
        match &cur.masterarn {
            None => {
                // Make sure the role accepts the current password again. If it already does,
                // setSecret never changed it; if only the pending one logs in, set it back; if
                // neither does (unreachable, TLS, dropped role), nothing here can be undone.
                if connect(ctx, &cur).await.is_ok() {
                    return Ok(());
                }
                match connect(ctx, &pen).await {
                    Ok(client) => {
                        set_password(ctx, &client, &cur.username, &cur.password, false).await
                    }
                    Err(e) => {
                        tracing::warn!(secret_arn = %ctx.meta.arn, error_type = e.error_type(), error = %e, "rollback: neither the current nor the pending credential logs in; nothing to revert");
                        Ok(())
                    }
                }
            }
            Some(arn) => {
                // AWSCURRENT's role is never touched by setSecret. The pending role was
                // AWSPREVIOUS's: give it back that password, so anything still using the
                // previous credential keeps working.
                let previous = ctx
                    .secrets
                    .get_value(&ctx.meta.arn, None, AWSPREVIOUS)
                    .await?;
                let Some((_, prev)) = previous
                    .as_ref()
                    .map(|p| parse(ctx, "previous", p))
                    .transpose()?
                else {
                    return Ok(());
                };
                if prev.username != pen.username {
                    return Ok(());
                }
                let restore = async {
                    let m = master(ctx, arn, &cur).await?;
                    let client = connect(ctx, &m).await?;
                    if role_exists(ctx, &client, &prev.username).await? {
                        set_password(ctx, &client, &prev.username, &prev.password, false).await?;
                    }
                    Ok::<(), RotorError>(())
                };
                if let Err(e) = restore.await {
                    tracing::warn!(secret_arn = %ctx.meta.arn, error_type = e.error_type(), error = %e, "rollback: could not restore the previous role's password");
                }
                Ok(())
            }
        }
    }
}
