//! `wash up`: a NATS server (reused if one answers, else started), an in-process host, and
//! staying in the foreground until Ctrl-C/SIGTERM or the host is stopped; or, with `-d`, the
//! same in a background process that this one waits for.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use trellis_host::{Host, HostConfig, identity};

use super::home::{Home, HostRecord, last_line, write_atomically};
use super::nats_server::{self, NatsProcess, Probe, probe};
use super::process;
use crate::cli::{Global, UpArgs};
use crate::lattice::{connect_options, ctl_at, nats_url};
use crate::output::{Report, Step};

/// What the background `wash up` tells its parent once its host answers.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    host_id: String,
    friendly_name: String,
    nats_url: String,
    nats_pid: Option<u32>,
}

/// Runs `wash up`.
pub async fn run(g: &Global, args: &UpArgs) -> anyhow::Result<Report> {
    if args.nats_remote_url.is_some() {
        trellis_host::nats_server::check_leaf_domains(args.wasmcloud_js_domain.as_deref(), args.nats_js_domain.as_deref())?;
    }
    let home = Home::from_env()?;
    home.ensure()?;
    if args.detached { detach(g, args, &home).await } else { foreground(g, args, &home).await }
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "0.0.0.0")
}

async fn foreground(g: &Global, args: &UpArgs, home: &Home) -> anyhow::Result<Report> {
    init_tracing();
    // Installed first, so a signal during start-up is not lost: it stops everything once up.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;

    let (host, port) = (g.ctl_host.as_str(), g.ctl_port);
    let step = Step::start(g.output, format!("Looking for NATS at {host}:{port}"));
    let found = match probe(host, port).await {
        Ok(found) => found,
        Err(e) => {
            step.fail();
            return Err(e.into());
        }
    };
    let mut nats = match found {
        Probe::Nats => {
            step.done(format!("Reusing the NATS server at {host}:{port}"));
            if args.nats_remote_url.is_some() || args.nats_js_domain.is_some() {
                bail!(
                    "a NATS server already answers at {host}:{port}, so --nats-remote-url and --nats-js-domain have nothing to configure; stop that server or drop the flags"
                );
            }
            None
        }
        Probe::Other => {
            step.fail();
            bail!("port {port} on {host} is taken by something that is not a NATS server; free it or choose another with --ctl-port");
        }
        Probe::Free if !is_local(host) => {
            step.fail();
            bail!("no NATS server answers at {host}:{port}, and wash up starts one only on this machine; start NATS there or drop --ctl-host");
        }
        Probe::Free => {
            step.done(format!("Nothing answers at {host}:{port}"));

            let how = match &args.nats_remote_url {
                Some(remote) => format!("Starting nats-server on port {port} as a leaf node of {remote}"),
                None => format!("Starting nats-server on port {port}"),
            };
            let step = Step::start(g.output, how);
            match nats_server::start(home, port, args.nats_remote_url.as_deref(), args.nats_js_domain.as_deref()).await {
                Ok(server) => {
                    step.done(format!("nats-server is up at {} (pid {})", server.url, server.pid()));
                    Home::write_pid(&home.nats_pid_file(), server.pid())?;
                    Some(server)
                }
                Err(e) => {
                    step.fail();
                    return Err(e);
                }
            }
        }
    };
    let url = nats.as_ref().map(|n| n.url.clone()).unwrap_or_else(|| nats_url(g));
    let nats_pid = nats.as_ref().map(NatsProcess::pid);

    let outcome = run_host(g, args, home, &url, nats_pid, &mut sigint, &mut sigterm).await;
    if let Some(server) = nats.as_mut() {
        server.stop().await;
        let _ = std::fs::remove_file(home.nats_pid_file());
    }
    if Home::read_pid(&home.up_pid_file()) == Some(std::process::id()) {
        let _ = std::fs::remove_file(home.up_pid_file());
    }
    let stopped = outcome?;
    let also = if nats_pid.is_some() { " and the nats-server it started" } else { "" };
    Ok(Report::new(format!("Host {stopped} stopped{also}"), json!({"host_id": stopped, "stopped": true})).text_only())
}

/// Starts the host, waits until it answers pings, records it, serves until told to stop, and
/// stops it. Returns its id.
async fn run_host(
    g: &Global,
    args: &UpArgs,
    home: &Home,
    url: &str,
    nats_pid: Option<u32>,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<String> {
    let step = Step::start(g.output, format!("Starting a host in lattice `{}`", g.lattice));
    let mut config = HostConfig::new(url);
    config.lattice = g.lattice.clone();
    config.nats = connect_options(g, url);
    config.nats.name = None;
    config.labels = identity::labels_from_env(std::env::vars());
    config.labels.extend(args.labels.iter().cloned());
    config.js_domain = args.wasmcloud_js_domain.clone();
    // The same built-in providers as `trellis-host`: the example apps run on it unchanged.
    config.builtins = trellis_host::builtins();
    config.state_dir = Some(home.root().join("state"));
    config.cache_dir = Some(home.root().join("cache"));
    config.oci.allowed_insecure = args.allowed_insecure.iter().filter(|r| !r.is_empty()).cloned().collect();
    config.oci.allow_latest = args.allow_latest;
    let shutdown_timeout = config.shutdown_timeout;
    let host = match Host::start(config).await {
        Ok(host) => host,
        Err(e) => {
            step.fail();
            return Err(anyhow::Error::new(e).context("the host could not start"));
        }
    };
    step.done(format!("Host {} ({}) started", host.id(), host.friendly_name()));

    let step = Step::start(g.output, "Waiting for the host to answer pings");
    if let Err(e) = wait_pingable(g, url, host.id(), Duration::from_secs(30)).await {
        step.fail();
        host.stop(Duration::from_secs(1)).await;
        return Err(e);
    }
    step.done("The host answers pings");

    let record = HostRecord {
        host_id: host.id().into(),
        friendly_name: host.friendly_name().into(),
        lattice: g.lattice.clone(),
        nats_url: url.into(),
        pid: std::process::id(),
        nats_pid,
    };
    let ready = Ready { host_id: record.host_id.clone(), friendly_name: record.friendly_name.clone(), nats_url: url.into(), nats_pid };
    let recorded = home.write_record(&record).and_then(|()| match &args.ready_file {
        Some(path) => write_atomically(path, &serde_json::to_vec(&ready)?),
        None => Ok(()),
    });
    if let Err(e) = recorded {
        host.stop(Duration::from_secs(1)).await;
        home.remove_record(host.id());
        return Err(e);
    }
    Report::new(
        format!(
            "Host {} ({}) is up in lattice `{}`, NATS at {url}\nPress Ctrl-C to stop it (`wash down` from another terminal works too)",
            ready.host_id, ready.friendly_name, g.lattice
        ),
        json!({"host_id": ready.host_id, "friendly_name": ready.friendly_name, "lattice": g.lattice, "nats_url": url, "nats_pid": nats_pid}),
    )
    .print(g.output);

    tokio::select! {
        _ = sigint.recv() => tracing::info!("Ctrl-C: stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = host.stopped() => tracing::info!("the host was stopped through the lattice"),
    }
    let step = Step::start(g.output, "Stopping the host");
    // Within the host's shutdown timeout whatever NATS does; a second Ctrl-C or SIGTERM exits at once.
    let second = tokio::select! {
        _ = host.stop(shutdown_timeout) => None,
        _ = sigint.recv() => Some(("a second Ctrl-C", 130)),
        _ = sigterm.recv() => Some(("a second SIGTERM", 143)),
    };
    home.remove_record(host.id());
    if let Some((why, code)) = second {
        step.fail();
        eprintln!("{why}: exiting at once; the host's provider processes are killed and the rest of its orderly stop is skipped");
        host.kill_providers();
        if let Some(pid) = nats_pid {
            let _ = trellis_host::process::signal(pid, "TERM");
            let _ = std::fs::remove_file(home.nats_pid_file());
        }
        if Home::read_pid(&home.up_pid_file()) == Some(std::process::id()) {
            let _ = std::fs::remove_file(home.up_pid_file());
        }
        std::process::exit(code);
    }
    step.done("Host stopped");
    Ok(record.host_id)
}

/// Pings until `host_id` answers.
async fn wait_pingable(g: &Global, url: &str, host_id: &str, timeout: Duration) -> anyhow::Result<()> {
    let ctl = ctl_at(g, url, &g.lattice).await?.with_auction_timeout(Duration::from_millis(250));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ctl.ping_hosts().await?.iter().any(|h| h.id == host_id) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("host `{host_id}` did not answer pings in lattice `{}` within {} s", g.lattice, timeout.as_secs());
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init();
}

/// Starts `wash up` in the background, in a session of its own, and waits until its host is up.
async fn detach(g: &Global, args: &UpArgs, home: &Home) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("cannot tell where the wash executable is")?;
    let ready_file = home.root().join(format!("wash-up.{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready_file);
    let log_path = home.up_log();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_err = log.try_clone().context("cannot share the log file")?;

    let mut cmd = match process::which("setsid") {
        Some(setsid) => {
            let mut c = Command::new(setsid);
            c.arg(&exe);
            c
        }
        None => {
            use std::os::unix::process::CommandExt as _;
            let mut c = Command::new(&exe);
            c.process_group(0);
            c
        }
    };
    cmd.arg("up").arg("--ready-file").arg(&ready_file);
    for (k, v) in &args.labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    if !args.allowed_insecure.is_empty() {
        cmd.arg("--allowed-insecure").arg(args.allowed_insecure.join(","));
    }
    if args.allow_latest {
        cmd.arg("--allow-latest");
    }
    for (flag, value) in
        [("--nats-remote-url", &args.nats_remote_url), ("--nats-js-domain", &args.nats_js_domain), ("--wasmcloud-js-domain", &args.wasmcloud_js_domain)]
    {
        if let Some(value) = value {
            cmd.arg(flag).arg(value);
        }
    }
    // Flags travel as environment variables, so seeds and JWTs stay out of `ps`.
    cmd.env("WASH_HOME", home.root())
        .env("WASH_LATTICE", &g.lattice)
        .env("WASH_CTL_HOST", &g.ctl_host)
        .env("WASH_CTL_PORT", g.ctl_port.to_string())
        .env("WASH_TIMEOUT_MS", g.timeout_ms.to_string())
        .env("WASH_AUCTION_TIMEOUT_MS", g.auction_timeout_ms.to_string())
        .env("WASH_OUTPUT", "text");
    for (var, value) in [
        ("WASH_CTL_CREDSFILE", g.ctl_credsfile.as_ref().map(|p| p.display().to_string())),
        ("WASH_CTL_SEED", g.ctl_seed.clone()),
        ("WASH_CTL_JWT", g.ctl_jwt.clone()),
    ] {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
    let mut child = cmd.spawn().with_context(|| format!("cannot start {} in the background", exe.display()))?;
    Home::write_pid(&home.up_pid_file(), child.id())?;

    let step = Step::start(g.output, "Starting wash up in the background");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(g.timeout_ms).max(Duration::from_secs(60));
    let ready: Ready = loop {
        if let Ok(bytes) = std::fs::read(&ready_file) {
            let _ = std::fs::remove_file(&ready_file);
            break serde_json::from_slice(&bytes).context("the background wash up wrote an unreadable ready file")?;
        }
        if let Some(status) = child.try_wait().context("cannot poll the background wash up")? {
            step.fail();
            let _ = std::fs::remove_file(home.up_pid_file());
            let why = last_line(&log_path).map(|l| format!(": {l}")).unwrap_or_default();
            bail!("the background wash up exited ({status}) before its host was up{why} (full log: {})", log_path.display());
        }
        if tokio::time::Instant::now() >= deadline {
            step.fail();
            let _ = process::terminate(child.id(), Duration::from_secs(10)).await;
            bail!("the background wash up was not ready within {} s; see {}", deadline_secs(g), log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_pingable(g, &ready.nats_url, &ready.host_id, Duration::from_secs(10)).await?;
    step.done("wash up is running in the background");
    let text = format!(
        "Host {} ({}) is up in lattice `{}`, NATS at {}\nwash up runs in the background (pid {}, log {}); stop it with `wash down`",
        ready.host_id,
        ready.friendly_name,
        g.lattice,
        ready.nats_url,
        child.id(),
        log_path.display()
    );
    Ok(Report::new(
        text,
        json!({
            "host_id": ready.host_id, "friendly_name": ready.friendly_name, "lattice": g.lattice, "nats_url": ready.nats_url,
            "nats_pid": ready.nats_pid, "pid": child.id(), "log_file": log_path,
        }),
    ))
}

fn deadline_secs(g: &Global) -> u64 {
    Duration::from_millis(g.timeout_ms).max(Duration::from_secs(60)).as_secs()
}
