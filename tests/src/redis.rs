//! Real `redis-server` processes for tests.
//!
//! [`RedisServer`] owns one server process and a private temp dir (its working dir and log).
//! It listens on 127.0.0.1 on a port that was free a moment before it started (picked like
//! [`crate::http::free_addr`]; a lost race is retried with a new port), with persistence off
//! (`--save '' --appendonly no`), and counts as started once a client connection answers
//! `PING` with `+PONG` (no fixed sleeps). It is killed when dropped; [`RedisServer::stop`] and
//! [`RedisServer::restart`] take it down and bring it back on the same port (data is not kept:
//! persistence is off), for tests of a backend that must recover by itself.
//!
//! The binary is `$TRELLIS_REDIS_SERVER` if set, else `redis-server` on PATH (Debian's
//! `redis-server` package; `.ci/bootstrap` installs it).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a server gets to come up (spawn, bind, answer PING).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Attempts with a fresh port when the picked one was taken before the server bound it.
const PORT_ATTEMPTS: usize = 5;
const INSTALL_HINT: &str = "sudo apt-get install -y redis-server (or run .ci/bootstrap)";
const BINARY_ENV: &str = "TRELLIS_REDIS_SERVER";

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    // Drops after `Drop::drop` has killed the process.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on 127.0.0.1 on a free port, persistence off, in a temp dir.
    pub async fn start() -> anyhow::Result<RedisServer> {
        let binary = redis_server_binary()?;
        let dir = tempfile::Builder::new().prefix("trellis-redis-").tempdir().context("creating a temp dir for redis-server")?;
        let mut server = RedisServer { child: None, binary, port: 0, dir };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::free_port()?;
            match server.spawn_and_wait(port).await {
                Ok(()) => return Ok(server),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port; it stays the same across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and reaps it; connections to it break at once.
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process is already gone, which is the goal.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it again on the same port (empty: persistence
    /// is off). Retries for a while if the port is briefly not bindable.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let port = self.port;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.spawn_and_wait(port).await {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(err.context(format!("restarting redis-server on port {port}")));
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    async fn spawn_and_wait(&mut self, port: u16) -> anyhow::Result<()> {
        let log = self.log_path();
        // Keep earlier runs' output: restarts append.
        let stdout = OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("creating {}", log.display()))?;
        let stderr = stdout.try_clone().context("duplicating the log file handle")?;
        let args: Vec<OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--dir".into(),
            self.dir.path().as_os_str().to_owned(),
        ];
        let child = Command::new(&self.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        self.port = port;
        match self.wait_ready().await {
            Ok(()) => Ok(()),
            Err(err) => {
                self.stop();
                Err(err.context(format!("redis-server ({}) did not start on port {port}; its output:\n{}", self.binary.display(), self.output_tail())))
            }
        }
    }

    /// Connects and sends `PING` until `+PONG` comes back, the process exits, or
    /// [`STARTUP_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            self.ensure_running()?;
            let attempt = tokio::time::timeout(Duration::from_secs(1), ping(&addr)).await;
            match attempt {
                Ok(Ok(())) => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!("no PONG from {addr} within {STARTUP_TIMEOUT:?}")
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("redis-server is not running")?;
        match child.try_wait().context("polling redis-server")? {
            Some(status) => bail!("redis-server exited early ({status})"),
            None => Ok(()),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last lines of the server's output, for error messages.
    fn output_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() { "(nothing)".into() } else { tail }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `PING` over a fresh connection (RESP inline command).
async fn ping(addr: &str) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed before a reply");
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got.starts_with(b"+PONG") { Ok(()) } else { bail!("unexpected reply {:?}", String::from_utf8_lossy(&got)) }
}

/// `$TRELLIS_REDIS_SERVER`, else `redis-server` on PATH; an error with an install hint if
/// there is none.
pub fn redis_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("${BINARY_ENV}={} does not exist; install redis-server with `{INSTALL_HINT}`", path.display());
        }
        return Ok(path);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .with_context(|| format!("no redis-server on PATH; install it with `{INSTALL_HINT}` or point ${BINARY_ENV} at one"))
}
