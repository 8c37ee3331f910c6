//! `wash down`: stops every host `wash up` recorded (through `host.stop`, so each publishes
//! `host_stopped`), then makes sure the `wash up` processes and the nats-server they started
//! are gone, and optionally deletes the JetStream store.

use std::time::Duration;

use serde_json::json;

use super::home::{Home, HostRecord};
use super::process;
use crate::cli::{DownArgs, Global};
use crate::lattice::ctl_at;
use crate::output::Report;

/// How long a `wash up` process gets to stop its host (and its nats-server) after `host.stop`.
const EXIT_GRACE: Duration = Duration::from_secs(20);

/// Runs `wash down`.
pub async fn run(g: &Global, args: &DownArgs) -> anyhow::Result<Report> {
    let home = Home::from_env()?;
    let nats_pid = Home::read_pid(&home.nats_pid_file());
    let mut records = home.records();
    // The `wash up` that started the nats-server stops it when it exits: let it go last.
    records.sort_by_key(|r| r.nats_pid.is_some());

    let mut lines = Vec::new();
    let mut stopped = Vec::new();
    for record in &records {
        match stop_host(g, &home, record).await {
            Ok(()) => {
                lines.push(format!("Stopped host {} ({})", record.host_id, record.friendly_name));
                stopped.push(record.host_id.clone());
            }
            Err(e) => lines.push(format!("Host {}: {e:#}", record.host_id)),
        }
    }

    let mut nats_stopped = false;
    if let Some(pid) = nats_pid {
        if process::alive(pid) && process::looks_like(pid, "nats-server") {
            process::terminate(pid, Duration::from_secs(10)).await?;
        }
        nats_stopped = !process::alive(pid);
        if nats_stopped {
            lines.push(format!("Stopped nats-server (pid {pid})"));
            let _ = std::fs::remove_file(home.nats_pid_file());
        } else {
            anyhow::bail!("nats-server (pid {pid}) is still running after SIGKILL; stop it by hand");
        }
    }
    if let Some(pid) = Home::read_pid(&home.up_pid_file()) {
        if process::alive(pid) && process::looks_like(pid, "wash") {
            process::terminate(pid, Duration::from_secs(10)).await?;
        }
        let _ = std::fs::remove_file(home.up_pid_file());
    }

    let mut purged = false;
    if args.purge_jetstream && home.jetstream_dir().exists() {
        std::fs::remove_dir_all(home.jetstream_dir()).map_err(|e| anyhow::anyhow!("cannot delete {}: {e}", home.jetstream_dir().display()))?;
        lines.push(format!("Deleted the JetStream store {}", home.jetstream_dir().display()));
        purged = true;
    }
    if lines.is_empty() {
        lines.push(format!("Nothing to stop: no host or nats-server started by `wash up` is recorded in {}", home.root().display()));
    }
    Ok(Report::new(lines.join("\n"), json!({"hosts_stopped": stopped, "nats_server_stopped": nats_stopped, "jetstream_purged": purged})))
}

/// Asks the host to stop, waits for its `wash up` to exit, and signals it if it does not.
async fn stop_host(g: &Global, home: &Home, record: &HostRecord) -> anyhow::Result<()> {
    if !process::alive(record.pid) {
        home.remove_record(&record.host_id);
        return Ok(());
    }
    let asked = match ctl_at(g, &record.nats_url, &record.lattice).await {
        Ok(ctl) => ctl.stop_host(&record.host_id, Some(5_000)).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = &asked {
        tracing::debug!(host_id = record.host_id, error = %e, "host.stop failed; signalling its wash up instead");
    }
    if !process::wait_gone(record.pid, if asked.is_ok() { EXIT_GRACE } else { Duration::ZERO }).await && process::looks_like(record.pid, "wash") {
        // SIGTERM makes `wash up` stop its host and its nats-server in order.
        process::terminate(record.pid, EXIT_GRACE).await?;
    }
    if process::alive(record.pid) {
        anyhow::bail!("its wash up (pid {}) is still running", record.pid);
    }
    home.remove_record(&record.host_id);
    Ok(())
}
