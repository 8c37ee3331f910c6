//! Component lifecycle: `start`, `stop`, `scale` and `update component`. Each sends one control
//! request and waits for the host's `component_scaled` / `component_scale_failed` event.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::{ComponentAuctionRequest, ComponentDescription, ScaleComponentCommand, UpdateComponentCommand};
use trellis_lattice::event::{CloudEvent, ComponentScaleFailed, ComponentScaled};

use crate::cli::{Global, ScaleComponentArgs, StartComponentArgs, StopTargetArgs, UpdateComponentArgs};
use crate::events::{Watch, timed_out};
use crate::lattice::{self, find_running, resolve_ref};
use crate::output::Report;

use super::{check_configs_exist, constraints_text};

/// The outcome event for `component_id` on `host_id` that `accept` agrees is ours: the scaled
/// data, or the host's error.
fn outcome(event: &CloudEvent, host_id: &str, component_id: &str, accept: &dyn Fn(&ComponentScaled) -> bool) -> Option<Result<ComponentScaled, String>> {
    let ours = |h: &str, c: &str| c == component_id && (h == host_id || event.source == host_id);
    if let Some(d) = event.data_as::<ComponentScaled>() {
        return (ours(&d.host_id, &d.component_id) && accept(&d)).then_some(Ok(d));
    }
    if let Some(d) = event.data_as::<ComponentScaleFailed>() {
        return ours(&d.scaled.host_id, &d.scaled.component_id).then_some(Err(d.error));
    }
    None
}

/// Waits for the outcome; a failure event becomes an error carrying the host's message.
async fn await_outcome(
    watch: &mut Watch,
    timeout: Duration,
    host_id: &str,
    component_id: &str,
    accept: impl Fn(&ComponentScaled) -> bool,
) -> anyhow::Result<ComponentScaled> {
    match watch.wait(timeout, |e| outcome(e, host_id, component_id, &accept)).await {
        Some(Ok(d)) => Ok(d),
        Some(Err(error)) => bail!("host `{host_id}` could not scale component `{component_id}`: {error}"),
        None => Err(timed_out::<ComponentScaled>(timeout, &format!("component `{component_id}`"), host_id)),
    }
}

async fn find_component(ctl: &CtlClient, host_id: Option<&str>, id: &str) -> anyhow::Result<(String, ComponentDescription)> {
    find_running(ctl, host_id, "component", id, |inv| inv.components.iter().find(|c| c.id == id).cloned()).await
}

/// `wash start component`.
pub async fn start(g: &Global, args: &StartComponentArgs) -> anyhow::Result<Report> {
    let id = &args.component_id;
    trellis_lattice::validate_id("component id", id)?;
    let component_ref = resolve_ref(&args.component_ref)?;
    if args.max_instances == 0 {
        bail!("--max-instances must be at least 1 to start a component");
    }
    let ctl = lattice::ctl(g).await?;
    check_configs_exist(&ctl, &args.placement.config).await?;
    let p = &args.placement;
    let mut config = p.config.clone();
    for grant in &args.secrets {
        let (name, key) = grant.split_once('=').unwrap_or((grant, grant));
        let reference = trellis_lattice::secrets::SecretReference::new(name, key);
        let config_name = trellis_lattice::secrets::config_name(name);
        trellis_lattice::validate_id("secret name", name)?;
        ctl.put_config(&config_name, &reference.to_config()).await?;
        config.push(config_name);
    }
    let host_id = match &p.host_id {
        Some(h) => h.clone(),
        None => {
            let req = ComponentAuctionRequest {
                component_ref: component_ref.clone(),
                component_id: id.clone(),
                constraints: p.constraints.iter().cloned().collect(),
            };
            let acks = ctl.perform_component_auction(&req).await?;
            match acks.into_iter().next() {
                Some(ack) => ack.host_id,
                None => bail!(
                    "no host in lattice `{}` bid to run component `{id}` ({}); a host bids when it carries every constraint label and does not already run `{id}`: check `wash get hosts`, or change it with `wash scale component`",
                    ctl.lattice(),
                    constraints_text(&p.constraints)
                ),
            }
        }
    };
    let mut watch = Watch::start(&ctl).await?;
    let cmd = ScaleComponentCommand {
        component_ref: component_ref.clone(),
        component_id: id.clone(),
        max_instances: args.max_instances,
        host_id: host_id.clone(),
        config,
        ..Default::default()
    };
    lattice::on_host(&ctl, &host_id, ctl.scale_component(&cmd)).await?;
    let result = json!({"component_id": id, "host_id": host_id, "component_ref": component_ref, "max_instances": args.max_instances});
    if p.skip_wait {
        return Ok(Report::new(format!("Host {host_id} accepted component `{id}` ({component_ref}); not waiting for it to start"), result));
    }
    let done = await_outcome(&mut watch, lattice::timeout(g), &host_id, id, |d| d.max_instances > 0).await?;
    Ok(Report::new(format!("Component `{id}` started on host {host_id} from {} (max instances {})", done.image_ref, done.max_instances), result))
}

/// `wash stop component`: scales it to 0.
pub async fn stop(g: &Global, args: &StopTargetArgs) -> anyhow::Result<Report> {
    let id = &args.id;
    let ctl = lattice::ctl(g).await?;
    let (host_id, running) = find_component(&ctl, args.host_id.as_deref(), id).await?;
    let mut watch = Watch::start(&ctl).await?;
    let cmd = ScaleComponentCommand {
        component_ref: running.image_ref.clone(),
        component_id: id.clone(),
        max_instances: 0,
        host_id: host_id.clone(),
        ..Default::default()
    };
    lattice::on_host(&ctl, &host_id, ctl.scale_component(&cmd)).await?;
    let result = json!({"component_id": id, "host_id": host_id});
    if !args.skip_wait {
        await_outcome(&mut watch, lattice::timeout(g), &host_id, id, |d| d.max_instances == 0).await?;
    }
    Ok(Report::new(format!("Component `{id}` stopped on host {host_id}"), result))
}

/// `wash scale component`: the same reference, a new concurrency limit.
pub async fn scale(g: &Global, args: &ScaleComponentArgs) -> anyhow::Result<Report> {
    let id = &args.component_id;
    let ctl = lattice::ctl(g).await?;
    check_configs_exist(&ctl, &args.config).await?;
    let (host_id, running) = find_component(&ctl, args.host_id.as_deref(), id).await?;
    let mut watch = Watch::start(&ctl).await?;
    let cmd = ScaleComponentCommand {
        component_ref: running.image_ref.clone(),
        component_id: id.clone(),
        max_instances: args.max_instances,
        host_id: host_id.clone(),
        config: args.config.clone(),
        annotations: Some(running.annotations.clone()).filter(|a| !a.is_empty()),
        ..Default::default()
    };
    lattice::on_host(&ctl, &host_id, ctl.scale_component(&cmd)).await?;
    let result = json!({"component_id": id, "host_id": host_id, "max_instances": args.max_instances});
    if !args.skip_wait {
        let want = args.max_instances;
        await_outcome(&mut watch, lattice::timeout(g), &host_id, id, |d| d.max_instances == want).await?;
    }
    Ok(Report::new(format!("Component `{id}` on host {host_id} scaled to max instances {}", args.max_instances), result))
}

/// `wash update component`.
pub async fn update(g: &Global, args: &UpdateComponentArgs) -> anyhow::Result<Report> {
    let id = &args.component_id;
    let new_ref = resolve_ref(&args.new_ref)?;
    let ctl = lattice::ctl(g).await?;
    let (host_id, running) = find_component(&ctl, args.host_id.as_deref(), id).await?;
    if running.image_ref == new_ref {
        bail!("component `{id}` on host `{host_id}` already runs from `{new_ref}`; nothing to update");
    }
    let mut watch = Watch::start(&ctl).await?;
    let cmd = UpdateComponentCommand { component_id: id.clone(), new_component_ref: new_ref.clone(), host_id: host_id.clone(), annotations: None };
    lattice::on_host(&ctl, &host_id, ctl.update_component(&cmd)).await?;
    let result = json!({"component_id": id, "host_id": host_id, "component_ref": new_ref, "previous_ref": running.image_ref});
    if !args.skip_wait {
        let want = new_ref.clone();
        await_outcome(&mut watch, lattice::timeout(g), &host_id, id, move |d| d.image_ref == want).await?;
    }
    Ok(Report::new(format!("Component `{id}` on host {host_id} updated from {} to {new_ref}", running.image_ref), result))
}
