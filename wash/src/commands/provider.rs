//! Provider lifecycle: `start` and `stop provider`, waiting for `provider_started` /
//! `provider_start_failed` / `provider_stopped`.

use anyhow::bail;
use serde_json::json;
use trellis_lattice::ctl::{ProviderAuctionRequest, StartProviderCommand, StopProviderCommand};
use trellis_lattice::event::{ProviderStartFailed, ProviderStarted, ProviderStopped};

use crate::cli::{Global, StartProviderArgs, StopTargetArgs};
use crate::events::{Watch, timed_out};
use crate::lattice::{self, find_running, resolve_ref};
use crate::output::Report;

use super::{check_configs_exist, constraints_text};

/// `wash start provider`.
pub async fn start(g: &Global, args: &StartProviderArgs) -> anyhow::Result<Report> {
    let id = &args.provider_id;
    trellis_lattice::validate_id("provider id", id)?;
    let provider_ref = resolve_ref(&args.provider_ref)?;
    let ctl = lattice::ctl(g).await?;
    let p = &args.placement;
    check_configs_exist(&ctl, &p.config).await?;
    let host_id = match &p.host_id {
        Some(h) => h.clone(),
        None => {
            let req =
                ProviderAuctionRequest { provider_ref: provider_ref.clone(), provider_id: id.clone(), constraints: p.constraints.iter().cloned().collect() };
            match ctl.perform_provider_auction(&req).await?.into_iter().next() {
                Some(ack) => ack.host_id,
                None => bail!(
                    "no host in lattice `{}` bid to run provider `{id}` ({}); a host bids when it carries every constraint label and does not already run `{id}`: check `wash get hosts` and `wash get inventory`",
                    ctl.lattice(),
                    constraints_text(&p.constraints)
                ),
            }
        }
    };
    let mut watch = Watch::start(&ctl).await?;
    let cmd = StartProviderCommand {
        provider_id: id.clone(),
        provider_ref: provider_ref.clone(),
        host_id: host_id.clone(),
        config: p.config.clone(),
        annotations: None,
    };
    lattice::on_host(&ctl, &host_id, ctl.start_provider(&cmd)).await?;
    let result = json!({"provider_id": id, "host_id": host_id, "provider_ref": provider_ref});
    if p.skip_wait {
        return Ok(Report::new(format!("Host {host_id} accepted provider `{id}` ({provider_ref}); not waiting for it to start"), result));
    }
    let timeout = lattice::timeout(g);
    let outcome = watch
        .wait(timeout, |e| {
            let ours = |h: &str, p: &str| p == id && (h == host_id || e.source == host_id);
            if let Some(d) = e.data_as::<ProviderStarted>() {
                return ours(&d.host_id, &d.provider_id).then_some(Ok(d));
            }
            if let Some(d) = e.data_as::<ProviderStartFailed>() {
                return ours(&d.host_id, &d.provider_id).then_some(Err(d.error));
            }
            None
        })
        .await;
    match outcome {
        Some(Ok(d)) => Ok(Report::new(format!("Provider `{id}` started on host {host_id} from {}", d.image_ref), result)),
        Some(Err(error)) => bail!("host `{host_id}` could not start provider `{id}`: {error}"),
        None => Err(timed_out::<ProviderStarted>(timeout, &format!("provider `{id}`"), &host_id)),
    }
}

/// `wash stop provider`.
pub async fn stop(g: &Global, args: &StopTargetArgs) -> anyhow::Result<Report> {
    let id = &args.id;
    let ctl = lattice::ctl(g).await?;
    let (host_id, ()) = find_running(&ctl, args.host_id.as_deref(), "provider", id, |inv| inv.providers.iter().any(|p| &p.id == id).then_some(())).await?;
    let mut watch = Watch::start(&ctl).await?;
    let cmd = StopProviderCommand { host_id: host_id.clone(), provider_id: id.clone() };
    lattice::on_host(&ctl, &host_id, ctl.stop_provider(&cmd)).await?;
    let result = json!({"provider_id": id, "host_id": host_id});
    if !args.skip_wait {
        let timeout = lattice::timeout(g);
        let stopped =
            watch.wait(timeout, |e| e.data_as::<ProviderStopped>().filter(|d| &d.provider_id == id && (d.host_id == host_id || e.source == host_id))).await;
        if stopped.is_none() {
            return Err(timed_out::<ProviderStopped>(timeout, &format!("provider `{id}`"), &host_id));
        }
    }
    Ok(Report::new(format!("Provider `{id}` stopped on host {host_id}"), result))
}
