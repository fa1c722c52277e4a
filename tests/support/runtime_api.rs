//! Loopback emulator of the AWS Lambda Runtime API (`/2018-06-01/runtime/...`) for running
//! real function binaries as Lambda does. Owns the HTTP server (`RuntimeApi`: long-poll
//! `GET /invocation/next`, `POST /invocation/{id}/response|error`, `POST /init/error`), the
//! per-invocation bookkeeping (`invoke`), and the child process with its collected
//! stdout/stderr (`FunctionProcess`). No globals: each instance is independent.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Method, Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

const PREFIX: &str = "/2018-06-01/runtime";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);
const ARN_PREFIX: &str = "arn:aws:lambda:us-east-1:123456789012:function:";
const TRACE_ID: &str = "Root=1-00000000-000000000000000000000000;Sampled=0";
const LOG_STREAM: &str = "2024/01/01/[$LATEST]0123456789abcdef";
const OK: &str = r#"{"status":"OK"}"#;

/// Outcome of one invocation as reported by the function.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Ok(serde_json::Value),
    Err {
        error_type: String,
        error_message: String,
    },
}

#[derive(Default)]
struct Status {
    first_next: Option<Instant>,
    init_error: Option<String>,
}

struct State {
    queue: mpsc::UnboundedSender<(String, serde_json::Value)>,
    counter: AtomicU64,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, serde_json::Value)>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Invocation>>>,
    status: watch::Sender<Status>,
    function_name: Mutex<String>,
}

/// A running Runtime API server on 127.0.0.1. Dropping it stops the server.
pub struct RuntimeApi {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Binds 127.0.0.1:0 and serves in a background tokio task.
    pub async fn start() -> RuntimeApi {
        let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let listener = bound.expect("runtime_api: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("runtime_api: local_addr");
        let (queue, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue,
            counter: AtomicU64::new(0),
            events: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            status: watch::Sender::new(Status::default()),
            function_name: Mutex::new("function".into()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this JoinSet, so aborting the server aborts them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let st = st.clone();
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // keep-alive is on by default; no timer, so idle connections never time out.
                    let conn = hyper::server::conn::http1::Builder::new();
                    let _ = conn.serve_connection(io, svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        RuntimeApi { addr, state, task }
    }

    /// "127.0.0.1:PORT", the value for the AWS_LAMBDA_RUNTIME_API env var.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Waits (up to `timeout`) for the function's first `GET /next`; returns when it arrived,
    /// or None on timeout or if the function reported an init error.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<Instant> {
        let mut rx = self.state.status.subscribe();
        let done = |s: &Status| s.first_next.is_some() || s.init_error.is_some();
        let waited = tokio::time::timeout(timeout, rx.wait_for(done)).await;
        let s = waited.ok()?.ok()?;
        s.init_error.is_none().then_some(s.first_next).flatten()
    }

    /// Enqueues one event and waits (up to 60 s) for the function's response or error.
    pub async fn invoke(&self, event: serde_json::Value) -> Invocation {
        let n = self.state.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{n:012x}", self.addr.port());
        let (tx, rx) = oneshot::channel();
        self.state.pending.lock().unwrap().insert(id.clone(), tx);
        let sent = self.state.queue.send((id.clone(), event));
        sent.expect("runtime_api: event queue closed");
        match tokio::time::timeout(INVOKE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            _ => panic!(
                "runtime_api: no response/error for invocation {id} within {INVOKE_TIMEOUT:?} \
                 (function never polled, crashed, or hung; init error: {:?})",
                self.init_error()
            ),
        }
    }

    /// Init error body, if the function reported one.
    pub fn init_error(&self) -> Option<String> {
        self.state.status.borrow().init_error.clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, headers: &[(&str, String)], body: String) -> Reply {
    let base = Response::builder().status(status);
    let r = headers.iter().fold(base, |r, (k, v)| r.header(*k, v));
    r.body(Full::new(body.into()))
        .expect("runtime_api: build response")
}

fn fail(status: u16, error_type: &str) -> Result<Reply, Infallible> {
    let body = format!(r#"{{"errorType":"{error_type}"}}"#);
    Ok(reply(status, &[], body))
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let arrived = Instant::now();
    let path = req.uri().path().to_owned();
    let route = path.strip_prefix(PREFIX).unwrap_or("");
    if req.method() == Method::GET && route == "/invocation/next" {
        let first = |s: &mut Status| s.first_next.get_or_insert(arrived) == &arrived;
        st.status.send_if_modified(first);
        // Long poll: the lock serializes concurrent pollers; recv() is cancellation-safe.
        let next = st.events.lock().await.recv().await;
        let (id, event) = next.expect("runtime_api: queue closed"); // State owns the sender
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + INVOKE_TIMEOUT;
        let arn = format!("{ARN_PREFIX}{}", st.function_name.lock().unwrap());
        let deadline_ms = deadline.as_millis().to_string();
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline_ms),
            ("lambda-runtime-invoked-function-arn", arn),
            ("lambda-runtime-trace-id", TRACE_ID.to_owned()),
        ];
        return Ok(reply(200, &headers, event.to_string()));
    }
    if req.method() != Method::POST {
        return fail(405, "MethodNotAllowed");
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return fail(400, "InvalidBody");
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if route == "/init/error" {
        st.status.send_modify(|s| s.init_error = Some(text));
        return Ok(reply(202, &[], OK.into()));
    }
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::String(text.clone()));
    let invocation = route.strip_prefix("/invocation/").unwrap_or("");
    let (id, result) = match invocation.rsplit_once('/') {
        Some((id, "response")) => (id, Invocation::Ok(json)),
        Some((id, "error")) => {
            // lambda_runtime's Diagnostic: {"errorType": .., "errorMessage": ..}
            let field = |k: &str| json[k].as_str().map(str::to_owned);
            let error_type = field("errorType").unwrap_or_default();
            let error_message = field("errorMessage").unwrap_or(text);
            let err = Invocation::Err {
                error_type,
                error_message,
            };
            (id, err)
        }
        _ => return fail(404, "NotFound"),
    };
    let Some(tx) = st.pending.lock().unwrap().remove(id) else {
        return fail(400, "InvalidRequestID");
    };
    let _ = tx.send(result);
    Ok(reply(202, &[], OK.into()))
}

/// A function binary running against a `RuntimeApi`, with its output collected.
pub struct FunctionProcess {
    child: tokio::process::Child,
    logs: Arc<Mutex<String>>,
}

impl FunctionProcess {
    /// Spawns `binary` with the Lambda environment (plus `extra_env`) pointed at `api`.
    pub fn spawn(
        binary: &std::path::Path,
        name: &str,
        api: &RuntimeApi,
        extra_env: &[(&str, String)],
    ) -> FunctionProcess {
        *api.state.function_name.lock().unwrap() = name.to_owned();
        let mut cmd = tokio::process::Command::new(binary);
        cmd.env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", LOG_STREAM)
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("runtime_api: failed to spawn {}: {e}", binary.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout piped"), logs.clone());
        collect(child.stderr.take().expect("stderr piped"), logs.clone());
        FunctionProcess { child, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("runtime_api: child already reaped")
    }

    /// Everything the process wrote to stdout and stderr so far (line-interleaved).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Polls `logs()` until it contains `needle` (output is collected asynchronously, so a
    /// line written just before a response may land slightly after `invoke` returns).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let poll = async {
            while !self.logs().contains(needle) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(timeout, poll).await.is_ok()
    }

    /// VmHWM (peak RSS) in kB from /proc/PID/status while the process is alive.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, logs: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            logs.lock().unwrap().push_str(&text);
            line.clear();
        }
    });
}
