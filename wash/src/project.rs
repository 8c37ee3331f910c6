//! The project file `wasmcloud.toml` (wasmCloud's name and fields), as `wash build` and `wash
//! dev` read it. Fields that apply are read and checked; fields that do not apply here are a
//! warning naming them; a value of the wrong type, a missing `name` or an unknown `language`
//! is an error naming the field.
//!
//! ```toml
//! name = "hello"            # required
//! version = "0.1.0"
//! revision = 0
//! language = "rust"         # rust or python (others: [component].build_command)
//! type = "component"
//! path = "."                # the project's folder, from this file's
//! wit = "./wit"
//!
//! [component]
//! wasm_target = "wasm32-wasip2"
//! build_command = "..."     # instead of the language's build, run in the project folder
//! build_artifact = "..."    # what that command writes
//! destination = "build/hello_s.wasm"
//! key_directory = "./keys"  # default: wash's keys directory (`wash keys list`)
//! wit_world = "component"   # python: the world app.py implements
//! call_alias = "hello"
//! tags = ["demo"]
//!
//! [rust]
//! cargo_path = "cargo"
//! target_path = "./target"
//! debug = false
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The project file's name.
pub const FILE: &str = "wasmcloud.toml";

/// The largest project file read (it is a few lines; anything bigger is not one).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How a project is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language {
    /// `cargo build --target wasm32-wasip2`.
    Rust,
    /// `componentize-py … componentize MODULE`.
    Python,
    /// Another language: only with `[component].build_command`.
    Other(String),
}

/// A parsed `wasmcloud.toml`.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project's folder (where builds run).
    pub dir: PathBuf,
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: Option<String>,
    /// `revision`.
    pub revision: Option<i32>,
    /// `language`.
    pub language: Language,
    /// `wit`: the WIT folder, from `dir`.
    pub wit: PathBuf,
    /// `[component].wasm_target`.
    pub wasm_target: String,
    /// `[component].build_command`.
    pub build_command: Option<String>,
    /// `[component].build_artifact`, from `dir`.
    pub build_artifact: Option<PathBuf>,
    /// `[component].destination`, from `dir`.
    pub destination: PathBuf,
    /// `[component].key_directory`, from `dir`.
    pub key_directory: Option<PathBuf>,
    /// `[component].wit_world`.
    pub wit_world: Option<String>,
    /// `[component].call_alias`.
    pub call_alias: Option<String>,
    /// `[component].tags`.
    pub tags: Vec<String>,
    /// `[rust].cargo_path`.
    pub cargo: String,
    /// `[rust].target_path`, from `dir`.
    pub rust_target_dir: Option<PathBuf>,
    /// `[rust].debug`.
    pub debug: bool,
    /// What was ignored, one line each.
    pub warnings: Vec<String>,
}

impl Project {
    /// The Rust crate's name: `name` with `-` as `_`.
    pub fn crate_name(&self) -> String {
        self.name.replace('-', "_")
    }

    /// Finds `wasmcloud.toml` in `dir` and reads it.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join(FILE);
        let meta = std::fs::metadata(&file).with_context(|| {
            format!("no {FILE} in {}: run this in a project folder (`wash new component NAME` makes one) or pass --project-dir", dir.display())
        })?;
        if !meta.is_file() {
            bail!("{} is not a regular file", file.display());
        }
        if meta.len() > MAX_FILE_BYTES {
            bail!("{} is {} bytes; a project file is at most {MAX_FILE_BYTES}", file.display(), meta.len());
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        Self::parse(&text, dir).with_context(|| format!("{} is not a valid project file", file.display()))
    }

    /// Parses the text of a project file lying in `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<Self> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let mut r = Reader { warnings: Vec::new() };
        let top = Section { name: "", table: &table };
        let name = r.string(&top, "name")?.ok_or_else(|| anyhow::anyhow!("`name` is missing: the component's name, e.g. name = \"hello\""))?;
        check_name(&name)?;
        let language = match r.string(&top, "language")?.as_deref() {
            None => bail!("`language` is missing: rust or python (or another, with [component].build_command)"),
            Some("rust") => Language::Rust,
            Some("python") => Language::Python,
            Some(other) => Language::Other(other.to_string()),
        };
        match r.string(&top, "type")?.as_deref() {
            None | Some("component") | Some("actor") => {}
            Some(other) => bail!("`type` is `{other}`; wash build builds components (type = \"component\"); providers are pushed with `wash push`"),
        }
        let path = r.string(&top, "path")?.map(PathBuf::from).unwrap_or_default();
        let dir = dir.join(path);
        let wit = dir.join(r.string(&top, "wit")?.unwrap_or_else(|| "wit".into()));
        let version = r.string(&top, "version")?;
        let revision = match top.table.get("revision") {
            None => None,
            Some(toml::Value::Integer(n)) => Some(i32::try_from(*n).map_err(|_| anyhow::anyhow!("`revision` {n} is out of range"))?),
            Some(v) => bail!("`revision` must be a whole number; got {}", v.type_str()),
        };
        r.unknown(&top, &["name", "version", "revision", "language", "type", "path", "wit", "component", "actor", "rust", "python"]);

        let empty = toml::Table::new();
        let component = match (table.get("component"), table.get("actor")) {
            (Some(toml::Value::Table(t)), _) | (None, Some(toml::Value::Table(t))) => Section { name: "component", table: t },
            (Some(v), _) => bail!("`component` must be a table ([component]); got {}", v.type_str()),
            _ => Section { name: "component", table: &empty },
        };
        let wasm_target = r.string(&component, "wasm_target")?.unwrap_or_else(|| "wasm32-wasip2".into());
        if wasm_target != "wasm32-wasip2" {
            bail!("[component].wasm_target `{wasm_target}` is not supported: Trellis runs components (wasm32-wasip2)");
        }
        let build_command = r.string(&component, "build_command")?;
        let build_artifact = r.string(&component, "build_artifact")?.map(|p| dir.join(p));
        if build_command.is_some() && build_artifact.is_none() && language != Language::Rust {
            bail!("[component].build_command needs [component].build_artifact: the file the command writes");
        }
        let destination = dir.join(r.string(&component, "destination")?.unwrap_or_else(|| format!("build/{}_s.wasm", name.replace('-', "_"))));
        let key_directory = r.string(&component, "key_directory")?.map(|p| dir.join(p));
        let wit_world = r.string(&component, "wit_world")?;
        let call_alias = r.string(&component, "call_alias")?;
        let tags = r.strings(&component, "tags")?;
        if component.table.contains_key("claims") {
            r.strings(&component, "claims")?;
            r.warnings.push("[component].claims is ignored: components reach capabilities through links (`wash link put`), not claims".into());
        }
        r.unknown(&component, &["wasm_target", "build_command", "build_artifact", "destination", "key_directory", "wit_world", "call_alias", "tags", "claims"]);
        if let Language::Other(other) = &language
            && build_command.is_none()
        {
            bail!("language `{other}` has no built-in build here (rust and python do): set [component].build_command and build_artifact");
        }

        let rust = match table.get("rust") {
            Some(toml::Value::Table(t)) => Section { name: "rust", table: t },
            Some(v) => bail!("`rust` must be a table ([rust]); got {}", v.type_str()),
            None => Section { name: "rust", table: &empty },
        };
        let cargo = r.string(&rust, "cargo_path")?.unwrap_or_else(|| "cargo".into());
        let rust_target_dir = r.string(&rust, "target_path")?.map(|p| dir.join(p));
        let debug = match rust.table.get("debug") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(v) => bail!("[rust].debug must be true or false; got {}", v.type_str()),
        };
        r.unknown(&rust, &["cargo_path", "target_path", "debug"]);
        if table.contains_key("python") {
            r.warnings.push("[python] is ignored: app.py is the module componentize-py builds, [component].wit_world its world".into());
        }
        Ok(Self {
            dir,
            name,
            version,
            revision,
            language,
            wit,
            wasm_target,
            build_command,
            build_artifact,
            destination,
            key_directory,
            wit_world,
            call_alias,
            tags,
            cargo,
            rust_target_dir,
            debug,
            warnings: r.warnings,
        })
    }
}

/// A project or component name: lower-case words of letters and digits joined by `-`, each
/// starting with a letter (it names the crate, the WIT package and the app), at most 64 bytes.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let words_ok = !name.is_empty()
        && name.split('-').all(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if !words_ok || name.len() > 64 {
        bail!(
            "`{}` is not a project name: use lower-case words of letters and digits joined by `-`, each starting with a letter (e.g. my-app), at most 64 characters",
            name.escape_debug()
        );
    }
    Ok(())
}

struct Section<'a> {
    name: &'a str,
    table: &'a toml::Table,
}

impl Section<'_> {
    fn field(&self, key: &str) -> String {
        if self.name.is_empty() { format!("`{key}`") } else { format!("[{}].{key}", self.name) }
    }
}

struct Reader {
    warnings: Vec<String>,
}

impl Reader {
    fn string(&mut self, s: &Section<'_>, key: &str) -> anyhow::Result<Option<String>> {
        match s.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(v)) => Ok(Some(v.clone())),
            Some(v) => bail!("{} must be a string; got {}", s.field(key), v.type_str()),
        }
    }

    fn strings(&mut self, s: &Section<'_>, key: &str) -> anyhow::Result<Vec<String>> {
        match s.table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(v) => Ok(v.clone()),
                    v => bail!("{} must be a list of strings; it holds {}", s.field(key), v.type_str()),
                })
                .collect(),
            Some(v) => bail!("{} must be a list of strings; got {}", s.field(key), v.type_str()),
        }
    }

    fn unknown(&mut self, s: &Section<'_>, known: &[&str]) {
        for key in s.table.keys().filter(|k| !known.contains(&k.as_str())) {
            self.warnings.push(format!("{} is not a field wash reads here; it is ignored", s.field(key)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmclouds_fields_are_read_and_others_named() {
        let text = r#"
name = "http-hello"
version = "0.2.0"
revision = 3
language = "rust"
type = "component"

[component]
claims = ["wasmcloud:httpserver"]
destination = "out/hello_s.wasm"
key_directory = "./keys"
tags = ["demo"]
registry = "ghcr.io"

[rust]
debug = true
"#;
        let p = Project::parse(text, Path::new("/p")).expect("valid");
        assert_eq!((p.name.as_str(), p.version.as_deref(), p.revision, &p.language), ("http-hello", Some("0.2.0"), Some(3), &Language::Rust));
        assert_eq!(p.destination, Path::new("/p/out/hello_s.wasm"));
        assert_eq!(p.key_directory.as_deref(), Some(Path::new("/p/./keys")));
        assert!(p.debug);
        assert_eq!(p.tags, ["demo"]);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings.iter().any(|w| w.contains("[component].registry")), "{:?}", p.warnings);
        assert!(p.warnings.iter().any(|w| w.contains("claims")), "{:?}", p.warnings);

        let defaults = Project::parse("name = \"a-b\"\nlanguage = \"python\"\n", Path::new("/p")).expect("valid");
        assert_eq!(defaults.destination, Path::new("/p/build/a_b_s.wasm"));
        assert_eq!(defaults.wit, Path::new("/p/wit"));
    }

    #[test]
    fn mistakes_name_their_field() {
        let table: &[(&str, &str)] = &[
            ("language = \"rust\"", "`name` is missing"),
            ("name = \"Hello World\"\nlanguage = \"rust\"", "not a project name"),
            ("name = \"a\"", "`language` is missing"),
            ("name = \"a\"\nlanguage = \"rust\"\nversion = 1", "`version` must be a string; got integer"),
            ("name = \"a\"\nlanguage = \"go\"", "set [component].build_command"),
            ("name = \"a\"\nlanguage = \"rust\"\ntype = \"capability\"", "builds components"),
            ("name = \"a\"\nlanguage = \"rust\"\n[component]\nwasm_target = \"wasm32-unknown-unknown\"", "not supported"),
            ("name = \"a\"\nlanguage = \"rust\"\n[component]\ntags = [1]", "[component].tags must be a list of strings"),
            ("name = \"a\"\nlanguage = \"tinygo\"\n[component]\nbuild_command = \"make\"", "needs [component].build_artifact"),
            ("name = ", "expected"),
        ];
        for (text, want) in table {
            let e = format!("{:#}", Project::parse(text, Path::new("/p")).expect_err(text));
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
