//! Running the `wash` binary in tests: a command with a private WASH_HOME and explicit
//! connection settings (nothing inherited from the developer's environment), and assertions on
//! its output.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use trellis_lattice::client::CtlClient;
use trellis_tests::nats::NatsServer;

/// How long tests wait for outcomes.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where `wash` runs: a NATS port and a home directory.
pub struct Wash {
    pub port: u16,
    pub home: PathBuf,
    _home_dir: Option<tempfile::TempDir>,
}

impl Wash {
    /// `wash` against the server at `port`, with a fresh temp WASH_HOME.
    pub fn new(port: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("wash-home-").tempdir().expect("temp WASH_HOME");
        Self { port, home: dir.path().to_path_buf(), _home_dir: Some(dir) }
    }

    /// `wash` against `nats`.
    pub fn on(nats: &NatsServer) -> Self {
        Self::new(nats.port())
    }

    /// A `wash ARGS…` command, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wash"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WASH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("WASH_HOME", &self.home)
            .env("WASH_CTL_HOST", "127.0.0.1")
            .env("WASH_CTL_PORT", self.port.to_string())
            .env("WASH_LATTICE", "default")
            .env("WASH_TIMEOUT_MS", WAIT.as_millis().to_string())
            // In-process hosts in a busy test process may take a moment to bid.
            .env("WASH_AUCTION_TIMEOUT_MS", "1000")
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `wash ARGS…` to completion.
    pub fn run(&self, args: &[&str]) -> Out {
        let output = self.cmd(args).output().expect("wash runs");
        Out::new(args, output)
    }

    /// Runs `wash ARGS…` off the async runtime's worker threads.
    pub async fn run_async(&self, args: &[&str]) -> Out {
        let cmd = self.cmd(args);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            let output = cmd.output().expect("wash runs");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Out::new(&args, output)
        })
        .await
        .expect("wash did not panic the test")
    }

    /// A path inside WASH_HOME.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }
}

impl Drop for Wash {
    /// A failed test must not leave a `wash up` or its nats-server running.
    fn drop(&mut self) {
        let hosts_recorded = std::fs::read_dir(self.path("hosts")).is_ok_and(|mut d| d.next().is_some());
        if hosts_recorded || self.path("nats.pid").exists() || self.path("wash-up.pid").exists() {
            let _ = self.cmd(&["down"]).output();
        }
    }
}

/// What a `wash` run printed.
pub struct Out {
    pub args: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn new(args: &[&str], output: Output) -> Self {
        Self {
            args: args.join(" "),
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts it succeeded; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success, "`wash {}` failed:\nstdout: {}\nstderr: {}", self.args, self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts it succeeded with JSON on stdout carrying `"success": true`; returns it.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(self.ok().trim()).unwrap_or_else(|e| panic!("`wash {}` printed no JSON ({e}): {}", self.args, self.stdout));
        assert_eq!(v["success"], true, "{v}");
        v
    }

    /// Asserts it failed with exactly one stderr line, `error: …`; returns the message.
    #[track_caller]
    pub fn error(&self) -> String {
        assert!(!self.success, "`wash {}` should have failed:\nstdout: {}\nstderr: {}", self.args, self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "`wash {}` should print one error line, printed: {}", self.args, self.stderr);
        lines[0].strip_prefix("error: ").unwrap_or_else(|| panic!("no `error: ` prefix: {}", lines[0])).to_string()
    }
}

/// A control client for `nats`' default lattice.
pub async fn ctl(nats: &NatsServer) -> CtlClient {
    CtlClient::new(nats.client().await.expect("client"), "default").with_auction_timeout(Duration::from_millis(750))
}

/// Whether `pid` is a live process (zombies count as gone: the container's init may not reap).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone.
pub async fn gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A port nothing listens on right now (bound, then released): [`trellis_tests::free_port`].
pub fn free_port() -> u16 {
    trellis_tests::free_port().expect("a free loopback port")
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Writes an executable `name` with `script` into `dir`.
pub fn script(dir: &Path, name: &str, script: &str) -> PathBuf {
    trellis_tests::script(dir, name, script).expect("write an executable script")
}
