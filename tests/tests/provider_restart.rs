//! Provider supervision: a provider process killed with SIGKILL is restarted and serves again;
//! health checks are reported; provider.stop stops it for good. Alone in its test binary, so
//! the only provider process child of this process is the one under test.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use trellis_lattice::ctl::StopProviderCommand;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::child_pids;
use trellis_tests::http::get_until;
use trellis_tests::scenario::{WAIT, behind_provider_process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_provider_process_is_restarted_with_its_links() {
    let (mut l, _a, b, addr) = behind_provider_process("hello", http_hello(), &[]).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");

    // kill -9 of the provider process: it is restarted, gets its links again, and serves.
    let pids = child_pids("trellis-provider-http-server");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed = std::time::Instant::now();
    std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status().unwrap();
    let ev = l.events.wait_for("provider_stopped", WAIT, |e| e.data["provider_id"] == "http").await.unwrap();
    assert!(ev.data["reason"].as_str().unwrap().contains("exited"), "{}", ev.data);
    l.events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == "http").await.unwrap();
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    assert!(killed.elapsed() < Duration::from_secs(10), "recovery took {:?}", killed.elapsed());
    assert_ne!(child_pids("trellis-provider-http-server"), pids);

    // Health checks are reported.
    l.events.wait_for("health_check_passed", WAIT, |e| e.data["provider_id"] == "http").await.unwrap();

    // provider.stop stops it for good.
    l.ctl.stop_provider(&StopProviderCommand { host_id: b.id().into(), provider_id: "http".into() }).await.unwrap();
    let ev = l.events.wait_for("provider_stopped", WAIT, |e| e.data["reason"] == "stop").await.unwrap();
    assert_eq!(ev.data["provider_id"], "http");
    assert!(l.ctl.get_host_inventory(b.id()).await.unwrap().providers.is_empty());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !child_pids("trellis-provider-http-server").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the provider process outlived its stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
