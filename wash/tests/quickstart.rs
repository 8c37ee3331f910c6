//! The README's quick start as a user types it: `make up` in the repository root, a GET of the
//! URL it prints, `make up` again (it reuses what runs), then `make down`, after which none of
//! its processes remain. Its own ports and WASH_HOME, never 4222 or ~/.wash.
//!
//! `make up` builds `wash` and the examples; after `make test`'s build (or `cargo test`'s) both
//! are no-ops, provided cargo does not see this test's own package variables, so this test does
//! not compete with the others for the target directory.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Wash, free_port, gone, listening};
use trellis_tests::hosts::remove_cargo_test_env;

/// `make TARGET` in the repository root with the quick start's variables, off the async workers.
async fn make(wash: &Wash, target: &'static str, http_port: u16) -> Output {
    let (nats_port, home) = (wash.port, wash.home.clone());
    tokio::task::spawn_blocking(move || make_blocking(target, nats_port, &home, http_port)).await.expect("joined")
}

fn make_blocking(target: &str, nats_port: u16, home: &Path, http_port: u16) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root");
    let mut cmd = Command::new("make");
    cmd.arg(target).current_dir(root);
    // `make up` runs cargo, which must not see this test's package variables (or it rebuilds).
    remove_cargo_test_env(&mut cmd);
    // Nothing from the developer's wash settings or an outer make (jobserver, directory chatter).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("WASH_") || ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CARGO_MAKEFLAGS", "NATS_PORT", "HTTP_PORT"].contains(&k.as_str()) {
            cmd.env_remove(k);
        }
    }
    cmd.env("NATS_PORT", nats_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("WASH_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `make {target}`: {e}"))
}

#[track_caller]
fn succeeded(target: &str, out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`make {target}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout.into_owned()
}

fn pid_in(wash: &Wash, file: &str) -> u32 {
    let text = std::fs::read_to_string(wash.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{file} holds {text:?}: {e}"))
}

async fn get(url: &str) -> String {
    let addr: SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    let reply = trellis_tests::http::request(addr, "GET", "/", bytes::Bytes::new(), Duration::from_secs(10)).await.expect("GET");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_up_serves_hello_and_make_down_stops_everything() {
    let (nats_port, mut http_port) = (free_port(), free_port());
    while http_port == nats_port {
        http_port = free_port();
    }
    // Its Drop runs `wash down` if the test fails half way.
    let wash = Wash::new(nats_port);

    let stdout = succeeded("up", &make(&wash, "up", http_port).await);
    let url = format!("http://127.0.0.1:{http_port}/");
    let printed = stdout.lines().find_map(|l| l.strip_prefix("Trellis is up: ")).unwrap_or_else(|| panic!("no URL printed:\n{stdout}"));
    assert!(printed.starts_with(&format!("{url} ")), "{printed}");
    assert!(stdout.contains(&format!("curl {url}")), "{stdout}");
    assert_eq!(get(&url).await, "Hello from Trellis!\n");
    let (up_pid, nats_pid) = (pid_in(&wash, "wash-up.pid"), pid_in(&wash, "nats.pid"));

    // Again: the lattice, the component and the provider are reused, and it still serves.
    let stdout = succeeded("up", &make(&wash, "up", http_port).await);
    for line in ["A lattice is already up", "Component hello is already running", "Provider http-server is already running", "Trellis is up: "] {
        assert!(stdout.contains(line), "`{line}` missing from the second `make up`:\n{stdout}");
    }
    assert_eq!(pid_in(&wash, "nats.pid"), nats_pid);
    assert_eq!(get(&url).await, "Hello from Trellis!\n");

    deploy_every_example(&wash).await;

    let stdout = succeeded("down", &make(&wash, "down", http_port).await);
    assert!(stdout.contains("Stopped host") && stdout.contains("Stopped nats-server"), "{stdout}");
    assert!(gone(up_pid, Duration::from_secs(10)).await, "wash up (pid {up_pid}) is still running");
    assert!(gone(nats_pid, Duration::from_secs(10)).await, "nats-server (pid {nats_pid}) is still running");
    assert!(!listening(nats_port), "something still listens on the NATS port {nats_port}");
    assert!(!listening(http_port), "something still listens on the HTTP port {http_port}");
}

/// The example apps as shipped, deployed with `wash app deploy` on the quick start's lattice:
/// each manifest is copied beside a link to the repository's `target/` (so its relative
/// `file://../../target/…` image resolves from the copy's folder as from the original's), with
/// only its HTTP port moved to a free one, and each answers. `edge-and-cloud` needs hosts in
/// two zones and has its own test (`tests/tests/edge.rs`).
async fn deploy_every_example(wash: &Wash) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf();
    let copy = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(root.join("target"), copy.path().join("target")).expect("link target/");
    let place = |example: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(root.join("examples").join(example).join("wadm.yaml")).expect("manifest");
        assert!(text.contains(from), "examples/{example}/wadm.yaml no longer holds `{from}`; update this test");
        let dir = copy.path().join("examples").join(example);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("wadm.yaml"), text.replace(from, to)).expect("write");
        dir.join("wadm.yaml").display().to_string()
    };

    let kv_port = free_port();
    let manifest = place("http-kv-counter", "127.0.0.1:8001", &format!("127.0.0.1:{kv_port}"));
    let out = wash.run_async(&["app", "deploy", &manifest]).await;
    assert!(out.ok().contains("deployed"), "{}", out.ok());
    let addr: SocketAddr = format!("127.0.0.1:{kv_port}").parse().expect("addr");
    let first = trellis_tests::http::get_until(addr, "/quickstart", 200, Duration::from_secs(30)).await.expect("the counter answers");
    assert_eq!(first.text(), "1\n");
    assert_eq!(trellis_tests::http::get(addr, "/quickstart").await.expect("GET").text(), "2\n");

    let manifest = place("messaging-echo", "apiVersion", "apiVersion");
    let out = wash.run_async(&["app", "deploy", &manifest]).await;
    assert!(out.ok().contains("deployed"), "{}", out.ok());
    let nats = async_nats::connect(format!("nats://127.0.0.1:{}", wash.port)).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(2), nats.request("echo.quickstart", "hello".into())).await {
            Ok(Ok(reply)) => break reply,
            other => assert!(tokio::time::Instant::now() < deadline, "echo never answered: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(&reply.payload[..], b"HELLO");

    for app in ["http-kv-counter", "messaging-echo"] {
        wash.run_async(&["app", "undeploy", app]).await.ok();
    }
}
