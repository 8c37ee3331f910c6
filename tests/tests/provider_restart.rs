//! Provider supervision: a provider process killed with SIGKILL is restarted and serves again;
//! health checks are reported; provider.stop stops it for good. Alone in its test binary, so
//! the only provider process child of this process is the one under test.

use std::net::SocketAddr;
use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::*;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{Events, child_pids, http_server_provider_binary, start_host};
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(20);

struct Lattice {
    _nats: NatsServer,
    ctl: CtlClient,
    events: Events,
}

async fn lattice(nats: NatsServer) -> Lattice {
    let ctl = CtlClient::new(nats.client().await.unwrap(), "default");
    let events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    Lattice { _nats: nats, ctl, events }
}

impl Lattice {
    async fn start_component(&mut self, host: &Host, id: &str, path: &str, max: u32, limits: Option<StringMap>) {
        self.ctl
            .scale_component(&ScaleComponentCommand {
                component_ref: file_ref(path),
                component_id: id.into(),
                max_instances: max,
                host_id: host.id().into(),
                component_limits: limits,
                ..Default::default()
            })
            .await
            .unwrap();
        self.events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == id && e.source == host.id()).await.unwrap();
    }

    async fn start_provider(&mut self, host: &Host, id: &str, reference: &str, config: &[(&str, &str)]) {
        let mut names = Vec::new();
        if !config.is_empty() {
            let name = format!("{id}-config");
            self.ctl.put_config(&name, &config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.unwrap();
            names.push(name);
        }
        self.ctl
            .start_provider(&StartProviderCommand { provider_id: id.into(), provider_ref: reference.into(), host_id: host.id().into(), config: names, annotations: None })
            .await
            .unwrap();
        self.events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == id).await.unwrap();
    }

    /// Links `source` (the http-server provider) to `target` with source config `cfg`.
    async fn link(&self, source: &str, target: &str, cfg_name: &str, cfg: &[(&str, &str)]) {
        self.ctl.put_config(cfg_name, &cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.unwrap();
        self.ctl
            .put_link(&Link {
                source_id: source.into(),
                target: target.into(),
                // One source may link one interface to several targets only under distinct
                // link names (the reference's conflict rule); name each link after its target.
                name: target.into(),
                wit_namespace: "wasi".into(),
                wit_package: "http".into(),
                interfaces: vec!["incoming-handler".into()],
                source_config: vec![cfg_name.into()],
                target_config: vec![],
            })
            .await
            .unwrap();
    }

}

fn addr_str(a: SocketAddr) -> String {
    a.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_provider_process_is_restarted_with_its_links() {
    let nats = NatsServer::start().await.unwrap();
    let a = start_host(&nats.url(), &[]).await.unwrap();
    let b = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&a, "hello", http_hello(), 4, None).await;
    let provider = file_ref(http_server_provider_binary().unwrap());
    l.start_provider(&b, "http", &provider, &[]).await;
    let addr = free_addr().unwrap();
    l.link("http", "hello", "hello-addr", &[("address", &addr_str(addr))]).await;
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
