//! Other processes by pid, without unsafe code: liveness from `/proc` (or `kill -0`), signals
//! through the `kill` command, and waiting for an exit.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    if std::path::Path::new("/proc/self").exists() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // `pid (comm) S …`: the state follows the last `)`, as comm may hold spaces and parens.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        return !matches!(state, Some("Z" | "X") | None);
    }
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Whether `pid`'s command line mentions `name` (true where it cannot be read, e.g. off Linux),
/// so a recycled pid is not signalled by mistake.
pub fn looks_like(pid: u32, name: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains(name),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

/// Sends `signal` (`TERM`, `KILL`, …) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run `kill` to signal process {pid}: {e}"))?;
    // It may have exited in between, which is what we wanted.
    if !status.success() && alive(pid) {
        anyhow::bail!("`kill -{signal} {pid}` failed ({status})");
    }
    Ok(())
}

/// Waits until `pid` is gone, up to `timeout`; whether it is gone.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; whether it is gone.
pub async fn terminate(pid: u32, grace: Duration) -> anyhow::Result<bool> {
    if !alive(pid) {
        return Ok(true);
    }
    signal(pid, "TERM")?;
    if wait_gone(pid, grace).await {
        return Ok(true);
    }
    signal(pid, "KILL")?;
    Ok(wait_gone(pid, Duration::from_secs(5)).await)
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        assert!(alive(std::process::id()));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("reaped");
        assert!(!alive(pid));
    }
}
