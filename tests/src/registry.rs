//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry),
//! on 127.0.0.1 at a free port, its storage in a temp dir, killed on drop. [`Registry::start`]
//! serves plain HTTP and anonymous access; [`Registry::start_secured`] serves TLS with a CA made
//! at test time and basic auth from an htpasswd file (bcrypt), as the registry wants it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Where the registry binary is: `TRELLIS_DOCKER_REGISTRY`, else `docker-registry` on PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("TRELLIS_DOCKER_REGISTRY").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("docker-registry"))
}

/// A running registry.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA that signed its certificate, when it serves TLS.
    pub ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Plain HTTP, no auth.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(None).await
    }

    /// TLS (a CA made now, see [`Registry::ca_file`]) and basic auth for `user`/`password`.
    pub async fn start_secured(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::launch(Some((user, password))).await
    }

    async fn launch(auth: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("trellis-registry-").tempdir()?;
        let mut last = None;
        for _ in 0..5 {
            let port = crate::free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let mut config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            let mut ca_file = None;
            if let Some((user, password)) = auth {
                let (ca, cert, key) = crate::tls::make_certs(dir.path())?;
                config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
                let hash = bcrypt::hash(password, 5).context("bcrypt")?;
                std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))?;
                config.push_str(&format!("auth:\n  htpasswd:\n    realm: trellis-test\n    path: {}\n", dir.path().join("htpasswd").display()));
                ca_file = Some(ca);
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config)?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let child = Command::new(binary())
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start docker-registry; install Debian's docker-registry package (.ci/bootstrap does) or set TRELLIS_DOCKER_REGISTRY")?;
            let mut registry = Registry { child: Some(child), addr, ca_file, dir };
            match registry.wait_ready().await {
                Ok(()) => return Ok(registry),
                Err(e) => {
                    last = Some(e);
                    registry.kill();
                    dir = registry.take_dir();
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the registry did not start")))
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("a temp dir"))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("docker-registry exited with {status}: {}", self.log());
            }
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("docker-registry did not listen on {} within 15 s: {}", self.addr, self.log())
    }

    /// `127.0.0.1:PORT/{repository_and_tag}`.
    pub fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.addr)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob of `repository` was fetched (`GET /v2/{repository}/blobs/…`), from
    /// the registry's access log.
    pub fn blob_gets(&self, repository: &str) -> usize {
        let needle = format!("\"GET /v2/{repository}/blobs/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Where the registry keeps its blobs (to damage one in a test).
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
