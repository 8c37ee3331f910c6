//! A host stops when told to: within `--shutdown-timeout-seconds` even when NATS is gone (what
//! needs NATS is skipped and logged), at once on a second signal, and never leaving a provider
//! process behind, not even after a `kill -9` (the next host on the state directory stops it).
//! Under load with NATS up, the orderly stop still drains and announces itself.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{ProcessHost, children_of, http_server_provider_binary};
use trellis_tests::http::{Load, free_addr, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT};

/// The one child process of `host` named like `name`, once there is one.
async fn only_child(host: &ProcessHost, name: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pids = children_of(host.pid().unwrap(), name);
        match pids.as_slice() {
            [one] => return *one,
            [] if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("{name} children of the host: {pids:?}"),
        }
    }
}

fn alive(pid: u32) -> bool {
    trellis_host::process::alive(pid)
}

async fn gone_within(pid: u32, within: Duration) -> bool {
    trellis_host::process::wait_gone(pid, within).await
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the host's log holds `text`.
async fn logged(path: &Path, text: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !log(path).contains(text) {
        assert!(tokio::time::Instant::now() < deadline, "the host never logged `{text}`; its log:\n{}", log(path));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stubborn_provider(dir: &Path) -> String {
    file_ref(trellis_tests::stubborn_provider(dir).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_gone_sigterm_exits_0_within_the_timeout_stops_its_providers_and_says_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start().await.unwrap();
    let mut l = Lattice::on(&nats).await;
    let host_log = dir.path().join("host.log");
    let state = dir.path().join("state");
    let args = ["--shutdown-timeout-seconds", "3", "--state-dir", state.to_str().unwrap()];
    let mut host = ProcessHost::start_logged(&nats.url(), &args, &host_log).await.unwrap();
    l.start_component_on(&host.id, "hello", http_hello(), 2, None).await;
    l.start_provider_on(&host.id, "web", &file_ref(http_server_provider_binary().unwrap()), &[]).await;
    l.start_provider_on(&host.id, "stubborn", &stubborn_provider(dir.path()), &[]).await;
    let web = only_child(&host, "trellis-provide").await;
    let stubborn = only_child(&host, "sleep").await;
    assert_eq!(std::fs::read_dir(state.join("providers")).unwrap().count(), 2, "both provider processes are recorded");

    nats.kill();
    let asked = Instant::now();
    host.sigterm().unwrap();
    let status = host.wait(Duration::from_secs(4)).await.expect("the host exits within the timeout plus one second");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!alive(web), "the http-server provider process outlived its host");
    assert!(!alive(stubborn), "the provider that ignores SIGTERM outlived its host");
    assert_eq!(std::fs::read_dir(state.join("providers")).unwrap().count(), 0, "the pid records are gone with the processes");
    let text = log(&host_log);
    for skipped in ["skipped giving up the app reconciler's leader lease: NATS is not connected", "skipped publishing host_stopped: NATS is not connected"] {
        assert!(text.contains(skipped), "the log does not say `{skipped}`:\n{text}");
    }
    eprintln!("with NATS gone, SIGTERM to exit took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_kills_the_provider_processes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().await.unwrap();
    let mut l = Lattice::on(&nats).await;
    let host_log = dir.path().join("host.log");
    let state = dir.path().join("state");
    let args = ["--shutdown-timeout-seconds", "60", "--state-dir", state.to_str().unwrap()];
    for (first, second, code) in [("TERM", "TERM", 143), ("INT", "INT", 130)] {
        let mut host = ProcessHost::start_logged(&nats.url(), &args, &host_log).await.unwrap();
        l.start_provider_on(&host.id, "stubborn", &stubborn_provider(dir.path()), &[]).await;
        let stubborn = only_child(&host, "sleep").await;
        // The orderly stop now waits for the provider, which does not stop, for its grace.
        host.signal(first).unwrap();
        logged(&host_log, "send it again to exit at once").await;
        let asked = Instant::now();
        host.signal(second).unwrap();
        let status = host.wait(Duration::from_secs(1)).await.expect("the host exits within one second of the second signal");
        assert_eq!(status.code(), Some(code), "SIG{second} twice");
        assert!(gone_within(stubborn, Duration::from_secs(1)).await, "the provider process outlived its host");
        eprintln!("second SIG{second} to exit: {:?}", asked.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_host_on_the_state_directory_stops_the_provider_a_killed_host_left() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().await.unwrap();
    let mut l = Lattice::on(&nats).await;
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let mut doomed = ProcessHost::start(&nats.url(), &args).await.unwrap();
    l.start_provider_on(&doomed.id, "web", &file_ref(http_server_provider_binary().unwrap()), &[]).await;
    let orphan = only_child(&doomed, "trellis-provide").await;
    doomed.signal("KILL").unwrap();
    doomed.wait(WAIT).await.unwrap();
    assert!(alive(orphan), "a kill -9 leaves the provider process running (which is what the next host cleans up)");

    // Another host on another state directory leaves it alone; one on the same stops it.
    let elsewhere = dir.path().join("elsewhere");
    let mut other = ProcessHost::start(&nats.url(), &["--state-dir", elsewhere.to_str().unwrap()]).await.unwrap();
    assert!(alive(orphan));
    let mut next = ProcessHost::start(&nats.url(), &args).await.unwrap();
    assert!(gone_within(orphan, WAIT).await, "the next host on the state directory did not stop the orphaned provider process");
    assert_eq!(std::fs::read_dir(state.join("providers")).unwrap().count(), 0);
    for host in [&mut other, &mut next] {
        host.sigterm().unwrap();
        assert!(host.wait(WAIT).await.unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_up_sigterm_under_http_load_drains_and_publishes_host_stopped() {
    let nats = NatsServer::start().await.unwrap();
    let mut l = Lattice::on(&nats).await;
    // The http-server provider on one host, `hello` on two others (so every call crosses NATS
    // and the queue group spreads them over both replicas).
    let front = l.host().await;
    let mid = l.host().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut back = ProcessHost::start(&nats.url(), &["--state-dir", state.to_str().unwrap()]).await.unwrap();
    l.start_component(&mid, "hello", http_hello(), 4, None).await;
    l.start_component_on(&back.id, "hello", http_hello(), 4, None).await;
    l.start_provider(&front, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "hello", addr, &[]).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();

    let load = Load::start(addr, &[b"Hello from Trellis!\n"]).await;
    back.sigterm().unwrap();
    let stopped = l.events.wait_for("host_stopped", WAIT, |e| e.source == back.id).await.unwrap();
    assert!(stopped.data["labels"].is_object());
    assert!(back.wait(WAIT).await.unwrap().success());
    load.finish("SIGTERM of a replica's host").await;
}
