//! Declarative applications (wadm manifests): `app validate` checks a manifest file without
//! touching any lattice; `deploy`, `undeploy`, `list`, `get`, `status`, `history` and `delete`
//! go through the app API (`trellis_lattice::app::AppClient`) that every host serves. The
//! format and its rules are `trellis_lattice::manifest`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use trellis_lattice::app::{AppClient, Status, StatusType};
use trellis_lattice::manifest::Manifest;

use crate::cli::Global;
use crate::output::{Failure, Report, Step, table};

/// `wash app …`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Check an application manifest (YAML or JSON): print every mistake, each with its field.
    Validate(ValidateArgs),
    /// Store a manifest as a new version and deploy it (FILE), or deploy a stored app (NAME).
    #[command(disable_version_flag = true)]
    Deploy(DeployArgs),
    /// Remove every component, provider, link and config the app created.
    Undeploy(NameArgs),
    /// List the stored apps, their deployed version and status.
    List,
    /// Print a stored manifest (the latest version, or --version).
    #[command(disable_version_flag = true)]
    Get(VersionArgs),
    /// Show whether an app is deployed as its manifest says, and what is missing.
    Status(NameArgs),
    /// List every stored version of an app.
    History(NameArgs),
    /// Delete one version, or every version (undeploying the app).
    #[command(disable_version_flag = true)]
    Delete(VersionArgs),
}

/// `wash app deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A manifest file (`-` for stdin), or the name of a stored app.
    pub target: String,
    /// The stored version to deploy (with NAME; the latest by default).
    #[arg(long = "version", id = "app_version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Return once deployed, without waiting for the app to be in place.
    #[arg(long)]
    pub skip_wait: bool,
    /// How long to wait for the app to be in place, in seconds.
    #[arg(long, default_value_t = 120)]
    pub wait_seconds: u64,
}

/// An app name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The app's name (`metadata.name`).
    pub name: String,
    /// Return at once, without waiting for the change to happen.
    #[arg(long)]
    pub skip_wait: bool,
}

/// An app name and maybe a version.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The app's name (`metadata.name`).
    pub name: String,
    /// The version.
    #[arg(long = "version", id = "app_version", value_name = "VERSION")]
    pub version: Option<String>,
}

/// `wash app validate`.
#[derive(Debug, Args)]
#[command(after_help = "Exits 0 when the manifest is valid; otherwise prints each mistake as FILE:LINE: FIELD: MESSAGE on stderr and exits 1.")]
pub struct ValidateArgs {
    /// The manifest file (`-` for stdin).
    pub file: PathBuf,
}

/// Runs one `wash app` command.
pub async fn run(g: &Global, command: AppCommand) -> anyhow::Result<Report> {
    if let AppCommand::Validate(args) = &command {
        return validate(&args.file);
    }
    let ctl = crate::lattice::ctl(g).await?;
    let apps = AppClient::new(ctl.nats().clone(), ctl.lattice()).with_timeout(crate::lattice::timeout(g));
    match command {
        AppCommand::Validate(_) => unreachable!("handled above"),
        AppCommand::Deploy(args) => deploy(g, &apps, &args).await,
        AppCommand::Undeploy(args) => {
            apps.undeploy(&args.name).await?;
            if !args.skip_wait {
                wait(g, &apps, &args.name, StatusType::Undeployed, Duration::from_secs(120), "undeploying").await?;
            }
            Ok(Report::new(format!("App `{}` undeployed", args.name), json!({"name": args.name})))
        }
        AppCommand::List => {
            let list = apps.list().await?;
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.deployed_version.clone().unwrap_or_else(|| "-".into()),
                        Some(a.version.clone()).filter(|v| !v.is_empty()).unwrap_or_else(|| "-".into()),
                        a.detailed_status.state().as_str().to_string(),
                        a.description.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(Report::new(table(&["NAME", "DEPLOYED", "LATEST", "STATUS", "DESCRIPTION"], &rows), json!({"apps": list})))
        }
        AppCommand::Get(args) => {
            // wadm's API carries the manifest as JSON; it is shown as such.
            let manifest = apps.get(&args.name, args.version.as_deref()).await?;
            Ok(Report::new(serde_json::to_string_pretty(&manifest)?, manifest))
        }
        AppCommand::Status(args) => {
            let s = apps.status(&args.name).await?;
            Ok(Report::new(status_text(&args.name, &s), serde_json::to_value(&s)?))
        }
        AppCommand::History(args) => {
            let versions = apps.versions(&args.name).await?;
            let rows: Vec<Vec<String>> = versions.iter().map(|v| vec![v.version.clone(), if v.deployed { "yes".into() } else { "".into() }]).collect();
            Ok(Report::new(table(&["VERSION", "DEPLOYED"], &rows), json!({"name": args.name, "versions": versions})))
        }
        AppCommand::Delete(args) => {
            apps.delete(&args.name, args.version.as_deref()).await?;
            let what = match &args.version {
                Some(v) => format!("Version `{v}` of app `{}` deleted", args.name),
                None => format!("App `{}` deleted (every version)", args.name),
            };
            Ok(Report::new(what, json!({"name": args.name, "version": args.version})))
        }
    }
}

fn status_text(name: &str, s: &Status) -> String {
    let version = s.deployed_version().map(|v| format!(" {v}")).unwrap_or_default();
    let mut text = format!("{name}{version}: {}: {}", s.state().as_str(), s.message());
    for d in s.details() {
        text.push_str(&format!("\n  {d}"));
    }
    text
}

/// Waits until the app reaches `state`; a Failed status ends the wait with its error.
pub(crate) async fn wait(g: &Global, apps: &AppClient, name: &str, state: StatusType, within: Duration, doing: &str) -> anyhow::Result<Status> {
    let step = Step::start(g.output, format!("{doing} `{name}`"));
    let deadline = tokio::time::Instant::now() + within;
    let mut last: Option<Status> = None;
    loop {
        if let Ok(s) = apps.status(name).await {
            if s.state() == state {
                step.done(format!("{name}: {}", s.state().as_str()));
                return Ok(s);
            }
            if s.state() == StatusType::Failed && state == StatusType::Deployed {
                step.fail();
                anyhow::bail!("app `{name}` failed: {}", s.message());
            }
            last = Some(s);
        }
        if tokio::time::Instant::now() >= deadline {
            step.fail();
            let why = last.map(|s| format!("{}: {}", s.state().as_str(), s.message())).unwrap_or_else(|| "no status yet".into());
            anyhow::bail!("app `{name}` is not {} after {} s ({why}); `wash app status {name}` shows what is missing", state.as_str(), within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn deploy(g: &Global, apps: &AppClient, args: &DeployArgs) -> anyhow::Result<Report> {
    let path = Path::new(&args.target);
    let (name, version) = if args.target == "-" || path.is_file() {
        let text = read(path)?;
        let parsed = Manifest::parse(&text);
        if let Err(errors) = parsed {
            let details = errors
                .errors()
                .iter()
                .map(|e| match e.line {
                    Some(line) => format!("{}:{line}: {e}", args.target),
                    None => format!("{}: {e}", args.target),
                })
                .collect();
            return Err(Failure { summary: format!("{}: the manifest is not valid", args.target), details, json: json!({"errors": errors.errors()}) }.into());
        }
        let manifest = parsed.map_err(|_| anyhow::anyhow!("the manifest was checked above"))?;
        let dir = if args.target == "-" { std::env::current_dir()? } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
        let text = resolve_relative_files(&text, &manifest, &dir);
        let put = apps.put(&text).await?;
        if args.version.as_ref().is_some_and(|v| v != &put.current_version) {
            anyhow::bail!("the manifest's version is `{}`, not `{}`", put.current_version, args.version.as_deref().unwrap_or_default());
        }
        (put.name, Some(put.current_version))
    } else {
        (args.target.clone(), args.version.clone())
    };
    let d = apps.deploy(&name, version.as_deref()).await?;
    let status =
        if args.skip_wait { None } else { Some(wait(g, apps, &name, StatusType::Deployed, Duration::from_secs(args.wait_seconds), "deploying").await?) };
    let version = d.version.clone().unwrap_or_default();
    let text = match &status {
        Some(s) => format!("App `{name}` {version} deployed: {}", s.message()),
        None => format!("App `{name}` {version} deployed"),
    };
    Ok(Report::new(text, json!({"name": name, "version": version, "status": status})))
}

/// `text` with each relative `file://` image (`file://./x.wasm`, `file://../target/x.wasm`)
/// made absolute against `dir`, the manifest's folder: a manifest names its files from where
/// it lies, not from wherever a host was started. Only whole image values are replaced.
pub fn resolve_relative_files(text: &str, manifest: &Manifest, dir: &Path) -> String {
    let mut images: Vec<&str> = manifest
        .spec
        .components
        .iter()
        .map(|c| c.properties.image.as_str())
        .filter(|i| i.strip_prefix("file://").is_some_and(|p| !p.starts_with('/')))
        .collect();
    images.sort_unstable();
    images.dedup();
    let mut out = text.to_string();
    for image in images {
        if let Some(absolute) = absolute_file_image(image, dir) {
            out = replace_whole(&out, image, &absolute);
        }
    }
    out
}

/// A relative `file://` image made absolute from `dir`; `None` for any other image.
pub(crate) fn absolute_file_image(image: &str, dir: &Path) -> Option<String> {
    let relative = image.strip_prefix("file://").filter(|p| !p.starts_with('/'))?;
    Some(format!("file://{}", absolute_path(&dir.join(relative)).display()))
}

/// `path` made absolute (`.` and `..` resolved as far as the file system allows).
pub(crate) fn absolute_path(path: &Path) -> PathBuf {
    path.canonicalize().or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Replaces each occurrence of `from` in `text` that stands alone: not followed by a character
/// that could continue a path.
fn replace_whole(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = rest[at + from.len()..].chars().next();
        let whole = after.is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']' | '#'));
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

fn read(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the manifest from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn validate(file: &Path) -> anyhow::Result<Report> {
    let text = read(file)?;
    let shown = file.display().to_string();
    match Manifest::parse(&text) {
        Ok(m) => {
            let (components, links) = (m.spec.components.len(), m.links().count());
            let text = format!("{shown}: valid ({components} component{}, {links} link{})", plural(components), plural(links));
            Ok(Report::new(text, json!({"file": shown, "valid": true, "name": m.name(), "version": m.version(), "components": components, "links": links})))
        }
        Err(errors) => {
            let details = errors
                .errors()
                .iter()
                .map(|e| match e.line {
                    Some(line) => format!("{shown}:{line}: {e}"),
                    None => format!("{shown}: {e}"),
                })
                .collect();
            let n = errors.len();
            Err(Failure {
                summary: format!("{shown}: {n} mistake{}; the manifest is not valid", plural(n)),
                details,
                json: json!({"file": shown, "valid": false, "errors": errors.errors()}),
            }
            .into())
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_files_resolve_against_the_manifests_folder() {
        let text = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: a\n  annotations:\n    version: v1\nspec:\n  components:\n    - name: c\n      type: component\n      properties:\n        image: file://./build/c.wasm\n    - name: d\n      type: component\n      properties:\n        image: \"file://../d.wasm\"\n    - name: e\n      type: component\n      properties:\n        image: file:///abs/e.wasm\n";
        let manifest = Manifest::parse(text).expect("valid");
        let out = resolve_relative_files(text, &manifest, Path::new("/srv/apps/one"));
        assert!(out.contains("image: file:///srv/apps/one/./build/c.wasm\n") || out.contains("image: file:///srv/apps/one/build/c.wasm\n"), "{out}");
        assert!(out.contains("\"file:///srv/apps/one/../d.wasm\"") || out.contains("\"file:///srv/apps/d.wasm\""), "{out}");
        assert!(out.contains("image: file:///abs/e.wasm\n"), "{out}");
        // Only whole values: a longer path that starts with a replaced one is left alone.
        assert_eq!(replace_whole("file://./a.wasm file://./a.wasm2\n", "file://./a.wasm", "X"), "X file://./a.wasm2\n");
    }
}
