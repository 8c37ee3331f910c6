//! Traces: one OpenTelemetry pipeline per process (host, provider process, `wash`), configured
//! from the standard `OTEL_*` variables and wasmCloud's switches, and the W3C trace context
//! that travels with every data-plane call.
//!
//! - [`TelemetryConfig::from_env`] reads the configuration; [`install`] sets up the process's
//!   `tracing` subscriber (the caller's log layer) and, when traces are on, an OpenTelemetry
//!   tracer exporting over OTLP (HTTP/protobuf or gRPC). When traces are off no tracer exists,
//!   no span is ever built and [`enabled`] is false: the only cost is one relaxed atomic load
//!   per call.
//! - Spans ([`TraceSpan`]) are made on that tracer directly, not through `tracing` spans and
//!   a `tracing-opentelemetry` layer: that bridge cost about 150 µs of CPU per span in a debug
//!   build (the registry's span slab and per-layer filter state, field visitors turning every
//!   attribute into an owned string, a lookup per poll of each instrumented future), most of
//!   the ~25% of throughput traces then took. The sampler decides when a span starts; a span
//!   not sampled is a context only (no attributes, nothing exported), and its `traceparent`
//!   (flags `00`) carries that decision to the next hop, whose parent-based sampler follows it.
//! - The context travels as a W3C `traceparent` string ([`crate::rpc::Invocation::traceparent`],
//!   the `traceparent` NATS header on remote calls, in memory on local ones). Whoever holds an
//!   invocation treats that string as the context it runs in: [`crate::rpc::Router`] makes a
//!   client span under it for each call and a server span under the client's for each call it
//!   answers, and hands the handler the server span's context. With traces off the string is
//!   passed on unchanged, so a host without telemetry does not cut a trace in two.
//! - Spans are named `{interface}.{function}` (e.g. `wasi:keyvalue/atomics.increment`) and
//!   carry the attributes in [`attr`].
//!
//! Telemetry is per process: hosts started in one process (tests, embedding) share its
//! pipeline and tell their spans apart by the `wasmcloud.host.id` attribute.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::borrow::Cow;

use opentelemetry::Context;
pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::rpc::{CallInfo, RpcError};

/// Span attribute names (OTel semantic conventions where one exists, else `wasmcloud.*`).
pub mod attr {
    /// The lattice.
    pub const LATTICE: &str = "wasmcloud.lattice";
    /// The host that made the span (its id).
    pub const HOST_ID: &str = "wasmcloud.host.id";
    /// The caller of a call.
    pub const SOURCE: &str = "wasmcloud.source";
    /// The callee of a call (a component or provider id).
    pub const TARGET: &str = "wasmcloud.target";
    /// The link name a call travels under.
    pub const LINK_NAME: &str = "wasmcloud.link.name";
    /// `namespace:package/interface`.
    pub const INTERFACE: &str = "wasmcloud.interface";
    /// The function called.
    pub const FUNCTION: &str = "wasmcloud.function";
    /// `ok` or `error`.
    pub const OUTCOME: &str = "wasmcloud.outcome";
    /// The kind of a failure (`Deadline`, `NoReplica`, …; for HTTP the status code).
    pub const ERROR_TYPE: &str = "error.type";
}

/// How finished spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over HTTP, protobuf bodies (`http/protobuf`, the default; port 4318).
    HttpProtobuf,
    /// OTLP over gRPC (`grpc`; port 4317).
    Grpc,
}

/// Which traces are kept (`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with this ratio.
    Ratio(f64),
    /// `parentbased_always_on` (the default): a call follows its caller's decision; roots are kept.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: roots kept at this ratio, the rest follow their caller.
    ParentBasedRatio(f64),
}

/// The telemetry of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Whether traces are exported.
    pub traces: bool,
    /// Where traces go: the full URL (for HTTP including `/v1/traces`).
    pub traces_endpoint: String,
    /// How.
    pub protocol: Protocol,
    /// `service.name`.
    pub service_name: String,
    /// Further resource attributes (`OTEL_RESOURCE_ATTRIBUTES`, then what the process adds).
    pub resource: Vec<(String, String)>,
    /// Which traces are kept.
    pub sampler: SamplerConfig,
}

/// Most resource attributes read from `OTEL_RESOURCE_ATTRIBUTES`.
pub const MAX_RESOURCE_ATTRIBUTES: usize = 128;
/// Most spans waiting for export in a process; past it new spans are dropped (and counted by
/// the SDK), never buffered without bound.
pub const MAX_QUEUED_SPANS: usize = 8192;
/// Most spans in one export request.
pub const MAX_EXPORT_BATCH: usize = 512;
/// How often queued spans are exported.
pub const EXPORT_INTERVAL: Duration = Duration::from_millis(500);

/// A bad telemetry setting: which variable, what it held and what it may hold.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TelemetryError(String);

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl TelemetryConfig {
    /// The configuration from the process environment; `service_name` is used unless
    /// `OTEL_SERVICE_NAME` names one, `enable` is `--enable-observability` or
    /// `--enable-traces` given on the command line.
    pub fn from_env(service_name: &str, enable: bool) -> Result<Self, TelemetryError> {
        Self::from_lookup(service_name, enable, |k| std::env::var(k).ok())
    }

    /// [`TelemetryConfig::from_env`] over any variable lookup. Traces are on when
    /// `--enable-observability`/`--enable-traces` is given, `WASMCLOUD_OBSERVABILITY_ENABLED`
    /// or `WASMCLOUD_TRACING_ENABLED` is true, or an OTLP endpoint variable is set; off
    /// whatever else says when `OTEL_SDK_DISABLED` is true or `OTEL_TRACES_EXPORTER` is `none`.
    pub fn from_lookup(service_name: &str, enable: bool, get: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let flag = |k: &str| -> Result<bool, TelemetryError> {
            match get(k) {
                None => Ok(false),
                Some(v) => truthy(&v).ok_or_else(|| TelemetryError(format!("{k} is `{}`; use `true` or `false`", v.escape_debug()))),
            }
        };
        let traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        // Both read whatever `enable` says, so a bad value is reported.
        let (observability, tracing) = (flag("WASMCLOUD_OBSERVABILITY_ENABLED")?, flag("WASMCLOUD_TRACING_ENABLED")?);
        let switched = enable || observability || tracing;
        let exporter_none = match get("OTEL_TRACES_EXPORTER") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("otlp") => false,
            Some(v) if v.eq_ignore_ascii_case("none") => true,
            Some(v) => return Err(TelemetryError(format!("OTEL_TRACES_EXPORTER is `{}`; Trellis exports `otlp` or `none`", v.escape_debug()))),
        };
        let traces = (switched || traces_endpoint.is_some() || endpoint.is_some()) && !flag("OTEL_SDK_DISABLED")? && !exporter_none;
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            None => Protocol::HttpProtobuf,
            Some(p) if p == "http/protobuf" => Protocol::HttpProtobuf,
            Some(p) if p == "grpc" => Protocol::Grpc,
            Some(p) => {
                return Err(TelemetryError(format!("OTEL_EXPORTER_OTLP_PROTOCOL is `{}`; Trellis exports `http/protobuf` or `grpc`", p.escape_debug())));
            }
        };
        let traces_endpoint = match (traces_endpoint, endpoint, protocol) {
            // The per-signal endpoint is used as it is; the base endpoint gets the signal's path.
            (Some(t), _, _) => t,
            (None, Some(base), Protocol::HttpProtobuf) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, Some(base), Protocol::Grpc) => base,
            (None, None, Protocol::HttpProtobuf) => "http://localhost:4318/v1/traces".into(),
            (None, None, Protocol::Grpc) => "http://localhost:4317".into(),
        };
        if !(traces_endpoint.starts_with("http://") || traces_endpoint.starts_with("https://")) {
            return Err(TelemetryError(format!(
                "the OTLP traces endpoint `{}` is not an http:// or https:// URL; set OTEL_EXPORTER_OTLP_ENDPOINT to e.g. http://localhost:4318",
                traces_endpoint.escape_debug()
            )));
        }
        let ratio = |k: &str| -> Result<f64, TelemetryError> {
            match get(k) {
                None => Ok(1.0),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| TelemetryError(format!("{k} is `{}`; a sampling ratio is a number from 0.0 to 1.0", v.escape_debug()))),
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
            Some("always_on") => SamplerConfig::AlwaysOn,
            Some("always_off") => SamplerConfig::AlwaysOff,
            Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
            Some("traceidratio") => SamplerConfig::Ratio(ratio("OTEL_TRACES_SAMPLER_ARG")?),
            Some("parentbased_traceidratio") => SamplerConfig::ParentBasedRatio(ratio("OTEL_TRACES_SAMPLER_ARG")?),
            Some(other) => {
                return Err(TelemetryError(format!(
                    "OTEL_TRACES_SAMPLER is `{}`; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
                    other.escape_debug()
                )));
            }
        };
        let resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            Some(v) => parse_resource_attributes(&v)?,
        };
        Ok(Self { traces, traces_endpoint, protocol, service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.into()), resource, sampler })
    }

    /// Adds the resource attribute `key` = `value` unless one of that name is there already
    /// (what the operator set wins).
    pub fn with_resource(mut self, key: &str, value: &str) -> Self {
        if !self.resource.iter().any(|(k, _)| k == key) {
            self.resource.push((key.into(), value.into()));
        }
        self
    }

    /// The variables that give a child process (a provider) this configuration.
    pub fn child_env(&self) -> Vec<(String, String)> {
        if !self.traces {
            return vec![("OTEL_SDK_DISABLED".into(), "true".into())];
        }
        let protocol = match self.protocol {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        };
        let (sampler, arg) = match self.sampler {
            SamplerConfig::AlwaysOn => ("always_on", None),
            SamplerConfig::AlwaysOff => ("always_off", None),
            SamplerConfig::Ratio(r) => ("traceidratio", Some(r)),
            SamplerConfig::ParentBasedAlwaysOn => ("parentbased_always_on", None),
            SamplerConfig::ParentBasedAlwaysOff => ("parentbased_always_off", None),
            SamplerConfig::ParentBasedRatio(r) => ("parentbased_traceidratio", Some(r)),
        };
        let mut env = vec![
            ("WASMCLOUD_OBSERVABILITY_ENABLED".into(), "true".into()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), self.traces_endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL".into(), protocol.into()),
            ("OTEL_TRACES_SAMPLER".into(), sampler.into()),
        ];
        if let Some(r) = arg {
            env.push(("OTEL_TRACES_SAMPLER_ARG".into(), r.to_string()));
        }
        let attrs: Vec<String> = self.resource.iter().map(|(k, v)| format!("{}={}", encode_attr(k), encode_attr(v))).collect();
        if !attrs.is_empty() {
            env.push(("OTEL_RESOURCE_ATTRIBUTES".into(), attrs.join(",")));
        }
        env
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v` pairs separated by commas, values percent-encoded.
fn parse_resource_attributes(v: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, val)) = pair.split_once('=') else {
            return Err(TelemetryError(format!("OTEL_RESOURCE_ATTRIBUTES holds `{}`, which is not `key=value`", pair.escape_debug())));
        };
        if out.len() == MAX_RESOURCE_ATTRIBUTES {
            return Err(TelemetryError(format!("OTEL_RESOURCE_ATTRIBUTES holds more than {MAX_RESOURCE_ATTRIBUTES} attributes")));
        }
        out.push((decode_attr(k.trim()), decode_attr(val.trim())));
    }
    Ok(out)
}

fn decode_attr(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_attr(s: &str) -> String {
    s.bytes().map(|c| if c.is_ascii_alphanumeric() || b"-._~:/".contains(&c) { (c as char).to_string() } else { format!("%{c:02X}") }).collect()
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static CONFIG: OnceLock<TelemetryConfig> = OnceLock::new();

/// Whether this process exports traces (then the data plane makes spans).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The configuration [`install`] was given, for child processes ([`TelemetryConfig::child_env`]).
pub fn installed() -> Option<&'static TelemetryConfig> {
    CONFIG.get()
}

/// The pipeline of this process; [`Telemetry::shutdown`] exports what is queued.
#[must_use = "dropping it does not flush; call shutdown on the way out"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (waiting at most `wait`) and stops the exporter.
    pub async fn shutdown(self, wait: Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        let Some(provider) = self.provider else { return };
        // The SDK blocks the calling thread while it flushes.
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(wait));
        match tokio::time::timeout(wait + Duration::from_millis(200), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "not every span could be exported on the way out"),
            _ => tracing::warn!("exporting the last spans did not finish in time"),
        }
    }
}

/// A boxed layer over the plain registry, as [`install`] takes them.
pub type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The tracer spans are made on, once [`install`] set traces up.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Installs the process's `tracing` subscriber (`logs`, the log layer with its own filter)
/// and, when `config.traces`, the OpenTelemetry tracer. Must run inside a tokio runtime when
/// traces are on (the exporter runs on it). A second call in one process fails.
pub fn install(config: &TelemetryConfig, logs: BoxedLayer) -> Result<Telemetry, TelemetryError> {
    let provider = if config.traces { Some(tracer_provider(config)?) } else { None };
    tracing_subscriber::registry().with(logs).try_init().map_err(|e| TelemetryError(format!("the log and trace subscriber is already set: {e}")))?;
    let _ = CONFIG.set(config.clone());
    if let Some(p) = &provider {
        let _ = TRACER.set(p.tracer("trellis"));
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = config.traces_endpoint, service = config.service_name, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    // reqwest (https:// endpoints) and tonic use rustls with the provider the rest of the tree
    // uses; a process installs it once, whoever comes first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError(format!("cannot set up the OTLP exporter for `{}`: {e}", config.traces_endpoint));
    let exporter = match config.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.traces_endpoint.clone())
            .build()
            .map_err(failed)?,
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(config.traces_endpoint.clone()).build().map_err(failed)?,
    };
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_max_export_batch_size(MAX_EXPORT_BATCH)
        .with_scheduled_delay(EXPORT_INTERVAL)
        .build();
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(config.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build();
    let sampler = match config.sampler {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
    };
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).with_sampler(sampler).build())
}

/// The span context a W3C `traceparent` names (`00-{trace id}-{parent id}-{flags}`), if it is
/// well-formed: version `00` (or a later one, read as far as `00` goes), lower-case hex, ids
/// not all zero.
pub fn parse_traceparent(tp: &str) -> Option<SpanContext> {
    let tp = tp.trim();
    let mut parts = tp.splitn(5, '-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) || (version == "00" && rest.is_some()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags & 1), true, TraceState::NONE))
}

/// `tp` in the canonical form (`00-…`, 55 characters) if it is well-formed, else `None`: what
/// a hop passes on of a `traceparent` it was handed, so a malformed or oversized one from an
/// HTTP client or another process goes no further.
pub fn clean_traceparent(tp: &str) -> Option<String> {
    parse_traceparent(tp).as_ref().and_then(format_traceparent)
}

/// The `traceparent` of `cx`, if it is valid.
pub fn format_traceparent(cx: &SpanContext) -> Option<String> {
    cx.is_valid().then(|| format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()))
}

/// The trace id of a `traceparent`, for log lines (`trace_id=`); `None` unless well-formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    parse_traceparent(traceparent)?;
    traceparent.trim().get(3..35)
}

/// One span of a trace, on this process's tracer; it ends (and is queued for export) when
/// dropped. With traces off there is none, and every method does nothing.
#[derive(Default)]
pub struct TraceSpan(Option<opentelemetry_sdk::trace::Span>);

impl TraceSpan {
    /// No span (traces off).
    pub fn none() -> Self {
        Self(None)
    }

    /// Starts a span named `name` of `kind` under `traceparent` (a root when that is missing
    /// or malformed). `attributes` is called only when the sampler keeps the span.
    pub fn start(name: impl Into<Cow<'static, str>>, kind: SpanKind, traceparent: Option<&str>, attributes: impl FnOnce() -> Vec<KeyValue>) -> Self {
        if !enabled() {
            return Self(None);
        }
        let Some(tracer) = TRACER.get() else { return Self(None) };
        let parent = match traceparent.and_then(parse_traceparent) {
            Some(cx) => Context::new().with_remote_span_context(cx),
            None => Context::new(),
        };
        let mut span = tracer.span_builder(name).with_kind(kind).start_with_context(tracer, &parent);
        if span.is_recording() {
            span.set_attributes(attributes());
        }
        Self(Some(span))
    }

    /// Whether there is no span at all (traces off).
    pub fn is_disabled(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the span is kept (sampled): only then do attributes matter.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_recording())
    }

    /// The `traceparent` the span's children are made under: also for a span not sampled
    /// (flags `00`), so the next hop knows not to sample either. `None` with traces off.
    pub fn traceparent(&self) -> Option<String> {
        format_traceparent(self.0.as_ref()?.span_context())
    }

    /// Names the span `name` (when recording; so a name built per call costs nothing
    /// unless it is kept).
    pub fn rename(&mut self, name: String) {
        if let Some(s) = self.0.as_mut().filter(|s| s.is_recording()) {
            s.update_name(name);
        }
    }

    /// Sets an attribute (when recording).
    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(s) = self.0.as_mut().filter(|s| s.is_recording()) {
            s.set_attribute(attribute);
        }
    }

    /// Records how its call ended.
    pub fn record_outcome<T>(&mut self, result: &Result<T, RpcError>) {
        if !self.is_recording() {
            return;
        }
        match result {
            Ok(_) => self.set(KeyValue::new(attr::OUTCOME, "ok")),
            Err(e) => self.record_error(&format!("{:?}", e.kind), &e.message),
        }
    }

    /// Records a failure of kind `kind` (`error.type`), with `message` as the status.
    pub fn record_error(&mut self, kind: &str, message: &str) {
        let Some(s) = self.0.as_mut().filter(|s| s.is_recording()) else { return };
        s.set_attributes([KeyValue::new(attr::OUTCOME, "error"), KeyValue::new(attr::ERROR_TYPE, kind.to_string())]);
        s.set_status(Status::error(message.to_string()));
    }
}

/// Which side of a call a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller's span of a call.
    Client,
    /// The callee's span of a call.
    Server,
}

/// The span of one side of `call`, under `traceparent`, made by `host_id`; none when traces
/// are off. Named `{interface}.{function}`.
pub fn call_span(side: Side, call: &CallInfo, host_id: &str, traceparent: Option<&str>) -> TraceSpan {
    if !enabled() {
        return TraceSpan::none();
    }
    let kind = match side {
        Side::Client => SpanKind::Client,
        Side::Server => SpanKind::Server,
    };
    let mut span = TraceSpan::start("call", kind, traceparent, || {
        vec![
            KeyValue::new(attr::LATTICE, call.lattice.clone()),
            KeyValue::new(attr::HOST_ID, host_id.to_string()),
            KeyValue::new(attr::SOURCE, call.source.clone()),
            KeyValue::new(attr::TARGET, call.target.clone()),
            KeyValue::new(attr::LINK_NAME, call.link_name.clone()),
            KeyValue::new(attr::INTERFACE, call.interface.clone()),
            KeyValue::new(attr::FUNCTION, call.function.clone()),
        ]
    });
    if span.is_recording() {
        span.rename(format!("{}.{}", call.interface, call.function));
    }
    span
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn traces_are_off_unless_asked_for() {
        let c = TelemetryConfig::from_lookup("trellis-host", false, lookup(&[])).unwrap();
        assert!(!c.traces);
        let c = TelemetryConfig::from_lookup("trellis-host", true, lookup(&[])).unwrap();
        assert!(c.traces);
        assert_eq!(c.traces_endpoint, "http://localhost:4318/v1/traces");
        let c = TelemetryConfig::from_lookup("trellis-host", false, lookup(&[("WASMCLOUD_OBSERVABILITY_ENABLED", "true")])).unwrap();
        assert!(c.traces);
        let c = TelemetryConfig::from_lookup("trellis-host", false, lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).unwrap();
        assert!(c.traces);
        assert_eq!(c.traces_endpoint, "http://c:4318/v1/traces");
        let c = TelemetryConfig::from_lookup(
            "trellis-host",
            true,
            lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"), ("OTEL_SDK_DISABLED", "true")]),
        )
        .unwrap();
        assert!(!c.traces);
        assert_eq!(c.traces_endpoint, "http://t:1/x");
        let c = TelemetryConfig::from_lookup("h", true, lookup(&[("OTEL_TRACES_EXPORTER", "none")])).unwrap();
        assert!(!c.traces);
        let c = TelemetryConfig::from_lookup("h", true, lookup(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]))
            .unwrap();
        assert_eq!((c.protocol, c.traces_endpoint.as_str()), (Protocol::Grpc, "http://c:4317"));
    }

    #[test]
    fn samplers_service_and_resource_come_from_the_standard_variables() {
        let c = TelemetryConfig::from_lookup(
            "trellis-host",
            true,
            lookup(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod, team=a%2Cb"),
            ]),
        )
        .unwrap();
        assert_eq!(c.sampler, SamplerConfig::ParentBasedRatio(0.01));
        assert_eq!(c.service_name, "edge");
        assert_eq!(c.resource, vec![("deployment.environment".into(), "prod".into()), ("team".into(), "a,b".into())]);
        // What a provider process is given reads back the same.
        let c = c.with_resource("wasmcloud.host.id", "N1");
        let env = c.child_env();
        let back = TelemetryConfig::from_lookup("edge", false, lookup(&env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>())).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_settings_name_the_variable_and_what_it_may_hold() {
        for (vars, says) in [
            (vec![("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER is `sometimes`"),
            (vec![("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")], "from 0.0 to 1.0"),
            (vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], "`http/protobuf` or `grpc`"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")], "not an http:// or https:// URL"),
            (vec![("WASMCLOUD_OBSERVABILITY_ENABLED", "maybe")], "use `true` or `false`"),
            (vec![("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "not `key=value`"),
        ] {
            let e = TelemetryConfig::from_lookup("h", true, lookup(&vars)).unwrap_err().to_string();
            assert!(e.contains(says), "{vars:?}: {e}");
        }
    }

    #[test]
    fn traceparents_round_trip_and_garbage_is_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp).unwrap();
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(format_traceparent(&cx).unwrap(), tp);
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().is_sampled());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
            assert!(trace_id(bad).is_none(), "{bad}");
        }
        // A later version is read as far as version 00 goes.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
        // What a hop passes on is the canonical form, or nothing.
        let long = format!("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}", "x".repeat(10_000));
        assert_eq!(clean_traceparent(&long).as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(
            clean_traceparent(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
        assert_eq!(clean_traceparent("garbage"), None);
    }

    #[test]
    fn with_traces_off_no_span_is_built() {
        let call = CallInfo::default();
        let span = call_span(Side::Client, &call, "h", Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(span.is_disabled() && !span.is_recording() && span.traceparent().is_none());
    }
}
