//! Other processes by pid, without unsafe code: liveness and start time from `/proc` (or
//! `kill -0` off Linux), signals through the `kill` command, and waiting for an exit. The host
//! uses it for provider processes a killed host left behind; `wash` for what `wash up` started.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{HostError, Result};

fn has_proc() -> bool {
    std::path::Path::new("/proc/self").exists()
}

/// `pid`'s `/proc/PID/stat` fields after the command name (which may hold spaces and parens).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    if has_proc() {
        let state = stat_fields(pid).and_then(|f| f.into_iter().next());
        return !matches!(state.as_deref(), Some("Z" | "X") | None);
    }
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// When `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22): with the pid, it
/// names one process, so a recycled pid is never taken for the one recorded. `None` off Linux
/// or when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    // Field 22 of stat; the fields after the command name start at field 3.
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `started` (see [`start_time`]).
pub fn is_same(pid: u32, started: u64) -> bool {
    alive(pid) && start_time(pid) == Some(started)
}

/// Whether `pid`'s command line mentions `name` (true where it cannot be read, e.g. off Linux),
/// so a recycled pid is not signalled by mistake.
pub fn looks_like(pid: u32, name: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains(name),
        Err(_) => !has_proc(),
    }
}

/// Sends `signal` (`TERM`, `KILL`, …) to `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| HostError::Process(format!("cannot run `kill` to signal process {pid}: {e}")))?;
    // It may have exited in between, which is what we wanted.
    if !status.success() && alive(pid) {
        return Err(HostError::Process(format!("`kill -{signal} {pid}` failed ({status})")));
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; whether it is gone.
pub async fn terminate(pid: u32, grace: Duration) -> Result<bool> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn liveness_and_identity() {
        let me = std::process::id();
        assert!(alive(me));
        let started = start_time(me).unwrap();
        assert!(is_same(me, started));
        assert!(!is_same(me, started + 1), "another start time is another process");
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("reaped");
        assert!(!alive(pid));
        assert_eq!(start_time(pid), None);
    }

    #[tokio::test]
    async fn terminate_stops_a_process_and_reports_it_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        assert!(terminate(pid, Duration::from_secs(5)).await.unwrap());
        assert!(reaper.join().unwrap().is_ok());
        assert!(!alive(pid));
    }
}
