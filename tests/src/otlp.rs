//! A real OTLP/HTTP receiver for tests and benches: a hyper server on a loopback port the OS
//! picks, taking `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` (what the
//! OpenTelemetry SDK's OTLP exporter sends with `http/protobuf`), decoded with the
//! `opentelemetry-proto` types. Tests assert on the spans it received.
//!
//! Hosts under test export to it when started as processes with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` = [`OtlpReceiver::endpoint`] (see [`OtlpReceiver::env`]).
//! Telemetry is per process, so in-process hosts cannot each export somewhere else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// The most spans kept; later ones are only counted (a bench exports many).
pub const MAX_KEPT: usize = 100_000;
/// The largest export request read.
const MAX_REQUEST: usize = 64 << 20;

/// `kind` of a span, as OTLP numbers it.
pub mod kind {
    /// `SPAN_KIND_INTERNAL`.
    pub const INTERNAL: i32 = 1;
    /// `SPAN_KIND_SERVER`.
    pub const SERVER: i32 = 2;
    /// `SPAN_KIND_CLIENT`.
    pub const CLIENT: i32 = 3;
}

/// One span as received, ids in lower-case hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id; empty for a root.
    pub parent_span_id: String,
    /// Name.
    pub name: String,
    /// Kind (see [`kind`]).
    pub kind: i32,
    /// Attributes, their values as text.
    pub attributes: HashMap<String, String>,
    /// Resource attributes of the process that sent it, as text.
    pub resource: HashMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status: i32,
}

impl ReceivedSpan {
    /// Attribute `key`, or `""`.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    received: usize,
    requests: usize,
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn record(store: &Mutex<Store>, req: ExportTraceServiceRequest) {
    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
    store.requests += 1;
    for rs in req.resource_spans {
        let resource: HashMap<String, String> =
            rs.resource.map(|r| r.attributes.into_iter().map(|kv| (kv.key, text(kv.value.as_ref()))).collect()).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                store.received += 1;
                if store.spans.len() >= MAX_KEPT {
                    continue;
                }
                store.spans.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: s.attributes.into_iter().map(|kv| (kv.key, text(kv.value.as_ref()))).collect(),
                    resource: resource.clone(),
                    status: s.status.map_or(0, |st| st.code),
                });
            }
        }
    }
}

async fn answer(store: Arc<Mutex<Store>>, req: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, body: Bytes| http::Response::builder().status(status).header("content-type", "application/x-protobuf").body(Full::new(body));
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return reply(404, Bytes::from_static(b"only POST /v1/traces")).unwrap_or_default();
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(400, Bytes::from(format!("cannot read the body: {e}"))).unwrap_or_default(),
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(decoded) => {
            record(&store, decoded);
            reply(200, Bytes::from(ExportTraceServiceResponse::default().encode_to_vec())).unwrap_or_default()
        }
        Err(e) => reply(400, Bytes::from(format!("not an ExportTraceServiceRequest: {e}"))).unwrap_or_default(),
    }
}

impl OtlpReceiver {
    /// Starts listening on a loopback port the OS picks.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store: Arc<Mutex<Store>> = Arc::default();
        let shared = store.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let store = store.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(store, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(Self { addr, store, task })
    }

    /// The base endpoint (`http://127.0.0.1:PORT`), for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables that make a host process export here, with `extra` after them.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), self.endpoint())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Every span kept so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).spans.clone()
    }

    /// How many spans and export requests arrived (kept or not).
    pub fn received(&self) -> (usize, usize) {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        (s.received, s.requests)
    }

    /// Waits, at most `timeout`, until `done` holds for the spans received; they, then.
    pub async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> anyhow::Result<Vec<ReceivedSpan>> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if tokio::time::Instant::now() >= until {
                let names: Vec<String> = spans.iter().map(|s| format!("{} ({})", s.name, &s.trace_id[..8.min(s.trace_id.len())])).collect();
                anyhow::bail!("no {what} within {timeout:?}; {} spans received: {names:?}", spans.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The spans of trace `trace_id` in `spans`.
pub fn trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// The one child of `parent` (in the same trace) named `name` of kind `kind`; an error naming
/// what was found instead.
pub fn child<'a>(spans: &[&'a ReceivedSpan], parent: &ReceivedSpan, name: &str, kind: i32) -> anyhow::Result<&'a ReceivedSpan> {
    let found: Vec<&&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id == parent.span_id && s.name == name && s.kind == kind).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => {
            let children: Vec<String> = spans.iter().filter(|s| s.parent_span_id == parent.span_id).map(|s| format!("{} (kind {})", s.name, s.kind)).collect();
            anyhow::bail!("`{}` has {} children named `{name}` of kind {kind}; its children: {children:?}", parent.name, found.len())
        }
    }
}
