//! The local `nats-server` of `wash up`: the host crate's [`trellis_host::nats_server`], with its
//! files in wash's home.

use trellis_host::nats_server::{Files, Leaf, Options};
pub use trellis_host::nats_server::{NatsProcess, Probe, probe};

use super::home::Home;

/// Starts nats-server with JetStream on 127.0.0.1:`port` (in JetStream domain `js_domain`, and a
/// leaf node of `remote` if given), keeping its config, store and log in `home`.
pub async fn start(home: &Home, port: u16, remote: Option<&str>, js_domain: Option<&str>) -> anyhow::Result<NatsProcess> {
    home.ensure()?;
    let files = Files { conf: home.nats_conf(), store: home.jetstream_dir(), log: home.nats_log() };
    let opts = Options { port, js_domain: js_domain.map(str::to_string), leaf: remote.map(|r| Leaf { remote_url: r.to_string(), credentials: None }) };
    Ok(NatsProcess::start(&files, &opts).await?)
}
