//! Artifact references: what a scale, an update, a provider start or a manifest's `image` names,
//! parsed once, with the mistakes named.
//!
//! | form | meaning |
//! |---|---|
//! | `file:///abs/path` | a file on the host's disk (only with `--allow-file-load`) |
//! | `builtin://NAME` | a provider linked into the host (providers only) |
//! | `[oci://]REGISTRY/REPO[:TAG][@sha256:HEX]` | an OCI artifact; the registry part is a host name with a dot, `localhost`, or has a port |
//! | `lattice://NAME[:TAG][@sha256:HEX]` | an artifact in the lattice's own store (`wash push lattice://…`) |
//!
//! A reference with neither tag nor digest means the tag `latest`, which hosts refuse unless
//! started with `--allow-latest`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The tag a reference without one means.
pub const LATEST: &str = "latest";

/// What the forms above expect, for error messages.
pub const EXPECTED: &str = "file:///path/to/file.wasm, REGISTRY/REPOSITORY:TAG (such as ghcr.io/org/hello:0.1.0 or localhost:5000/hello:1.0, optionally with oci://), or lattice://NAME:TAG";

/// A parsed artifact reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// `file://PATH`.
    File(String),
    /// `builtin://NAME`.
    Builtin(String),
    /// An OCI registry artifact.
    Oci(OciRef),
    /// An artifact in the lattice's object store.
    Lattice(LatticeRef),
}

/// `REGISTRY/REPOSITORY[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// Host name with an optional port, such as `ghcr.io` or `localhost:5000`.
    pub registry: String,
    /// The repository path, such as `org/hello`.
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest (`sha256:` and 64 hex digits), if one was given.
    pub digest: Option<String>,
}

/// `lattice://NAME[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatticeRef {
    /// The artifact's name: path parts as in an OCI repository.
    pub name: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest (`sha256:` and 64 hex digits), if one was given.
    pub digest: Option<String>,
}

impl OciRef {
    /// The tag to resolve: the one given, or `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        self.tag.as_deref().or(if self.digest.is_none() { Some(LATEST) } else { None })
    }

    /// Whether this reference means the `latest` tag (written or implied).
    pub fn is_latest(&self) -> bool {
        self.tag_or_latest() == Some(LATEST)
    }
}

impl LatticeRef {
    /// The tag to resolve: the one given, or `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        self.tag.as_deref().or(if self.digest.is_none() { Some(LATEST) } else { None })
    }

    /// Whether this reference means the `latest` tag (written or implied).
    pub fn is_latest(&self) -> bool {
        self.tag_or_latest() == Some(LATEST)
    }

    /// The name of the object holding the tag (or digest) in the lattice's store.
    pub fn object_name(&self) -> String {
        match (&self.digest, self.tag_or_latest()) {
            (Some(digest), _) => format!("{}@{digest}", self.name),
            (None, Some(tag)) => format!("{}:{tag}", self.name),
            (None, None) => self.name.clone(),
        }
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LatticeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lattice://{}", self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ArtifactRef {
    /// Parses `reference`, or says what is wrong with it and what is expected.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let quoted = || format!("`{}`", reference.escape_debug());
        if reference.is_empty() {
            return Err(format!("an artifact reference must not be empty; expected {EXPECTED}"));
        }
        if reference.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{} contains whitespace or control characters; expected {EXPECTED}", quoted()));
        }
        if let Some(path) = reference.strip_prefix("file://") {
            return if path.is_empty() { Err("`file://` names no file; expected file://PATH".into()) } else { Ok(Self::File(path.into())) };
        }
        if let Some(name) = reference.strip_prefix("builtin://") {
            crate::validate_id("built-in provider name", name)
                .map_err(|e| format!("{}; expected builtin://NAME, such as builtin://http-server", e.message()))?;
            return Ok(Self::Builtin(name.into()));
        }
        if let Some(rest) = reference.strip_prefix("lattice://") {
            let (name, tag, digest) =
                split_tag_digest(rest).map_err(|why| format!("{} is not a lattice reference ({why}); expected lattice://NAME:TAG", quoted()))?;
            check_repository(name).map_err(|why| format!("{} is not a lattice reference ({why}); expected lattice://NAME:TAG", quoted()))?;
            return Ok(Self::Lattice(LatticeRef { name: name.into(), tag: tag.map(Into::into), digest: digest.map(Into::into) }));
        }
        let rest = reference.strip_prefix("oci://").unwrap_or(reference);
        if let Some((scheme, _)) = rest.split_once("://") {
            return Err(format!("unsupported scheme `{}://`; expected {EXPECTED}", scheme.escape_debug()));
        }
        if rest.starts_with('/') || rest.starts_with("./") || rest.starts_with("../") || rest.ends_with(".wasm") {
            return Err(format!("{} looks like a file path; write it as file://{rest}", quoted()));
        }
        let bad = |why: &str| format!("{} is not an OCI reference ({why}); expected {EXPECTED}", quoted());
        let (name, tag, digest) = split_tag_digest(rest).map_err(&bad)?;
        let (registry, repository) = name.split_once('/').ok_or_else(|| bad("it has no registry: REGISTRY/REPOSITORY[:TAG]"))?;
        check_registry(registry).map_err(&bad)?;
        check_repository(repository).map_err(bad)?;
        Ok(Self::Oci(OciRef { registry: registry.into(), repository: repository.into(), tag: tag.map(Into::into), digest: digest.map(Into::into) }))
    }
}

/// `NAME[:TAG][@DIGEST]` into its parts, with the tag and digest checked.
fn split_tag_digest(reference: &str) -> Result<(&str, Option<&str>, Option<&str>), &'static str> {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let after_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[after_slash..].rfind(':') {
        Some(colon) => (&name_tag[..after_slash + colon], Some(&name_tag[after_slash + colon + 1..])),
        None => (name_tag, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty() || tag.len() > 128 || tag.starts_with(['.', '-']) || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    {
        return Err("a tag is up to 128 letters, digits, `_`, `.` and `-`");
    }
    Ok((name, tag, digest))
}

/// `sha256:` and 64 lower-case hex digits (the only digest algorithm hosts verify).
pub fn check_digest(digest: &str) -> Result<(), &'static str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) => Ok(()),
        _ => Err("a digest is sha256: and 64 lower-case hex digits"),
    }
}

fn check_registry(registry: &str) -> Result<(), &'static str> {
    let (host, port) = match registry.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    if host.is_empty()
        || !(host.contains('.') || host == "localhost" || port.is_some())
        || !host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        || port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("it does not start with a registry such as ghcr.io or localhost:5000");
    }
    Ok(())
}

fn check_repository(repository: &str) -> Result<(), &'static str> {
    if repository.is_empty() || repository.len() > 255 {
        return Err("the repository name must be 1 to 255 characters");
    }
    for part in repository.split('/') {
        let ok = part.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.chars().last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err("repository path parts are lower-case letters, digits, `.`, `_` and `-`");
        }
    }
    Ok(())
}

/// Media type of a Wasm component layer (the CNCF Wasm OCI artifact layout).
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of the CNCF layout's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer wasmCloud 1.x pushes.
pub const WASMCLOUD_WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Media type of wasmCloud 1.x's component config.
pub const WASMCLOUD_WASM_CONFIG: &str = "application/vnd.wasmcloud.actor.archive.config";
/// Media type of a wasmCloud provider archive (PAR) layer.
pub const PAR_LAYER: &str = "application/vnd.wasmcloud.provider.archive.layer.v1+par";
/// Media type of a provider archive's config.
pub const PAR_CONFIG: &str = "application/vnd.wasmcloud.provider.archive.config";

/// The lattice's artifact store: a JetStream object store in the lattice's JetStream domain.
pub fn store_bucket(lattice: &str) -> String {
    format!("TRELLIS_ARTIFACTS_{lattice}")
}

/// Largest tag object read (it holds a digest and a media type).
const MAX_TAG_OBJECT: usize = 1024;

/// What a tag (or a digest) of the lattice store names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    /// `sha256:` and the hex SHA-256 of the bytes.
    pub digest: String,
    /// The artifact's media type ([`WASM_LAYER`] or [`PAR_LAYER`]).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Reading and writing the lattice's artifact store. Bytes are stored once, under
/// `NAME@sha256:HEX`; each tag is a small object `NAME:TAG` holding a [`StoredArtifact`] (JSON),
/// so a re-tag copies nothing and a digest reference never depends on a tag.
pub struct LatticeStore {
    js: async_nats::jetstream::Context,
    lattice: String,
}

impl LatticeStore {
    /// The store of `lattice`, through `js` (opened in the lattice's domain, see [`crate::state::jetstream`]).
    pub fn new(js: async_nats::jetstream::Context, lattice: &str) -> Self {
        Self { js, lattice: lattice.into() }
    }

    async fn open(&self, create: bool) -> Result<async_nats::jetstream::object_store::ObjectStore, String> {
        let bucket = store_bucket(&self.lattice);
        match self.js.get_object_store(&bucket).await {
            Ok(store) => Ok(store),
            Err(e) if create => {
                let config = async_nats::jetstream::object_store::Config { bucket: bucket.clone(), ..Default::default() };
                self.js.create_object_store(config).await.map_err(|e2| format!("cannot open or create the artifact store `{bucket}` ({e}; {e2})"))
            }
            Err(e) => Err(format!("lattice `{}` has no artifact store (`{bucket}`: {e}); `wash push lattice://NAME:TAG FILE` creates it", self.lattice)),
        }
    }

    /// Stores `bytes` (of `media_type`) as `reference` (its tag; a digest in it must match), and
    /// returns what the tag now names.
    pub async fn put(&self, reference: &LatticeRef, media_type: &str, bytes: &[u8]) -> Result<StoredArtifact, String> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)));
        if let Some(want) = &reference.digest
            && *want != digest
        {
            return Err(format!("the bytes have digest {digest}, not the {want} of `{reference}`"));
        }
        let store = self.open(true).await?;
        let stored = StoredArtifact { digest: digest.clone(), media_type: media_type.into(), size: bytes.len() as u64 };
        let blob = format!("{}@{digest}", reference.name);
        if store.info(&blob).await.map(|i| i.size as u64 != stored.size).unwrap_or(true) {
            let mut meta = async_nats::jetstream::object_store::ObjectMetadata { name: blob.clone(), ..Default::default() };
            meta.metadata.insert("media-type".into(), media_type.into());
            store.put(meta, &mut &bytes[..]).await.map_err(|e| format!("cannot store `{blob}`: {e}"))?;
        }
        if let Some(tag) = reference.tag_or_latest() {
            let name = format!("{}:{tag}", reference.name);
            let json = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
            store.put(name.as_str(), &mut &json[..]).await.map_err(|e| format!("cannot tag `{name}`: {e}"))?;
        }
        Ok(stored)
    }

    /// What `reference` names in the store.
    pub async fn resolve(&self, reference: &LatticeRef) -> Result<StoredArtifact, String> {
        use tokio::io::AsyncReadExt as _;
        let store = self.open(false).await?;
        let missing = |e: &dyn fmt::Display| format!("no artifact `{reference}` in lattice `{}` ({e}); `wash push {reference} FILE` stores one", self.lattice);
        if let Some(digest) = &reference.digest {
            let blob = format!("{}@{digest}", reference.name);
            let info = store.info(&blob).await.map_err(|e| missing(&e))?;
            let media_type = info.metadata.get("media-type").cloned().unwrap_or_else(|| WASM_LAYER.into());
            return Ok(StoredArtifact { digest: digest.clone(), media_type, size: info.size as u64 });
        }
        let name = reference.object_name();
        let mut object = store.get(&name).await.map_err(|e| missing(&e))?;
        let mut json = Vec::new();
        (&mut object).take(MAX_TAG_OBJECT as u64 + 1).read_to_end(&mut json).await.map_err(|e| format!("cannot read tag `{name}`: {e}"))?;
        if json.len() > MAX_TAG_OBJECT {
            return Err(format!("tag object `{name}` is over {MAX_TAG_OBJECT} bytes: it was not written by `wash push`; push the artifact again"));
        }
        let stored: StoredArtifact =
            serde_json::from_slice(&json).map_err(|e| format!("tag object `{name}` is not a tag written by `wash push` ({e}); push the artifact again"))?;
        check_digest(&stored.digest).map_err(|why| format!("tag object `{name}` names a bad digest ({why}); push the artifact again"))?;
        Ok(stored)
    }

    /// The bytes of `stored` (of artifact `name`), refused past `cap` bytes, checked against its digest.
    pub async fn read(&self, name: &str, stored: &StoredArtifact, cap: u64) -> Result<Vec<u8>, String> {
        use sha2::Digest as _;
        use tokio::io::AsyncReadExt as _;
        if stored.size > cap {
            return Err(format!("the artifact is {} bytes; this host takes at most {cap}", stored.size));
        }
        let store = self.open(false).await?;
        let blob = format!("{name}@{}", stored.digest);
        let mut object = store.get(&blob).await.map_err(|e| format!("cannot read `{blob}` from the artifact store: {e}"))?;
        let mut bytes = Vec::with_capacity(stored.size as usize);
        (&mut object).take(cap + 1).read_to_end(&mut bytes).await.map_err(|e| format!("cannot read `{blob}` from the artifact store: {e}"))?;
        if bytes.len() as u64 > cap {
            return Err(format!("the artifact is over {cap} bytes, the most this host takes"));
        }
        let got = format!("sha256:{}", hex(&sha2::Sha256::digest(&bytes)));
        if got != stored.digest {
            return Err(format!("the stored bytes have digest {got}, not {}; the object is damaged: push it again", stored.digest));
        }
        Ok(bytes)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn oci(registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) -> ArtifactRef {
        ArtifactRef::Oci(OciRef { registry: registry.into(), repository: repository.into(), tag: tag.map(Into::into), digest: digest.map(Into::into) })
    }

    #[test]
    fn every_form_parses_into_its_parts() {
        let cases: Vec<(String, ArtifactRef)> = vec![
            ("file:///tmp/x.wasm".into(), ArtifactRef::File("/tmp/x.wasm".into())),
            ("builtin://http-server".into(), ArtifactRef::Builtin("http-server".into())),
            (
                "ghcr.io/wasmcloud/components/http-hello-world-rust:0.1.0".into(),
                oci("ghcr.io", "wasmcloud/components/http-hello-world-rust", Some("0.1.0"), None),
            ),
            ("oci://localhost:5000/hello:1.0".into(), oci("localhost:5000", "hello", Some("1.0"), None)),
            (format!("localhost:5000/hello@{D}"), oci("localhost:5000", "hello", None, Some(D))),
            (format!("127.0.0.1:5000/a/b:1@{D}"), oci("127.0.0.1:5000", "a/b", Some("1"), Some(D))),
            ("localhost/hello".into(), oci("localhost", "hello", None, None)),
            ("lattice://hello:1.0".into(), ArtifactRef::Lattice(LatticeRef { name: "hello".into(), tag: Some("1.0".into()), digest: None })),
            (format!("lattice://team/hello@{D}"), ArtifactRef::Lattice(LatticeRef { name: "team/hello".into(), tag: None, digest: Some(D.into()) })),
        ];
        for (text, want) in cases {
            assert_eq!(ArtifactRef::parse(&text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn display_gives_back_what_was_parsed() {
        for text in ["ghcr.io/org/hello:0.1.0", "localhost:5000/a/b:1", &format!("localhost:5000/a@{D}")] {
            let ArtifactRef::Oci(r) = ArtifactRef::parse(text).unwrap() else { panic!("{text}") };
            assert_eq!(r.to_string(), text);
        }
        let ArtifactRef::Lattice(r) = ArtifactRef::parse("lattice://x/y:2").unwrap() else { panic!() };
        assert_eq!((r.to_string().as_str(), r.object_name().as_str()), ("lattice://x/y:2", "x/y:2"));
    }

    #[test]
    fn latest_is_what_no_tag_means() {
        let ArtifactRef::Oci(r) = ArtifactRef::parse("localhost:5000/hello").unwrap() else { panic!() };
        assert!(r.is_latest());
        let ArtifactRef::Oci(r) = ArtifactRef::parse(&format!("localhost:5000/hello@{D}")).unwrap() else { panic!() };
        assert!(!r.is_latest());
        let ArtifactRef::Lattice(r) = ArtifactRef::parse("lattice://hello").unwrap() else { panic!() };
        assert_eq!(r.object_name(), "hello:latest");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("", "must not be empty"),
            ("hello", "no registry"),
            ("Hello/World:1", "does not start with a registry"),
            ("ghcr.io/Org/x:1", "lower-case"),
            ("ghcr.io/org/x:", "a tag is"),
            ("ghcr.io/org/x@sha256:abc", "64 lower-case hex"),
            ("ghcr.io/org/x@md5:0123456789abcdef0123456789abcdef", "sha256:"),
            ("./x.wasm", "looks like a file path"),
            ("http://x/y", "unsupported scheme"),
            ("file://", "names no file"),
            ("lattice://", "lattice reference"),
            ("lattice://UP:1", "lower-case"),
            ("ghcr.io/org/x:1\u{1b}[2J", "control characters"),
            ("builtin://", "built-in provider name"),
        ];
        for (text, want) in cases {
            let err = ArtifactRef::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
