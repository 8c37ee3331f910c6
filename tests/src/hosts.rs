//! Hosts for tests: in-process [`Host`]s, `trellis-host` processes, and an event collector.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_host::{Host, HostConfig};
use trellis_lattice::event::CloudEvent;

/// Logs to the test output once per test binary (`RUST_LOG` filters; quiet by default).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
    });
}

/// A host config for tests: the given URL and labels, a 1 s heartbeat and provider health
/// check, and the built-in providers the `trellis-host` binary has.
pub fn config(nats_url: &str, labels: &[(&str, &str)]) -> HostConfig {
    let mut c = HostConfig::new(nats_url);
    c.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    c.heartbeat_interval = Duration::from_secs(1);
    c.provider_health_interval = Duration::from_secs(1);
    c.builtins = trellis_host::builtins();
    c
}

/// Starts an in-process host.
pub async fn start_host(nats_url: &str, labels: &[(&str, &str)]) -> anyhow::Result<Host> {
    init_tracing();
    Host::start(config(nats_url, labels)).await.context("in-process host did not start")
}

/// The `trellis-host` binary of this workspace, built on first use (a no-op when current).
pub fn host_binary() -> anyhow::Result<std::path::PathBuf> {
    workspace_binary("trellis-host", "trellis-host")
}

/// The http-server provider executable, built on first use.
pub fn http_server_provider_binary() -> anyhow::Result<std::path::PathBuf> {
    workspace_binary("trellis-provider-http-server", "trellis-provider-http-server")
}

/// Binary `bin` of workspace package `package`, built (once per test process, a no-op when
/// current) into the same target directory and profile as the running test.
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<std::path::PathBuf> {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Result<std::path::PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    built
        .entry(format!("{package}/{bin}"))
        .or_insert_with(|| {
            // target/<profile>/deps/<test> → target/<profile>
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let profile_dir = exe.parent().and_then(|d| d.parent()).ok_or("unexpected test binary location")?.to_path_buf();
            let target_dir = profile_dir.parent().ok_or("unexpected test binary location")?;
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            remove_cargo_test_env(&mut cmd);
            // The same selection as `make test`'s build: building one package alone would
            // unify features differently and recompile shared dependencies.
            cmd.args(["build", "--quiet", "--workspace", "--all-targets", "--target-dir"]).arg(target_dir);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| format!("cannot run cargo to build {bin}: {e}"))?;
            if !status.success() {
                return Err(format!("building the workspace for {bin} failed ({status})"));
            }
            let path = profile_dir.join(bin);
            if !path.exists() {
                return Err(format!("{} was not built; is `{bin}` a binary of package `{package}`?", path.display()));
            }
            Ok(path)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Removes from `cmd`'s environment what cargo sets for a running test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, …), for a command that runs cargo. Some build scripts track
/// `CARGO_MANIFEST_DIR` (ring's does): a nested build that saw the test's value would recompile
/// them and everything above them, and the next ordinary build would recompile them back.
pub fn remove_cargo_test_env(cmd: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_"].iter().any(|p| key.starts_with(p))
            || matches!(key, "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR");
        if set_by_cargo {
            cmd.env_remove(key);
        }
    }
}

/// Pids of this test process's children whose executable name starts with `name` (Linux).
pub fn child_pids(name: &str) -> Vec<u32> {
    children_of(std::process::id(), name)
}

/// Pids of `parent`'s children whose executable name starts with `name` (Linux).
pub fn children_of(parent: u32, name: &str) -> Vec<u32> {
    let me = parent;
    let comm: String = name.chars().take(15).collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && stat[open + 1..close].starts_with(&comm) {
            out.push(pid);
        }
    }
    out
}

/// A `trellis-host` process, killed on drop.
pub struct ProcessHost {
    child: tokio::process::Child,
    /// Its host id.
    pub id: String,
    /// Its friendly name.
    pub friendly_name: String,
    /// Its own state directory (provider records, scheduling state) unless `--state-dir` was
    /// given: tests never share the user's default one.
    _state: tempfile::TempDir,
}

impl ProcessHost {
    /// Starts `trellis-host --nats-url URL` with `args`, and waits for its ready line.
    pub async fn start(nats_url: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(&[&["--nats-url", nats_url], args].concat()).await
    }

    /// Starts `trellis-host` with `args` alone (and a 1 s heartbeat), and waits for its ready line.
    pub async fn start_with(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(args, Stdio::inherit(), &[]).await
    }

    /// Like [`ProcessHost::start`], with `env` added to its environment (its providers inherit
    /// the `OTEL_*` ones), and its log written to `log` when given.
    pub async fn start_env(nats_url: &str, args: &[&str], env: &[(String, String)], log: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let stderr = match log {
            Some(log) => Stdio::from(std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?),
            None => Stdio::inherit(),
        };
        Self::spawn(&[&["--nats-url", nats_url], args].concat(), stderr, env).await
    }

    /// [`ProcessHost::start_env`] of another `trellis-host` executable (an earlier build, for
    /// a bench's baseline), its log discarded.
    pub async fn start_binary(binary: &std::path::Path, nats_url: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        Self::spawn_binary(binary, &[&["--nats-url", nats_url], args].concat(), Stdio::null(), env).await
    }

    /// Like [`ProcessHost::start`], with the host's log (its stderr) written to `log`.
    pub async fn start_logged(nats_url: &str, args: &[&str], log: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        Self::spawn(&[&["--nats-url", nats_url], args].concat(), Stdio::from(file), &[]).await
    }

    async fn spawn(args: &[&str], stderr: Stdio, env: &[(String, String)]) -> anyhow::Result<Self> {
        Self::spawn_binary(&host_binary()?, args, stderr, env).await
    }

    async fn spawn_binary(binary: &std::path::Path, args: &[&str], stderr: Stdio, env: &[(String, String)]) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new().prefix("trellis-host-state-").tempdir()?;
        let mut child = tokio::process::Command::new(binary)
            .env("TRELLIS_STATE_DIR", state.path())
            .args(["--heartbeat-interval-seconds", "1", "--allow-file-load"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Tests keep the artifact and compiled-code cache out of the user's home.
            .env("TRELLIS_CACHE_DIR", std::env::temp_dir().join("trellis-test-cache"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start trellis-host")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("trellis-host did not report ready within 30 s")??
            .context("trellis-host exited before it was ready")?;
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
        let (Some(id), Some(friendly_name)) = (field("id="), field("name=")) else {
            bail!("unexpected ready line from trellis-host: {line}");
        };
        Ok(Self { child, id, friendly_name, _state: state })
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal("TERM")
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, …).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the process has exited")
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await.context("trellis-host did not exit in time")??)
    }
}

/// Collects every event of a lattice from the moment it is created.
pub struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<CloudEvent>,
    seen: Vec<CloudEvent>,
}

impl Events {
    /// Subscribes to `wasmbus.evt.{lattice}.>`.
    pub async fn subscribe(nats: &async_nats::Client, lattice: &str) -> anyhow::Result<Self> {
        let mut sub = nats.subscribe(trellis_lattice::subject::events_wildcard(lattice)).await?;
        // Not flush(): only a round trip makes sure the server has the subscription before an
        // event that another connection publishes right after this returns.
        trellis_lattice::round_trip(nats).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(ev) = CloudEvent::from_slice(&msg.payload)
                    && tx.send(ev).is_err()
                {
                    break;
                }
            }
        });
        Ok(Self { rx, seen: Vec::new() })
    }

    /// The first event named one of `names` for which `pred` holds (see [`Events::wait_for`]).
    pub async fn wait_for_any(&mut self, names: &[&str], timeout: Duration, pred: impl Fn(&CloudEvent) -> bool) -> anyhow::Result<CloudEvent> {
        if let Some(i) = self.seen.iter().position(|e| names.contains(&e.name()) && pred(e)) {
            return Ok(self.seen.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) if names.contains(&ev.name()) && pred(&ev) => return Ok(ev),
                Ok(Some(ev)) => self.seen.push(ev),
                Ok(None) => bail!("the event subscription ended"),
                Err(_) => bail!("no {names:?} event matched within {timeout:?}"),
            }
        }
    }

    /// The first event (seen before or arriving within `timeout`) named `name` for which `pred`
    /// holds; the event is consumed.
    pub async fn wait_for(&mut self, name: &str, timeout: Duration, pred: impl Fn(&CloudEvent) -> bool) -> anyhow::Result<CloudEvent> {
        if let Some(i) = self.seen.iter().position(|e| e.name() == name && pred(e)) {
            return Ok(self.seen.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) if ev.name() == name && pred(&ev) => return Ok(ev),
                Ok(Some(ev)) => self.seen.push(ev),
                Ok(None) => bail!("the event subscription ended"),
                Err(_) => bail!(
                    "no `{name}` event matched within {timeout:?}; saw: {:?}",
                    self.seen.iter().map(|e| format!("{} {}", e.name(), e.data)).collect::<Vec<_>>()
                ),
            }
        }
    }
}
