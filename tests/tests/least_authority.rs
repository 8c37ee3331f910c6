//! Least authority, visible: a component that reaches for files, its environment or the
//! network gets an error, and the host logs why at warn level, tagged with the component id
//! (host/src/deny.rs). A component that reaches for none of them logs nothing.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use trellis_host::Host;
use trellis_tests::components::misbehave;
use trellis_tests::hosts::config;
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::Lattice;

/// Every log line of this test process, from the moment [`logs`] is first called.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The lines captured so far that contain `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }
}

/// Installs the capturing subscriber (warnings and errors, no colours) for this process.
fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt().with_env_filter("warn").with_ansi(false).with_writer(move || writer.clone()).init();
        captured
    })
    .clone()
}

async fn get(host: &Host, id: &str, path: &str) -> String {
    let req = http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).unwrap();
    let resp = host.invoke_http(id, req).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status(), 200, "GET {path}");
    String::from_utf8_lossy(resp.body()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_environment_and_sockets_are_denied_and_the_host_logs_each_with_the_component_id() {
    let logs = logs();
    let nats = NatsServer::start().await.unwrap();
    let host = Host::start(config(&nats.url(), &[])).await.unwrap();
    let mut lattice = Lattice::on(&nats).await;
    lattice.start_component(&host, "snoop", misbehave(), 2, None).await;
    let denials = || logs.lines_with("denied: component `snoop`");

    // Serving a request that touches nothing is quiet.
    assert_eq!(get(&host, "snoop", "/").await, "misbehave v1\n");
    assert_eq!(denials(), Vec::<String>::new());

    // Files: nothing to open a path in, so reading and creating both fail.
    let created = std::path::Path::new("/tmp/trellis-misbehave.txt");
    let before = std::fs::read(created).ok();
    let body = get(&host, "snoop", "/file").await;
    assert!(body.contains("read /etc/hostname: error: "), "{body}");
    assert!(body.contains("create /tmp/trellis-misbehave.txt: error: "), "{body}");
    assert_eq!(std::fs::read(created).ok(), before, "the component wrote a host file");
    let files = logs.lines_with("denied: component `snoop` looked for preopened directories");
    assert_eq!(files.len(), 1, "one line per invocation: {files:?}");
    assert!(files[0].contains("WARN") && files[0].contains("component_id=snoop"), "{}", files[0]);
    assert!(files[0].contains("deny-by-default"), "{}", files[0]);

    // Environment: empty, and asking for it is logged.
    assert_eq!(get(&host, "snoop", "/env").await, "env=0 args=0\n");
    let env = logs.lines_with("denied: component `snoop` asked for its environment variables");
    assert_eq!(env.len(), 1, "{env:?}");
    assert!(env[0].contains("WARN") && env[0].contains("component_id=snoop"), "{}", env[0]);

    // Network: a listener the component is pointed at never sees a connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = get(&host, "snoop", &format!("/socket?port={port}")).await;
    assert!(body.starts_with(&format!("connect 127.0.0.1:{port}: error: ")), "{body}");
    assert!(body.contains("access-denied"), "{body}");
    assert_eq!(listener.accept().map(|_| ()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "the component reached the listener");
    let net = logs.lines_with("denied: component `snoop` tried to open a TCP socket");
    assert_eq!(net.len(), 1, "{net:?}");
    assert!(net[0].contains("WARN") && net[0].contains("component_id=snoop"), "{}", net[0]);
    assert!(net[0].contains("network access only through links"), "{}", net[0]);

    // Each invocation is a fresh store: the next one that tries is logged again.
    get(&host, "snoop", "/file").await;
    assert_eq!(logs.lines_with("denied: component `snoop` looked for preopened directories").len(), 2);
    eprintln!("{}", denials().join("\n"));
    host.stop(std::time::Duration::from_secs(5)).await;
}

/// What a component is given instead: its named config through `wasi:config` (both names,
/// read live), and `wasi:logging` into the host log, tagged with the component id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reaches_the_component_live_and_its_logs_reach_the_host_log() {
    use trellis_lattice::ctl::ScaleComponentCommand;
    let logs = logs();
    let nats = NatsServer::start().await.unwrap();
    let host = Host::start(config(&nats.url(), &[])).await.unwrap();
    let mut lattice = Lattice::on(&nats).await;
    let cfg = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    lattice.ctl.put_config("base", &cfg(&[("greeting", "hello"), ("color", "blue")])).await.unwrap();
    lattice.ctl.put_config("override", &cfg(&[("color", "green")])).await.unwrap();
    lattice
        .ctl
        .scale_component(&ScaleComponentCommand {
            component_ref: trellis_tests::components::file_ref(misbehave()),
            component_id: "configured".into(),
            max_instances: 2,
            host_id: host.id().into(),
            config: vec!["base".into(), "override".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    lattice.events.wait_for("component_scaled", trellis_tests::scenario::WAIT, |e| e.data["component_id"] == "configured").await.unwrap();

    // Later names win; both interface names see the same merged config.
    assert_eq!(get(&host, "configured", "/config").await, "greeting=hello all=color=green,greeting=hello\n");
    // A config change reaches the next invocation, with no restart.
    lattice.ctl.put_config("base", &cfg(&[("greeting", "bonjour")])).await.unwrap();
    let deadline = std::time::Instant::now() + trellis_tests::scenario::WAIT;
    loop {
        let body = get(&host, "configured", "/config").await;
        if body == "greeting=bonjour all=color=green,greeting=bonjour\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the change never arrived: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // wasi:logging lands in the host log at its level, with the component id and context.
    assert_eq!(get(&host, "configured", "/log?the-cache-is-cold").await, "logged\n");
    let lines = logs.lines_with("the-cache-is-cold");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("component_id=\"configured\""), "{}", lines[0]);
    assert!(lines[0].contains("context=\"misbehave\""), "{}", lines[0]);
    host.stop(std::time::Duration::from_secs(5)).await;
}
