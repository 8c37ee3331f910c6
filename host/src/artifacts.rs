//! Fetching what a host runs: components and provider executables from `file://` paths, OCI
//! registries and the lattice's own artifact store, with a cache on disk.
//!
//! Every fetch is bounded: a byte cap per kind ([`MAX_COMPONENT_BYTES`], [`MAX_PROVIDER_BYTES`]),
//! checked before reading where the size is known and enforced while reading, and a timeout
//! ([`OciSettings::pull_timeout`]). Only regular files are read (`/dev/zero` or a FIFO is
//! refused before it is opened). Concurrent fetches of one reference share one pull, and no
//! fetch holds the host's lifecycle lock, so a hanging registry delays only its own scale.
//!
//! The cache (`--cache-dir`): `blobs/sha256/HEX` holds pulled layers by digest (checked again on
//! every read), `oci/manifests/sha256/HEX.json` manifests by digest, `oci/tags/HEX` the digest a
//! tag last resolved to (key: SHA-256 of the reference), and `providers/HEX` the executables
//! taken out of provider archives. A digest-pinned reference whose manifest and layer are cached
//! needs no network; a tag is asked of the registry each time (cheap: the manifest only) unless
//! the host trusts cached tags (`--oci-trust-cached-tags`), or the registry cannot be reached
//! and the tag was resolved before (then the cached digest is used, with a warning).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use trellis_lattice::artifact::{self, ArtifactRef, LatticeRef, LatticeStore, OciRef};

use crate::error::{HostError, Result};

/// The largest component a host fetches (bytes).
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;
/// The largest provider artifact (a PAR with every platform's binary) a host fetches (bytes).
pub const MAX_PROVIDER_BYTES: u64 = 512 << 20;
/// The largest manifest or tag record read from a registry or the cache (bytes).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How a host reaches OCI registries: wasmCloud's settings, same names.
#[derive(Clone)]
pub struct OciSettings {
    /// Registries spoken to over plain HTTP (`--allowed-insecure`, `WASMCLOUD_OCI_ALLOWED_INSECURE`).
    pub allowed_insecure: Vec<String>,
    /// Whether `:latest` (or no tag) is allowed (`--allow-latest`, `WASMCLOUD_OCI_ALLOW_LATEST`).
    pub allow_latest: bool,
    /// The registry [`OciSettings::user`] and [`OciSettings::password`] are for (`--oci-registry`).
    pub registry: Option<String>,
    /// User name for [`OciSettings::registry`] (`--oci-user`, `WASMCLOUD_OCI_REGISTRY_USER`).
    pub user: Option<String>,
    /// Password for [`OciSettings::registry`] (`--oci-password`, `WASMCLOUD_OCI_REGISTRY_PASSWORD`).
    pub password: Option<String>,
    /// Extra CA certificates (PEM) trusted for registries (`--oci-ca-file`).
    pub ca_file: Option<PathBuf>,
    /// The longest one fetch may take, connection to last byte (`--oci-pull-timeout-seconds`).
    pub pull_timeout: Duration,
    /// Use a tag's cached digest without asking the registry (`--oci-trust-cached-tags`).
    pub trust_cached_tags: bool,
    /// Docker's `config.json` for further credentials (default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

impl Default for OciSettings {
    fn default() -> Self {
        Self {
            allowed_insecure: Vec::new(),
            allow_latest: false,
            registry: None,
            user: None,
            password: None,
            ca_file: None,
            pull_timeout: Duration::from_secs(120),
            trust_cached_tags: false,
            docker_config: default_docker_config(),
        }
    }
}

impl std::fmt::Debug for OciSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSettings")
            .field("allowed_insecure", &self.allowed_insecure)
            .field("allow_latest", &self.allow_latest)
            .field("registry", &self.registry)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("pull_timeout", &self.pull_timeout)
            .field("trust_cached_tags", &self.trust_cached_tags)
            .finish()
    }
}

fn default_docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/trellis`, else `~/.cache/trellis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("trellis")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trellis")),
    }
}

/// What is fetched: a component's bytes, or a provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A Wasm component.
    Component,
    /// A provider: an executable, or a provider archive.
    Provider,
}

impl Kind {
    fn cap(self) -> u64 {
        match self {
            Kind::Component => MAX_COMPONENT_BYTES,
            Kind::Provider => MAX_PROVIDER_BYTES,
        }
    }
    fn layers(self) -> &'static [&'static str] {
        match self {
            Kind::Component => &[artifact::WASM_LAYER, artifact::WASMCLOUD_WASM_LAYER],
            Kind::Provider => &[artifact::PAR_LAYER],
        }
    }
}

/// A fetched artifact.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its bytes (a component, or a provider archive).
    pub bytes: Vec<u8>,
    /// What the reference resolved to: the manifest digest (OCI), the stored digest (lattice),
    /// the bytes' SHA-256 (files); `sha256:HEX`.
    pub digest: String,
    /// The media type of the bytes.
    pub media_type: String,
}

/// How the lattice's artifact store is reached.
pub struct StoreAccess {
    /// A connection to the lattice's NATS.
    pub nats: async_nats::Client,
    /// The lattice's name.
    pub lattice: String,
    /// The JetStream domain of its state.
    pub js_domain: Option<String>,
}

type Pull = Shared<BoxFuture<'static, std::result::Result<Arc<Fetched>, String>>>;

/// Fetches artifacts for one host.
pub struct Artifacts {
    oci: OciSettings,
    allow_file_load: bool,
    cache: Option<Cache>,
    store: Option<StoreAccess>,
    client: OnceLock<std::result::Result<oci_client::Client, String>>,
    inflight: Mutex<HashMap<(Kind, String), Pull>>,
}

impl Artifacts {
    /// Fetches with `oci`, caching under `cache_dir` (nothing cached when `None`), reading the
    /// lattice's store through `store` (`lattice://` references are refused without one).
    pub fn new(oci: OciSettings, allow_file_load: bool, cache_dir: Option<PathBuf>, store: Option<StoreAccess>) -> Arc<Self> {
        let cache = cache_dir.map(|root| Cache { root });
        let this = Arc::new(Self { oci, allow_file_load, cache, store, client: OnceLock::new(), inflight: Mutex::default() });
        // Building the registry client loads the system's root certificates (about 10 ms): do it
        // now, off the async workers, rather than in the first pull.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let warm = this.clone();
            runtime.spawn_blocking(move || {
                let _ = warm.client();
            });
        }
        this
    }

    /// The bytes `reference` names, of `kind`. Concurrent calls for one reference share one fetch.
    pub async fn fetch(self: &Arc<Self>, reference: &str, kind: Kind) -> Result<Arc<Fetched>> {
        let load_err = |reason: String| HostError::Load { reference: reference.into(), reason };
        let parsed = ArtifactRef::parse(reference).map_err(load_err)?;
        let key = (kind, reference.to_string());
        let pull = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight
                .entry(key.clone())
                .or_insert_with(|| {
                    let this = self.clone();
                    async move {
                        let timeout = this.oci.pull_timeout;
                        let fetched = tokio::time::timeout(timeout, this.fetch_now(parsed, kind)).await.unwrap_or_else(|_| {
                            Err(format!(
                                "fetching took longer than {} s (the pull timeout); check that the source answers, or raise --oci-pull-timeout-seconds",
                                timeout.as_secs()
                            ))
                        });
                        this.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                        fetched.map(Arc::new)
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        pull.await.map_err(load_err)
    }

    async fn fetch_now(&self, reference: ArtifactRef, kind: Kind) -> std::result::Result<Fetched, String> {
        match reference {
            ArtifactRef::File(path) => self.read_file(Path::new(&path), kind).await,
            ArtifactRef::Builtin(_) => Err("builtin:// names a provider built into a host; a component needs file://, an OCI reference or lattice://".into()),
            ArtifactRef::Oci(r) => self.pull_oci(&r, kind).await,
            ArtifactRef::Lattice(r) => self.pull_lattice(&r, kind).await,
        }
    }

    /// A regular file, read with the kind's cap.
    async fn read_file(&self, path: &Path, kind: Kind) -> std::result::Result<Fetched, String> {
        if !self.allow_file_load {
            return Err("loading from files is disabled on this host (start it with --allow-file-load)".into());
        }
        let cap = kind.cap();
        let shown = path.display();
        let meta = tokio::fs::metadata(path).await.map_err(|e| format!("cannot read `{shown}`: {e}"))?;
        if !meta.is_file() {
            return Err(format!("`{shown}` is not a regular file (a directory, device, FIFO or socket); give the path of a .wasm file"));
        }
        if meta.len() > cap {
            return Err(format!("the file is {} bytes; the limit is {cap}", meta.len()));
        }
        let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("cannot read `{shown}`: {e}"))?;
        // What was opened may not be what was looked at: check the open file itself.
        if !file.metadata().await.map_err(|e| format!("cannot read `{shown}`: {e}"))?.is_file() {
            return Err(format!("`{shown}` is not a regular file; give the path of a .wasm file"));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file).take(cap + 1).read_to_end(&mut bytes).await.map_err(|e| format!("cannot read `{shown}`: {e}"))?;
        if bytes.len() as u64 > cap {
            return Err(format!("the file grew past the limit of {cap} bytes while it was read"));
        }
        let digest = sha256(&bytes);
        Ok(Fetched { bytes, digest, media_type: artifact::WASM_LAYER.into() })
    }

    fn client(&self) -> std::result::Result<&oci_client::Client, String> {
        self.client.get_or_init(|| build_client(&self.oci)).as_ref().map_err(Clone::clone)
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        auth_for(&self.oci, registry)
    }

    async fn pull_oci(&self, r: &OciRef, kind: Kind) -> std::result::Result<Fetched, String> {
        if r.is_latest() && !self.oci.allow_latest {
            return Err(
                "it means the tag `latest`, which can change under a running app; pin a version tag or a digest, or start the host with --allow-latest".into(),
            );
        }
        let reference = match (&r.tag, &r.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(r.registry.clone(), r.repository.clone(), tag.clone(), digest.clone()),
            (None, Some(digest)) => oci_client::Reference::with_digest(r.registry.clone(), r.repository.clone(), digest.clone()),
            _ => oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), r.tag_or_latest().unwrap_or(artifact::LATEST).into()),
        };
        let cache = self.cache.as_ref();
        let tag_key = sha256(r.to_string().as_bytes());
        // The manifest: by digest from the cache, else from the registry (falling back to a
        // tag's cached digest when the registry cannot be reached).
        let cached_digest = match &r.digest {
            Some(d) => Some(d.clone()),
            None if self.oci.trust_cached_tags => cache.and_then(|c| c.tag(&tag_key)),
            None => None,
        };
        let cached = cached_digest.as_deref().and_then(|d| cache.and_then(|c| c.manifest(d)).map(|m| (m, d.to_string())));
        let (manifest, digest) = match cached {
            Some(found) => found,
            None => {
                let auth = self.auth_for(&r.registry);
                let client = self.client()?;
                let accepted = [oci_client::manifest::OCI_IMAGE_MEDIA_TYPE, oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE];
                match client.pull_manifest_raw(&reference, &auth, &accepted).await {
                    Ok((raw, digest)) => {
                        if raw.len() as u64 > MAX_MANIFEST_BYTES {
                            return Err(format!("its manifest is {} bytes, over the {MAX_MANIFEST_BYTES} a host reads", raw.len()));
                        }
                        let computed = sha256(&raw);
                        if computed != digest || r.digest.as_ref().is_some_and(|want| *want != computed) {
                            let want = r.digest.clone().unwrap_or(digest);
                            return Err(format!(
                                "the registry served a manifest with digest {computed}, not {want}; the registry or a proxy is not to be trusted"
                            ));
                        }
                        let manifest: OciImageManifest = serde_json::from_slice(&raw)
                            .map_err(|e| format!("its manifest is not an OCI image manifest ({e}); is it an image index? push a single Wasm artifact"))?;
                        if let Some(c) = cache {
                            c.put_manifest(&digest, &raw);
                            c.put_tag(&tag_key, &digest);
                        }
                        (manifest, digest)
                    }
                    Err(e) => {
                        let why = oci_error(&e, &r.registry, &self.oci);
                        match cache.and_then(|c| c.tag(&tag_key)).and_then(|d| cache.and_then(|c| c.manifest(&d)).map(|m| (m, d))) {
                            Some((m, d)) if unreachable(&e) => {
                                tracing::warn!(reference = %r, digest = d, error = why, "registry unreachable; using the digest this tag had when last pulled");
                                (m, d)
                            }
                            _ => return Err(why),
                        }
                    }
                }
            }
        };
        let layer = pick_layer(&manifest, kind)?;
        let cap = kind.cap();
        if layer.size < 0 || layer.size as u64 > cap {
            return Err(format!("its layer is {} bytes; this host takes at most {cap}", layer.size));
        }
        if let Some(bytes) = cache.and_then(|c| c.blob(&layer.digest, cap)) {
            return Ok(Fetched { bytes, digest, media_type: layer.media_type.clone() });
        }
        let auth = self.auth_for(&r.registry);
        let client = self.client()?;
        client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
        let mut sink = Capped { bytes: Vec::with_capacity(layer.size as usize), cap };
        client.pull_blob(&reference, layer, &mut sink).await.map_err(|e| oci_error(&e, &r.registry, &self.oci))?;
        let bytes = sink.bytes;
        if bytes.len() as u64 != layer.size as u64 {
            return Err(format!("the layer is {} bytes, not the {} its manifest says; the download was cut short: try again", bytes.len(), layer.size));
        }
        if sha256(&bytes) != layer.digest {
            return Err(format!("the layer's bytes do not have the digest {} its manifest names; the download is damaged: try again", layer.digest));
        }
        if let Some(c) = cache {
            c.put_blob(&layer.digest, &bytes);
        }
        Ok(Fetched { bytes, digest, media_type: layer.media_type.clone() })
    }

    async fn pull_lattice(&self, r: &LatticeRef, kind: Kind) -> std::result::Result<Fetched, String> {
        if r.is_latest() && !self.oci.allow_latest {
            return Err(
                "it means the tag `latest`, which can change under a running app; pin a version tag or a digest, or start the host with --allow-latest".into(),
            );
        }
        let access = self.store.as_ref().ok_or("no lattice connection to read the lattice's artifact store through")?;
        let js = trellis_lattice::state::jetstream(access.nats.clone(), access.js_domain.as_deref());
        let store = LatticeStore::new(js, &access.lattice);
        let stored = store.resolve(r).await?;
        if !kind.layers().contains(&stored.media_type.as_str()) {
            return Err(format!("it holds `{}`, not {}{}", stored.media_type, expected_layers(kind), other_kind(kind, &[stored.media_type.as_str()])));
        }
        let cap = kind.cap();
        if let Some(bytes) = self.cache.as_ref().and_then(|c| c.blob(&stored.digest, cap)) {
            return Ok(Fetched { bytes, digest: stored.digest, media_type: stored.media_type });
        }
        let bytes = store.read(&r.name, &stored, cap).await?;
        if let Some(c) = &self.cache {
            c.put_blob(&stored.digest, &bytes);
        }
        Ok(Fetched { bytes, digest: stored.digest, media_type: stored.media_type })
    }

    /// Where to write an executable taken out of a provider archive.
    pub fn provider_dir(&self) -> PathBuf {
        match &self.cache {
            Some(c) => c.root.join("providers"),
            None => std::env::temp_dir().join(format!("trellis-providers-{}", std::process::id())),
        }
    }
}

/// A hint when `found` media types are of the other kind.
fn other_kind(kind: Kind, found: &[&str]) -> &'static str {
    match kind {
        Kind::Component if found.contains(&artifact::PAR_LAYER) => " (it is a provider archive: start it with `wash start provider`)",
        Kind::Provider if found.iter().any(|m| Kind::Component.layers().contains(m)) => " (it is a component: start it with `wash start component`)",
        _ => "",
    }
}

fn expected_layers(kind: Kind) -> String {
    kind.layers().iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(" or ")
}

/// The one layer of `kind` in `manifest`, or why there is none.
fn pick_layer(manifest: &OciImageManifest, kind: Kind) -> std::result::Result<&OciDescriptor, String> {
    let wanted: Vec<&OciDescriptor> = manifest.layers.iter().filter(|l| kind.layers().contains(&l.media_type.as_str())).collect();
    match wanted.as_slice() {
        [one] => Ok(one),
        [] => {
            let found: Vec<&str> = manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
            let other = other_kind(kind, &found);
            Err(format!(
                "it has no layer of type {}{other}; its layers are {}",
                expected_layers(kind),
                if found.is_empty() { "none".into() } else { found.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ") }
            ))
        }
        several => {
            Err(format!("it has {} layers of type {}; a host runs one component per artifact: push each on its own", several.len(), expected_layers(kind)))
        }
    }
}

/// Credentials for `registry`: the host's own (`--oci-user`), else Docker's config, else none.
pub(crate) fn auth_for(oci: &OciSettings, registry: &str) -> RegistryAuth {
    if let (Some(user), Some(password)) = (&oci.user, &oci.password)
        && oci.registry.as_deref().is_none_or(|r| r == registry)
    {
        return RegistryAuth::Basic(user.clone(), password.clone());
    }
    oci.docker_config.as_deref().and_then(|path| docker_credentials(path, registry)).unwrap_or(RegistryAuth::Anonymous)
}

pub(crate) fn build_client(oci: &OciSettings) -> std::result::Result<oci_client::Client, String> {
    // reqwest is built without a crypto provider of its own: use ring, as the rest of the host.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut extra_root_certificates = Vec::new();
    if let Some(path) = &oci.ca_file {
        let data = std::fs::read(path).map_err(|e| format!("cannot read the registry CA file `{}`: {e}; fix --oci-ca-file", path.display()))?;
        extra_root_certificates.push(oci_client::client::Certificate { encoding: oci_client::client::CertificateEncoding::Pem, data });
    }
    let config = ClientConfig {
        protocol: if oci.allowed_insecure.is_empty() { ClientProtocol::Https } else { ClientProtocol::HttpsExcept(oci.allowed_insecure.clone()) },
        extra_root_certificates,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        platform_resolver: None,
        user_agent: concat!("trellis-host/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    oci_client::Client::try_from(config).map_err(|e| format!("cannot set up the registry client: {e}"))
}

/// Whether `e` says the registry could not be reached at all (as opposed to an answer).
fn unreachable(e: &oci_client::errors::OciDistributionError) -> bool {
    matches!(e, oci_client::errors::OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout())
}

/// What a registry error means, with what to do.
pub(crate) fn oci_error(e: &oci_client::errors::OciDistributionError, registry: &str, oci: &OciSettings) -> String {
    use oci_client::errors::OciDistributionError as E;
    let chain = error_chain(e);
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } | E::ServerError { code: 401 | 403, .. } => {
            format!(
                "registry `{registry}` refused the credentials ({chain}); give --oci-user/--oci-password (WASMCLOUD_OCI_REGISTRY_USER/_PASSWORD) for it, or `docker login {registry}`"
            )
        }
        E::ImageManifestNotFoundError(_) | E::ServerError { code: 404, .. } => {
            format!("registry `{registry}` has no such tag or digest ({chain}); check the name, or push it first")
        }
        E::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, oci_client::errors::OciErrorCode::ManifestUnknown | oci_client::errors::OciErrorCode::NameUnknown)) =>
        {
            format!("registry `{registry}` has no such repository, tag or digest ({chain}); check the name, or push it first")
        }
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| matches!(x.code, oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied)) =>
        {
            format!("registry `{registry}` refused access ({chain}); give --oci-user/--oci-password for it, or `docker login {registry}`")
        }
        E::RequestError(r) if r.is_timeout() => format!("registry `{registry}` did not answer in time ({chain}); check that it is up"),
        E::RequestError(_)
            if !oci.allowed_insecure.iter().any(|i| i == registry) && chain.contains("InvalidContentType")
                || chain.contains("invalid peer certificate")
                || chain.contains("record") =>
        {
            format!(
                "cannot speak TLS to registry `{registry}` ({chain}); if it serves plain HTTP, allow that with --allowed-insecure {registry}; if its certificate is private, give its CA with --oci-ca-file"
            )
        }
        E::RequestError(r) if r.is_connect() => format!("cannot reach registry `{registry}` ({chain}); check the address and that it is up"),
        _ => format!("registry `{registry}`: {chain}"),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Credentials for `registry` in Docker's `config.json` (`auths.{registry}.auth`, base64
/// `user:password`, or `username`/`password`). Credential helpers are not run.
fn docker_credentials(path: &Path, registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: HashMap<String, DockerAuth>,
    }
    #[derive(Deserialize)]
    struct DockerAuth {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_MANIFEST_BYTES {
        return None;
    }
    let config: DockerConfig = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let entry = config.auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k == registry || k.split('/').next() == Some(registry)
    })?;
    let auth = entry.1;
    if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
        return Some(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.auth.as_deref()?).ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(u.into(), p.into()))
}

/// A sink that refuses to grow past `cap` bytes.
struct Capped {
    bytes: Vec<u8>,
    cap: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.cap {
            let cap = self.cap;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!("the download passed {cap} bytes, the most this host takes"))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", artifact::hex(&Sha256::digest(bytes)))
}

/// The artifact cache on disk. Every read is checked (a blob against its digest, a manifest
/// by parsing), and a bad entry is deleted and fetched again; writes go to a temporary file
/// renamed into place, so a reader never sees half an entry.
struct Cache {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct TagRecord {
    digest: String,
}

impl Cache {
    fn hex_of(digest: &str) -> Option<&str> {
        digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("blobs/sha256").join(Self::hex_of(digest)?))
    }

    fn blob(&self, digest: &str, cap: u64) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = read_capped(&path, cap)?;
        if sha256(&bytes) == digest {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), "cached artifact does not match its digest; discarding it");
        let _ = std::fs::remove_file(&path);
        None
    }

    fn put_blob(&self, digest: &str, bytes: &[u8]) {
        if let Some(path) = self.blob_path(digest) {
            write_atomically(&path, bytes);
        }
    }

    fn manifest(&self, digest: &str) -> Option<OciImageManifest> {
        let path = self.root.join("oci/manifests/sha256").join(format!("{}.json", Self::hex_of(digest)?));
        let bytes = read_capped(&path, MAX_MANIFEST_BYTES)?;
        if sha256(&bytes) != digest {
            // Stored as served, so its digest is checkable; anything else is not ours.
            let _ = std::fs::remove_file(&path);
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    fn put_manifest(&self, digest: &str, raw: &[u8]) {
        if let Some(hex) = Self::hex_of(digest) {
            write_atomically(&self.root.join("oci/manifests/sha256").join(format!("{hex}.json")), raw);
        }
    }

    fn tag(&self, key: &str) -> Option<String> {
        let bytes = read_capped(&self.root.join("oci/tags").join(Self::hex_of(key)?), MAX_MANIFEST_BYTES)?;
        let record: TagRecord = serde_json::from_slice(&bytes).ok()?;
        Self::hex_of(&record.digest).is_some().then_some(record.digest)
    }

    fn put_tag(&self, key: &str, digest: &str) {
        let Some(hex) = Self::hex_of(key) else { return };
        if let Ok(bytes) = serde_json::to_vec(&TagRecord { digest: digest.into() }) {
            write_atomically(&self.root.join("oci/tags").join(hex), &bytes);
        }
    }
}

/// A regular file's bytes, if it is one and not over `cap`.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > cap {
        return None;
    }
    std::fs::read(path).ok()
}

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> bool {
    let Some(dir) = path.parent() else { return false };
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    let ok = std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), "cannot write to the cache; going on without it");
    }
    ok
}

/// The platform a provider archive's binary is picked by: `{arch}-{os}`, as wasmCloud names it.
pub fn par_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Takes this platform's binary out of provider archive `par` (a tar, gzipped or not, holding
/// `claims.jwt` and `{target}.bin` files), checks it against the archive's signed claims, and
/// writes it, executable, under `dir` (named by its hash). Returns its path and the claims.
pub fn unpack_provider(par: &[u8], dir: &Path, now: u64) -> std::result::Result<(PathBuf, trellis_lattice::claims::ProviderClaims), String> {
    use std::io::Read as _;
    let target = par_target();
    let reader: Box<dyn std::io::Read> = if par.starts_with(&[0x1f, 0x8b]) { Box::new(flate2::read::GzDecoder::new(par)) } else { Box::new(par) };
    let mut archive = tar::Archive::new(reader.take(MAX_PROVIDER_BYTES * 2));
    let (mut token, mut binary, mut targets) = (None, None, Vec::new());
    for entry in archive.entries().map_err(|e| format!("it is not a provider archive (a tar): {e}"))? {
        let mut entry = entry.map_err(|e| format!("the provider archive is damaged: {e}"))?;
        let path = entry.path().map_err(|e| format!("the provider archive is damaged: {e}"))?.into_owned();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let size = entry.header().size().unwrap_or(u64::MAX);
        if stem == "claims" {
            let mut t = String::new();
            entry.by_ref().take(64 << 10).read_to_string(&mut t).map_err(|e| format!("the archive's claims.jwt is unreadable: {e}"))?;
            token = Some(t);
        } else if stem == target {
            if size > MAX_PROVIDER_BYTES {
                return Err(format!("its `{target}` binary is {size} bytes; the most a host takes is {MAX_PROVIDER_BYTES}"));
            }
            let mut b = Vec::with_capacity(size as usize);
            entry.by_ref().take(MAX_PROVIDER_BYTES).read_to_end(&mut b).map_err(|e| format!("the `{target}` binary is unreadable: {e}"))?;
            binary = Some(b);
        } else if !stem.is_empty() {
            targets.push(stem);
        }
    }
    let token = token.ok_or("the provider archive has no claims.jwt; it was not made by `wash push` or wasmCloud's `wash par create`")?;
    let binary = binary.ok_or_else(|| {
        format!(
            "the provider archive has no binary for this host's platform `{target}`; it has {}",
            if targets.is_empty() { "none".into() } else { targets.join(", ") }
        )
    })?;
    let claims =
        trellis_lattice::claims::verify_provider(&token, now, &target, &binary).map_err(|e| format!("the provider archive's claims are refused: {e}"))?;
    let path = dir.join(artifact::hex(&Sha256::digest(&binary)));
    if read_capped(&path, MAX_PROVIDER_BYTES).is_none_or(|b| b != binary) && !write_atomically(&path, &binary) {
        return Err(format!("cannot write the provider's executable under `{}`", dir.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("cannot make `{}` executable: {e}", path.display()))?;
    }
    Ok((path, claims))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_layer_of_the_kind_is_picked_and_several_are_refused() {
        let layer = |m: &str| OciDescriptor { media_type: m.into(), digest: sha256(m.as_bytes()), size: 1, ..Default::default() };
        let manifest = |layers: Vec<OciDescriptor>| OciImageManifest { layers, ..Default::default() };
        let m = manifest(vec![layer(artifact::WASM_LAYER)]);
        assert_eq!(pick_layer(&m, Kind::Component).unwrap().media_type, artifact::WASM_LAYER);
        let m = manifest(vec![layer(artifact::WASMCLOUD_WASM_LAYER)]);
        assert!(pick_layer(&m, Kind::Component).is_ok());
        let m = manifest(vec![layer(artifact::WASM_LAYER), layer(artifact::WASMCLOUD_WASM_LAYER)]);
        assert!(pick_layer(&m, Kind::Component).unwrap_err().contains("has 2 layers"));
        let m = manifest(vec![layer("application/vnd.oci.image.layer.v1.tar")]);
        let err = pick_layer(&m, Kind::Component).unwrap_err();
        assert!(err.contains("no layer of type") && err.contains("vnd.oci.image.layer.v1.tar"), "{err}");
        let m = manifest(vec![layer(artifact::PAR_LAYER)]);
        assert!(pick_layer(&m, Kind::Component).unwrap_err().contains("wash start provider"));
    }

    #[test]
    fn docker_config_credentials_are_found_by_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"https://localhost:5000":{"auth":"dXNlcjpwYXNz"},"ghcr.io":{"username":"u","password":"p"}}}"#).unwrap();
        assert!(matches!(docker_credentials(&path, "localhost:5000"), Some(RegistryAuth::Basic(u, p)) if u == "user" && p == "pass"));
        assert!(matches!(docker_credentials(&path, "ghcr.io"), Some(RegistryAuth::Basic(u, _)) if u == "u"));
        assert!(docker_credentials(&path, "quay.io").is_none());
    }

    #[test]
    fn a_damaged_cache_entry_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache { root: dir.path().into() };
        let digest = sha256(b"hello");
        cache.put_blob(&digest, b"hello");
        assert_eq!(cache.blob(&digest, 100).unwrap(), b"hello");
        std::fs::write(cache.blob_path(&digest).unwrap(), b"hellO").unwrap();
        assert!(cache.blob(&digest, 100).is_none());
        assert!(!cache.blob_path(&digest).unwrap().exists(), "the bad entry is deleted");
    }
}
