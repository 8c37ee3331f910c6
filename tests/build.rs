//! Builds the wasm32-wasip2 components the tests load and exports their paths.
//!
//! `examples/` and `tests/components/` are separate cargo workspaces (they build
//! for another target), so a nested `cargo build` compiles them into
//! `<workspace root>/target/wasm`. That directory sits outside OUT_DIR so that
//! every profile and every `cargo test` run shares one incremental build. The
//! paths reach the `components` module as `TRELLIS_WASM_*` compile-time env vars.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// (workspace dir relative to the root, crate dir inside it, env var for its .wasm path).
/// A workspace listed twice is built twice, which is a cheap no-op the second time.
const COMPONENTS: &[(&str, &str, &str)] = &[
    ("examples", "http-blobstore", "TRELLIS_WASM_HTTP_BLOBSTORE"),
    ("examples", "http-echo", "TRELLIS_WASM_HTTP_ECHO"),
    ("examples", "http-fetcher", "TRELLIS_WASM_HTTP_FETCHER"),
    ("examples", "http-hello", "TRELLIS_WASM_HTTP_HELLO"),
    ("examples", "http-hello-p3", "TRELLIS_WASM_HTTP_HELLO_P3"),
    ("examples", "http-kv-counter", "TRELLIS_WASM_HTTP_KV_COUNTER"),
    ("examples", "messaging-echo", "TRELLIS_WASM_MESSAGING_ECHO"),
    ("examples", "pinger", "TRELLIS_WASM_PINGER"),
    ("examples", "ponger", "TRELLIS_WASM_PONGER"),
    ("tests/components", "misbehave", "TRELLIS_WASM_MISBEHAVE"),
    ("tests/components", "misbehave-p3", "TRELLIS_WASM_MISBEHAVE_P3"),
    ("tests/components", "messenger", "TRELLIS_WASM_MESSENGER"),
    ("tests/components", "kvbench", "TRELLIS_WASM_KVBENCH"),
    ("tests/components", "secret-reader", "TRELLIS_WASM_SECRET_READER"),
];

/// Outer-build variables that must not reach the nested build: they describe
/// the host-target crate being built here (flags, cfgs, jobserver, dirs), not
/// the wasm workspaces, and would break or silently reconfigure them.
const STRIP_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
    "DEBUG",
    "OPT_LEVEL",
    "PROFILE",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "NUM_JOBS",
];
const STRIP_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_MANIFEST_"];

fn main() {
    if let Err(msg) = run() {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?);
    let root = manifest_dir.parent().ok_or("tests/ has no parent directory")?.to_path_buf();
    let target_dir = root.join("target").join("wasm");
    // Not stripped: these configure the nested build itself.
    for var in ["RUSTC", "RUSTC_WRAPPER", "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    check_target_installed()?;
    // The WIT that examples generate bindings from.
    println!("cargo:rerun-if-changed={}", root.join("interfaces").display());

    for (ws, krate, var) in COMPONENTS {
        let ws_dir = root.join(ws);
        for file in ["Cargo.toml", "Cargo.lock"] {
            println!("cargo:rerun-if-changed={}", ws_dir.join(file).display());
        }
        // A directory is scanned recursively for changes.
        println!("cargo:rerun-if-changed={}", ws_dir.join(krate).display());

        cargo_build(&ws_dir.join("Cargo.toml"), &target_dir)?;

        let wasm = target_dir.join(TARGET).join("release").join(format!("{}.wasm", krate.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!("{} was built but {} is missing", ws_dir.display(), wasm.display()));
        }
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
    Ok(())
}

/// Runs `cargo build --release --target wasm32-wasip2` on one workspace.
fn cargo_build(manifest: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Cargo reads a build script's stdout as directives; keep the nested
        // cargo's chatter on stderr, where it shows up if the build fails.
        .stdout(Stdio::from(std::io::stderr()));
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if STRIP_VARS.contains(&key) || STRIP_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().map_err(|e| format!("could not run {}: {e}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!("building the wasm components in {} failed ({status}); see the cargo output above", manifest.display()));
    }
    Ok(())
}

/// Fails early, and clearly, if the wasm32-wasip2 standard library is absent:
/// the nested build's own error ("can't find crate for `core`") is cryptic.
fn check_target_installed() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("could not run {}: {e}", Path::new(&rustc).display()))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let has_std = out.status.success()
        && std::fs::read_dir(&libdir).map(|dir| dir.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))).unwrap_or(false);
    if has_std {
        Ok(())
    } else {
        Err(format!(
            "the {TARGET} target is not installed for this toolchain (no std in {}); \
             run `rustup target add {TARGET}`",
            libdir.display()
        ))
    }
}
