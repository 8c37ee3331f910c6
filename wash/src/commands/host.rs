//! Hosts: `get hosts`, `get inventory`, `get claims`, `label put|del`, `stop host` and
//! `host cordon|uncordon|drain`.

use std::fmt::Write as _;

use serde_json::json;
use trellis_lattice::ctl::HostInventory;
use trellis_lattice::event::HostStopped;

use crate::cli::{Global, StopHostArgs};
use crate::events::{Watch, timed_out};
use crate::lattice;
use crate::output::{Report, Step, escape, list, pairs, table};

/// `wash get hosts`.
pub async fn get_hosts(g: &Global) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let mut hosts = ctl.ping_hosts().await?;
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<Vec<String>> = hosts.iter().map(|h| vec![h.id.clone(), h.friendly_name.clone(), h.uptime_human.clone(), pairs(&h.labels)]).collect();
    let text = table(&["HOST ID", "FRIENDLY NAME", "UPTIME", "LABELS"], &rows);
    Ok(Report::new(text, json!({"hosts": hosts})))
}

fn inventory_text(out: &mut String, inv: &HostInventory) {
    let _ = writeln!(out, "Host {} ({}), up {}", escape(&inv.host_id), escape(&inv.friendly_name), escape(&inv.uptime_human));
    let _ = writeln!(out, "Labels: {}", pairs(&inv.labels));
    if !inv.schedule.is_schedulable() {
        let _ = writeln!(out, "Scheduling: {}", inv.schedule.as_str());
    }
    let _ = writeln!(out);
    let components: Vec<Vec<String>> = inv.components.iter().map(|c| vec![c.id.clone(), c.image_ref.clone(), c.max_instances.to_string()]).collect();
    out.push_str(&table(&["COMPONENT ID", "REFERENCE", "MAX INSTANCES"], &components));
    let _ = writeln!(out);
    let providers: Vec<Vec<String>> = inv.providers.iter().map(|p| vec![p.id.clone(), p.image_ref.clone().unwrap_or_else(|| "-".into())]).collect();
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
    // Checked here, before anything is sent (the host checks again): a label with a control
    // character would be refused by the host, and clap would echo it raw.
    for (k, v) in labels {
        trellis_host::identity::check_label(k, v).map_err(anyhow::Error::msg)?;
    }
    let ctl = lattice::ctl(g).await?;
    for (k, v) in labels {
        lattice::on_host(&ctl, host_id, ctl.put_label(host_id, k, v)).await?;
    }
    let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(Report::new(
        format!("Host {host_id} labelled {}", list(&set)),
        json!({"host_id": host_id, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()}),
    ))
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
            return Err(timed_out::<HostStopped>(timeout, "the host itself", host_id));
        }
    }
    Ok(Report::new(format!("Host {host_id} stopped"), json!({"host_id": host_id})))
}

fn schedule_report(r: &trellis_lattice::ctl::HostScheduleReply) -> Report {
    Report::new(format!("Host {} is {}", r.host_id, r.schedule.as_str()), json!({"host_id": r.host_id, "schedule": r.schedule}))
}

/// `wash host cordon HOST`.
pub async fn cordon(g: &Global, host_id: &str) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    Ok(schedule_report(&lattice::on_host(&ctl, host_id, ctl.cordon_host(host_id)).await?))
}

/// `wash host uncordon HOST`.
pub async fn uncordon(g: &Global, host_id: &str) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    Ok(schedule_report(&lattice::on_host(&ctl, host_id, ctl.uncordon_host(host_id)).await?))
}

/// `wash host drain HOST [--wait]`.
pub async fn drain(g: &Global, host_id: &str, wait: bool) -> anyhow::Result<Report> {
    use trellis_lattice::ctl::Schedule;
    let ctl = lattice::ctl(g).await?;
    let mut reply = lattice::on_host(&ctl, host_id, ctl.drain_host(host_id)).await?;
    if wait && reply.schedule != Schedule::Drained {
        let step = Step::start(g.output, format!("Draining host {host_id}: replicas move elsewhere, then stop"));
        // Replacements start elsewhere first; that can take as long as loading a component.
        let timeout = lattice::timeout(g) * 6;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if let Ok(inv) = ctl.get_host_inventory(host_id).await {
                reply.schedule = inv.schedule;
            }
            if reply.schedule == Schedule::Drained {
                step.done(format!("Host {host_id} drained"));
                break;
            }
            if std::time::Instant::now() > deadline {
                step.fail();
                anyhow::bail!(
                    "host {host_id} is still {} after {} s; `wash app status` tells what the reconciler waits for",
                    reply.schedule.as_str(),
                    timeout.as_secs()
                );
            }
        }
    }
    Ok(schedule_report(&reply))
}
