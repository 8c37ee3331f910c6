//! Signed components: `claims sign` embeds a token signed by an account key, `claims inspect`
//! shows it and whether it still verifies. The format is `trellis_lattice::claims` (wasmCloud's).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use nkeys::{KeyPair, KeyPairType};
use serde_json::json;
use trellis_lattice::claims::{self, Claims};

use super::keys;
use crate::output::Report;

const SECS_PER_DAY: u64 = 86_400;

/// `wash claims …`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub enum ClaimsCommand {
    /// Sign a component: embed a token naming it, its issuer (an account) and its own key.
    Sign(SignArgs),
    /// Show the claims embedded in a component and whether they verify.
    Inspect(InspectArgs),
}

/// `wash claims sign`.
#[derive(Debug, Args)]
#[command(after_help = "Without --issuer, the account key `$USER_account.nk` in the keys directory signs (generated on first use); \
without --subject, the component key `<file stem>_module.nk` (likewise). `wash keys list` shows them.")]
pub struct SignArgs {
    /// The component (.wasm) to sign.
    pub file: PathBuf,
    /// The component's name.
    #[arg(long)]
    pub name: String,
    /// A human-friendly version, e.g. 0.1.0.
    #[arg(long)]
    pub ver: Option<String>,
    /// A revision number (should increase with each release).
    #[arg(long)]
    pub rev: Option<i32>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// A code-friendly alias.
    #[arg(long)]
    pub call_alias: Option<String>,
    /// The token expires this many days from now (default: never).
    #[arg(long, value_name = "DAYS", conflicts_with = "expires_in_secs")]
    pub expires: Option<u64>,
    /// The token expires this many seconds from now.
    #[arg(long, value_name = "SECONDS")]
    pub expires_in_secs: Option<u64>,
    /// The token is not valid until this many days from now (default: at once).
    #[arg(long, alias = "nbf", value_name = "DAYS")]
    pub not_before: Option<u64>,
    /// The signing account: a seed (SA…), a seed file, or a key name in the keys directory.
    #[arg(long, value_name = "SEED_OR_KEY")]
    pub issuer: Option<String>,
    /// The component's own key: a seed (SM…), a seed file, or a key name in the keys directory.
    #[arg(long, value_name = "SEED_OR_KEY")]
    pub subject: Option<String>,
    /// Where to write the signed component [default: FILE_s.wasm beside FILE].
    #[arg(long, value_name = "OUT")]
    pub destination: Option<PathBuf>,
    /// Fail instead of generating a missing default key.
    #[arg(long)]
    pub disable_keygen: bool,
}

/// `wash claims inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The component (.wasm) to inspect.
    pub file: PathBuf,
    /// Print only the raw token.
    #[arg(long)]
    pub jwt_only: bool,
}

/// Runs one `wash claims` command.
pub fn run(command: ClaimsCommand) -> anyhow::Result<Report> {
    match command {
        ClaimsCommand::Sign(args) => sign(&args),
        ClaimsCommand::Inspect(args) => inspect(&args),
    }
}

/// Lower-case letters, digits, `_` and `-`: a name that is safe as a key file name.
pub(crate) fn key_file_stem(s: &str) -> String {
    let stem: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '_' }).collect();
    if stem.is_empty() { "wash".into() } else { stem }
}

/// The default key `NAME` of kind `want`: read from the keys directory, generated when missing.
pub(crate) fn default_key(name: &str, want: KeyPairType, disable_keygen: bool, flag: &str, generated: &mut Vec<PathBuf>) -> anyhow::Result<KeyPair> {
    default_key_in(&keys::keys_dir()?, name, want, disable_keygen, flag, generated)
}

/// [`default_key`] in the keys directory `dir`.
fn default_key_in(dir: &Path, name: &str, want: KeyPairType, disable_keygen: bool, flag: &str, generated: &mut Vec<PathBuf>) -> anyhow::Result<KeyPair> {
    let path = dir.join(format!("{name}.nk"));
    if path.is_file() {
        return keys::resolve_key(&path.to_string_lossy(), want, flag);
    }
    if disable_keygen {
        bail!("no {flag} given and {} does not exist (--disable-keygen); pass {flag} or create it with `wash keys gen`", path.display());
    }
    let key = KeyPair::new(want);
    generated.push(keys::store_key(dir, name, &key)?);
    Ok(key)
}

fn sign(args: &SignArgs) -> anyhow::Result<Report> {
    sign_with(args, &keys::keys_dir()?)
}

/// `wash claims sign` with the default keys taken from (and made in) `keys_dir`.
pub(crate) fn sign_with(args: &SignArgs, keys_dir: &Path) -> anyhow::Result<Report> {
    let file = &args.file;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("component");
    let mut generated = Vec::new();
    let issuer = match &args.issuer {
        Some(arg) => keys::resolve_key(arg, KeyPairType::Account, "--issuer")?,
        None => {
            let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "wash".into());
            default_key_in(keys_dir, &format!("{}_account", key_file_stem(&user)), KeyPairType::Account, args.disable_keygen, "--issuer", &mut generated)?
        }
    };
    let subject = match &args.subject {
        Some(arg) => keys::resolve_key(arg, KeyPairType::Module, "--subject")?,
        None => default_key_in(keys_dir, &format!("{}_module", key_file_stem(stem)), KeyPairType::Module, args.disable_keygen, "--subject", &mut generated)?,
    };

    let now = claims::now();
    let mut c = Claims::new(&issuer.public_key(), &subject.public_key(), now);
    c.wascap.name = Some(args.name.clone());
    c.wascap.ver = args.ver.clone();
    c.wascap.rev = args.rev;
    c.wascap.tags = (!args.tags.is_empty()).then(|| args.tags.clone());
    c.wascap.call_alias = args.call_alias.clone();
    c.exp = match (args.expires, args.expires_in_secs) {
        (Some(days), _) => Some(now + days.saturating_mul(SECS_PER_DAY)),
        (None, Some(secs)) => Some(now + secs),
        (None, None) => None,
    };
    c.nbf = args.not_before.map(|days| now + days.saturating_mul(SECS_PER_DAY));
    let (signed, c) = claims::sign(&wasm, c, &issuer).with_context(|| format!("cannot sign {}", file.display()))?;

    let destination = args.destination.clone().unwrap_or_else(|| file.with_file_name(format!("{stem}_s.wasm")));
    std::fs::write(&destination, &signed).with_context(|| format!("cannot write {}", destination.display()))?;

    let mut text = format!(
        "Signed {} as `{}`: {}\n  Account (issuer):    {}\n  Component (subject): {}\n  Expires:             {}",
        file.display(),
        args.name,
        destination.display(),
        c.iss,
        c.sub,
        c.expires_human()
    );
    for path in &generated {
        text.push_str(&format!("\nGenerated key {}", path.display()));
    }
    Ok(Report::new(text, json!({"destination": destination, "claims": c, "generated_keys": generated})))
}

fn inspect(args: &InspectArgs) -> anyhow::Result<Report> {
    let file = &args.file;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let token = claims::extract(&wasm).with_context(|| format!("cannot read {}", file.display()))?.ok_or_else(|| no_claims(file))?;
    if args.jwt_only {
        return Ok(Report::new(token.clone(), json!({"token": token})));
    }
    let c = claims::decode(&token).with_context(|| format!("cannot read the claims of {}", file.display()))?;
    let problem = claims::verify_component(&wasm, claims::now(), &[]).err().map(|e| e.to_string());
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = [
        ("Component", dash(c.wascap.name.clone())),
        ("Account", c.iss.clone()),
        ("Component key", c.sub.clone()),
        ("Expires", c.expires_human()),
        ("Can be used", c.not_before_human()),
        ("Version", dash(c.wascap.ver.clone())),
        ("Revision", dash(c.wascap.rev.map(|r| r.to_string()))),
        ("Tags", dash(c.wascap.tags.as_ref().map(|t| t.join(",")))),
        ("Call alias", dash(c.wascap.call_alias.clone())),
        ("Hash", c.wascap.hash.clone()),
        ("Valid", problem.as_ref().map_or_else(|| "yes".to_string(), |p| format!("no: {p}"))),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let text = rows.iter().map(|(k, v)| format!("{k:<width$}  {v}")).collect::<Vec<_>>().join("\n");
    Ok(Report::new(text, json!({"file": file, "claims": c, "map": c.to_map(), "valid": problem.is_none(), "problem": problem, "token": token})))
}

fn no_claims(file: &Path) -> anyhow::Error {
    anyhow::anyhow!("{} carries no claims (no `{}` section); sign it with `wash claims sign {} --name NAME`", file.display(), claims::SECTION, file.display())
}
