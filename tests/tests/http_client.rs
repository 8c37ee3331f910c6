//! Outgoing HTTP end to end: `examples/http-fetcher` (HTTP in through the http-server
//! provider, `wasi:http/outgoing-handler` out) reaches real hyper servers started here through
//! the http-client provider, built in beside it (local routing) or as a process on another
//! host; every denial and error reaches the component as its `wasi:http` `error-code`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use trellis_lattice::ctl::Link;
use trellis_tests::components::{file_ref, http_fetcher};
use trellis_tests::hosts::{ProcessHost, start_host, workspace_binary};
use trellis_tests::http::{Reply, free_addr, get_until, request};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the test servers answer: `/small` → `hello`; `/big?n=N` → N bytes, streamed in 64 KiB
/// frames; `POST /count` → how many body bytes came; `/slow` → a head after 3 s;
/// `/stall` → one part of the body, the next 3 s later; `/redirect` → a 302 to `/small`; anything → the HTTP version it came with, as `/version`.
async fn answer(req: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
    let full = |s: String| http_body_util::Full::new(Bytes::from(s)).boxed();
    let version = format!("{:?}", req.version());
    let resp = match req.uri().path() {
        "/small" => http::Response::new(full("hello".into())),
        "/big" => {
            let n: usize = req.uri().query().and_then(|q| q.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(0);
            let frames = futures::stream::iter((0..n).step_by(64 * 1024).map(move |at| {
                let len = (n - at).min(64 * 1024);
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len])))
            }));
            http::Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    n += data.len();
                }
            }
            http::Response::new(full(n.to_string()))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            http::Response::new(full("late".into()))
        }
        "/stall" => {
            let frames = futures::stream::iter([0u64, 3000]).then(|ms| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part ")))
            });
            http::Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
        "/redirect" => http::Response::builder().status(302).header("location", "/small").body(full(String::new())).unwrap(),
        _ => http::Response::new(full(version)),
    };
    Ok(resp)
}

/// A plain HTTP/1.1 server on 127.0.0.1 (an OS-picked port), serving [`answer`].
async fn plain_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer)));
        }
    });
    addr
}

/// An HTTPS server on 127.0.0.1 with a certificate from a CA made by openssl now, speaking
/// HTTP/2 or HTTP/1.1 as ALPN decides. Returns its address and the CA file.
async fn tls_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    use rustls::pki_types::pem::PemObject as _;
    let (ca, cert, key) = trellis_tests::tls::make_certs(dir).unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // An untrusting client aborts the handshake: nothing to serve then.
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, hyper::service::service_fn(answer)).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, hyper::service::service_fn(answer)).await;
                }
            });
        }
    });
    (addr, ca)
}

/// Percent-encodes `url` for `?url=`.
fn encode(url: &str) -> String {
    url.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `GET /?url=URL&extra` through the fetcher at `addr`.
async fn fetch(addr: SocketAddr, url: &str, extra: &str) -> Reply {
    request(addr, "GET", &format!("/?url={}{extra}", encode(url)), Bytes::new(), Duration::from_secs(30)).await.unwrap()
}

/// The `error-code` the fetcher answered with, or its body if it was not a failure.
fn code(r: &Reply) -> String {
    let t = r.text();
    t.strip_prefix("error-code: ").and_then(|s| s.lines().next()).map_or_else(|| format!("{} {t}", r.status), str::to_string)
}

/// Polls the fetcher until `check` holds for its answer to `url` (links and config reach the
/// hosts and the provider a moment after they are put).
async fn fetch_until(addr: SocketAddr, url: &str, extra: &str, check: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = fetch(addr, url, extra).await;
        if check(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "fetching {url}{extra}: still {} {:?}", r.status, r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts config `{source}-{name}-out` = `allowed_hosts` and the fetcher's outgoing-handler link
/// `name` to `target` with it.
async fn allow(l: &Lattice, source: &str, target: &str, name: &str, allowed_hosts: &str) {
    let cfg = format!("{source}-{name}-out");
    l.ctl.put_config(&cfg, &[("allowed_hosts".to_string(), allowed_hosts.to_string())].into_iter().collect()).await.unwrap();
    l.ctl
        .put_link(&Link {
            source_id: source.into(),
            target: target.into(),
            name: name.into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec!["outgoing-handler".into()],
            source_config: vec![],
            target_config: vec![cfg],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetcher_reaches_a_server_through_a_local_provider_and_one_on_another_host() {
    let server = plain_server().await;
    let nats = NatsServer::start().await.unwrap();
    let web = start_host(&nats.url(), &[]).await.unwrap();
    let remote = ProcessHost::start(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider(&web, "http", "builtin://http-server", &[]).await;
    l.start_provider(&web, "http-client", "builtin://http-client", &[]).await;
    l.start_component(&web, "fetcher", http_fetcher(), 8, None).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "fetcher", addr, &[]).await;
    allow(&l, "fetcher", "http-client", "default", "127.0.0.1").await;
    let url = format!("http://{server}/small");

    // Local routing: the provider is built into the component's host.
    let r = fetch_until(addr, &url, "", |r| r.status == 200).await;
    assert_eq!(r.text(), "hello");
    // The guest sees a redirect as it is (nothing follows it).
    let r = fetch(addr, &format!("http://{server}/redirect"), "").await;
    assert_eq!(r.status, 302, "{}", r.text());

    // The provider as a process on another host, under link name `far` (`set-link-name`).
    let binary = workspace_binary("trellis-provider-http-client", "trellis-provider-http-client").unwrap();
    l.start_provider_on(&remote.id, "far-client", &file_ref(binary), &[]).await;
    allow(&l, "fetcher", "far-client", "far", "127.0.0.1").await;
    let r = fetch_until(addr, &url, "&link=far", |r| r.status == 200).await;
    assert_eq!(r.text(), "hello");
    let big = fetch(addr, &format!("http://{server}/big?n=3000000"), "&link=far").await;
    assert_eq!((big.status, big.body.len()), (200, 3_000_000), "a body of several chunks crosses NATS");
    assert!(big.body.iter().all(|b| *b == b'x'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_denied_without_a_link_and_outside_the_allow_list() {
    let server = plain_server().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("host.log");
    let nats = NatsServer::start().await.unwrap();
    let host = ProcessHost::start_logged(&nats.url(), &[], &log).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider_on(&host.id, "http", "builtin://http-server", &[]).await;
    l.start_provider_on(&host.id, "http-client", "builtin://http-client", &[]).await;
    l.start_component_on(&host.id, "fetcher", http_fetcher(), 8, None).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "fetcher", addr, &[]).await;
    get_until(addr, "/", 400, WAIT).await.unwrap();
    let url = format!("http://{server}/small");

    // No link: denied, and one warning says which link would allow it, however many requests.
    for _ in 0..20 {
        let r = fetch(addr, &url, "").await;
        assert_eq!((r.status, code(&r)), (502, "HttpRequestDenied".to_string()), "{}", r.text());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("denied outgoing HTTP request")).collect();
    assert_eq!(warnings.len(), 1, "one warning for 20 denials:\n{}", warnings.join("\n"));
    trellis_tests::assert_contains_all(
        warnings[0],
        &["`fetcher`", &format!("`{server}`"), "wash link put fetcher <http-client-id> wasi http --interface outgoing-handler"],
    );

    // A link whose allow-list names another host: denied by the provider. (That the link is
    // in force shows first: the host it names is tried, and nothing listens on port 1.)
    allow(&l, "fetcher", "http-client", "default", "localhost:1").await;
    fetch_until(addr, "http://localhost:1/", "", |r| code(r) == "ConnectionRefused").await;
    let r = fetch(addr, &url, "").await;
    assert_eq!(code(&r), "HttpRequestDenied", "{}", r.text());

    // `*` opens public hosts only: loopback, the metadata address and a name resolving to
    // loopback are refused, on the resolved address.
    allow(&l, "fetcher", "http-client", "default", "*").await;
    let port = server.port();
    fetch_until(addr, &url, "", |r| code(r) == "DestinationIpProhibited").await;
    for url in
        [format!("http://localhost:{port}/small"), "http://169.254.169.254/latest/meta-data/".to_string(), format!("http://[::ffff:127.0.0.1]:{port}/small")]
    {
        let r = fetch(addr, &url, "").await;
        assert_eq!(code(&r), "DestinationIpProhibited", "{url}: {}", r.text());
    }

    // Named exactly, loopback is allowed.
    allow(&l, "fetcher", "http-client", "default", &format!("*, localhost:{port}")).await;
    let r = fetch_until(addr, &format!("http://localhost:{port}/small"), "", |r| r.status == 200).await;
    assert_eq!(r.text(), "hello");
    // Still refused under the same `*` for a port not named.
    let other = plain_server().await;
    let r = fetch(addr, &format!("http://localhost:{}/small", other.port()), "").await;
    assert_eq!(code(&r), "DestinationIpProhibited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_component_as_their_error_codes() {
    let server = plain_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = tls_server(dir.path()).await;
    let closed = free_addr().unwrap();
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    l.start_provider(&host, "http-client", "builtin://http-client", &[]).await;
    l.start_provider(&host, "trusting-client", "builtin://http-client", &[("tls_ca_file", ca.to_str().unwrap())]).await;
    l.start_component(&host, "fetcher", http_fetcher(), 8, None).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "fetcher", addr, &[]).await;
    allow(&l, "fetcher", "http-client", "default", "127.0.0.1, no-such-host.invalid").await;
    allow(&l, "fetcher", "trusting-client", "ca", "127.0.0.1").await;

    fetch_until(addr, &format!("http://{server}/small"), "", |r| r.status == 200).await;
    let r = fetch(addr, &format!("http://{closed}/"), "").await;
    assert_eq!(code(&r), "ConnectionRefused", "{}", r.text());
    let r = fetch(addr, "http://no-such-host.invalid/", "").await;
    assert_eq!(code(&r), "DnsError", "{}", r.text());
    let r = fetch(addr, &format!("https://{tls}/version"), "").await;
    assert_eq!(code(&r), "TlsCertificateError", "a certificate from a CA nobody trusts: {}", r.text());
    let started = std::time::Instant::now();
    let r = fetch(addr, &format!("http://{server}/slow"), "&first_byte_ms=300").await;
    assert_eq!(code(&r), "HttpResponseTimeout", "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2), "the first-byte timeout ended it: {:?}", started.elapsed());

    // A body that stalls longer than the between-bytes timeout is cut off then: the head is
    // out, so the client sees the response break off early, not the 3 s stall.
    let started = std::time::Instant::now();
    let path = format!("/?url={}&between_bytes_ms=300", encode(&format!("http://{server}/stall")));
    let cut = request(addr, "GET", &path, Bytes::new(), Duration::from_secs(10)).await;
    assert!(cut.is_err(), "the stalled body should break off: {cut:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "the between-bytes timeout ended it: {:?}", started.elapsed());
    let whole = request(addr, "GET", &format!("/?url={}", encode(&format!("http://{server}/stall"))), Bytes::new(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(whole.text(), "part part ", "without the timeout the body waits for its second part");

    // The provider that trusts the CA gets through, over HTTP/2 by ALPN.
    let r = fetch_until(addr, &format!("https://{tls}/version"), "&link=ca", |r| r.status == 200).await;
    assert_eq!(r.text(), "HTTP/2.0");
}

/// VmHWM (peak resident set) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_stream_both_ways_in_bounded_memory() {
    const SIZE: usize = 50 << 20;
    let server = plain_server().await;
    let nats = NatsServer::start().await.unwrap();
    let host = ProcessHost::start(&nats.url(), &["--max-execution-time-ms", "120000"]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider_on(&host.id, "http", "builtin://http-server", &[]).await;
    l.start_provider_on(&host.id, "http-client", "builtin://http-client", &[]).await;
    l.start_component_on(&host.id, "fetcher", http_fetcher(), 8, None).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "fetcher", addr, &[("timeout_ms", "120000")]).await;
    allow(&l, "fetcher", "http-client", "default", "127.0.0.1").await;
    fetch_until(addr, &format!("http://{server}/small"), "", |r| r.status == 200).await;
    // Warm: a body of a few MB each way, so pools and buffers are at their working size.
    let warm = fetch(addr, &format!("http://{server}/big?n={}", 4 << 20), "").await;
    assert_eq!(warm.body.len(), 4 << 20);
    let before = peak_rss_kib(host.pid().unwrap());

    let timeout = Duration::from_secs(120);
    let down = request(addr, "GET", &format!("/?url={}", encode(&format!("http://{server}/big?n={SIZE}"))), Bytes::new(), timeout).await.unwrap();
    assert_eq!((down.status, down.body.len()), (200, SIZE));
    let up = request(addr, "POST", &format!("/?url={}", encode(&format!("http://{server}/count"))), Bytes::from(vec![b'y'; SIZE]), timeout).await.unwrap();
    assert_eq!((up.status, up.text()), (200, SIZE.to_string()));

    let growth_mib = (peak_rss_kib(host.pid().unwrap()).saturating_sub(before)) / 1024;
    println!("host peak RSS grew {growth_mib} MiB moving 50 MiB each way");
    assert!(growth_mib < 20, "the host's peak RSS grew {growth_mib} MiB moving 50 MiB bodies: something buffers them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_at_once_share_the_pool() {
    let server = plain_server().await;
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    l.start_provider(&host, "http-client", "builtin://http-client", &[]).await;
    l.start_component(&host, "fetcher", http_fetcher(), 16, None).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "fetcher", addr, &[]).await;
    allow(&l, "fetcher", "http-client", "default", "127.0.0.1").await;
    let url = format!("http://{server}/small");
    fetch_until(addr, &url, "", |r| r.status == 200).await;
    let answers = futures::stream::iter(0..64).map(|_| fetch(addr, &url, "")).buffer_unordered(16).collect::<Vec<_>>().await;
    assert!(answers.iter().all(|r| r.status == 200 && r.text() == "hello"), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
}
