//! Hosts: `get hosts`, `get inventory`, `get claims`, `label put|del` and `stop host`.

use std::fmt::Write as _;

use serde_json::json;
use trellis_lattice::ctl::HostInventory;
use trellis_lattice::event::HostStopped;

use crate::cli::{Global, StopHostArgs};
use crate::events::{Watch, timed_out};
use crate::lattice;
use crate::output::{Report, list, pairs, table};

/// `wash get hosts`.
pub async fn get_hosts(g: &Global) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let mut hosts = ctl.ping_hosts().await?;
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<Vec<String>> =
        hosts.iter().map(|h| vec![h.id.clone(), h.friendly_name.clone(), h.uptime_human.clone(), pairs(&h.labels)]).collect();
    let text = table(&["HOST ID", "FRIENDLY NAME", "UPTIME", "LABELS"], &rows);
    Ok(Report::new(text, json!({"hosts": hosts})))
}

fn inventory_text(out: &mut String, inv: &HostInventory) {
    let _ = writeln!(out, "Host {} ({}), up {}", inv.host_id, inv.friendly_name, inv.uptime_human);
    let _ = writeln!(out, "Labels: {}", pairs(&inv.labels));
    let _ = writeln!(out);
    let components: Vec<Vec<String>> =
        inv.components.iter().map(|c| vec![c.id.clone(), c.image_ref.clone(), c.max_instances.to_string()]).collect();
    out.push_str(&table(&["COMPONENT ID", "REFERENCE", "MAX INSTANCES"], &components));
    let _ = writeln!(out);
    let providers: Vec<Vec<String>> =
        inv.providers.iter().map(|p| vec![p.id.clone(), p.image_ref.clone().unwrap_or_else(|| "-".into())]).collect();
    out.push_str(&table(&["PROVIDER ID", "REFERENCE"], &providers));
}

/// `wash get inventory [HOST]`.
pub async fn get_inventory(g: &Global, host_id: Option<&str>) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let inventories = match host_id {
        Some(h) => vec![lattice::on_host(&ctl, h, ctl.get_host_inventory(h)).await?],
        None => lattice::inventories(&ctl).await?,
    };
    let mut text = String::new();
    for (i, inv) in inventories.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        inventory_text(&mut text, inv);
    }
    if inventories.is_empty() {
        text = format!("No hosts in lattice `{}`; start one with `wash up`", ctl.lattice());
    }
    Ok(Report::new(text, json!({"inventories": inventories})))
}

/// `wash get claims`.
pub async fn get_claims(g: &Global) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let claims = ctl.get_claims().await?;
    let field = |c: &trellis_lattice::ctl::StringMap, k: &str| c.get(k).cloned().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = claims.iter().map(|c| vec![field(c, "name"), field(c, "sub"), field(c, "iss"), field(c, "rev")]).collect();
    let text = table(&["NAME", "SUBJECT", "ISSUER", "REVISION"], &rows);
    Ok(Report::new(text, json!({"claims": claims})))
}

/// `wash label put HOST k=v…`.
pub async fn label_put(g: &Global, host_id: &str, labels: &[(String, String)]) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    for (k, v) in labels {
        lattice::on_host(&ctl, host_id, ctl.put_label(host_id, k, v)).await?;
    }
    let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(Report::new(format!("Host {host_id} labelled {}", list(&set)), json!({"host_id": host_id, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()})))
}

/// `wash label del HOST k…`.
pub async fn label_del(g: &Global, host_id: &str, keys: &[String]) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    for k in keys {
        lattice::on_host(&ctl, host_id, ctl.delete_label(host_id, k)).await?;
    }
    Ok(Report::new(format!("Removed label(s) {} from host {host_id}", list(keys)), json!({"host_id": host_id, "deleted": keys})))
}

/// `wash stop host`.
pub async fn stop(g: &Global, args: &StopHostArgs) -> anyhow::Result<Report> {
    let host_id = &args.host_id;
    let ctl = lattice::ctl(g).await?;
    let mut watch = Watch::start(&ctl).await?;
    lattice::on_host(&ctl, host_id, ctl.stop_host(host_id, Some(g.timeout_ms))).await?;
    if !args.skip_wait {
        // The host may wait up to the grace period for in-flight work before it says goodbye.
        let timeout = lattice::timeout(g) * 2;
        let stopped = watch.wait(timeout, |e| (e.source == *host_id && e.data_as::<HostStopped>().is_some()).then_some(())).await;
        if stopped.is_none() {
            return Err(timed_out(timeout, "host_stopped", "the host itself", host_id));
        }
    }
    Ok(Report::new(format!("Host {host_id} stopped"), json!({"host_id": host_id})))
}
