//! `wash call`: one HTTP request to a component's `wasi:http/incoming-handler` over the data
//! plane, the same call the http-server provider makes, with source `wash`. The one command
//! that uses the data plane (`trellis_lattice::rpc::Router`) rather than the control client.
//!
//! Text output streams the response body to stdout as it arrives (the status line and headers
//! go to stderr with `-v`); JSON output collects it. Any HTTP status is a successful call; only
//! a failed call (no replica, deadline, trap, …) is an error, and its message names lattice,
//! source, target, interface, function and link.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tracing_subscriber::Layer as _;
use trellis_lattice::rpc::{self, Body, CallInfo, Invocation, Router, RpcError, RpcErrorKind};
use trellis_lattice::telemetry::{self, TelemetryConfig};

use crate::cli::{CallArgs, Global};
use crate::lattice;
use crate::output::{Format, Report};

/// The source id calls from `wash` carry.
const SOURCE: &str = "wash";
/// How much of a `--data-file` is read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// `wash call`.
pub async fn run(g: &Global, args: &CallArgs) -> anyhow::Result<Report> {
    trellis_lattice::validate_id("component id", &args.component_id)?;
    let has_body = args.data.is_some() || args.data_file.is_some();
    // As curl: a body makes the default method POST.
    let method = args.method.clone().unwrap_or_else(|| if has_body { "POST" } else { "GET" }.into());
    let uri = if args.path.starts_with('/') { args.path.clone() } else { format!("/{}", args.path) };
    let mut headers: Vec<(String, serde_bytes::ByteBuf)> =
        args.headers.iter().map(|(k, v)| (k.clone(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec()))).collect();
    let has = |headers: &[(String, serde_bytes::ByteBuf)], name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if let Some(data) = &args.data
        && !has(&headers, "content-length")
    {
        headers.push(("content-length".into(), data.len().to_string().into_bytes().into()));
    }

    let call = CallInfo {
        lattice: g.lattice.clone(),
        source: SOURCE.into(),
        target: args.component_id.clone(),
        interface: rpc::http::INTERFACE.into(),
        function: rpc::http::FUNCTION.into(),
        link_name: args.link_name.clone(),
    };
    let body = match (&args.data, &args.data_file) {
        (Some(data), _) => rpc::full_body(Bytes::from(data.clone())),
        (None, Some(path)) => file_body(path, &call).await?,
        (None, None) => rpc::full_body(Bytes::new()),
    };
    let head = rpc::http::RequestHead { method, uri, headers };

    // Traces from the standard variables; the call's span is the trace's root unless
    // --traceparent names a parent.
    let telemetry = match TelemetryConfig::from_env("wash", false)? {
        c if c.traces => {
            let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(tracing_subscriber::filter::LevelFilter::WARN).boxed();
            telemetry::install(&c, logs).ok()
        }
        _ => None,
    };
    let ctl = lattice::ctl(g).await?;
    let router = Router::new(ctl.nats().clone(), ctl.lattice());
    let deadline = tokio::time::Instant::now() + lattice::timeout(g);
    let mut inv = Invocation { call: call.clone(), traceparent: args.traceparent.clone(), deadline, head: rpc::http::encode(&head), body };
    // The client span is the router's; a root of our own names the command.
    let root = if telemetry::enabled() && inv.traceparent.is_none() {
        let span = telemetry::TraceSpan::start("wash call", telemetry::SpanKind::Internal, None, || {
            vec![telemetry::KeyValue::new(telemetry::attr::TARGET, call.target.clone())]
        });
        inv.traceparent = span.traceparent();
        span
    } else {
        telemetry::TraceSpan::none()
    };
    if args.verbose
        && let Some(id) = inv.traceparent.as_deref().and_then(telemetry::trace_id)
    {
        eprintln!("trace id {id}");
    }
    let resp = router.call(inv).await;
    drop(root);
    if let Some(t) = telemetry {
        t.shutdown(std::time::Duration::from_secs(2)).await;
    }
    let resp = resp?;
    let head: rpc::http::ResponseHead =
        rpc::http::decode(&resp.head).map_err(|e| RpcError::new(RpcErrorKind::Malformed, &call, format!("the response head could not be decoded: {e}")))?;

    match g.output {
        Format::Text => {
            if args.verbose {
                eprintln!("HTTP {}", status_line(head.status));
                for (k, v) in &head.headers {
                    eprintln!("{}: {}", crate::output::escape(k), crate::output::escape(&String::from_utf8_lossy(v)));
                }
                eprintln!();
            }
            write_body(resp.body).await?;
            Ok(Report::none())
        }
        Format::Json => {
            let bytes = rpc::collect_body(resp.body).await?;
            Ok(Report::new(String::new(), response_json(&head, &bytes)))
        }
    }
}

/// `200 OK`, or just the code when it has no standard reason.
fn status_line(status: u16) -> String {
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

/// `{"status", "headers", "body"}`, plus `body_base64` when the body is not UTF-8. A header
/// sent more than once has its values joined with `, `.
fn response_json(head: &rpc::http::ResponseHead, body: &[u8]) -> Value {
    let mut headers = Map::new();
    for (k, v) in &head.headers {
        let v = String::from_utf8_lossy(v).into_owned();
        match headers.get_mut(k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.clone(), Value::String(v));
            }
        }
    }
    let mut out = json!({"status": head.status, "headers": headers, "body": String::from_utf8_lossy(body)});
    if std::str::from_utf8(body).is_err() {
        out["body_base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
    }
    out
}

/// Copies the body to stdout as it arrives; a reader that went away (`| head`) ends it quietly.
async fn write_body(mut body: Body) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        match out.write_all(&chunk).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("cannot write the response body to stdout"),
        }
    }
    match out.flush().await {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write the response body to stdout"),
        _ => Ok(()),
    }
}

/// The request body read from `path` (`-` is stdin), a chunk at a time, so a large file is
/// never held whole.
async fn file_body(path: &Path, call: &CallInfo) -> anyhow::Result<Body> {
    let (reader, name): (Box<dyn AsyncRead + Send + Unpin>, String) = if path == Path::new("-") {
        (Box::new(tokio::io::stdin()), "stdin".into())
    } else {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot read the request body from {}", path.display()))?;
        (Box::new(file), path.display().to_string())
    };
    let call = call.clone();
    let body = futures::stream::try_unfold(Some(reader), move |reader| {
        let (call, name) = (call.clone(), name.clone());
        async move {
            let Some(mut reader) = reader else { return Ok(None) };
            let mut buf = vec![0u8; READ_CHUNK];
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| RpcError::new(RpcErrorKind::Transport, &call, format!("reading the request body from {name} failed: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), Some(reader))))
        }
    });
    Ok(body.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_and_headers() {
        let head = rpc::http::ResponseHead {
            status: 200,
            headers: vec![
                ("set-cookie".into(), b"a=1".to_vec().into()),
                ("set-cookie".into(), b"b=2".to_vec().into()),
                ("content-type".into(), b"text/plain".to_vec().into()),
            ],
        };
        let v = response_json(&head, b"hi\n");
        assert_eq!(v, json!({"status": 200, "headers": {"set-cookie": "a=1, b=2", "content-type": "text/plain"}, "body": "hi\n"}));
        let v = response_json(&head, &[0xff, 0x00]);
        assert_eq!(v["body_base64"], "/wA=");
        assert_eq!(v["body"], "\u{fffd}\u{0}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(503), "503 Service Unavailable");
        assert_eq!(status_line(299), "299");
    }
}
