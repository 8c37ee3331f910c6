//! `wash build`: builds the project in `wasmcloud.toml` with its language's toolchain (cargo
//! for `wasm32-wasip2`, componentize-py) or its `build_command`, then signs the component with
//! claims (the account and component keys of `wash keys`, or `key_directory`) into
//! `destination`. A missing tool or Rust target is named before anything runs, with the
//! command that installs it; a failing build shows the toolchain's own output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;

use crate::cli::Global;
use crate::commands::claims::{SignArgs, sign_with};
use crate::output::{Format, Report};
use crate::project::{Language, Project};

/// `wash build`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  wash new component hello && cd hello && wash build\n\n\
Reads wasmcloud.toml (name, version, language, [component] destination, key_directory, build_command, build_artifact, wit_world; [rust] cargo_path, target_path, debug).")]
pub struct BuildArgs {
    /// The project folder (holding wasmcloud.toml).
    #[arg(short = 'p', long, default_value = ".")]
    pub project_dir: PathBuf,
    /// Build without signing (the toolchain's artifact is the result).
    #[arg(long)]
    pub build_only: bool,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The signed component (the toolchain's artifact with `--build-only`).
    pub artifact: PathBuf,
    /// Keys made on first use.
    pub generated_keys: Vec<PathBuf>,
}

/// Runs `wash build`.
pub async fn run(g: &Global, args: &BuildArgs) -> anyhow::Result<Report> {
    let project = Project::load(&args.project_dir)?;
    warn(g, &project);
    let (dir, sign, quiet) = (args.project_dir.clone(), !args.build_only, g.output == Format::Json);
    let built = tokio::task::spawn_blocking(move || build(&project, sign, quiet)).await.context("the build task failed")??;
    let mut text = format!("Built {}", built.artifact.display());
    for key in &built.generated_keys {
        text.push_str(&format!("\nGenerated key {}", key.display()));
    }
    Ok(Report::new(text, json!({"artifact": built.artifact, "project_dir": dir, "generated_keys": built.generated_keys})))
}

/// Prints the project file's warnings on stderr.
pub fn warn(g: &Global, project: &Project) {
    if g.output == Format::Json {
        return;
    }
    for w in &project.warnings {
        eprintln!("warning: {}: {w}", crate::project::FILE);
    }
}

/// Builds `project` (the toolchain's output on stderr, or nowhere when `quiet`) and, with
/// `sign`, signs the result into its destination.
pub fn build(project: &Project, sign: bool, quiet: bool) -> anyhow::Result<Built> {
    let artifact = match (&project.build_command, &project.language) {
        (Some(command), _) => run_command(project, command, quiet)?,
        (None, Language::Rust) => cargo(project, quiet)?,
        (None, Language::Python) => componentize_py(project, quiet)?,
        (None, Language::Other(l)) => bail!("language `{l}` needs [component].build_command"),
    };
    if !sign {
        return Ok(Built { artifact, generated_keys: Vec::new() });
    }
    let keys = match &project.key_directory {
        Some(dir) => dir.clone(),
        None => crate::commands::keys::keys_dir()?,
    };
    if let Some(parent) = project.destination.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let args = SignArgs {
        file: artifact,
        name: project.name.clone(),
        ver: project.version.clone(),
        rev: project.revision,
        tags: project.tags.clone(),
        call_alias: project.call_alias.clone(),
        expires: None,
        expires_in_secs: None,
        not_before: None,
        issuer: None,
        subject: None,
        destination: Some(project.destination.clone()),
        disable_keygen: false,
    };
    let report = sign_with(&args, &keys)?;
    let generated = report.json().get("generated_keys").and_then(|k| serde_json::from_value(k.clone()).ok()).unwrap_or_default();
    Ok(Built { artifact: project.destination.clone(), generated_keys: generated })
}

/// Where the program `name` is on PATH (or `name` itself when it is a path that exists).
fn which(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// What to run to install a build tool.
fn install_hint(tool: &str) -> &'static str {
    match tool {
        "cargo" | "rustc" => "install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`",
        "componentize-py" => "install it with `pip install componentize-py` (a Python wheel, Python 3.10 or later)",
        "jco" => "install it with `npm install -g @bytecodealliance/jco @bytecodealliance/componentize-js`",
        "tinygo" => "install TinyGo from https://tinygo.org/getting-started/install/",
        _ => "install it, or change [component].build_command",
    }
}

fn require_tool(tool: &str) -> anyhow::Result<PathBuf> {
    which(tool).or_else(|| python_script(tool)).ok_or_else(|| anyhow::anyhow!("`{tool}` is not installed (not on PATH): {}", install_hint(tool)))
}

/// `tool` where pip puts scripts (Python's scripts folder, `~/.local/bin`), which is often not
/// on PATH: `pip install componentize-py` is then enough.
fn python_script(tool: &str) -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).stdin(Stdio::null()).output().ok()?;
    let scripts = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/bin"));
    [Some(scripts), home].into_iter().flatten().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Runs `cmd` in the project folder, its output on stderr (or captured and shown only on
/// failure when `quiet`).
fn run_tool(mut cmd: Command, what: &str, quiet: bool) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null());
    if quiet {
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!("{what} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        return Ok(());
    }
    // The toolchain's own output is what the user reads; stdout goes to stderr too, so that
    // wash's stdout carries only its result.
    cmd.stdout(std::io::stderr()).stderr(Stdio::inherit());
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above. The last good build, if any, is unchanged");
    }
    Ok(())
}

fn cargo(project: &Project, quiet: bool) -> anyhow::Result<PathBuf> {
    let cargo = require_tool(&project.cargo)?;
    require_rust_target(&project.wasm_target)?;
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&project.dir).args(["build", "--target", &project.wasm_target, "--message-format", "json-render-diagnostics"]);
    if !project.debug {
        cmd.arg("--release");
    }
    if let Some(dir) = &project.rust_target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(if quiet { Stdio::piped() } else { Stdio::inherit() });
    let out = cmd.output().with_context(|| format!("cannot run {}", cargo.display()))?;
    if !out.status.success() {
        let shown = if quiet { format!(":\n{}", String::from_utf8_lossy(&out.stderr)) } else { "; its output is above".into() };
        bail!("cargo build failed ({}){shown}", out.status);
    }
    // The artifact as cargo reports it (wherever the target directory is).
    let mut wasm = None;
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" || !msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")) {
            continue;
        }
        if let Some(f) = msg["filenames"].as_array().and_then(|f| f.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".wasm"))) {
            wasm = Some(PathBuf::from(f));
        }
    }
    wasm.ok_or_else(|| anyhow::anyhow!("cargo built no .wasm: is the crate a `cdylib` ([lib] crate-type = [\"cdylib\"] in Cargo.toml)?"))
}

/// Fails with the command that installs `target` when rustc has no standard library for it.
fn require_rust_target(target: &str) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").map(PathBuf::from).or_else(|| which("rustc")).unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc).args(["--print", "sysroot"]).stdin(Stdio::null()).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else { return Ok(()) };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !sysroot.join("lib/rustlib").join(target).is_dir() {
        bail!("the Rust target `{target}` is not installed: run `rustup target add {target}`");
    }
    Ok(())
}

fn componentize_py(project: &Project, quiet: bool) -> anyhow::Result<PathBuf> {
    let tool = require_tool("componentize-py")?;
    let world = project.wit_world.clone().ok_or_else(|| anyhow::anyhow!("python projects name their WIT world: [component].wit_world = \"component\""))?;
    if !project.dir.join("app.py").is_file() {
        bail!("no app.py in {}: componentize-py builds the module `app`", project.dir.display());
    }
    let out = project.dir.join("build").join(format!("{}.wasm", project.crate_name()));
    std::fs::create_dir_all(out.parent().unwrap_or(&project.dir)).with_context(|| format!("cannot create {}", project.dir.join("build").display()))?;
    let mut cmd = Command::new(tool);
    cmd.current_dir(&project.dir).arg("-d").arg(&project.wit).args(["-w", &world, "componentize", "app", "-o"]).arg(&out);
    run_tool(cmd, "componentize-py", quiet)?;
    Ok(out)
}

fn run_command(project: &Project, command: &str, quiet: bool) -> anyhow::Result<PathBuf> {
    let program = command.split_whitespace().next().unwrap_or_default();
    require_tool(program)?;
    let mut cmd = Command::new("sh");
    cmd.current_dir(&project.dir).args(["-c", command]);
    run_tool(cmd, &format!("`{command}`"), quiet)?;
    let artifact = project.build_artifact.clone().map(Ok).unwrap_or_else(|| cargo_default_artifact(project))?;
    if !artifact.is_file() {
        bail!("`{command}` succeeded but wrote no {} ([component].build_artifact)", artifact.display());
    }
    Ok(artifact)
}

/// Where `cargo build --release --target T` leaves a crate's component.
fn cargo_default_artifact(project: &Project) -> anyhow::Result<PathBuf> {
    let target = project.rust_target_dir.clone().unwrap_or_else(|| project.dir.join("target"));
    Ok(target.join(&project.wasm_target).join(if project.debug { "debug" } else { "release" }).join(format!("{}.wasm", project.crate_name())))
}
