//! A lattice for scenario tests: a control client and an event collector over one real
//! nats-server, with the steps tests repeat (start a component or provider and wait for its
//! event; link the http-server provider to a component).

use std::net::SocketAddr;
use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::*;

use crate::components::file_ref;
use crate::hosts::{Events, http_server_provider_binary, start_host};
use crate::nats::NatsServer;

/// How long a scenario step waits for its event.
pub const WAIT: Duration = Duration::from_secs(20);

/// The lattice under test; usually owns its nats-server.
pub struct Lattice {
    _nats: Option<NatsServer>,
    url: String,
    /// A control client.
    pub ctl: CtlClient,
    /// Every event since creation.
    pub events: Events,
}

/// Wraps `nats` (lattice `default`).
pub async fn lattice(nats: NatsServer) -> Lattice {
    let ctl = CtlClient::new(nats.client().await.expect("scenario step"), "default");
    let events = Events::subscribe(ctl.nats(), "default").await.expect("scenario step");
    Lattice { url: nats.url(), _nats: Some(nats), ctl, events }
}

/// Two in-process hosts on a fresh nats-server: component `id` (`path`, 4 replicas) on the
/// first, the http-server provider as a process (`http`) on the second, linked to serve `id` at
/// a free address (link config `{id}-addr`: `address`, then `link_config`). Returns once the
/// link is put; the listener opens a moment later (wait for it with `http::get_until`).
pub async fn behind_provider_process(id: &str, path: &str, link_config: &[(&str, &str)]) -> (Lattice, Host, Host, SocketAddr) {
    let nats = NatsServer::start().await.expect("nats-server");
    let a = start_host(&nats.url(), &[]).await.expect("host");
    let b = start_host(&nats.url(), &[]).await.expect("host");
    let mut l = lattice(nats).await;
    l.start_component(&a, id, path, 4, None).await;
    let provider = file_ref(http_server_provider_binary().expect("the http-server provider binary"));
    l.start_provider(&b, "http", &provider, &[]).await;
    let addr = crate::http::free_addr().expect("a free address");
    l.link_at("http", id, addr, link_config).await;
    (l, a, b, addr)
}

impl Lattice {
    /// A scenario over `client`, a connection to NATS at `url` (a cluster's URL list, say)
    /// that the caller keeps running.
    pub async fn over(client: async_nats::Client, url: &str) -> Lattice {
        let ctl = CtlClient::new(client, "default");
        let events = Events::subscribe(ctl.nats(), "default").await.expect("subscribe to events");
        Lattice { url: url.into(), _nats: None, ctl, events }
    }

    /// A scenario over a server the caller keeps (to restart it, say).
    pub async fn on(nats: &NatsServer) -> Lattice {
        let ctl = CtlClient::new(nats.client().await.expect("connect"), "default");
        let events = Events::subscribe(ctl.nats(), "default").await.expect("subscribe to events");
        Lattice { url: nats.url(), _nats: None, ctl, events }
    }
}

impl Lattice {
    /// A scenario over a fresh nats-server of its own.
    pub async fn new() -> Lattice {
        lattice(NatsServer::start().await.expect("nats-server")).await
    }

    /// Starts an in-process host on this lattice (no labels).
    pub async fn host(&self) -> Host {
        crate::hosts::start_host(&self.url, &[]).await.expect("host")
    }

    /// The control client's NATS connection.
    pub fn client(&self) -> async_nats::Client {
        self.ctl.nats().clone()
    }

    /// Puts named config `name`.
    pub async fn put_config(&self, name: &str, values: &[(&str, &str)]) {
        self.ctl.put_config(name, &values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.expect("put config");
    }

    /// Puts `link` and waits until every host in `hosts` has it in its own registry view.
    pub async fn put_link_seen(&self, hosts: &[&Host], link: &Link) {
        self.ctl.put_link(link).await.expect("put link");
        wait_until("the link to reach every host's view", || hosts.iter().all(|h| h.links().contains(link))).await;
    }

    /// Deletes `link` and waits until it has left the view of every host in `hosts`.
    pub async fn delete_link_seen(&self, hosts: &[&Host], link: &Link) {
        let req = DeleteLinkRequest {
            source_id: link.source_id.clone(),
            name: link.name.clone(),
            wit_namespace: link.wit_namespace.clone(),
            wit_package: link.wit_package.clone(),
        };
        self.ctl.delete_link(&req).await.expect("delete link");
        wait_until("the link to leave every host's view", || hosts.iter().all(|h| !h.links().contains(link))).await;
    }

    /// Scales `path` as `id` on `host` to `max` and waits for the `component_scaled` that says so.
    pub async fn scale(&mut self, host: &Host, id: &str, path: &str, max: u32) {
        let cmd = ScaleComponentCommand {
            component_ref: file_ref(path),
            component_id: id.into(),
            max_instances: max,
            host_id: host.id().into(),
            ..Default::default()
        };
        self.ctl.scale_component(&cmd).await.expect("scale");
        self.events
            .wait_for("component_scaled", WAIT, |e| e.data["component_id"] == id && e.data["max_instances"] == max && e.source == host.id())
            .await
            .expect("component_scaled");
    }

    /// Scales `path` as `id` on `host` and waits for `component_scaled`.
    pub async fn start_component(&mut self, host: &Host, id: &str, path: &str, max: u32, limits: Option<StringMap>) {
        self.start_component_on(host.id(), id, path, max, limits).await
    }

    /// [`Lattice::start_component`] on the host with id `host_id` (a process host, say).
    pub async fn start_component_on(&mut self, host_id: &str, id: &str, path: &str, max: u32, limits: Option<StringMap>) {
        self.ctl
            .scale_component(&ScaleComponentCommand {
                component_ref: file_ref(path),
                component_id: id.into(),
                max_instances: max,
                host_id: host_id.into(),
                component_limits: limits,
                ..Default::default()
            })
            .await
            .expect("scenario step");
        self.events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == id && e.source == host_id).await.expect("scenario step");
    }

    /// Starts provider `reference` as `id` on `host` with `config` (as named config) and waits for `provider_started`.
    pub async fn start_provider(&mut self, host: &Host, id: &str, reference: &str, config: &[(&str, &str)]) {
        self.start_provider_on(host.id(), id, reference, config).await
    }

    /// [`Lattice::start_provider`] on the host with id `host_id` (a process host, say).
    pub async fn start_provider_on(&mut self, host_id: &str, id: &str, reference: &str, config: &[(&str, &str)]) {
        let mut names = Vec::new();
        if !config.is_empty() {
            let name = format!("{id}-config");
            self.ctl.put_config(&name, &config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.expect("scenario step");
            names.push(name);
        }
        self.ctl
            .start_provider(&StartProviderCommand {
                provider_id: id.into(),
                provider_ref: reference.into(),
                host_id: host_id.into(),
                config: names,
                annotations: None,
            })
            .await
            .expect("scenario step");
        self.events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == id && e.source == host_id).await.expect("scenario step");
    }

    /// Links `source` (the http-server provider) to `target` with source config `cfg`.
    pub async fn link(&self, source: &str, target: &str, cfg_name: &str, cfg: &[(&str, &str)]) {
        self.ctl.put_config(cfg_name, &cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.expect("scenario step");
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
            .expect("scenario step");
    }

    /// [`Lattice::link`] with source config `{target}-addr`: `address` = `addr`, then `extra`.
    pub async fn link_at(&self, source: &str, target: &str, addr: SocketAddr, extra: &[(&str, &str)]) {
        let addr = addr.to_string();
        let cfg: Vec<(&str, &str)> = [("address", addr.as_str())].into_iter().chain(extra.iter().copied()).collect();
        self.link(source, target, &format!("{target}-addr"), &cfg).await;
    }

    /// Starts the built-in http-server `id` on host `host_id`, linked to `target` at a fresh
    /// loopback address (source config `{id}-addr`, so two servers may front one target), and
    /// returns the address once it answers 200.
    pub async fn http_server_on(&mut self, host_id: &str, id: &str, target: &str) -> anyhow::Result<SocketAddr> {
        let addr = crate::http::free_addr()?;
        self.start_provider_on(host_id, id, "builtin://http-server", &[]).await;
        self.link(id, target, &format!("{id}-addr"), &[("address", &addr.to_string())]).await;
        crate::http::get_until(addr, "/", 200, WAIT).await?;
        Ok(addr)
    }

    /// Deletes the HTTP link from `source` to `target`.
    pub async fn unlink(&self, source: &str, target: &str) {
        self.ctl
            .delete_link(&DeleteLinkRequest { source_id: source.into(), name: target.into(), wit_namespace: "wasi".into(), wit_package: "http".into() })
            .await
            .expect("scenario step");
    }
}

/// Polls `cond` every 20 ms until it holds; fails after [`WAIT`], naming `what`.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
