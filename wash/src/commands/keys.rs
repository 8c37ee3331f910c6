//! nkeys on this machine: `keys gen`, `keys get`, `keys list`, and the key lookup `claims sign`
//! uses. Keys live as seed files `NAME.nk` (mode 0600) in `$WASH_KEYS`, else
//! `$WASH_HOME/keys`, else `~/.wash/keys`, as with wasmCloud's wash.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use nkeys::{KeyPair, KeyPairType};
use serde_json::json;

use crate::output::{Report, table};

/// `wash keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair; with --name, store its seed as NAME.nk in the keys directory.
    Gen(GenArgs),
    /// Print a stored key's public key and seed.
    Get {
        /// The key's name (its file name without `.nk`).
        name: String,
    },
    /// List the keys in the keys directory.
    List,
}

/// `wash keys gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The kind of key.
    pub kind: KeyKind,
    /// Store the seed as NAME.nk in the keys directory instead of printing it.
    #[arg(long)]
    pub name: Option<String>,
}

/// The kinds of nkey, by what they identify (wasmCloud's names are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKind {
    /// An account (A…): signs components.
    Account,
    /// A component's own identity (M…).
    #[value(alias = "module")]
    Component,
    /// A provider's identity (V…).
    #[value(alias = "service")]
    Provider,
    /// A host's identity (N…).
    #[value(alias = "server")]
    Host,
    /// A NATS user (U…).
    User,
    /// An operator (O…).
    Operator,
    /// A cluster (C…).
    Cluster,
}

impl KeyKind {
    fn key_type(self) -> KeyPairType {
        match self {
            Self::Account => KeyPairType::Account,
            Self::Component => KeyPairType::Module,
            Self::Provider => KeyPairType::Service,
            Self::Host => KeyPairType::Server,
            Self::User => KeyPairType::User,
            Self::Operator => KeyPairType::Operator,
            Self::Cluster => KeyPairType::Cluster,
        }
    }
}

/// What a key identifies, in wash's words.
pub fn kind_name(t: &KeyPairType) -> &'static str {
    match t {
        KeyPairType::Account => "account",
        KeyPairType::Module => "component",
        KeyPairType::Service => "provider",
        KeyPairType::Server => "host",
        KeyPairType::User => "user",
        KeyPairType::Operator => "operator",
        KeyPairType::Cluster => "cluster",
        KeyPairType::Curve => "curve",
    }
}

/// Runs one `wash keys` command.
pub fn run(command: KeysCommand) -> anyhow::Result<Report> {
    match command {
        KeysCommand::Gen(args) => gen_key(&args),
        KeysCommand::Get { name } => get(&name),
        KeysCommand::List => list(),
    }
}

/// The keys directory (not created).
pub fn keys_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WASH_KEYS").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(crate::local::home::Home::from_env()?.root().join("keys"))
}

/// Checks a key name: it becomes a file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let name = name.strip_suffix(".nk").unwrap_or(name);
    trellis_lattice::validate_id("key name", name).map_err(|e| anyhow::anyhow!("{e}"))
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.nk", name.strip_suffix(".nk").unwrap_or(name)))
}

/// Reads a seed file.
pub fn read_key(path: &Path) -> anyhow::Result<KeyPair> {
    let seed = std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    KeyPair::from_seed(seed.trim()).map_err(|e| anyhow::anyhow!("{} does not hold an nkey seed (S…): {e}", path.display()))
}

/// Stores `key`'s seed as `NAME.nk` (mode 0600), refusing to replace an existing key.
pub fn store_key(dir: &Path, name: &str, key: &KeyPair) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    check_name(name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the keys directory {}", dir.display()))?;
    let path = key_path(dir, name);
    let seed = key.seed().map_err(|e| anyhow::anyhow!("the new key has no seed: {e}"))?;
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("a key named `{name}` already exists at {}; choose another --name or delete that file first", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(format!("{seed}\n").as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A key from the command line: a seed (S…), a path to a seed file, or the name of a key in
/// the keys directory. It must be of `want` kind.
pub fn resolve_key(arg: &str, want: KeyPairType, flag: &str) -> anyhow::Result<KeyPair> {
    let key = if arg.starts_with('S') && KeyPair::from_seed(arg).is_ok() {
        KeyPair::from_seed(arg).map_err(|e| anyhow::anyhow!("{e}"))?
    } else if Path::new(arg).is_file() {
        read_key(Path::new(arg))?
    } else {
        let dir = keys_dir()?;
        let path = key_path(&dir, arg);
        if !path.is_file() {
            bail!("{flag} `{arg}` is not a seed (S…), a seed file, or a key in {}; `wash keys list` shows the keys there", dir.display());
        }
        read_key(&path)?
    };
    if key.key_pair_type() != want {
        bail!(
            "{flag} `{arg}` is a{} {} key; it must be a{} {} key",
            article(kind_name(&key.key_pair_type())),
            kind_name(&key.key_pair_type()),
            article(kind_name(&want)),
            kind_name(&want)
        );
    }
    Ok(key)
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" }
}

fn gen_key(args: &GenArgs) -> anyhow::Result<Report> {
    let key = KeyPair::new(args.kind.key_type());
    let kind = kind_name(&key.key_pair_type());
    let public_key = key.public_key();
    match &args.name {
        Some(name) => {
            let path = store_key(&keys_dir()?, name, &key)?;
            Ok(Report::new(
                format!("Generated {kind} key `{name}`: {public_key}\nSeed stored in {}", path.display()),
                json!({"name": name, "type": kind, "public_key": public_key, "path": path}),
            ))
        }
        None => {
            let seed = key.seed().map_err(|e| anyhow::anyhow!("the new key has no seed: {e}"))?;
            Ok(Report::new(
                format!("Public key: {public_key}\nSeed: {seed}\n(not stored; pass --name NAME to keep it in the keys directory)"),
                json!({"type": kind, "public_key": public_key, "seed": seed}),
            ))
        }
    }
}

fn get(name: &str) -> anyhow::Result<Report> {
    check_name(name)?;
    let dir = keys_dir()?;
    let path = key_path(&dir, name);
    if !path.is_file() {
        bail!("no key named `{name}` in {}; `wash keys list` shows the keys there", dir.display());
    }
    let key = read_key(&path)?;
    let seed = key.seed().map_err(|e| anyhow::anyhow!("{e}"))?;
    let kind = kind_name(&key.key_pair_type());
    Ok(Report::new(
        format!("Type: {kind}\nPublic key: {}\nSeed: {seed}", key.public_key()),
        json!({"name": name, "type": kind, "public_key": key.public_key(), "seed": seed, "path": path}),
    ))
}

fn list() -> anyhow::Result<Report> {
    let dir = keys_dir()?;
    let mut keys = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".nk")) else { continue };
            let (kind, public_key) = match read_key(&path) {
                Ok(k) => (kind_name(&k.key_pair_type()).to_string(), k.public_key()),
                Err(_) => ("unreadable".to_string(), "-".to_string()),
            };
            keys.push(json!({"name": name, "type": kind, "public_key": public_key}));
        }
    }
    keys.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let cell = |k: &serde_json::Value, f: &str| k[f].as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![cell(k, "name"), cell(k, "type"), cell(k, "public_key")]).collect();
    let text = format!("Keys in {}\n{}", dir.display(), table(&["NAME", "TYPE", "PUBLIC KEY"], &rows));
    Ok(Report::new(text, json!({"directory": dir, "keys": keys})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_prefixes() {
        for (kind, prefix) in [
            (KeyKind::Account, 'A'),
            (KeyKind::Component, 'M'),
            (KeyKind::Provider, 'V'),
            (KeyKind::Host, 'N'),
            (KeyKind::User, 'U'),
            (KeyKind::Operator, 'O'),
            (KeyKind::Cluster, 'C'),
        ] {
            let key = KeyPair::new(kind.key_type());
            assert!(key.public_key().starts_with(prefix), "{kind:?}");
            assert_eq!(key.seed().expect("seed").chars().nth(1), Some(prefix));
        }
    }

    #[test]
    fn stored_keys_are_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::new_account();
        let path = store_key(dir.path(), "me", &key).expect("stores");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(read_key(&path).expect("reads").public_key(), key.public_key());
        let err = store_key(dir.path(), "me", &KeyPair::new_account()).expect_err("refused").to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(store_key(dir.path(), "../evil", &key).is_err());
        let seed = key.seed().expect("seed");
        assert_eq!(resolve_key(&seed, KeyPairType::Account, "--issuer").expect("seed").public_key(), key.public_key());
        let p = path.to_string_lossy().into_owned();
        let err = resolve_key(&p, KeyPairType::Module, "--subject").expect_err("refused").to_string();
        assert!(err.contains("is an account key; it must be a component key"), "{err}");
    }
}
