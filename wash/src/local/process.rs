//! Other processes by pid: the host crate's [`trellis_host::process`], plus finding executables.

pub use trellis_host::process::{alive, looks_like, terminate, wait_gone};

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
