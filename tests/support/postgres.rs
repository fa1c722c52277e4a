//! A real PostgreSQL server (TLS + SCRAM passwords) for the integration tests: the one named by
//! `ROTOR_TEST_PG_*` (CI and `scripts/test` start it with `start_postgres` from `scripts/lib.sh`),
//! or one started here, once per test binary, by that same shell function.
//!
//! Lifetime of a server started here: `scripts/lib.sh` runs inside a small bash watchdog whose
//! stdin is a pipe held by this process. When the test binary exits (normally, by panic, or
//! killed), the kernel closes the pipe, the watchdog's `read` sees EOF and it runs
//! `stop_postgres` (`pg_ctl stop -m fast`, temp dir removed). No server outlives the binary by
//! more than the ~0.2 s a fast shutdown takes.
//!
//! This module deliberately uses no Rust database crate: only process management, the connection
//! facts, and the system `psql` for fixtures and independent checks.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to reach the test server as its superuser.
#[derive(Debug, Clone)]
pub struct Pg {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// The test CA's certificate (PEM) that signed the server's certificate (SANs `localhost`,
    /// `127.0.0.1`): verify-full works against it with either host name.
    pub ca_pem_path: PathBuf,
}

static PG: OnceLock<Result<Pg, String>> = OnceLock::new();
/// The watchdog of a server started by this process. Never dropped: its stdin pipe closes when
/// the process exits, and that is what stops the server.
static SERVER: OnceLock<Mutex<Child>> = OnceLock::new();

/// Time allowed to start a server, including `apt-get install postgresql` on a fresh machine.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// The PostgreSQL server for this test binary: from `ROTOR_TEST_PG_*` when
/// `ROTOR_TEST_PG_PORT` is set, else one started now (and stopped when the binary exits).
pub fn pg() -> &'static Pg {
    match PG.get_or_init(|| match Pg::from_env() {
        Some(r) => r,
        None => start_server(),
    }) {
        Ok(pg) => pg,
        Err(e) => panic!("no PostgreSQL test server: {e}"),
    }
}

impl Pg {
    /// `None` when `ROTOR_TEST_PG_PORT` is unset or empty.
    fn from_env() -> Option<Result<Pg, String>> {
        let port = std::env::var("ROTOR_TEST_PG_PORT")
            .ok()
            .filter(|p| !p.is_empty())?;
        Some(Self::from_vars(
            |k| std::env::var(k).ok().filter(|v| !v.is_empty()),
            &port,
        ))
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>, port: &str) -> Result<Pg, String> {
        let port = port
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("ROTOR_TEST_PG_PORT is not a port number: {port:?}"))?;
        let admin_password = get("ROTOR_TEST_PG_ADMIN_PASSWORD")
            .ok_or("ROTOR_TEST_PG_PORT is set but ROTOR_TEST_PG_ADMIN_PASSWORD is not")?;
        let ca = get("ROTOR_TEST_PG_CA")
            .ok_or("ROTOR_TEST_PG_PORT is set but ROTOR_TEST_PG_CA is not")?;
        Ok(Pg {
            host: get("ROTOR_TEST_PG_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port,
            admin_user: get("ROTOR_TEST_PG_ADMIN_USER").unwrap_or_else(|| "postgres".into()),
            admin_password,
            ca_pem_path: PathBuf::from(ca),
        })
    }

    /// Runs SQL through the system `psql` as the admin user over TCP (TLS verified against the
    /// test CA), database `postgres`, unaligned tuples only (`-X -q -t -A`, `ON_ERROR_STOP=1`).
    /// Returns stdout without its trailing newline (rows on lines, columns split by `|`); panics
    /// with psql's stderr when it fails.
    pub fn psql(&self, sql: &str) -> String {
        match self.try_psql_as(&self.admin_user, &self.admin_password, "postgres", sql) {
            Ok(out) => out,
            Err(e) => panic!("psql as {} failed: {e}\nSQL: {sql}", self.admin_user),
        }
    }

    /// Like [`Pg::psql`] but as any user, password and database, returning psql's stderr as the
    /// error (e.g. `password authentication failed`), to check a credential independently of
    /// the code under test.
    pub fn try_psql_as(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
        sql: &str,
    ) -> Result<String, String> {
        let sslmode = if self.ca_pem_path.is_file() {
            "verify-full"
        } else {
            "prefer"
        };
        let mut conninfo = format!(
            "host={} port={} user={} dbname={} sslmode={sslmode} connect_timeout=10 application_name=rotor-tests",
            conn_value(&self.host),
            self.port,
            conn_value(user),
            conn_value(dbname),
        );
        if sslmode == "verify-full" {
            conninfo.push_str(" sslrootcert=");
            conninfo.push_str(&conn_value(&self.ca_pem_path.to_string_lossy()));
        }
        let out = Command::new(psql_binary())
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-t",
                "-A",
                "-d",
                &conninfo,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env_remove("PGOPTIONS")
            .env_remove("PGSSLCERT")
            .env_remove("PGSSLKEY")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run psql ({}): {e}", psql_binary().display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_string())
        } else {
            Err(format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ))
        }
    }
}

/// A fresh role (or database) name: lowercase `[a-z0-9_]`, at most 40 characters, starting with
/// a letter, unique per call (a per-process counter plus 50 random bits, so also across test
/// binaries sharing one server).
pub fn unique_role(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u64(n);
    let suffix = format!("_{}{}", base36(h.finish(), 10), base36(n, 0));
    let mut p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 'r');
    }
    p.truncate(40 - suffix.len());
    p + &suffix
}

/// `n` in base 36, left-padded with zeros to `width` (or truncated to its last `width` digits).
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while out.len() < width {
        out.push(b'0');
    }
    if width > 0 {
        out.truncate(width);
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A libpq connection-string value, quoted.
fn conn_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The newest `/usr/lib/postgresql/N/bin/psql`, else `psql` from PATH.
fn psql_binary() -> PathBuf {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let p = e.path().join("bin/psql");
                p.is_file().then_some((v, p))
            })
            .collect();
        found.sort();
        found
            .pop()
            .map(|(_, p)| p)
            .unwrap_or_else(|| PathBuf::from("psql"))
    })
    .clone()
}

/// Starts a server with `ensure_postgres` + `start_postgres` from `scripts/lib.sh` inside a bash
/// watchdog that stops it (`stop_postgres`) at EOF on its stdin or on INT/TERM/HUP.
fn start_server() -> Result<Pg, String> {
    let started = Instant::now();
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let log =
        std::env::temp_dir().join(format!("rotor-test-pg-{}-{nanos}.log", std::process::id()));
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let script = r#"
set -euo pipefail
. "$0"
trap stop_postgres EXIT
trap 'exit 0' INT TERM HUP
ensure_postgres
start_postgres
env | grep '^ROTOR_TEST_PG_'
echo ROTOR_TEST_PG_READY
exec >/dev/null
read -r _ || true
"#;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(&lib)
        .env_remove("PG_DIR")
        .env_remove("PG_BIN")
        .env_remove("ROTOR_TEST_PG_PORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| format!("running bash: {e}"))?;

    // Read the exported variables on a thread, so a hung start can time out.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line == "ROTOR_TEST_PG_READY";
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let deadline = started + START_TIMEOUT;
    let mut vars = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ROTOR_TEST_PG_READY" => break Ok(()),
            Ok(line) => {
                if let Some((k, v)) = line.split_once('=') {
                    vars.push((k.to_string(), v.to_string()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("not ready after {}s", START_TIMEOUT.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the start script exited".to_string())
            }
        }
    };
    let result = ready.and_then(|()| {
        let get = |k: &str| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        let port = get("ROTOR_TEST_PG_PORT").ok_or("the start script exported no port")?;
        Pg::from_vars(get, &port)
    });
    match result {
        Ok(pg) => {
            let _ = std::fs::remove_file(&log); // bash keeps writing to the unlinked file
            eprintln!(
                "[rotor tests] PostgreSQL started on {}:{} in {:.2}s",
                pg.host,
                pg.port,
                started.elapsed().as_secs_f64()
            );
            let _ = SERVER.set(Mutex::new(child));
            Ok(pg)
        }
        Err(e) => {
            // EOF and TERM: the watchdog's trap stops whatever it started; SIGKILL only if it
            // has not exited within 30 s.
            drop(child.stdin.take());
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let stop_deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < stop_deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "starting PostgreSQL with {} failed: {e}\n{}",
                lib.display(),
                tail.join("\n")
            ))
        }
    }
}

/// Logs in as an application would, with a secret value in AWS's format (a new connection and
/// `select 1`); `true` when it worked.
pub async fn app_login(v: &serde_json::Value) -> bool {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(v["host"].as_str().unwrap_or_default())
        .port(v["port"].as_u64().unwrap_or(5432) as u16)
        .user(v["username"].as_str().unwrap_or_default())
        .password(v["password"].as_str().unwrap_or_default())
        .dbname("postgres")
        .connect_timeout(std::time::Duration::from_secs(5));
    match cfg.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            let h = tokio::spawn(conn);
            let ok = client.simple_query("select 1").await.is_ok();
            drop(client);
            let _ = h.await;
            ok
        }
        Err(_) => false,
    }
}
