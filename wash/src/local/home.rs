//! The wash home directory (`$WASH_HOME`, default `~/.wash`) and what `wash up` records there
//! for `wash down`: one file per host it runs, the nats-server's pid, logs, the JetStream store.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// What `wash up` knows about a host it runs, so `wash down` can stop it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRecord {
    /// The host id.
    pub host_id: String,
    /// Its friendly name.
    pub friendly_name: String,
    /// Its lattice.
    pub lattice: String,
    /// The NATS URL it is connected to.
    pub nats_url: String,
    /// The `wash up` process running it.
    pub pid: u32,
    /// The nats-server this `wash up` started (and stops when it exits), if any.
    pub nats_pid: Option<u32>,
}

/// The wash home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$WASH_HOME`, else `$HOME/.wash`.
    pub fn from_env() -> anyhow::Result<Self> {
        let root = match std::env::var_os("WASH_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(home) => PathBuf::from(home).join(".wash"),
                None => bail!("neither WASH_HOME nor HOME is set; set WASH_HOME to a directory wash may use"),
            },
        };
        Ok(Self { root })
    }

    /// Creates the directory (and the hosts directory) if needed.
    pub fn ensure(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.hosts_dir()).with_context(|| format!("cannot create {}", self.hosts_dir().display()))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The JetStream store of the nats-server `wash up` starts.
    pub fn jetstream_dir(&self) -> PathBuf {
        self.root.join("jetstream")
    }

    /// The log of a detached `wash up`.
    pub fn up_log(&self) -> PathBuf {
        self.root.join("wash-up.log")
    }

    /// The pid of the last detached `wash up`.
    pub fn up_pid_file(&self) -> PathBuf {
        self.root.join("wash-up.pid")
    }

    /// The pid of the nats-server `wash up` started.
    pub fn nats_pid_file(&self) -> PathBuf {
        self.root.join("nats.pid")
    }

    /// The nats-server's output.
    pub fn nats_log(&self) -> PathBuf {
        self.root.join("nats.log")
    }

    /// The nats-server config written for leaf-node mode.
    pub fn nats_conf(&self) -> PathBuf {
        self.root.join("nats.conf")
    }

    fn hosts_dir(&self) -> PathBuf {
        self.root.join("hosts")
    }

    fn record_path(&self, host_id: &str) -> PathBuf {
        self.hosts_dir().join(format!("{host_id}.json"))
    }

    /// Records a host `wash up` runs.
    pub fn write_record(&self, record: &HostRecord) -> anyhow::Result<()> {
        self.ensure()?;
        let path = self.record_path(&record.host_id);
        let json = serde_json::to_vec_pretty(record).context("cannot encode a host record")?;
        write_atomically(&path, &json)
    }

    /// Forgets a host.
    pub fn remove_record(&self, host_id: &str) {
        let _ = std::fs::remove_file(self.record_path(host_id));
    }

    /// Every recorded host (unreadable records are skipped).
    pub fn records(&self) -> Vec<HostRecord> {
        let Ok(entries) = std::fs::read_dir(self.hosts_dir()) else { return Vec::new() };
        let mut out: Vec<HostRecord> =
            entries.flatten().filter_map(|e| std::fs::read(e.path()).ok()).filter_map(|bytes| serde_json::from_slice(&bytes).ok()).collect();
        out.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        out
    }

    /// Reads a pid file.
    pub fn read_pid(path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Writes a pid file.
    pub fn write_pid(path: &Path, pid: u32) -> anyhow::Result<()> {
        write_atomically(path, format!("{pid}\n").as_bytes())
    }
}

/// Writes to a temp file and renames it over `path`, so readers never see half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

pub use trellis_host::nats_server::last_line;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home { root: dir.path().join("wash") };
        assert!(home.records().is_empty());
        let rec = HostRecord {
            host_id: "NABC".into(),
            friendly_name: "bold-dew-1".into(),
            lattice: "default".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            pid: 42,
            nats_pid: Some(43),
        };
        home.write_record(&rec).expect("written");
        assert_eq!(home.records(), vec![rec]);
        home.remove_record("NABC");
        assert!(home.records().is_empty());
        Home::write_pid(&home.up_pid_file(), 7).expect("written");
        assert_eq!(Home::read_pid(&home.up_pid_file()), Some(7));
    }
}
