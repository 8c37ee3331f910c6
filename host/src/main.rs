//! `trellis-host`: runs one host until SIGINT, SIGTERM or a `host.stop` request, publishing
//! `host_stopped` on every orderly exit. Flags and environment variables mirror the wasmCloud
//! host's where one exists.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::Layer as _;
use trellis_host::nats_server::{self, NatsProcess, Probe};
use trellis_host::runtime::{Limits, RuntimeConfig};
use trellis_host::{Host, HostConfig, identity};
use trellis_lattice::ConnectOptions;

#[derive(Debug, Parser)]
#[command(name = "trellis-host", version, about = "Run a Trellis host: join a lattice over NATS and run Wasm components")]
struct Args {
    /// NATS URL; overrides --nats-host/--nats-port. Repeat it, or separate URLs by commas, to
    /// name several servers of a cluster: the host reconnects to another when one is lost.
    #[arg(long, env = "TRELLIS_NATS_URL", value_delimiter = ',')]
    nats_url: Vec<String>,
    /// NATS host.
    #[arg(long, env = "WASMCLOUD_NATS_HOST", default_value = "127.0.0.1")]
    nats_host: String,
    /// NATS port.
    #[arg(long, env = "WASMCLOUD_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// NATS nkey seed (SU…): the NATS user this host (and the providers it starts) connects as.
    #[arg(long, env = "WASMCLOUD_NATS_SEED", hide_env_values = true)]
    nats_seed: Option<String>,
    /// NATS user JWT, for decentralized auth (with --nats-seed).
    #[arg(long, env = "WASMCLOUD_NATS_JWT", hide_env_values = true, requires = "nats_seed")]
    nats_jwt: Option<String>,
    /// NATS credentials file (`.creds`: user JWT and nkey seed); also TRELLIS_NATS_CREDSFILE.
    #[arg(long, visible_alias = "nats-creds", env = "WASMCLOUD_NATS_CREDS")]
    nats_credsfile: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to trust for TLS to NATS; a tls:// URL requires TLS.
    #[arg(long, alias = "tls-ca-path", env = "TRELLIS_NATS_TLS_CA_FILE")]
    nats_tls_ca_file: Option<std::path::PathBuf>,
    /// Connect to NATS directly, without the protocol guard: saves a loopback relay on every
    /// message (about 100 µs per data-plane call here), but a client publishing subjects or
    /// headers that are not UTF-8 then drops this host's connection at each one. Only for a
    /// lattice whose every publisher is trusted.
    #[arg(long, env = "TRELLIS_NATS_UNGUARDED")]
    nats_unguarded: bool,
    /// The JetStream domain holding the lattice's state (links, config, apps): on an edge box
    /// whose NATS server is a leaf node, the hub's domain.
    #[arg(long, alias = "wasmcloud-js-domain", env = "WASMCLOUD_JS_DOMAIN")]
    js_domain: Option<String>,
    /// How many copies of each lattice state bucket (links, config, apps, secrets) JetStream
    /// keeps when this host creates it (an existing one is scaled up to it): 1 on one
    /// nats-server, 3 on a three-node cluster.
    #[arg(long, env = "TRELLIS_JS_REPLICAS", default_value_t = trellis_lattice::state::DEFAULT_REPLICAS, value_parser = parse_replicas)]
    js_replicas: usize,
    /// Start a local nats-server on --nats-host/--nats-port as a leaf node of this hub
    /// (e.g. nats-leaf://hub.example:7422) and join the lattice through it; needs --js-domain.
    #[arg(long, env = "TRELLIS_NATS_REMOTE_URL")]
    nats_remote_url: Option<String>,
    /// Credentials file for the leaf connection to the hub (with --nats-remote-url).
    #[arg(long, env = "TRELLIS_NATS_REMOTE_CREDSFILE", requires = "nats_remote_url")]
    nats_remote_credsfile: Option<std::path::PathBuf>,
    /// The JetStream domain of the local leaf server's own JetStream (with --nats-remote-url);
    /// it must differ from the hub's.
    #[arg(long, env = "NATS_JS_DOMAIN", requires = "nats_remote_url")]
    nats_js_domain: Option<String>,
    /// Where the local leaf server keeps its config, JetStream store and log (with
    /// --nats-remote-url). Default: trellis-leaf-PORT in the temp dir.
    #[arg(long, env = "TRELLIS_NATS_LEAF_DIR", requires = "nats_remote_url")]
    nats_leaf_dir: Option<std::path::PathBuf>,
    /// Lattice name.
    #[arg(short = 'x', long, env = "WASMCLOUD_LATTICE", default_value = "default")]
    lattice: String,
    /// A label k=v (repeatable); also WASMCLOUD_LABEL_k=v and TRELLIS_LABEL_k=v.
    #[arg(short = 'l', long = "label", value_parser = identity::parse_label)]
    labels: Vec<(String, String)>,
    /// Allow loading components and providers from file:// references (as in wasmCloud: off
    /// unless given; `--allow-file-load` alone means true, `--allow-file-load=false` works too).
    #[arg(long, env = "WASMCLOUD_ALLOW_FILE_LOAD", default_value_t = false, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    allow_file_load: bool,
    /// Seconds between heartbeats.
    #[arg(long, env = "WASMCLOUD_HEARTBEAT_INTERVAL", default_value_t = 10)]
    heartbeat_interval_seconds: u64,
    /// Seconds a host may go unheard before it is presumed lost and its app replicas are placed
    /// elsewhere. Default: 3 heartbeat intervals.
    #[arg(long, env = "TRELLIS_HOST_LOST_AFTER_SECONDS")]
    host_lost_after_seconds: Option<u64>,
    /// Wall-clock limit of one component invocation, in milliseconds.
    #[arg(long, env = "WASMCLOUD_MAX_EXECUTION_TIME_MS", default_value_t = 10_000)]
    max_execution_time_ms: u64,
    /// Cap on each linear memory of a component instance, in bytes.
    #[arg(long, env = "WASMCLOUD_MAX_LINEAR_MEMORY", default_value_t = 256 << 20)]
    max_linear_memory_bytes: usize,
    /// How many component instances may be alive at once on this host.
    #[arg(long, env = "TRELLIS_MAX_INSTANCES", default_value_t = 1000)]
    max_total_instances: u32,
    /// Seconds between provider health checks.
    #[arg(long, env = "TRELLIS_PROVIDER_HEALTH_INTERVAL", default_value_t = 30)]
    provider_health_interval_seconds: u64,
    /// Account keys (A…, comma-separated) whose signed components this host runs; a component
    /// signed by any other issuer is refused. Empty: any issuer.
    #[arg(long, env = "TRELLIS_ALLOWED_ISSUERS", value_delimiter = ',', value_parser = parse_account_key)]
    allowed_issuers: Vec<String>,
    /// Run only signed components (see `wash claims sign`).
    #[arg(long, env = "TRELLIS_REQUIRE_SIGNED")]
    require_signed: bool,
    /// How long an orderly stop may take in all, in seconds: draining components, stopping
    /// providers, `host_stopped`, the leader lease; whatever cannot reach NATS in time is
    /// skipped (and logged). A second SIGINT or SIGTERM exits at once.
    #[arg(long, env = "TRELLIS_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    shutdown_timeout_seconds: u64,
    /// Where the host records the provider processes it starts, so that the next host on this
    /// directory stops those a killed one left running. Default: $XDG_STATE_HOME/trellis, else
    /// ~/.local/state/trellis.
    #[arg(long, env = "TRELLIS_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Serve the built-in secrets backend with this xkey seed (`SX…`, from `wash keys gen
    /// curve`); every host serving it needs the same seed, which seals the stored values.
    #[arg(long, env = "TRELLIS_SECRETS_XKEY_SEED", hide_env_values = true)]
    secrets_xkey_seed: Option<String>,
    /// The name the secrets backend answers under (`wasmcloud.secrets.v1alpha1.{name}.*`).
    #[arg(long, env = "TRELLIS_SECRETS_BACKEND", default_value = trellis_lattice::secrets::DEFAULT_BACKEND)]
    secrets_backend: String,
    /// Registries spoken to over plain HTTP, comma-separated (`localhost:5000`); all others need TLS.
    #[arg(long, env = "WASMCLOUD_OCI_ALLOWED_INSECURE", value_delimiter = ',')]
    allowed_insecure: Vec<String>,
    /// Allow `:latest` (and untagged) references; refused otherwise, since the tag can move under a running app.
    #[arg(long, env = "WASMCLOUD_OCI_ALLOW_LATEST")]
    allow_latest: bool,
    /// The registry --oci-user and --oci-password are for (default: any registry).
    #[arg(long, env = "WASMCLOUD_OCI_REGISTRY")]
    oci_registry: Option<String>,
    /// Registry user name (with --oci-password); otherwise Docker's ~/.docker/config.json is read.
    #[arg(long, env = "WASMCLOUD_OCI_REGISTRY_USER", requires = "oci_password")]
    oci_user: Option<String>,
    /// Registry password or token.
    #[arg(long, env = "WASMCLOUD_OCI_REGISTRY_PASSWORD", hide_env_values = true, requires = "oci_user")]
    oci_password: Option<String>,
    /// A CA certificate (PEM) to trust for registries, beside the system's roots.
    #[arg(long, env = "TRELLIS_OCI_CA_FILE")]
    oci_ca_file: Option<std::path::PathBuf>,
    /// The longest one pull may take, in seconds (registry or lattice store, first byte to last).
    #[arg(long, env = "TRELLIS_OCI_PULL_TIMEOUT_SECONDS", default_value_t = 120)]
    oci_pull_timeout_seconds: u64,
    /// Use the digest a tag had when last pulled without asking the registry again.
    #[arg(long, env = "TRELLIS_OCI_TRUST_CACHED_TAGS")]
    oci_trust_cached_tags: bool,
    /// Where pulled artifacts and compiled components are cached. Default: $XDG_CACHE_HOME/trellis,
    /// else ~/.cache/trellis.
    #[arg(long, env = "TRELLIS_CACHE_DIR")]
    cache_dir: Option<std::path::PathBuf>,
    /// The most the compiled-code cache keeps on disk, in MiB (least recently used go first).
    #[arg(long, env = "TRELLIS_COMPILED_CACHE_MAX_MIB", default_value_t = 2048)]
    compiled_cache_max_mib: u64,
    /// Serve `/livez`, `/readyz` and `/metrics` (Prometheus text) over HTTP at this address
    /// (e.g. 127.0.0.1:8081).
    #[arg(long, env = "WASMCLOUD_HTTP_ADMIN")]
    http_admin: Option<std::net::SocketAddr>,
    /// Export OpenTelemetry traces and metrics over OTLP (also on by itself when an
    /// OTEL_EXPORTER_OTLP_*ENDPOINT is set; OTEL_SDK_DISABLED=true turns it off). The standard
    /// OTEL_* variables say where, how and what is sampled (README, Observability).
    #[arg(long, env = "WASMCLOUD_OBSERVABILITY_ENABLED", default_value_t = false, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    enable_observability: bool,
    /// Log level (`info`, `debug`, …) or filter (RUST_LOG syntax); also RUST_LOG.
    #[arg(long, alias = "structured-log-level", env = "WASMCLOUD_LOG_LEVEL")]
    log_level: Option<String>,
    /// Export traces alone (also WASMCLOUD_TRACING_ENABLED=true).
    #[arg(long)]
    enable_traces: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // The Trellis names of two wasmCloud variables, read when the wasmCloud one is not set.
    if args.nats_credsfile.is_none() {
        args.nats_credsfile = std::env::var_os("TRELLIS_NATS_CREDSFILE").filter(|v| !v.is_empty()).map(Into::into);
    }
    let log_level = args.log_level.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    let telemetry_config = trellis_lattice::telemetry::TelemetryConfig::from_env("trellis-host", args.enable_observability || args.enable_traces)
        .context("bad observability settings")?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file gets plain `key=value` fields.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::EnvFilter::try_new(&log_level).unwrap_or_else(|_| "info".into()))
        .boxed();
    let telemetry = trellis_lattice::telemetry::install(&telemetry_config, logs)?;
    let mut labels = identity::labels_from_env(std::env::vars());
    labels.extend(args.labels.iter().cloned());
    let mut leaf = match &args.nats_remote_url {
        Some(remote) => Some(start_leaf(&args, remote).await?),
        None => None,
    };
    let url = match &leaf {
        Some((server, _)) => server.url.clone(),
        None if !args.nats_url.is_empty() => args.nats_url.join(","),
        None => format!("nats://{}:{}", args.nats_host, args.nats_port),
    };
    if args.nats_unguarded {
        tracing::warn!(
            "--nats-unguarded: connecting to NATS without the protocol guard; a client publishing subjects or headers that are not UTF-8 will drop this host's connection"
        );
    }
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_seconds);
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let config = HostConfig {
        lattice: args.lattice,
        nats: ConnectOptions {
            url,
            nkey_seed: args.nats_seed,
            jwt: args.nats_jwt,
            creds_file: args.nats_credsfile,
            tls_ca_file: args.nats_tls_ca_file,
            unguarded: args.nats_unguarded,
            ..Default::default()
        },
        labels,
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_seconds.max(1)),
        host_lost_after: args.host_lost_after_seconds.map(|s| Duration::from_secs(s.max(1))),
        runtime: RuntimeConfig {
            limits: Limits {
                max_execution_time: Duration::from_millis(args.max_execution_time_ms.max(1)),
                max_linear_memory_bytes: args.max_linear_memory_bytes,
            },
            max_total_instances: args.max_total_instances,
            pooling: true,
            compiled_cache: None,
            compiled_cache_max_bytes: args.compiled_cache_max_mib.saturating_mul(1 << 20),
        },
        allow_file_load: args.allow_file_load,
        max_queued_per_component: 1024,
        builtins: trellis_host::builtins(),
        provider_health_interval: Duration::from_secs(args.provider_health_interval_seconds.max(1)),
        allowed_issuers: args.allowed_issuers.into_iter().filter(|k| !k.is_empty()).collect(),
        require_signed: args.require_signed,
        js_domain: args.js_domain.clone(),
        js_replicas: args.js_replicas,
        shutdown_timeout,
        state_dir: Some(state_dir),
        secrets_xkey_seed: args.secrets_xkey_seed,
        secrets_backend: args.secrets_backend,
        oci: trellis_host::artifacts::OciSettings {
            allowed_insecure: args.allowed_insecure.into_iter().filter(|r| !r.is_empty()).collect(),
            allow_latest: args.allow_latest,
            registry: args.oci_registry,
            user: args.oci_user,
            password: args.oci_password,
            ca_file: args.oci_ca_file,
            pull_timeout: Duration::from_secs(args.oci_pull_timeout_seconds.max(1)),
            trust_cached_tags: args.oci_trust_cached_tags,
            ..Default::default()
        },
        cache_dir: args.cache_dir.or_else(trellis_host::artifacts::default_cache_dir),
        http_admin: args.http_admin,
        metrics_export: trellis_host::metrics::Export::from_env(args.enable_observability, |k| std::env::var(k).ok()),
    };
    let host = match Host::start(config).await {
        Ok(host) => host,
        Err(e) => {
            stop_leaf(leaf.as_mut(), Duration::from_secs(10)).await;
            return Err(anyhow::Error::new(e).context("the host could not start"));
        }
    };
    // Machine-readable line for tools that start hosts as processes.
    println!("trellis-host ready id={} name={}", host.id(), host.friendly_name());
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let asked = tokio::select! {
        _ = sigint.recv() => Some("SIGINT"),
        _ = sigterm.recv() => Some("SIGTERM"),
        _ = host.stopped() => None,
    };
    if let Some(signal) = asked {
        tracing::info!("{signal}: stopping within {} s (send it again to exit at once)", shutdown_timeout.as_secs());
    }
    let leaf_pid = leaf.as_ref().map(|(server, _)| server.pid());
    let started = tokio::time::Instant::now();
    let orderly = async {
        host.stop(shutdown_timeout).await;
        // The leaf server gets what is left (JetStream wants a moment to close its store).
        stop_leaf(leaf.as_mut(), shutdown_timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(2))).await;
    };
    // The orderly stop keeps to its budget; the last arm is a backstop, not the plan.
    tokio::select! {
        _ = orderly => {
            // The spans of the stop itself go too.
            telemetry.shutdown(Duration::from_secs(2)).await;
            Ok(())
        }
        _ = sigint.recv() => exit_now(&host, leaf_pid, "a second SIGINT", 130),
        _ = sigterm.recv() => exit_now(&host, leaf_pid, "a second SIGTERM", 143),
        _ = tokio::time::sleep(shutdown_timeout + Duration::from_secs(1)) => exit_now(&host, leaf_pid, "the shutdown timeout", 1),
    }
}

/// Exits the process now, after killing the provider processes (and the leaf server) it started.
fn exit_now(host: &Host, leaf_pid: Option<u32>, why: &str, code: i32) -> ! {
    tracing::warn!("{why}: exiting at once; provider processes are killed, the rest of the orderly stop is skipped");
    host.kill_providers();
    if let Some(pid) = leaf_pid {
        let _ = trellis_host::process::signal(pid, "KILL");
    }
    std::process::exit(code)
}

/// `$XDG_STATE_HOME/trellis`, else `~/.local/state/trellis`, else `trellis-state` in the temp dir.
fn default_state_dir() -> std::path::PathBuf {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    from("XDG_STATE_HOME")
        .map(|d| d.join("trellis"))
        .or_else(|| from("HOME").map(|h| h.join(".local/state/trellis")))
        .unwrap_or_else(|| std::env::temp_dir().join("trellis-state"))
}

async fn stop_leaf(leaf: Option<&mut (NatsProcess, std::path::PathBuf)>, grace: Duration) {
    if let Some((server, pid_file)) = leaf {
        server.stop_within(grace).await;
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Starts the local leaf nats-server of `--nats-remote-url`, after checking the flags that
/// decide whether this host would share the lattice's state.
async fn start_leaf(args: &Args, remote: &str) -> anyhow::Result<(NatsProcess, std::path::PathBuf)> {
    nats_server::check_leaf_domains(args.js_domain.as_deref(), args.nats_js_domain.as_deref())?;
    if !args.nats_url.is_empty() {
        anyhow::bail!("--nats-remote-url starts a local server on --nats-host/--nats-port; drop --nats-url");
    }
    if !matches!(args.nats_host.as_str(), "127.0.0.1" | "localhost") {
        anyhow::bail!("--nats-remote-url starts a local server on 127.0.0.1, not on {}; drop --nats-host", args.nats_host);
    }
    let port = args.nats_port;
    let dir = args.nats_leaf_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("trellis-leaf-{port}")));
    let files = nats_server::Files::in_dir(&dir);
    let pid_file = dir.join("nats.pid");
    if nats_server::stop_leftover(&pid_file, &files.conf).await {
        tracing::warn!(dir = %dir.display(), "stopped the leaf nats-server an earlier run of this host left behind");
    }
    match nats_server::probe("127.0.0.1", port).await? {
        Probe::Free => {}
        Probe::Nats => {
            anyhow::bail!("a NATS server already answers at 127.0.0.1:{port}; stop it, or join it without --nats-remote-url, or choose another --nats-port")
        }
        Probe::Other => anyhow::bail!("port {port} on 127.0.0.1 is taken by something that is not a NATS server; choose another --nats-port"),
    }
    let opts = nats_server::Options {
        port,
        js_domain: args.nats_js_domain.clone(),
        leaf: Some(nats_server::Leaf { remote_url: remote.to_string(), credentials: args.nats_remote_credsfile.clone() }),
    };
    let mut server = NatsProcess::start(&files, &opts).await.context("the leaf nats-server could not start")?;
    // Its own process group keeps it alive past a `kill -9` of this host; the pid lets the
    // next run stop it (see `stop_leftover`).
    if let Err(e) = std::fs::write(&pid_file, server.pid().to_string()) {
        server.stop().await;
        anyhow::bail!("cannot write {}: {e}; check that --nats-leaf-dir is writable", pid_file.display());
    }
    tracing::info!(url = server.url, remote, pid = server.pid(), log = %server.log().display(), "leaf nats-server started");
    Ok((server, pid_file))
}

/// An issuer for --allowed-issuers: an account public key.
fn parse_account_key(arg: &str) -> Result<String, String> {
    let key = arg.trim();
    if key.is_empty() {
        return Ok(String::new()); // `TRELLIS_ALLOWED_ISSUERS=` or a trailing comma
    }
    match nkeys::KeyPair::from_public_key(key) {
        Ok(k) if k.key_pair_type() == nkeys::KeyPairType::Account => Ok(key.to_string()),
        _ => Err(format!("`{key}` is not an account public key (A…, 56 characters); `wash keys gen account` makes one")),
    }
}

/// `--js-replicas`: 1 to 5, as JetStream allows.
fn parse_replicas(arg: &str) -> Result<usize, String> {
    let n =
        arg.trim().parse::<usize>().map_err(|_| format!("`{arg}` is not a number; give the replica count, 1 to {}", trellis_lattice::state::MAX_REPLICAS))?;
    trellis_lattice::state::check_replicas(n).map_err(|e| e.to_string())?;
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use clap::Parser as _;

    use super::Args;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from([&["trellis-host"], args].concat()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Each flag Trellis shares with wasmCloud 1.x's host, written as wasmCloud's docs write it.
    #[test]
    fn wasmclouds_host_flags_parse_as_wasmcloud_takes_them() {
        assert!(!parse(&[]).allow_file_load, "off by default, as in wasmCloud");
        assert!(parse(&["--allow-file-load"]).allow_file_load);
        assert!(parse(&["--allow-file-load=true"]).allow_file_load);
        assert!(!parse(&["--allow-file-load=false"]).allow_file_load);
        // A bare flag does not swallow what follows.
        let a = parse(&["--allow-file-load", "--lattice", "prod"]);
        assert!(a.allow_file_load && a.lattice == "prod");
        let a = parse(&["--nats-host", "nats.example", "--nats-port", "4223", "-x", "edge", "-l", "zone=edge", "--label", "tier=1"]);
        assert_eq!((a.nats_host.as_str(), a.nats_port, a.lattice.as_str()), ("nats.example", 4223, "edge"));
        assert_eq!(a.labels, [("zone".to_string(), "edge".to_string()), ("tier".to_string(), "1".to_string())]);
        let a = parse(&[]);
        assert_eq!((a.nats_host.as_str(), a.nats_port, a.lattice.as_str()), ("127.0.0.1", 4222, "default"));
        let a = parse(&["--nats-jwt", "eyJ…", "--nats-seed", "SUAM…", "--js-domain", "hub", "--heartbeat-interval-seconds", "30"]);
        assert_eq!(
            (a.nats_jwt.as_deref(), a.nats_seed.as_deref(), a.js_domain.as_deref(), a.heartbeat_interval_seconds),
            (Some("eyJ…"), Some("SUAM…"), Some("hub"), 30)
        );
        assert_eq!(parse(&["--wasmcloud-js-domain", "hub"]).js_domain.as_deref(), Some("hub"));
        assert_eq!(parse(&["--nats-creds", "/etc/nats.creds"]).nats_credsfile.as_deref(), Some(std::path::Path::new("/etc/nats.creds")));
        let a = parse(&["--max-execution-time-ms", "600000", "--max-linear-memory-bytes", "1048576", "--log-level", "debug"]);
        assert_eq!((a.max_execution_time_ms, a.max_linear_memory_bytes, a.log_level.as_deref()), (600_000, 1 << 20, Some("debug")));
        assert_eq!(parse(&["--structured-log-level", "warn"]).log_level.as_deref(), Some("warn"));
        assert!(Args::try_parse_from(["trellis-host", "--allow-file-load=maybe"]).is_err());
    }

    #[test]
    fn cluster_urls_and_replicas() {
        assert_eq!(parse(&[]).js_replicas, 1);
        assert_eq!(parse(&["--js-replicas", "3"]).js_replicas, 3);
        for bad in ["0", "6", "three"] {
            let err = Args::try_parse_from(["trellis-host", "--js-replicas", bad]).unwrap_err().to_string();
            assert!(err.contains("1 to 5"), "{bad}: {err}");
        }
        let a = parse(&["--nats-url", "nats://a:1", "--nats-url", "nats://b:2,nats://c:3"]);
        assert_eq!(a.nats_url, ["nats://a:1", "nats://b:2", "nats://c:3"]);
        assert!(parse(&[]).nats_url.is_empty());
    }
}
