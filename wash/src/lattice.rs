//! Reaching the lattice: connecting with the global flags (only through `trellis_lattice::connect`),
//! the control client, and the lookups several commands share (inventories, reference paths).

use std::time::Duration;

use anyhow::{Context as _, bail};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::HostInventory;
use trellis_lattice::{ConnectOptions, ErrorKind};

use crate::cli::Global;

/// `nats://HOST:PORT` from the global flags.
pub fn nats_url(g: &Global) -> String {
    format!("nats://{}:{}", g.ctl_host, g.ctl_port)
}

/// Connection options from the global flags, for `url`.
pub fn connect_options(g: &Global, url: &str) -> ConnectOptions {
    ConnectOptions {
        url: url.to_string(),
        nkey_seed: g.ctl_seed.clone(),
        jwt: g.ctl_jwt.clone(),
        creds_file: g.ctl_credsfile.clone(),
        name: Some("wash".into()),
        ..Default::default()
    }
}

/// The request timeout from the global flags.
pub fn timeout(g: &Global) -> Duration {
    Duration::from_millis(g.timeout_ms.max(1))
}

/// A control client for the lattice at `url`, with the global timeouts.
pub async fn ctl_at(g: &Global, url: &str, lattice: &str) -> anyhow::Result<CtlClient> {
    trellis_lattice::validate_id("lattice", lattice)?;
    let opts = connect_options(g, url);
    let connecting = trellis_lattice::connect(&opts);
    let nats = tokio::time::timeout(timeout(g).max(Duration::from_secs(2)), connecting)
        .await
        .with_context(|| format!("connecting to NATS at {url} timed out; check --ctl-host/--ctl-port or start one with `wash up`"))??;
    Ok(CtlClient::new(nats, lattice).with_timeout(timeout(g)).with_auction_timeout(Duration::from_millis(g.auction_timeout_ms.max(1))))
}

/// A control client for the lattice the global flags name.
pub async fn ctl(g: &Global) -> anyhow::Result<CtlClient> {
    ctl_at(g, &nats_url(g), &g.lattice).await
}

/// Awaits a request addressed to `host_id`. Hosts also listen on a catch-all subject, so a
/// request to a host that does not exist times out rather than finding no responders; a timeout
/// is therefore checked with a ping and, if the host is absent, reported as an unknown host.
pub async fn on_host<T>(ctl: &CtlClient, host_id: &str, request: impl Future<Output = Result<T, trellis_lattice::Error>>) -> anyhow::Result<T> {
    match request.await {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == ErrorKind::Timeout => match ctl.ping_hosts().await {
            Ok(hosts) if !hosts.iter().any(|h| h.id == host_id) => {
                bail!("no host with id `{host_id}` is running in lattice `{}`; `wash get hosts` lists the hosts", ctl.lattice())
            }
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The inventory of every host that answers a ping, sorted by host id.
pub async fn inventories(ctl: &CtlClient) -> anyhow::Result<Vec<HostInventory>> {
    let hosts = ctl.ping_hosts().await?;
    let fetches = hosts.iter().map(|h| ctl.get_host_inventory(&h.id));
    let mut out = Vec::new();
    for (host, inv) in hosts.iter().zip(futures::future::join_all(fetches).await) {
        // A host that stopped between the ping and the request is simply gone.
        match inv {
            Ok(inv) => out.push(inv),
            Err(e) => tracing::debug!(host_id = host.id, error = %e, "no inventory"),
        }
    }
    out.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    Ok(out)
}

/// The hosts running `id`, as (host id, what runs there), in one host's inventory or all of them.
pub async fn find_running<T>(
    ctl: &CtlClient,
    host_id: Option<&str>,
    what: &str,
    id: &str,
    pick: impl Fn(&HostInventory) -> Option<T>,
) -> anyhow::Result<(String, T)> {
    if let Some(host) = host_id {
        let inv = on_host(ctl, host, ctl.get_host_inventory(host)).await?;
        return match pick(&inv) {
            Some(found) => Ok((host.to_string(), found)),
            None => bail!("{what} `{id}` is not running on host `{host}`; `wash get inventory {host}` shows what runs there"),
        };
    }
    let mut found: Vec<(String, T)> = inventories(ctl).await?.iter().filter_map(|inv| pick(inv).map(|f| (inv.host_id.clone(), f))).collect();
    match found.len() {
        0 => bail!("{what} `{id}` is not running in lattice `{}`; `wash get inventory` shows what runs", ctl.lattice()),
        1 => Ok(found.remove(0)),
        _ => {
            let hosts = found.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(", ");
            bail!("{what} `{id}` runs on {} hosts ({hosts}); name one with --host-id", found.len())
        }
    }
}

/// Turns a plain path (or a `file://` reference with a relative path) into `file:///absolute`;
/// registry and lattice references (`ghcr.io/org/x:1`, `lattice://x:1`) pass unchanged, and
/// so does any other `scheme://` (the host names what it does not take).
pub fn resolve_ref(reference: &str) -> anyhow::Result<String> {
    let path = match reference.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => return Ok(reference.to_string()),
        Some(p) => p,
        None if reference.contains("://") => return Ok(reference.to_string()),
        None => reference,
    };
    match std::fs::canonicalize(path) {
        Ok(abs) => Ok(format!("file://{}", abs.display())),
        Err(_)
            if !reference.starts_with("file://")
                && matches!(trellis_lattice::artifact::ArtifactRef::parse(reference), Ok(trellis_lattice::artifact::ArtifactRef::Oci(_))) =>
        {
            Ok(reference.to_string())
        }
        Err(e) => Err(e).with_context(|| {
            format!("no file at `{path}`; give a path to an existing file, a registry reference such as ghcr.io/org/name:1.0, or lattice://NAME:TAG")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(resolve_ref("file:///x/y.wasm").expect("kept"), "file:///x/y.wasm");
        assert_eq!(resolve_ref("builtin://http-server").expect("kept"), "builtin://http-server");
        let here = std::env::current_dir().expect("cwd");
        let want = format!("file://{}", here.join("Cargo.toml").canonicalize().expect("exists").display());
        assert_eq!(resolve_ref("Cargo.toml").expect("resolves"), want);
        assert_eq!(resolve_ref("file://./Cargo.toml").expect("resolves"), want);
        let err = resolve_ref("nope.wasm").expect_err("missing").to_string();
        assert!(err.contains("no file at `nope.wasm`"), "{err}");
    }
}
