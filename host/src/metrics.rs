//! The host's metrics: one set of OpenTelemetry instruments, created once per host, read two
//! ways: always as Prometheus text (an SDK `ManualReader`, rendered by [`Metrics::render`] for
//! the admin endpoint's `/metrics`), and over OTLP when export is on ([`Export`]).
//!
//! - Calls answered here (components, and providers running in this host) are measured where
//!   the data plane hands them over ([`trellis_lattice::observe`]): the observer keeps, per
//!   target and function, one handle holding its attribute sets, built on the first call, so
//!   a call allocates no attributes. Each target keeps at most [`MAX_FUNCTIONS`] functions,
//!   and at most [`MAX_TARGETS`] targets are kept; past either, calls count under `other`.
//! - Gauges (instances, queue depth, memory, CPU, NATS reconnects) are read when collected:
//!   from the component table and gates, `/proc/self`, and the NATS client's statistics.
//!
//! Every name and attribute is listed in the README (Metrics).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};
use trellis_lattice::observe::{KINDS, Observer, Outcome, Route, Served, kind_index, kind_name};
use trellis_lattice::rpc::{CallInfo, RpcErrorKind};

use crate::components::Components;
use crate::error::{HostError, Result};

/// The most functions per target with their own series; further ones count as `other`.
pub const MAX_FUNCTIONS: usize = 64;
/// The most targets (components and providers answered here) with their own series.
pub const MAX_TARGETS: usize = 4096;

/// Latency buckets, in seconds: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// OTLP export of the metrics (`--enable-observability`, the `OTEL_*` variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The OTLP/HTTP metrics endpoint (`…/v1/metrics`); `None`: the exporter reads
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/metrics`),
    /// then `http://localhost:4318/v1/metrics`.
    pub endpoint: Option<String>,
    /// How often metrics are exported; `None`: `OTEL_METRIC_EXPORT_INTERVAL` or 60 s.
    pub interval: Option<Duration>,
}

impl Export {
    /// Export settings from the environment: on when `enabled` (`--enable-observability`)
    /// or a metrics endpoint is named, and off when `OTEL_SDK_DISABLED=true` or
    /// `OTEL_METRICS_EXPORTER=none`.
    pub fn from_env(enabled: bool, env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) || set("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim() == "none") {
            return None;
        }
        let endpoint = set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        if !enabled && endpoint.is_none() {
            return None;
        }
        let interval = set("OTEL_METRIC_EXPORT_INTERVAL").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_millis);
        Some(Self { endpoint, interval })
    }
}

/// A `ManualReader` the host keeps a handle to while the meter provider owns it.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The instruments of calls answered here.
struct CallInstruments {
    invocations: Counter<u64>,
    errors: Counter<u64>,
    duration: Histogram<f64>,
}

struct Instruments {
    component: CallInstruments,
    provider: CallInstruments,
    busy: Counter<u64>,
    rpc_calls: Counter<u64>,
    rpc_duration: Histogram<f64>,
    /// `[route][outcome]` attribute sets of data-plane calls; outcome 0 is `ok`, then
    /// [`KINDS`], then `cancelled`.
    rpc_attrs: [Vec<Vec<KeyValue>>; 2],
    rpc_route_attrs: [Vec<KeyValue>; 2],
    passes: Counter<u64>,
    actions: Counter<u64>,
}

/// The host's metrics. Cheap to share (`Arc`).
pub struct Metrics {
    provider: SdkMeterProvider,
    reader: SharedReader,
    meter: Meter,
    inst: Arc<Instruments>,
    served: Arc<Observing>,
    /// The NATS client and component table the gauges read, once the host has them.
    watched: OnceLock<()>,
}

impl Metrics {
    /// The instruments of host `host_id` in `lattice`, read on `/metrics` and exported over
    /// OTLP when `export` says so. Needs a tokio runtime when exporting.
    pub fn new(host_id: &str, lattice: &str, export: Option<&Export>) -> Result<Arc<Self>> {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("trellis-host")
            .with_attributes([KeyValue::new("host.id", host_id.to_string()), KeyValue::new("wasmcloud.lattice", lattice.to_string())])
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.clone());
        if let Some(export) = export {
            use opentelemetry_otlp::WithExportConfig;
            // reqwest is built without a crypto provider of its own (it would panic building the
            // exporter's client): use ring, as the rest of the host.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_http();
            if let Some(endpoint) = &export.endpoint {
                exporter = exporter.with_endpoint(endpoint.clone());
            }
            let exporter = exporter
                .build()
                .map_err(|e| HostError::Invalid(format!("cannot set up the OTLP metrics exporter: {e}; check OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")))?;
            let mut periodic =
                opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio);
            if let Some(every) = export.interval {
                periodic = periodic.with_interval(every.max(Duration::from_millis(100)));
            }
            builder = builder.with_reader(periodic.build());
        }
        let provider = builder.build();
        let meter = provider.meter("trellis");
        let calls = |what: &str, id: &str| CallInstruments {
            invocations: meter
                .u64_counter(format!("trellis_{what}_invocations"))
                .with_description(format!("Calls answered by a {what} on this host, by {id}, interface and function"))
                .build(),
            errors: meter
                .u64_counter(format!("trellis_{what}_errors"))
                .with_description(format!("Calls answered by a {what} on this host that failed, by {id}, interface, function and kind"))
                .build(),
            duration: meter
                .f64_histogram(format!("trellis_{what}_invocation_duration_seconds"))
                .with_description(format!("Time from a call's arrival at a {what} to the end of its response body"))
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
        };
        let outcomes = || {
            std::iter::once("ok")
                .chain(KINDS.iter().map(|k| kind_name(*k)))
                .chain(std::iter::once("cancelled"))
                .map(|o| KeyValue::new("outcome", o))
                .collect::<Vec<_>>()
        };
        let rpc_attrs = [Route::Local, Route::Nats].map(|r| outcomes().into_iter().map(|o| vec![KeyValue::new("route", r.as_str()), o]).collect());
        let inst = Arc::new(Instruments {
            component: calls("component", "component_id"),
            provider: calls("provider", "provider_id"),
            busy: meter
                .u64_counter("trellis_component_busy_refusals")
                .with_description("Calls refused because the component was at max_instances with a full queue")
                .build(),
            rpc_calls: meter.u64_counter("trellis_rpc_calls").with_description("Data-plane calls this host made, by route and outcome").build(),
            rpc_duration: meter
                .f64_histogram("trellis_rpc_call_duration_seconds")
                .with_description("Time from a data-plane call's start to its reply head (or failure), by route")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            rpc_attrs,
            rpc_route_attrs: [Route::Local, Route::Nats].map(|r| vec![KeyValue::new("route", r.as_str())]),
            passes: meter.u64_counter("trellis_reconciler_passes").with_description("App reconciler passes this host ran as leader, by result").build(),
            actions: meter.u64_counter("trellis_reconciler_actions").with_description("Actions the app reconciler took, by action and result").build(),
        });
        let served = Arc::new(Observing { inst: inst.clone(), components: OnceLock::new(), targets: RwLock::new(HashMap::new()) });
        Ok(Arc::new(Self { provider, reader, meter, inst, served, watched: OnceLock::new() }))
    }

    /// What the data-plane router reports to (see [`trellis_lattice::rpc::Router::set_observer`]).
    pub fn observer(&self) -> Arc<dyn Observer> {
        self.served.clone()
    }

    /// Starts the gauges read from the host: instances and queue depth per component (from
    /// `components`), NATS reconnects (from `nats`), memory and CPU (from `/proc/self`). Once.
    pub fn watch_host(&self, components: Components, nats: async_nats::Client) {
        if self.watched.set(()).is_err() {
            return;
        }
        let _ = self.served.components.set(components.clone());
        let table = components.clone();
        let _active = self
            .meter
            .u64_observable_gauge("trellis_component_active_instances")
            .with_description("Instances of a component running now (slots of its max_instances gate taken)")
            .with_callback(move |o| {
                for c in table.snapshot() {
                    o.observe(c.gate.active() as u64, &[KeyValue::new("component_id", c.id.clone())]);
                }
            })
            .build();
        let _queued = self
            .meter
            .u64_observable_gauge("trellis_component_queued_calls")
            .with_description("Calls waiting for a slot of a component's max_instances gate now")
            .with_callback(move |o| {
                for c in components.snapshot() {
                    o.observe(c.gate.queued() as u64, &[KeyValue::new("component_id", c.id.clone())]);
                }
            })
            .build();
        let _reconnects = self
            .meter
            .u64_observable_counter("trellis_nats_reconnects")
            .with_description("Times the host's NATS connection was established again after the first")
            .with_callback(move |o| {
                let connects = nats.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
                o.observe(connects.saturating_sub(1), &[]);
            })
            .build();
        let _rss = self
            .meter
            .u64_observable_gauge("process_resident_memory_bytes")
            .with_description("Resident memory of the host process (VmRSS in /proc/self/status)")
            .with_unit("By")
            .with_callback(|o| {
                if let Some(rss) = proc::rss_bytes() {
                    o.observe(rss, &[]);
                }
            })
            .build();
        let _cpu = self
            .meter
            .f64_observable_counter("process_cpu_seconds")
            .with_description("User and system CPU time of the host process (/proc/self/stat)")
            .with_unit("s")
            .with_callback(|o| {
                if let Some(cpu) = proc::cpu_seconds() {
                    o.observe(cpu, &[]);
                }
            })
            .build();
    }

    /// Counts one reconciler pass.
    pub(crate) fn reconciler_pass(&self, ok: bool) {
        self.inst.passes.add(1, &[KeyValue::new("result", if ok { "ok" } else { "error" })]);
    }

    /// Counts one reconciler action (`put_config`, `scale`, …).
    pub(crate) fn reconciler_action(&self, action: &'static str, ok: bool) {
        self.inst.actions.add(1, &[KeyValue::new("action", action), KeyValue::new("result", if ok { "ok" } else { "error" })]);
    }

    /// Every metric now, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            tracing::debug!(error = %e, "cannot collect metrics");
        }
        prometheus::render(&rm)
    }

    /// Exports what is pending and stops the exporter (on the host's stop).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics shutdown");
        }
    }
}

/// The observer the router reports to.
struct Observing {
    inst: Arc<Instruments>,
    components: OnceLock<Components>,
    targets: RwLock<HashMap<String, Arc<Target>>>,
}

/// One target's handles, by interface and function.
struct Target {
    functions: RwLock<HashMap<String, HashMap<String, Arc<FnServed>>>>,
    count: std::sync::atomic::AtomicUsize,
    other: Arc<FnServed>,
    id: String,
    component: bool,
}

/// The attribute sets of one target function, and the instruments they go to.
struct FnServed {
    inst: Arc<Instruments>,
    component: bool,
    base: Vec<KeyValue>,
    /// By [`kind_index`].
    by_kind: Vec<Vec<KeyValue>>,
    busy: Vec<KeyValue>,
}

impl FnServed {
    fn new(inst: &Arc<Instruments>, component: bool, id: &str, interface: &str, function: &str) -> Self {
        let id_key = if component { "component_id" } else { "provider_id" };
        let base =
            vec![KeyValue::new(id_key, id.to_string()), KeyValue::new("interface", interface.to_string()), KeyValue::new("function", function.to_string())];
        let by_kind = KINDS
            .iter()
            .map(|k| {
                let mut v = base.clone();
                v.push(KeyValue::new("kind", kind_name(*k)));
                v
            })
            .collect();
        Self { inst: inst.clone(), component, busy: vec![KeyValue::new(id_key, id.to_string())], base, by_kind }
    }
}

impl Served for FnServed {
    fn ended(&self, outcome: Outcome, elapsed: Duration) {
        let inst = if self.component { &self.inst.component } else { &self.inst.provider };
        inst.invocations.add(1, &self.base);
        inst.duration.record(elapsed.as_secs_f64(), &self.base);
        if let Outcome::Failed(kind) = outcome {
            inst.errors.add(1, &self.by_kind[kind_index(kind)]);
            if kind == RpcErrorKind::Busy && self.component {
                self.inst.busy.add(1, &self.busy);
            }
        }
    }
}

impl Target {
    fn function(&self, inst: &Arc<Instruments>, interface: &str, function: &str) -> Arc<FnServed> {
        if let Some(f) = self.functions.read().unwrap_or_else(|p| p.into_inner()).get(interface).and_then(|fs| fs.get(function)) {
            return f.clone();
        }
        if self.count.load(std::sync::atomic::Ordering::Relaxed) >= MAX_FUNCTIONS {
            return self.other.clone();
        }
        let mut functions = self.functions.write().unwrap_or_else(|p| p.into_inner());
        let entry = functions.entry(interface.to_string()).or_default();
        if let Some(f) = entry.get(function) {
            return f.clone();
        }
        self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = Arc::new(FnServed::new(inst, self.component, &self.id, interface, function));
        entry.insert(function.to_string(), f.clone());
        f
    }
}

impl Observing {
    fn target(&self, id: &str) -> Option<Arc<Target>> {
        if let Some(t) = self.targets.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Some(t.clone());
        }
        // Whether it is a component is decided once, at its first call: this router answers
        // only the components and built-in providers of this host.
        let component = self.components.get().is_some_and(|c| c.contains(id));
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        if targets.len() >= MAX_TARGETS && !targets.contains_key(id) {
            let other = "other";
            return Some(targets.entry(other.into()).or_insert_with(|| Arc::new(Target::new(&self.inst, other, component))).clone());
        }
        Some(targets.entry(id.into()).or_insert_with(|| Arc::new(Target::new(&self.inst, id, component))).clone())
    }
}

impl Target {
    fn new(inst: &Arc<Instruments>, id: &str, component: bool) -> Self {
        Self {
            functions: RwLock::new(HashMap::new()),
            count: Default::default(),
            other: Arc::new(FnServed::new(inst, component, id, "other", "other")),
            id: id.into(),
            component,
        }
    }
}

impl Observer for Observing {
    fn called(&self, route: Route, outcome: Outcome, elapsed: Duration) {
        let r = match route {
            Route::Local => 0,
            Route::Nats => 1,
        };
        let o = match outcome {
            Outcome::Ok => 0,
            Outcome::Failed(kind) => 1 + kind_index(kind),
            Outcome::Cancelled => 1 + KINDS.len(),
        };
        self.inst.rpc_calls.add(1, &self.inst.rpc_attrs[r][o]);
        self.inst.rpc_duration.record(elapsed.as_secs_f64(), &self.inst.rpc_route_attrs[r]);
    }

    fn serving(&self, call: &CallInfo) -> Option<Arc<dyn Served>> {
        let target = self.target(&call.target)?;
        Some(target.function(&self.inst, &call.interface, &call.function))
    }
}

/// The host process, from `/proc/self`.
mod proc {
    /// Resident memory in bytes (`VmRSS`).
    pub fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// User + system CPU seconds (`utime` + `stime`, in clock ticks of 1/100 s: Linux's
    /// USER_HZ for /proc is 100 on every architecture).
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields are counted after the last `)`.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3; utime is 14 and stime 15 (1-based, of the whole line).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / 100.0)
    }
}

/// The Prometheus text exposition format (0.0.4), from what the SDK collected.
mod prometheus {
    use std::fmt::Write as _;

    use super::*;

    /// A metric or label name with what Prometheus does not allow replaced by `_`.
    fn name(n: &str) -> String {
        let mut out: String = n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
        if out.starts_with(|c: char| c.is_ascii_digit()) {
            out.insert(0, '_');
        }
        out
    }

    /// A label value: `\`, `"` and newlines escaped.
    fn escape_value(v: &str) -> String {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    }

    /// HELP text: `\` and newlines escaped.
    fn escape_help(v: &str) -> String {
        v.replace('\\', "\\\\").replace('\n', "\\n")
    }

    fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, &str)>) -> String {
        // Sorted by name: the SDK keeps a series' attributes in the order first seen.
        let mut sorted: Vec<&KeyValue> = attrs.collect();
        sorted.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        let mut parts: Vec<String> = sorted.iter().map(|kv| format!("{}=\"{}\"", name(kv.key.as_str()), escape_value(&kv.value.as_str()))).collect();
        if let Some((k, v)) = extra {
            parts.push(format!("{k}=\"{}\"", escape_value(v)));
        }
        if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
    }

    /// A sample value as Prometheus writes floats.
    fn value(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
        } else {
            format!("{v}")
        }
    }

    trait Num: Copy {
        fn f(self) -> f64;
    }
    impl Num for f64 {
        fn f(self) -> f64 {
            self
        }
    }
    impl Num for u64 {
        fn f(self) -> f64 {
            self as f64
        }
    }
    impl Num for i64 {
        fn f(self) -> f64 {
            self as f64
        }
    }

    fn write_data<T: Num>(out: &mut String, base: &str, help: &str, data: &MetricData<T>) {
        match data {
            MetricData::Sum(sum) => {
                let (kind, n) = if sum.is_monotonic() {
                    ("counter", if base.ends_with("_total") { base.to_string() } else { format!("{base}_total") })
                } else {
                    ("gauge", base.to_string())
                };
                let _ = writeln!(out, "# HELP {n} {}\n# TYPE {n} {kind}", escape_help(help));
                for p in sum.data_points() {
                    let _ = writeln!(out, "{n}{} {}", labels(p.attributes(), None), value(p.value().f()));
                }
            }
            MetricData::Gauge(g) => {
                let _ = writeln!(out, "# HELP {base} {}\n# TYPE {base} gauge", escape_help(help));
                for p in g.data_points() {
                    let _ = writeln!(out, "{base}{} {}", labels(p.attributes(), None), value(p.value().f()));
                }
            }
            MetricData::Histogram(h) => {
                let _ = writeln!(out, "# HELP {base} {}\n# TYPE {base} histogram", escape_help(help));
                for p in h.data_points() {
                    let mut cumulative = 0u64;
                    let counts: Vec<u64> = p.bucket_counts().collect();
                    for (i, bound) in p.bounds().enumerate() {
                        cumulative += counts.get(i).copied().unwrap_or(0);
                        let _ = writeln!(out, "{base}_bucket{} {cumulative}", labels(p.attributes(), Some(("le", &value(bound)))));
                    }
                    let _ = writeln!(out, "{base}_bucket{} {}", labels(p.attributes(), Some(("le", "+Inf"))), p.count());
                    let _ = writeln!(out, "{base}_sum{} {}", labels(p.attributes(), None), value(p.sum().f()));
                    let _ = writeln!(out, "{base}_count{} {}", labels(p.attributes(), None), p.count());
                }
            }
            // Not configured anywhere in the host.
            MetricData::ExponentialHistogram(_) => {}
        }
    }

    pub(super) fn render(rm: &ResourceMetrics) -> String {
        let mut out = String::new();
        for scope in rm.scope_metrics() {
            for m in scope.metrics() {
                let base = name(m.name());
                match m.data() {
                    AggregatedMetrics::F64(d) => write_data(&mut out, &base, m.description(), d),
                    AggregatedMetrics::U64(d) => write_data(&mut out, &base, m.description(), d),
                    AggregatedMetrics::I64(d) => write_data(&mut out, &base, m.description(), d),
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    mod tests {
        use super::*;

        #[test]
        fn escapes_and_names() {
            assert_eq!(name("a.b-c"), "a_b_c");
            assert_eq!(name("1x"), "_1x");
            assert_eq!(escape_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
            assert_eq!(value(f64::INFINITY), "+Inf");
            assert_eq!(value(0.5), "0.5");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn call(target: &str, function: &str) -> CallInfo {
        CallInfo {
            lattice: "l".into(),
            source: "s".into(),
            target: target.into(),
            interface: "x:y/z".into(),
            function: function.into(),
            link_name: "default".into(),
        }
    }

    #[test]
    fn renders_counters_histograms_and_kinds() {
        let m = Metrics::new("N1", "l", None).unwrap();
        let o = m.observer();
        for _ in 0..3 {
            o.serving(&call("kv", "get")).unwrap().ended(Outcome::Ok, Duration::from_millis(2));
        }
        o.serving(&call("kv", "get")).unwrap().ended(Outcome::Failed(RpcErrorKind::Deadline), Duration::from_millis(20));
        o.called(Route::Nats, Outcome::Failed(RpcErrorKind::Lost), Duration::from_secs(2));
        let text = m.render();
        assert!(text.contains("# TYPE trellis_provider_invocations_total counter"), "{text}");
        assert!(text.contains("trellis_provider_invocations_total{function=\"get\",interface=\"x:y/z\",provider_id=\"kv\"} 4"), "{text}");
        assert!(text.contains("trellis_provider_errors_total{function=\"get\",interface=\"x:y/z\",kind=\"deadline\",provider_id=\"kv\"} 1"), "{text}");
        assert!(
            text.contains("trellis_provider_invocation_duration_seconds_bucket{function=\"get\",interface=\"x:y/z\",provider_id=\"kv\",le=\"0.0025\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("trellis_provider_invocation_duration_seconds_bucket{function=\"get\",interface=\"x:y/z\",provider_id=\"kv\",le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(text.contains("trellis_provider_invocation_duration_seconds_count{function=\"get\",interface=\"x:y/z\",provider_id=\"kv\"} 4"), "{text}");
        assert!(text.contains("trellis_rpc_calls_total{outcome=\"lost\",route=\"nats\"} 1"), "{text}");
    }

    #[test]
    fn busy_refusals_are_counted_per_component() {
        let m = Metrics::new("N1", "l", None).unwrap();
        let served = FnServed::new(&m.inst, true, "c", "x:y/z", "f");
        served.ended(Outcome::Failed(RpcErrorKind::Busy), Duration::from_millis(1));
        served.ended(Outcome::Failed(RpcErrorKind::Handler), Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("trellis_component_busy_refusals_total{component_id=\"c\"} 1"), "{text}");
        assert!(text.contains("trellis_component_errors_total{component_id=\"c\",function=\"f\",interface=\"x:y/z\",kind=\"busy\"} 1"), "{text}");
        assert!(text.contains("trellis_component_errors_total{component_id=\"c\",function=\"f\",interface=\"x:y/z\",kind=\"handler\"} 1"), "{text}");
    }

    #[test]
    fn functions_per_target_are_capped() {
        let m = Metrics::new("N1", "l", None).unwrap();
        let o = m.observer();
        for i in 0..MAX_FUNCTIONS + 5 {
            o.serving(&call("p", &format!("f{i}"))).unwrap().ended(Outcome::Ok, Duration::from_millis(1));
        }
        let text = m.render();
        let series = text.lines().filter(|l| l.starts_with("trellis_provider_invocations_total{")).count();
        assert_eq!(series, MAX_FUNCTIONS + 1, "{text}");
        assert!(text.contains("{function=\"other\",interface=\"other\",provider_id=\"p\"} 5"), "{text}");
    }

    #[test]
    fn export_settings_follow_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assert_eq!(Export::from_env(false, env(&[])), None);
        assert_eq!(Export::from_env(true, env(&[])), Some(Export::default()));
        let e =
            Export::from_env(false, env(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://x/v1/metrics"), ("OTEL_METRIC_EXPORT_INTERVAL", "500")])).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://x/v1/metrics"));
        assert_eq!(e.interval, Some(Duration::from_millis(500)));
        assert_eq!(Export::from_env(true, env(&[("OTEL_SDK_DISABLED", "true")])), None);
    }
}
