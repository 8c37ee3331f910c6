//! Test support for Trellis: real `nats-server` processes ([`nats`]), real `redis-server`
//! processes ([`redis`]) and the prebuilt wasm components the integration tests deploy
//! ([`components`]), and helpers for app tests ([`apps`]).

pub mod apps;
pub mod browser;
pub mod components;
pub mod hosts;
pub mod http;
pub mod load;
pub mod nats;
pub mod otlp;
pub mod redis;
pub mod registry;
pub mod scenario;
pub mod tls;

/// A loopback port nothing listened on a moment ago (bound, then released), for a server a
/// test starts right after; see [`http::free_addr`].
pub fn free_port() -> anyhow::Result<u16> {
    Ok(http::free_addr()?.port())
}

/// Asserts that `s` contains every one of `parts`, naming the first one missing.
#[track_caller]
pub fn assert_contains_all(s: &str, parts: &[&str]) {
    for p in parts {
        assert!(s.contains(p), "`{p}` is missing from: {s}");
    }
}

/// Writes an executable shell script `name` with `text` into `dir`; its path.
pub fn script(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// A provider executable (in `dir`) that reads its host data and then ignores SIGTERM, SIGINT
/// and every shutdown request: the provider a host has to kill. Its process is named `sleep`.
pub fn stubborn_provider(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    script(dir, "stubborn-provider", "#!/bin/sh\ntrap '' TERM INT\nread line\nexec sleep 300\n")
}
