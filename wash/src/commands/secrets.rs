//! Secrets in the built-in backend: `secrets put`, `secrets list`, `secrets del`. Values go
//! to the backend sealed (`trellis_lattice::secrets::SecretsClient`) and are never printed.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use serde_json::json;
use trellis_lattice::secrets::{SecretValue, SecretsClient};

use crate::cli::Global;
use crate::lattice;
use crate::output::{Report, table};

/// Where `secrets put` reads the value.
pub enum Source {
    Value(String),
    File(std::path::PathBuf),
    Stdin,
}

impl Source {
    /// The one source the flags name.
    pub fn pick(value: Option<String>, file: Option<std::path::PathBuf>, stdin: bool) -> anyhow::Result<Self> {
        match (value, file, stdin) {
            (Some(v), None, false) => Ok(Source::Value(v)),
            (None, Some(f), false) => Ok(Source::File(f)),
            (None, None, true) => Ok(Source::Stdin),
            _ => bail!("give the value with exactly one of --value, --from-file or --from-stdin"),
        }
    }

    fn read(self) -> anyhow::Result<SecretValue> {
        Ok(match self {
            Source::Value(v) => SecretValue::String(v),
            Source::File(f) => SecretValue::from_bytes(std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?),
            Source::Stdin => {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
                // A value typed or piped with `echo` ends with a newline that is not part of it.
                if buf.ends_with(b"\n") {
                    buf.pop();
                }
                SecretValue::from_bytes(buf)
            }
        })
    }
}

async fn client(g: &Global, backend: &str) -> anyhow::Result<SecretsClient> {
    let ctl = lattice::ctl(g).await?;
    Ok(SecretsClient::new(ctl.nats().clone(), backend))
}

/// `wash secrets put NAME (--value V | --from-file F | --from-stdin)`.
pub async fn put(g: &Global, backend: &str, name: &str, source: Source) -> anyhow::Result<Report> {
    let value = source.read()?;
    let version = client(g, backend).await?.put(name, value).await?;
    Ok(Report::new(
        format!("Secret `{name}` stored in backend `{backend}` (version {version})"),
        json!({"name": name, "backend": backend, "version": version.to_string()}),
    ))
}

/// `wash secrets list`.
pub async fn list(g: &Global, backend: &str) -> anyhow::Result<Report> {
    let secrets = client(g, backend).await?.list().await?;
    let rows: Vec<Vec<String>> = secrets.iter().map(|s| vec![s.name.clone(), s.version.clone()]).collect();
    Ok(Report::new(table(&["NAME", "VERSION"], &rows), json!({"backend": backend, "secrets": secrets})))
}

/// `wash secrets del NAME`.
pub async fn del(g: &Global, backend: &str, name: &str) -> anyhow::Result<Report> {
    client(g, backend).await?.delete(name).await?;
    Ok(Report::new(format!("Secret `{name}` deleted from backend `{backend}`"), json!({"name": name, "backend": backend})))
}
