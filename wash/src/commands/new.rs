//! `wash new component NAME --template T`: a project from a template built into `wash` (no
//! network): the sources, `wasmcloud.toml`, `wadm.yaml` and the WIT it needs. It never writes
//! into a folder that exists (unless empty), so nothing of the user's is overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::{Report, table};
use crate::project;

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// A template: its files, with `{{name}}` and `{{crate}}` to fill in.
#[derive(Debug)]
pub struct Template {
    /// What `--template` names.
    pub name: &'static str,
    /// One line for `--list`.
    pub description: &'static str,
    /// (path in the project, contents).
    pub files: &'static [(&'static str, &'static str)],
}

/// The template used without `--template`.
pub const DEFAULT_TEMPLATE: &str = "hello-http";

/// `wash new …`.
#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// Create a component project from a built-in template.
    #[command(
        after_help = "Example:\n  wash new component hello --template hello-http && cd hello && wash dev\n\nTemplates: hello-http (Rust, default), kv-counter (Rust), messaging (Rust), hello-http-python (Python). `wash new component --list` describes them."
    )]
    Component(NewComponentArgs),
}

/// `wash new component`.
#[derive(Debug, Args)]
pub struct NewComponentArgs {
    /// The project's name: lower-case words joined by `-` (its folder, crate, WIT package and app).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// The template (wasmCloud's `--template-name` works too).
    #[arg(short, long, alias = "template-name", default_value = DEFAULT_TEMPLATE)]
    pub template: String,
    /// Where to create it [default: ./NAME].
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// List the templates instead.
    #[arg(long)]
    pub list: bool,
}

/// Runs `wash new`.
pub fn run(command: NewCommand) -> anyhow::Result<Report> {
    let NewCommand::Component(args) = command;
    if args.list {
        let rows: Vec<Vec<String>> = TEMPLATES.iter().map(|t| vec![t.name.to_string(), t.description.to_string()]).collect();
        let json: Vec<_> = TEMPLATES.iter().map(|t| json!({"name": t.name, "description": t.description})).collect();
        return Ok(Report::new(table(&["TEMPLATE", "DESCRIPTION"], &rows), json!({"templates": json})));
    }
    let name = args.name.as_deref().unwrap_or_default();
    project::check_name(name)?;
    let template = find(&args.template)?;
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    let written = create(template, name, &dir)?;
    let text = format!(
        "Created {} from template `{}` ({} files)\nNext:\n  cd {}\n  wash build     # build and sign: {}\n  wash dev       # run it on a local lattice and swap in each change",
        dir.display(),
        template.name,
        written.len(),
        dir.display(),
        Path::new("build").join(format!("{}_s.wasm", name.replace('-', "_"))).display(),
    );
    Ok(Report::new(text, json!({"path": dir, "template": template.name, "name": name, "files": written})))
}

/// The template named `name`, or an error listing them.
pub fn find(name: &str) -> anyhow::Result<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<_> = TEMPLATES.iter().map(|t| t.name).collect();
        anyhow::anyhow!("no template named `{}`; templates: {} (`wash new component --list` describes them)", name.escape_debug(), names.join(", "))
    })
}

/// Writes `template` for project `name` into `dir`, which must not exist or be empty. Returns
/// the files written, relative to `dir`.
pub fn create(template: &Template, name: &str, dir: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} exists and is not empty; wash new writes only into a new (or empty) folder: choose another NAME or --path", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => bail!("{} exists and is not a folder; choose another NAME or --path", dir.display()),
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", dir.display())),
    }
    let crate_name = name.replace('-', "_");
    let mut written = Vec::new();
    for (rel, text) in template.files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let filled = text.replace("{{name}}", name).replace("{{crate}}", &crate_name);
        // create_new: a file that appeared meanwhile is not replaced.
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, filled.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        written.push((*rel).to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_fills_in_and_refuses_to_overwrite() {
        assert!(TEMPLATES.len() >= 4);
        for t in TEMPLATES {
            let dir = tempfile::tempdir().expect("temp dir");
            let at = dir.path().join("my-app");
            let files = create(t, "my-app", &at).expect("created");
            assert!(files.iter().any(|f| f == "wasmcloud.toml") && files.iter().any(|f| f == "wadm.yaml"), "{}: {files:?}", t.name);
            for f in &files {
                let text = std::fs::read_to_string(at.join(f)).expect("read");
                assert!(!text.contains("{{"), "{}: {f} keeps a placeholder", t.name);
            }
            let p = project::Project::load(&at).expect("the project file parses");
            assert_eq!(p.name, "my-app");
            assert!(p.warnings.is_empty(), "{}: {:?}", t.name, p.warnings);
            let manifest = std::fs::read_to_string(at.join("wadm.yaml")).expect("manifest");
            trellis_lattice::manifest::Manifest::parse(&manifest).unwrap_or_else(|e| panic!("{}: {e:?}", t.name));
            let again = create(t, "my-app", &at).expect_err("refused");
            assert!(again.to_string().contains("not empty"), "{again}");
        }
        assert!(find("nope").expect_err("unknown").to_string().contains("hello-http, kv-counter"));
    }
}
