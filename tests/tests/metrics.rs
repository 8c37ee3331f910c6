//! Metrics and the admin endpoint: the counts on `/metrics` match the HTTP requests sent to a
//! real component through the http-server provider, errors are counted by kind (a deadline, a
//! trap, a call with no replica), `/readyz` is 200 once the host is up, 503 (naming NATS)
//! once NATS is gone and 200 again when it is back (the reconnect counted), the reconciler's
//! passes are counted, Debian's Prometheus scrapes `/metrics` and answers a query for a count
//! through its HTTP API, and OTLP export delivers the counts to a receiver decoding real OTLP.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::ctl::ScaleComponentCommand;
use trellis_tests::components::{file_ref, misbehave};
use trellis_tests::hosts::{config, init_tracing};
use trellis_tests::http::{free_addr, get, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

/// An in-process host with the admin endpoint on a free address.
async fn host_with_admin(nats_url: &str) -> (Host, SocketAddr) {
    init_tracing();
    let mut c = config(nats_url, &[]);
    c.http_admin = Some("127.0.0.1:0".parse().unwrap());
    let host = Host::start(c).await.unwrap();
    let addr = host.admin_addr().unwrap();
    (host, addr)
}

/// The value of the sample of `name` whose labels include every one of `labels`, if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

/// Reads `/metrics` until the sample reaches `want` (it is recorded as the call's body ends,
/// which may be just after the client has its answer), then returns the page.
async fn metrics_when(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = get(admin, "/metrics").await.unwrap();
        assert_eq!(r.status, 200);
        let text = r.text();
        let got = sample(&text, name, labels);
        if got == Some(want) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}{labels:?} is {got:?}, not {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `/metrics` until the sample is at least `want`.
async fn metrics_when_at_least(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = get(admin, "/metrics").await.unwrap().text();
        if sample(&text, name, labels).is_some_and(|v| v >= want) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}{labels:?} never reached {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Component `bad` (misbehave: `/loop` spins, `/grow` eats memory) with a 500 ms deadline and a
/// 32 MiB memory cap on `host`, served by the http-server provider built into `web` at a free
/// address.
async fn misbehave_behind_http(l: &mut Lattice, host: &Host, web: &Host) -> SocketAddr {
    let cmd = ScaleComponentCommand {
        component_ref: file_ref(misbehave()),
        component_id: "bad".into(),
        max_instances: 2,
        host_id: host.id().into(),
        component_limits: Some(BTreeMap::from([
            ("max_execution_time_ms".to_string(), "500".to_string()),
            ("max_linear_memory_bytes".to_string(), (32u64 << 20).to_string()),
        ])),
        ..Default::default()
    };
    l.ctl.scale_component(&cmd).await.unwrap();
    l.events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "bad").await.unwrap();
    l.start_provider(web, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "bad", addr, &[]).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_match_the_requests_sent_and_errors_are_counted_by_kind() {
    let nats = NatsServer::start().await.unwrap();
    let (a, admin) = host_with_admin(&nats.url()).await;
    let (b, _) = host_with_admin(&nats.url()).await;
    let mut l = lattice(nats).await;
    // The component on A, the http-server provider on B: every call crosses NATS.
    let addr = misbehave_behind_http(&mut l, &a, &b).await;

    // One GET from get_until, then 24 more: 25 answered, none failed.
    for _ in 0..24 {
        assert_eq!(get(addr, "/").await.unwrap().status, 200);
    }
    let http = [("component_id", "bad"), ("interface", "wasi:http/incoming-handler"), ("function", "handle")];
    let text = metrics_when(admin, "trellis_component_invocations_total", &http, 25.0).await;
    assert_eq!(sample(&text, "trellis_component_errors_total", &http), None, "{text}");
    assert_eq!(sample(&text, "trellis_component_invocation_duration_seconds_count", &http), Some(25.0), "{text}");
    assert_eq!(sample(&text, "trellis_component_invocation_duration_seconds_bucket", &[http[0], ("le", "+Inf")]), Some(25.0), "{text}");
    assert!(text.contains("# TYPE trellis_component_invocation_duration_seconds histogram"), "{text}");
    // Gauges: nothing runs or waits now; the process has memory and has used CPU.
    assert_eq!(sample(&text, "trellis_component_active_instances", &[("component_id", "bad")]), Some(0.0), "{text}");
    assert_eq!(sample(&text, "trellis_component_queued_calls", &[("component_id", "bad")]), Some(0.0), "{text}");
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6, "{text}");
    assert!(sample(&text, "process_cpu_seconds_total", &[]).unwrap() > 0.0, "{text}");
    assert_eq!(sample(&text, "trellis_nats_reconnects_total", &[]), Some(0.0), "{text}");

    // Two calls past the deadline, two traps (memory cap): errors by kind, each call counted once.
    for path in ["/loop", "/loop", "/grow", "/grow"] {
        let r = get(addr, path).await.unwrap();
        assert!(r.status == 408 || r.status >= 500, "{path}: {} {}", r.status, r.text());
    }
    let deadline = [http[0], http[1], http[2], ("kind", "deadline")];
    let trap = [http[0], http[1], http[2], ("kind", "handler")];
    metrics_when(admin, "trellis_component_errors_total", &deadline, 2.0).await;
    let text = metrics_when(admin, "trellis_component_errors_total", &trap, 2.0).await;
    assert_eq!(sample(&text, "trellis_component_invocations_total", &http), Some(29.0), "{text}");

    // The caller's side, on B: data-plane calls over NATS by outcome.
    let on_b = b.metrics_text();
    assert_eq!(sample(&on_b, "trellis_rpc_calls_total", &[("route", "nats"), ("outcome", "ok")]), Some(25.0), "{on_b}");
    assert_eq!(sample(&on_b, "trellis_rpc_calls_total", &[("route", "nats"), ("outcome", "deadline")]), Some(2.0), "{on_b}");
    assert_eq!(sample(&on_b, "trellis_rpc_calls_total", &[("route", "nats"), ("outcome", "handler")]), Some(2.0), "{on_b}");

    // No replica: a link to a component that runs nowhere.
    let ghost = free_addr().unwrap();
    l.link_at("http", "ghost", ghost, &[]).await;
    get_until(ghost, "/", 503, WAIT).await.unwrap();
    let on_b = b.metrics_text();
    assert!(sample(&on_b, "trellis_rpc_calls_total", &[("route", "nats"), ("outcome", "no_replica")]).unwrap() >= 1.0, "{on_b}");
    // B answered nothing of bad's: the component metrics are A's alone.
    assert_eq!(sample(&on_b, "trellis_component_invocations_total", &http), None, "{on_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_once_up_and_not_ready_when_nats_is_gone() {
    let mut nats = NatsServer::start().await.unwrap();
    let (host, admin) = host_with_admin(&nats.url()).await;
    let r = get(admin, "/livez").await.unwrap();
    assert_eq!((r.status, r.text().trim()), (200, "{\"status\":\"ok\"}"));
    let r = get(admin, "/readyz").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ready"], true, "{v}");
    for check in ["nats", "state_buckets", "reconciler"] {
        assert_eq!(v["checks"][check]["ok"], true, "{v}");
    }
    let r = get(admin, "/nope").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/livez, /readyz and /metrics"), "{}", r.text());

    // The lone host leads and runs a reconciler pass each second (nothing deployed: each ok).
    metrics_when_at_least(admin, "trellis_reconciler_passes_total", &[("result", "ok")], 1.0).await;

    nats.kill();
    let r = get_until(admin, "/readyz", 503, WAIT).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["not_ready"], serde_json::json!(["nats"]), "{v}");
    assert_ne!(v["checks"]["nats"]["status"], "connected", "{v}");
    // Alive all the same.
    assert_eq!(get(admin, "/livez").await.unwrap().status, 200);

    // NATS back on the same port: ready again, and the reconnect counted.
    nats.restart().await.unwrap();
    get_until(admin, "/readyz", 200, WAIT).await.unwrap();
    metrics_when(admin, "trellis_nats_reconnects_total", &[], 1.0).await;
    drop(host);
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every 500 ms, its storage
/// and config in a temp dir, on a free port; killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n  - job_name: trellis\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr = free_addr()?;
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log"))?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run `prometheus` ({e}); install Debian's package: apt-get install -y prometheus (.ci/bootstrap does)"))?;
        Ok(Self { child, addr, _dir: dir })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_admin_endpoint() {
    let nats = NatsServer::start().await.unwrap();
    let (host, admin) = host_with_admin(&nats.url()).await;
    let mut l = lattice(nats).await;
    // Local routing this time: the provider and the component share the host.
    let addr = misbehave_behind_http(&mut l, &host, &host).await;
    for _ in 0..9 {
        assert_eq!(get(addr, "/").await.unwrap().status, 200);
    }
    let http = [("component_id", "bad"), ("interface", "wasi:http/incoming-handler"), ("function", "handle")];
    metrics_when(admin, "trellis_component_invocations_total", &http, 10.0).await;
    let text = host.metrics_text();
    assert_eq!(sample(&text, "trellis_rpc_calls_total", &[("route", "local"), ("outcome", "ok")]), Some(10.0), "{text}");

    let prometheus = Prometheus::start(admin).unwrap();
    // trellis_component_invocations_total{component_id="bad"}, URL-encoded.
    let query = "/api/v1/query?query=trellis_component_invocations_total%7Bcomponent_id%3D%22bad%22%7D";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let value = loop {
        let answer = get(prometheus.addr, query).await;
        if let Ok(r) = &answer
            && r.status == 200
        {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["status"], "success", "{v}");
            if let Some(sample) = v["data"]["result"].as_array().and_then(|a| a.first()) {
                assert_eq!(sample["metric"]["interface"], "wasi:http/incoming-handler", "{v}");
                assert_eq!(sample["metric"]["job"], "trellis", "{v}");
                break sample["value"][1].as_str().unwrap().to_string();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "Prometheus has no sample of the count yet: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(value, "10");
}

/// An OTLP/HTTP metrics receiver on a free port: every export request it gets is decoded with
/// `opentelemetry-proto`'s types and sent down the channel.
async fn otlp_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>)
{
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/metrics");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let decoded = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(body).unwrap();
                        let _ = tx.send(decoded);
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_over_otlp_when_enabled() {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let (receiver, mut exports) = otlp_receiver().await;
    let nats = NatsServer::start().await.unwrap();
    init_tracing();
    let mut c = config(&nats.url(), &[]);
    c.metrics_export =
        Some(trellis_host::metrics::Export { endpoint: Some(format!("http://{receiver}/v1/metrics")), interval: Some(Duration::from_millis(200)) });
    let host = Host::start(c).await.unwrap();
    let mut l = lattice(nats).await;
    let addr = misbehave_behind_http(&mut l, &host, &host).await;
    for _ in 0..2 {
        assert_eq!(get(addr, "/").await.unwrap().status, 200);
    }
    // Cumulative sums: an export soon holds all three calls of `bad`.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        let export =
            tokio::time::timeout_at(deadline, exports.recv()).await.unwrap_or_else(|_| panic!("no export with 3 calls of `bad`; last: {last:?}")).unwrap();
        let resource = export.resource_metrics[0].resource.as_ref().unwrap();
        let attr = |k: &str| resource.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.as_ref()).map(|v| format!("{:?}", v.value));
        assert!(attr("host.id").unwrap().contains(host.id()), "{resource:?}");
        assert!(attr("service.name").unwrap().contains("trellis-host"), "{resource:?}");
        let count = export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .filter(|m| m.name == "trellis_component_invocations")
            .filter_map(|m| match &m.data {
                Some(Data::Sum(sum)) => Some(sum.data_points.clone()),
                _ => None,
            })
            .flatten()
            .filter(|p| p.attributes.iter().any(|a| a.key == "component_id" && format!("{:?}", a.value).contains("\"bad\"")))
            .find_map(|p| match p.value {
                Some(Value::AsInt(n)) => Some(n),
                _ => None,
            });
        if count == Some(3) {
            break;
        }
        last = Some(count);
    }
    host.stop(Duration::from_secs(5)).await;
}
