//! Declarative applications (wadm manifests): `app validate` checks a manifest file without
//! touching any lattice. The format and its rules are `trellis_lattice::manifest`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use trellis_lattice::manifest::Manifest;

use crate::output::{Failure, Report};

/// `wash app …`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Check an application manifest (YAML or JSON): print every mistake, each with its field.
    Validate(ValidateArgs),
}

/// `wash app validate`.
#[derive(Debug, Args)]
#[command(after_help = "Exits 0 when the manifest is valid; otherwise prints each mistake as FILE:LINE: FIELD: MESSAGE on stderr and exits 1.")]
pub struct ValidateArgs {
    /// The manifest file (`-` for stdin).
    pub file: PathBuf,
}

/// Runs one `wash app` command.
pub fn run(command: AppCommand) -> anyhow::Result<Report> {
    match command {
        AppCommand::Validate(args) => validate(&args.file),
    }
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
            Ok(Report::new(
                text,
                json!({"file": shown, "valid": true, "name": m.name(), "version": m.version(), "components": components, "links": links}),
            ))
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
