//! A loopback adapter for the Lambda Invoke API in front of `cargo lambda watch`, correcting
//! the one way its emulator answers differently from Lambda: cargo-lambda 1.9 answers a
//! function error with HTTP 500 and the `{"errorType", "errorMessage"}` body, where Lambda
//! answers 200 with `X-Amz-Function-Error: Unhandled` and the same body. (With a 500 the AWS
//! CLI retries the call — invoking the function again each time — and never writes the
//! output file.) Everything else, success bodies included, passes through unchanged.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running adapter on 127.0.0.1; dropping it stops it.
pub struct InvokeProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    translated: Arc<AtomicU64>,
}

impl InvokeProxy {
    /// Serves on a free loopback port, forwarding to `upstream` ("127.0.0.1:PORT").
    pub async fn start(upstream: String) -> InvokeProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("invoke_proxy: bind");
        let addr = listener.local_addr().expect("invoke_proxy: local_addr");
        let translated = Arc::new(AtomicU64::new(0));
        let counter = translated.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = upstream.clone();
                let counter = counter.clone();
                let svc = hyper::service::service_fn(move |req| {
                    forward(upstream.clone(), counter.clone(), req)
                });
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        InvokeProxy {
            addr,
            task,
            translated,
        }
    }

    /// "http://127.0.0.1:PORT", the Lambda endpoint to give the AWS CLI.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many function errors were turned from a 500 into Lambda's 200 + header.
    pub fn translated(&self) -> u64 {
        self.translated.load(Ordering::SeqCst)
    }
}

impl Drop for InvokeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::from(body)))
        .expect("invoke_proxy: response")
}

async fn forward(
    upstream: String,
    translated: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let keep: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k == "content-type" || k.starts_with("x-amz-")
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(respond(400, &[], b"bad request body".to_vec())),
    };
    let (status, content_type, payload) = match send(&upstream, &method, &path, &keep, &body).await
    {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("invoke_proxy: upstream {upstream}: {e}");
            return Ok(respond(502, &[], msg.into_bytes()));
        }
    };
    let is_invoke = path.starts_with("/2015-03-31/functions/") && path.contains("/invocations");
    let function_error = status == 500
        && is_invoke
        && serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .is_some_and(|v| v.get("errorType").is_some());
    let ct = content_type.unwrap_or_else(|| "application/json".into());
    if function_error {
        translated.fetch_add(1, Ordering::SeqCst);
        return Ok(respond(
            200,
            &[
                ("content-type", ct.as_str()),
                ("x-amz-function-error", "Unhandled"),
                ("x-amz-executed-version", "$LATEST"),
            ],
            payload,
        ));
    }
    Ok(respond(status, &[("content-type", ct.as_str())], payload))
}

/// One HTTP/1.0 request (connection closed by the server after the response): status,
/// content type, body.
pub async fn send(
    upstream: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, Option<String>, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(upstream).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {upstream}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let payload = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let content_type = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(std::io::Error::other("chunked responses are not handled"));
    }
    Ok((status, content_type, payload))
}
