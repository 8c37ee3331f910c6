//! `wash dev`: the developer loop. It builds the project, starts a local lattice when none
//! answers (`wash up -d`), deploys the project's `wadm.yaml` (or, without one, the component
//! behind an http-server at `--address`) as the app `wash dev` owns, prints where it serves,
//! then watches the project's files: each change is rebuilt and swapped in place (a new app
//! version whose component image is the new build; the host loads it, then switches, and
//! requests in flight finish on the old one). A failing build leaves the last good version
//! serving and prints the toolchain's error. Ctrl-C removes the app (its components, providers,
//! links and config) and the lattice if `wash dev` started it, and nothing else.
//!
//! Each build is copied to `build/dev/NAME-GEN.wasm` (the host reads a file by path, so each
//! version needs its own); only the current and the previous copies are kept, and the app keeps
//! at most those two versions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use trellis_lattice::app::{AppClient, StatusType};
use trellis_lattice::manifest::{ComponentType, Manifest, VERSION_ANNOTATION};

use crate::cli::Global;
use crate::commands::app::{absolute_file_image, absolute_path as absolute, wait};
use crate::commands::build::{build, warn};
use crate::output::{Format, Report};
use crate::project::Project;

/// Versions `wash dev` gives the app: `dev-GEN`.
const VERSION_PREFIX: &str = "dev-";

/// `wash dev`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  wash new component hello && cd hello && wash dev\n  curl http://127.0.0.1:8000/    # then edit src/lib.rs and save: the new build serves\n\n\
The app is the project's wadm.yaml, with the component that names wasmcloud.toml's destination (file://./build/NAME_s.wasm) running each new build."
)]
pub struct DevArgs {
    /// The project folder (holding wasmcloud.toml).
    #[arg(short = 'p', long, default_value = ".")]
    pub project_dir: PathBuf,
    /// The app manifest [default: wadm.yaml in the project folder, if there is one].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Without a manifest: the address the http-server listens on for the component.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub address: String,
    /// How long the files must be quiet after a change before the rebuild, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
    /// How long a new version may take to be in place (loading a large component, such as a
    /// Python one, compiles it first), in seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_seconds: u64,
}

/// Runs `wash dev` until Ctrl-C (SIGINT) or SIGTERM.
pub async fn run(g: &Global, args: &DevArgs) -> anyhow::Result<Report> {
    let project = Project::load(&args.project_dir)?;
    warn(g, &project);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (manifest, manifest_dir) = load_manifest(&project, args)?;
    let component = project_component(&manifest, &manifest_dir, &project)?;
    say(g, format!("Building {}", project.name));
    let started = Instant::now();
    blocking_build(&project, g).await?;
    say(g, format!("Built {} in {:.1} s", project.destination.display(), started.elapsed().as_secs_f64()));

    let started_lattice = ensure_lattice(g).await?;
    let ctl = crate::lattice::ctl(g).await?;
    let apps = AppClient::new(ctl.nats().clone(), ctl.lattice()).with_timeout(crate::lattice::timeout(g));
    let name = manifest.metadata.name.clone();
    refuse_foreign_app(&apps, &name).await?;
    let within = Duration::from_secs(args.wait_seconds.max(1));
    let mut dev = Dev { g, project: &project, apps: &apps, manifest, manifest_dir, component, name, generation: 0, copies: Vec::new(), within };

    let outcome = async {
        dev.swap().await?;
        let urls = dev.urls();
        for url in &urls {
            say(g, format!("Serving at {url}"));
        }
        if g.output == Format::Json {
            crate::output::print_stdout(&format!("{}\n", json!({"event": "serving", "app": dev.name, "version": dev.version(), "urls": urls})));
        }
        say(g, "Watching for changes; Ctrl-C stops and removes what wash dev started");
        dev.watch(&mut sigint, &mut sigterm, args.debounce_ms).await
    }
    .await;
    // Whatever happened, remove what was started.
    let cleaned = dev.remove().await;
    if started_lattice {
        let exe = std::env::current_exe().context("cannot tell where the wash executable is")?;
        let status = tokio::process::Command::new(exe).arg("down").args(global_args(g)).stdout(std::process::Stdio::null()).status().await;
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("warning: `wash down` failed; the lattice wash dev started may still run");
        }
    }
    outcome?;
    cleaned?;
    let also = if started_lattice { " and the local lattice it started" } else { "" };
    Ok(Report::new(format!("Stopped: removed app `{}`{also}", dev.name), json!({"app": dev.name, "stopped_lattice": started_lattice})))
}

fn say(g: &Global, line: impl AsRef<str>) {
    if g.output == Format::Text {
        eprintln!("==> {}", line.as_ref());
    }
}

async fn blocking_build(project: &Project, g: &Global) -> anyhow::Result<()> {
    let (p, quiet) = (project.clone(), g.output == Format::Json);
    tokio::task::spawn_blocking(move || build(&p, true, quiet)).await.context("the build task failed")??;
    Ok(())
}

/// The flags that make another wash talk to the same lattice.
fn global_args(g: &Global) -> Vec<String> {
    vec!["-x".into(), g.lattice.clone(), "--ctl-host".into(), g.ctl_host.clone(), "--ctl-port".into(), g.ctl_port.to_string()]
}

/// Starts `wash up -d` unless a host answers already; whether it started one.
async fn ensure_lattice(g: &Global) -> anyhow::Result<bool> {
    if let Ok(ctl) = crate::lattice::ctl(g).await
        && ctl.ping_hosts().await.is_ok_and(|h| !h.is_empty())
    {
        return Ok(false);
    }
    say(g, format!("No lattice answers at {}; starting one (wash up -d)", crate::lattice::nats_url(g)));
    let exe = std::env::current_exe().context("cannot tell where the wash executable is")?;
    let status = tokio::process::Command::new(exe)
        .args(["up", "-d"])
        .args(global_args(g))
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("cannot run wash up")?;
    if !status.success() {
        bail!("`wash up -d` failed ({status}); start a lattice yourself (`wash up`) and run wash dev again");
    }
    Ok(true)
}

/// The project's manifest and its folder, or the default one (the component behind an
/// http-server) in the project's folder.
fn load_manifest(project: &Project, args: &DevArgs) -> anyhow::Result<(Manifest, PathBuf)> {
    let path = args.manifest.clone().or_else(|| Some(project.dir.join("wadm.yaml")).filter(|p| p.is_file()));
    let (text, dir) = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            (text, path.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        None => (default_manifest(project, &args.address)?, project.dir.clone()),
    };
    let shown = path.as_ref().map_or_else(|| "the default manifest".to_string(), |p| p.display().to_string());
    let manifest = Manifest::parse(&text).map_err(|errors| {
        let lines: Vec<String> = errors.errors().iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("{shown} is not a valid manifest: {}", lines.join("; "))
    })?;
    Ok((manifest, dir))
}

fn default_manifest(project: &Project, address: &str) -> anyhow::Result<String> {
    address.parse::<std::net::SocketAddr>().with_context(|| format!("--address `{address}` is not IP:PORT"))?;
    let name = &project.name;
    Ok(format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {name}\n  annotations:\n    version: {VERSION_PREFIX}0\nspec:\n  components:\n    - name: {name}\n      type: component\n      properties:\n        image: file://{dest}\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n    - name: httpserver\n      type: capability\n      properties:\n        image: builtin://http-server\n      traits:\n        - type: link\n          properties:\n            namespace: wasi\n            package: http\n            interfaces: [incoming-handler]\n            target:\n              name: {name}\n            source:\n              config:\n                - name: {name}-http\n                  properties:\n                    address: \"{address}\"\n",
        dest = absolute(&project.destination).display()
    ))
}

/// The path a `file://` image names, from the manifest's folder.
fn image_path(image: &str, manifest_dir: &Path) -> Option<PathBuf> {
    let path = image.strip_prefix("file://")?;
    Some(if path.starts_with('/') { PathBuf::from(path) } else { manifest_dir.join(path) })
}

/// The index of the manifest's component whose image is the project's build.
fn project_component(manifest: &Manifest, manifest_dir: &Path, project: &Project) -> anyhow::Result<usize> {
    let want = absolute(&project.destination);
    let found = manifest.spec.components.iter().position(|c| {
        c.kind == ComponentType::Component
            && image_path(&c.properties.image, manifest_dir).is_some_and(|p| absolute(&p) == want || normalize(&p) == normalize(&want))
    });
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "no component of the manifest has the image this project builds (file://{}, wasmcloud.toml's destination); set one component's image to it",
            want.display()
        )
    })
}

/// `path` with `.` and `..` taken out lexically (for files that do not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Refuses to take over an app of that name that `wash dev` did not make.
async fn refuse_foreign_app(apps: &AppClient, name: &str) -> anyhow::Result<()> {
    let Ok(versions) = apps.versions(name).await else { return Ok(()) };
    let foreign: Vec<&str> = versions.iter().map(|v| v.version.as_str()).filter(|v| !v.starts_with(VERSION_PREFIX)).collect();
    if !foreign.is_empty() {
        bail!(
            "the lattice already holds an app `{name}` (versions {}) that wash dev did not make; undeploy and delete it (`wash app delete {name}`) or change metadata.name",
            foreign.join(", ")
        );
    }
    Ok(())
}

struct Dev<'a> {
    g: &'a Global,
    project: &'a Project,
    apps: &'a AppClient,
    manifest: Manifest,
    manifest_dir: PathBuf,
    /// Index of the project's component in `manifest`.
    component: usize,
    name: String,
    generation: u64,
    /// The build copies in use, oldest first.
    copies: Vec<PathBuf>,
    /// How long a version may take to be in place.
    within: Duration,
}

impl Dev<'_> {
    fn version(&self) -> String {
        format!("{VERSION_PREFIX}{}", self.generation)
    }

    /// Deploys the current build as a new version of the app and waits until it serves.
    async fn swap(&mut self) -> anyhow::Result<()> {
        self.generation =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default().max(self.generation + 1);
        let dir = self.project.dir.join("build").join("dev");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let copy = absolute(&dir).join(format!("{}-{}.wasm", self.project.crate_name(), self.generation));
        std::fs::copy(&self.project.destination, &copy).with_context(|| format!("cannot copy the build to {}", copy.display()))?;
        let mut m = self.manifest.clone();
        for (i, c) in m.spec.components.iter_mut().enumerate() {
            if i == self.component {
                c.properties.image = format!("file://{}", copy.display());
            } else if let Some(image) = absolute_file_image(&c.properties.image, &self.manifest_dir) {
                c.properties.image = image;
            }
        }
        m.metadata.annotations.insert(VERSION_ANNOTATION.into(), self.version());
        let text = serde_json::to_string(&m)?;
        self.apps.put(&text).await.with_context(|| format!("cannot store version {} of app `{}`", self.version(), self.name))?;
        self.apps.deploy(&self.name, Some(&self.version())).await?;
        wait(self.g, self.apps, &self.name, StatusType::Deployed, self.within, "deploying").await?;
        self.copies.push(copy);
        // Keep the current and the previous build and app version.
        while self.copies.len() > 2 {
            let old = self.copies.remove(0);
            let _ = std::fs::remove_file(&old);
        }
        if let Ok(versions) = self.apps.versions(&self.name).await {
            let keep: Vec<String> = self.copies.iter().filter_map(|c| gen_of(c)).map(|n| format!("{VERSION_PREFIX}{n}")).collect();
            for v in versions.iter().filter(|v| !keep.contains(&v.version) && !v.deployed) {
                let _ = self.apps.delete(&self.name, Some(&v.version)).await;
            }
        }
        Ok(())
    }

    /// Where the app's http-server listens: each `address` of its link config.
    fn urls(&self) -> Vec<String> {
        let mut out = Vec::new();
        let value = serde_json::to_value(&self.manifest.spec).unwrap_or_default();
        collect_addresses(&value, &mut out);
        out.iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| {
                let host = if a.ip().is_unspecified() { "127.0.0.1".to_string() } else { a.ip().to_string() };
                format!("http://{host}:{}/", a.port())
            })
            .collect()
    }

    /// Rebuilds and swaps on every change until a signal.
    async fn watch(&mut self, sigint: &mut tokio::signal::unix::Signal, sigterm: &mut tokio::signal::unix::Signal, debounce_ms: u64) -> anyhow::Result<()> {
        use notify::Watcher as _;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ignored = ignored_dirs(self.project);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| !ignored.iter().any(|i| p.starts_with(i)))
            {
                let _ = tx.send(());
            }
        })
        .context("cannot watch the project's files")?;
        watcher.watch(&self.project.dir, notify::RecursiveMode::Recursive).with_context(|| format!("cannot watch {}", self.project.dir.display()))?;
        let quiet = Duration::from_millis(debounce_ms);
        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
                got = rx.recv() => if got.is_none() { bail!("the file watcher stopped") },
            }
            // Until the files have been quiet for a moment (an editor writes in several steps).
            while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
            say(self.g, "Change seen; rebuilding");
            let started = Instant::now();
            match blocking_build(self.project, self.g).await {
                Err(e) => {
                    eprintln!("error: {e:#}");
                    say(self.g, format!("The build failed; version {} keeps serving. Fix it and save to try again", self.version()));
                    if self.g.output == Format::Json {
                        crate::output::print_stdout(&format!("{}\n", json!({"event": "build_failed", "error": format!("{e:#}"), "serving": self.version()})));
                    }
                }
                Ok(()) => match self.swap().await {
                    Ok(()) => {
                        say(self.g, format!("Version {} serves ({:.1} s after the change)", self.version(), started.elapsed().as_secs_f64()));
                        if self.g.output == Format::Json {
                            crate::output::print_stdout(&format!(
                                "{}\n",
                                json!({"event": "swapped", "version": self.version(), "seconds": started.elapsed().as_secs_f64()})
                            ));
                        }
                    }
                    Err(e) => eprintln!("error: the new build could not be deployed: {e:#}"),
                },
            }
        }
    }

    /// Undeploys and deletes the app, and the build copies.
    async fn remove(&mut self) -> anyhow::Result<()> {
        say(self.g, format!("Removing app `{}`", self.name));
        let result = async {
            self.apps.undeploy(&self.name).await?;
            wait(self.g, self.apps, &self.name, StatusType::Undeployed, Duration::from_secs(60), "undeploying").await?;
            self.apps.delete(&self.name, None).await?;
            anyhow::Ok(())
        }
        .await;
        for copy in self.copies.drain(..) {
            let _ = std::fs::remove_file(copy);
        }
        let _ = std::fs::remove_dir(self.project.dir.join("build").join("dev"));
        result.with_context(|| format!("cannot remove app `{}`; `wash app undeploy {0}` and `wash app delete {0}` do it", self.name))
    }
}

/// The generation in a build copy's name (`NAME-GEN.wasm`).
fn gen_of(copy: &Path) -> Option<u64> {
    copy.file_stem()?.to_str()?.rsplit('-').next()?.parse().ok()
}

/// Folders whose changes are the build's own, not the developer's.
fn ignored_dirs(project: &Project) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["build", "target", ".git", "__pycache__"].iter().map(|d| project.dir.join(d)).collect();
    dirs.extend(project.rust_target_dir.clone());
    if let Some(parent) = project.destination.parent() {
        dirs.push(parent.to_path_buf());
    }
    // Paths arrive absolute from the watcher.
    dirs.iter().map(|d| absolute(d)).chain(dirs.iter().cloned()).collect()
}

fn collect_addresses(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == "address" => out.push(s.clone()),
                    _ => collect_addresses(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_addresses(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projects_component_is_found_by_its_image() {
        let project = Project::parse("name = \"hi\"\nlanguage = \"rust\"\n", Path::new("/p")).expect("valid");
        let text = default_manifest(&project, "127.0.0.1:9000").expect("manifest");
        let manifest = Manifest::parse(&text).expect("the default manifest is valid");
        assert_eq!(project_component(&manifest, Path::new("/p"), &project).expect("found"), 0);
        let relative = text.replace("file:///p/build/hi_s.wasm", "file://./build/hi_s.wasm");
        let manifest = Manifest::parse(&relative).expect("valid");
        assert_eq!(project_component(&manifest, Path::new("/p"), &project).expect("found"), 0);
        let other = text.replace("file:///p/build/hi_s.wasm", "file://./elsewhere.wasm");
        assert!(project_component(&Manifest::parse(&other).expect("valid"), Path::new("/p"), &project).is_err());
        assert!(default_manifest(&project, "localhost").is_err());
        assert_eq!(gen_of(Path::new("/x/build/dev/hi-1234.wasm")), Some(1234));
    }
}
