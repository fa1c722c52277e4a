//! The embedded local stack: moto's server (the AWS APIs) on a free loopback port, started on
//! demand and stopped with this process. The server is wrapped in a small shell watchdog that
//! reads its stdin, so it also stops when the process that started it dies without cleaning up.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, RotorError};

/// How moto's server handles requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moto {
    /// As `python -m moto.server` does: a thread per request (the demo, the benchmarks).
    Threaded,
    /// One request at a time. moto does not lock its models, so concurrent conditional writes
    /// can both succeed; serialised, they are atomic as in DynamoDB (the tests).
    Serial,
}

/// moto's own server, with requests handled one at a time (`python -c` program; argv: host, port).
pub const SERIAL_MOTO: &str = "import sys; from werkzeug.serving import run_simple; \
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app; \
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)";

/// A running local stack: either one found at `AWS_ENDPOINT_URL` or a moto server started here.
pub struct LocalStack {
    endpoint: String,
    process: Option<Child>,
    log: Option<PathBuf>,
}

impl LocalStack {
    /// Uses `preferred` (e.g. `AWS_ENDPOINT_URL`) when it answers; otherwise starts moto's server.
    pub fn ensure(preferred: Option<&str>) -> Result<LocalStack> {
        if let Some(url) = preferred.filter(|u| answers(u)) {
            return Ok(LocalStack {
                endpoint: url.trim_end_matches('/').to_string(),
                process: None,
                log: None,
            });
        }
        Self::start()
    }

    /// Starts moto's server (`python3 -m moto.server`, or `$ROTOR_PYTHON`) on a free loopback port
    /// and waits until it accepts connections.
    pub fn start() -> Result<LocalStack> {
        Self::start_with(Moto::Threaded)
    }

    /// Starts moto's server in the given mode.
    pub fn start_with(mode: Moto) -> Result<LocalStack> {
        let port = free_port()?;
        let python = std::env::var("ROTOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let log = std::env::temp_dir().join(format!("rotor-moto-{port}.log"));
        let launch = match mode {
            Moto::Threaded => r#""$0" -m moto.server -H 127.0.0.1 -p "$1" >"$2" 2>&1 &"#,
            Moto::Serial => r#""$0" -c "$SERIAL_MOTO" 127.0.0.1 "$1" >"$2" 2>&1 &"#,
        };
        let script = format!(
            r#"
{launch}
m=$!
trap 'kill $m 2>/dev/null' EXIT INT TERM
read -r _ || true
"#
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, &python, &port.to_string()])
            .env("SERIAL_MOTO", SERIAL_MOTO)
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RotorError::io("starting moto's server with sh", e))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = child.try_wait().ok().flatten().is_some() || moto_died(&log);
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let mut tail = String::new();
                if let Ok(mut f) = std::fs::File::open(&log) {
                    let _ = f.read_to_string(&mut tail);
                }
                let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(RotorError::Config(format!(
                    "moto's server did not start on port {port} (install it with `pip install 'moto[server]'`): {tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The log only matters while starting; unlink it now (the server keeps its open file),
        // so none is left behind even when this value is never dropped (a static in tests).
        let _ = std::fs::remove_file(&log);
        Ok(LocalStack {
            endpoint,
            process: Some(child),
            log: None,
        })
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether this process started the server (and will stop it).
    pub fn started_here(&self) -> bool {
        self.process.is_some()
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            drop(child.stdin.take()); // EOF: the watchdog kills the server and exits
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(log) = self.log.take() {
            let _ = std::fs::remove_file(log);
        }
    }
}

fn moto_died(log: &PathBuf) -> bool {
    std::fs::read_to_string(log)
        .map(|s| s.contains("No module named") || s.contains("Traceback"))
        .unwrap_or(false)
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| RotorError::io("finding a free loopback port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| RotorError::io("finding a free loopback port", e))
}

/// Whether something accepts TCP connections at an `http://host:port` URL.
pub fn answers(url: &str) -> bool {
    let rest = url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let hostport = rest.split('/').next().unwrap_or(rest);
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else if url.starts_with("https://") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}
