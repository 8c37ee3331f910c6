//! Artifacts: `wash push` (to an OCI registry or the lattice's own store), `wash pull`, and
//! `wash inspect` (digest, claims and WIT world of a file or a reference). The wire and the
//! layouts are `trellis_host::artifacts` and `trellis_host::publish`, the code hosts use.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use nkeys::KeyPairType;
use serde_json::json;
use trellis_host::artifacts::{Artifacts, Kind, OciSettings, StoreAccess, sha256};
use trellis_host::publish::{self, Payload};
use trellis_lattice::artifact::{ArtifactRef, LatticeStore};

use super::claims::{default_key, key_file_stem};
use super::keys;
use crate::cli::Global;
use crate::lattice;
use crate::output::{Report, Step, pairs};

/// How `wash` reaches registries (wasmCloud wash's flags and variables).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the registry (a local registry without TLS).
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name; otherwise Docker's ~/.docker/config.json is read.
    #[arg(short = 'u', long, env = "WASH_REG_USER", requires = "password")]
    pub user: Option<String>,
    /// Registry password or token.
    #[arg(short = 'p', long, env = "WASH_REG_PASSWORD", hide_env_values = true, requires = "user")]
    pub password: Option<String>,
    /// Allow the `latest` tag (or no tag).
    #[arg(long)]
    pub allow_latest: bool,
    /// A CA certificate (PEM) to trust for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The JetStream domain of the lattice's state, for lattice:// references behind a leaf node.
    #[arg(long, env = "WASH_JS_DOMAIN")]
    pub js_domain: Option<String>,
}

impl RegistryArgs {
    fn settings(&self, registry: Option<&str>) -> OciSettings {
        OciSettings {
            allowed_insecure: match (self.insecure, registry) {
                (true, Some(r)) => vec![r.to_string()],
                _ => Vec::new(),
            },
            allow_latest: self.allow_latest,
            registry: registry.map(Into::into),
            user: self.user.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
            ..Default::default()
        }
    }
}

/// `wash push`.
#[derive(Debug, Args)]
#[command(after_help = "A .wasm file is pushed in the CNCF Wasm OCI layout (config application/vnd.wasm.config.v0+json, \
one application/wasm layer); a provider archive (.par.gz) as wasmCloud pushes it; an executable is first wrapped in a \
provider archive for this platform, signed with --issuer/--subject (default keys in the keys directory, made on first use).")]
pub struct PushArgs {
    /// Where to: REGISTRY/REPOSITORY:TAG (optionally oci://) or lattice://NAME:TAG.
    pub reference: String,
    /// The file: a component (.wasm), a provider archive, or a provider executable.
    pub file: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The provider's name in the archive's claims (executables only; default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// The vendor in the archive's claims (executables only).
    #[arg(long, default_value = "trellis")]
    pub vendor: String,
    /// The signing account (executables only): a seed, a seed file or a key name.
    #[arg(long, value_name = "SEED_OR_KEY")]
    pub issuer: Option<String>,
    /// The provider's service key (executables only): a seed, a seed file or a key name.
    #[arg(long, value_name = "SEED_OR_KEY")]
    pub subject: Option<String>,
}

/// `wash pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What: REGISTRY/REPOSITORY:TAG, …@sha256:…, or lattice://NAME:TAG.
    pub reference: String,
    /// Where to write it (default: the repository's last part, with .wasm or .par.gz).
    #[arg(long)]
    pub destination: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `wash inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A file, or a reference as for `wash pull`.
    pub target: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The largest file `wash push` or `wash inspect` reads.
const MAX_FILE_BYTES: u64 = trellis_host::artifacts::MAX_PROVIDER_BYTES;

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if !meta.is_file() {
        bail!("`{}` is not a regular file", path.display());
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!("`{}` is {} bytes; artifacts are at most {MAX_FILE_BYTES}", path.display(), meta.len());
    }
    std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
}

fn size(n: usize) -> String {
    indicatif::HumanBytes(n as u64).to_string()
}

/// `wash push REF FILE`.
pub async fn push(g: &Global, args: &PushArgs) -> anyhow::Result<Report> {
    let reference = ArtifactRef::parse(&args.reference).map_err(anyhow::Error::msg)?;
    let bytes = read_file(&args.file)?;
    let payload = Payload::sniff(&bytes).map_err(|why| anyhow::anyhow!("cannot push `{}`: {why}", args.file.display()))?;
    let (payload, bytes) = match payload {
        Payload::Executable => {
            let stem = args.file.file_stem().and_then(|s| s.to_str()).unwrap_or("provider");
            let name = args.name.clone().unwrap_or_else(|| stem.to_string());
            let mut generated = Vec::new();
            let issuer = match &args.issuer {
                Some(arg) => keys::resolve_key(arg, KeyPairType::Account, "--issuer")?,
                None => {
                    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "wash".into());
                    default_key(&format!("{}_account", key_file_stem(&user)), KeyPairType::Account, false, "--issuer", &mut generated)?
                }
            };
            let subject = match &args.subject {
                Some(arg) => keys::resolve_key(arg, KeyPairType::Service, "--subject")?,
                None => default_key(&format!("{}_service", key_file_stem(stem)), KeyPairType::Service, false, "--subject", &mut generated)?,
            };
            let par = publish::provider_archive(&bytes, &name, &args.vendor, &issuer, &subject).map_err(anyhow::Error::msg)?;
            (Payload::ProviderArchive, par)
        }
        other => (other, bytes),
    };
    if payload == Payload::Wasm {
        publish::world(&bytes).map_err(|why| anyhow::anyhow!("cannot push `{}`: {why}", args.file.display()))?;
    }
    let len = bytes.len();
    let layer_digest = sha256(&bytes);
    let step = Step::start(g.output, format!("pushing {} ({}) to {}", args.file.display(), size(len), args.reference));
    let pushed = match &reference {
        ArtifactRef::Oci(r) => {
            if r.is_latest() && !args.registry.allow_latest {
                step.fail();
                bail!(
                    "`{}` means the tag `latest`, which hosts refuse unless started with --allow-latest; give a version tag (or pass --allow-latest)",
                    args.reference
                );
            }
            publish::push_oci(&args.registry.settings(Some(&r.registry)), r, payload, bytes).await
        }
        ArtifactRef::Lattice(r) => {
            let ctl = lattice::ctl(g).await?;
            let js = trellis_lattice::state::jetstream(ctl.nats().clone(), args.registry.js_domain.as_deref());
            LatticeStore::new(js, &g.lattice).put(r, payload.layer_media_type(), &bytes).await.map(|s| s.digest)
        }
        _ => Err(format!("push to a registry (REGISTRY/REPOSITORY:TAG) or to the lattice store (lattice://NAME:TAG), not `{}`", args.reference)),
    };
    let digest = match pushed {
        Ok(d) => d,
        Err(why) => {
            step.fail();
            bail!("cannot push `{}`: {why}", args.reference);
        }
    };
    step.done(format!("pushed {} ({})", args.reference, size(len)));
    let kind = if payload == Payload::Wasm { "component" } else { "provider" };
    Ok(Report::new(
        format!("Pushed {} ({kind}, {})\n  digest: {digest}\n  layer:  {layer_digest}", args.reference, size(len)),
        json!({"reference": args.reference, "digest": digest, "layer_digest": layer_digest, "size": len, "kind": kind, "media_type": payload.layer_media_type()}),
    ))
}

/// Fetches `reference` as a host would (one fetch, no cache), as a component, else as a provider.
async fn fetch(g: &Global, reference: &str, registry: &RegistryArgs) -> anyhow::Result<trellis_host::artifacts::Fetched> {
    let parsed = ArtifactRef::parse(reference).map_err(anyhow::Error::msg)?;
    let (settings, store) = match &parsed {
        ArtifactRef::Oci(r) => (registry.settings(Some(&r.registry)), None),
        ArtifactRef::Lattice(_) => {
            let ctl = lattice::ctl(g).await?;
            (registry.settings(None), Some(StoreAccess { nats: ctl.nats().clone(), lattice: g.lattice.clone(), js_domain: registry.js_domain.clone() }))
        }
        _ => bail!("`{reference}` is not a registry or lattice reference; give REGISTRY/REPOSITORY:TAG or lattice://NAME:TAG"),
    };
    let artifacts = Artifacts::new(settings, false, None, store);
    let step = Step::start(g.output, format!("pulling {reference}"));
    let fetched = match artifacts.fetch(reference, Kind::Component).await {
        Ok(f) => Ok(f),
        Err(e) if e.to_string().contains("wash start provider") => artifacts.fetch(reference, Kind::Provider).await,
        Err(e) => Err(e),
    };
    match fetched {
        Ok(f) => {
            step.done(format!("pulled {reference} ({})", size(f.bytes.len())));
            Ok(std::sync::Arc::unwrap_or_clone(f))
        }
        Err(e) => {
            step.fail();
            Err(e.into())
        }
    }
}

/// `wash pull REF`.
pub async fn pull(g: &Global, args: &PullArgs) -> anyhow::Result<Report> {
    let fetched = fetch(g, &args.reference, &args.registry).await?;
    let is_wasm = fetched.bytes.starts_with(b"\0asm");
    let destination = match &args.destination {
        Some(d) => d.clone(),
        None => {
            let name = match ArtifactRef::parse(&args.reference) {
                Ok(ArtifactRef::Oci(r)) => r.repository.rsplit('/').next().unwrap_or("artifact").to_string(),
                Ok(ArtifactRef::Lattice(r)) => r.name.rsplit('/').next().unwrap_or("artifact").to_string(),
                _ => "artifact".into(),
            };
            PathBuf::from(format!("{name}{}", if is_wasm { ".wasm" } else { ".par.gz" }))
        }
    };
    std::fs::write(&destination, &fetched.bytes).with_context(|| format!("cannot write `{}`", destination.display()))?;
    Ok(Report::new(
        format!("Pulled {} to {} ({})\n  digest: {}", args.reference, destination.display(), size(fetched.bytes.len()), fetched.digest),
        json!({"reference": args.reference, "path": destination, "digest": fetched.digest, "size": fetched.bytes.len(), "media_type": fetched.media_type}),
    ))
}

/// `wash inspect REF|FILE`.
pub async fn inspect(g: &Global, args: &InspectArgs) -> anyhow::Result<Report> {
    let path = Path::new(args.target.strip_prefix("file://").unwrap_or(&args.target));
    let (bytes, digest, source) = if path.exists() {
        let bytes = read_file(path)?;
        let digest = sha256(&bytes);
        (bytes, digest, path.display().to_string())
    } else {
        let f = fetch(g, &args.target, &args.registry).await?;
        (f.bytes, f.digest, args.target.clone())
    };
    let payload = Payload::sniff(&bytes).map_err(|why| anyhow::anyhow!("`{source}`: {why}"))?;
    let mut text = format!("{source}\n  digest: {digest}\n  size:   {}\n", size(bytes.len()));
    let mut out = json!({"source": source, "digest": digest, "size": bytes.len()});
    match payload {
        Payload::Wasm => {
            let world = publish::world(&bytes).map_err(|why| anyhow::anyhow!("`{source}`: {why}"))?;
            out["kind"] = json!("component");
            let claims = trellis_lattice::claims::verify_component(&bytes, trellis_lattice::claims::now(), &[]);
            match &claims {
                Ok(Some(c)) => {
                    text.push_str(&format!("  kind:   component, signed\n  claims: {}\n", pairs(&c.to_map()).replace('\n', "\n          ")));
                    out["claims"] = json!(c);
                }
                Ok(None) => text.push_str("  kind:   component, unsigned\n"),
                Err(e) => {
                    text.push_str(&format!("  kind:   component, claims refused: {e}\n"));
                    out["claims_error"] = json!(e.to_string());
                }
            }
            text.push_str(&format!("  imports:\n{}", world.imports.iter().map(|i| format!("    {i}\n")).collect::<String>()));
            text.push_str(&format!("  exports:\n{}", world.exports.iter().map(|e| format!("    {e}\n")).collect::<String>()));
            out["world"] = json!(world);
        }
        Payload::ProviderArchive | Payload::Executable => {
            out["kind"] = json!("provider");
            if payload == Payload::ProviderArchive {
                let dir = tempfile_dir()?;
                match trellis_host::artifacts::unpack_provider(&bytes, &dir, trellis_lattice::claims::now()) {
                    Ok((_, c)) => {
                        text.push_str(&format!(
                            "  kind:   provider archive\n  key:    {}\n  issuer: {}\n  name:   {}\n  targets: {}\n",
                            c.sub,
                            c.iss,
                            c.wascap.name.clone().unwrap_or_default(),
                            c.wascap.target_hashes.keys().cloned().collect::<Vec<_>>().join(", ")
                        ));
                        out["claims"] = json!(c);
                    }
                    Err(why) => {
                        text.push_str(&format!("  kind:   provider archive, refused: {why}\n"));
                        out["claims_error"] = json!(why);
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                text.push_str("  kind:   executable (`wash push` wraps it in a provider archive)\n");
            }
        }
    }
    Ok(Report::new(text.trim_end().to_string(), out))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wash-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    Ok(dir)
}
