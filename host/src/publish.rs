//! The other side of [`crate::artifacts`]: what `wash push` and `wash inspect` need. Pushing a
//! component (the CNCF Wasm OCI layout) or a provider (a wasmCloud provider archive) to a
//! registry or the lattice store, making a provider archive from an executable, and reading a
//! component's world (its imports and exports) without compiling it.

use std::collections::BTreeMap;

use oci_client::client::{Config, ImageLayer};
use serde::Serialize;
use trellis_lattice::artifact::{self, OciRef};
use trellis_lattice::claims::{ProviderClaims, ProviderMetadata};

use crate::artifacts::{OciSettings, par_target, sha256};

/// What a file to push is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A Wasm component (or core module: hosts refuse those at start, with their own message).
    Wasm,
    /// A provider archive (a tar, gzipped or not).
    ProviderArchive,
    /// A native executable (ELF), to be wrapped in a provider archive.
    Executable,
}

impl Payload {
    /// Tells what `bytes` are, or says what was expected.
    pub fn sniff(bytes: &[u8]) -> Result<Self, String> {
        if bytes.starts_with(b"\0asm") {
            Ok(Self::Wasm)
        } else if bytes.starts_with(&[0x1f, 0x8b]) || bytes.get(257..262) == Some(b"ustar") {
            Ok(Self::ProviderArchive)
        } else if bytes.starts_with(b"\x7fELF") {
            Ok(Self::Executable)
        } else {
            Err("it is neither a Wasm component, a provider archive (.par.gz) nor an ELF executable".into())
        }
    }

    /// The media type of its layer.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Self::Wasm => artifact::WASM_LAYER,
            Self::ProviderArchive | Self::Executable => artifact::PAR_LAYER,
        }
    }
}

/// A provider archive holding `executable` as this platform's binary, with claims naming
/// `name` and `vendor`, signed by `issuer` (an account key) for `subject` (a service key).
pub fn provider_archive(executable: &[u8], name: &str, vendor: &str, issuer: &nkeys::KeyPair, subject: &nkeys::KeyPair) -> Result<Vec<u8>, String> {
    use sha2::Digest as _;
    let target = par_target();
    let hash: String = sha2::Sha256::digest(executable).iter().map(|b| format!("{b:02X}")).collect();
    let claims = ProviderClaims {
        jti: uuid::Uuid::new_v4().simple().to_string(),
        iat: trellis_lattice::claims::now(),
        iss: issuer.public_key(),
        sub: subject.public_key(),
        exp: None,
        nbf: None,
        wascap_revision: trellis_lattice::claims::WASCAP_REVISION,
        wascap: ProviderMetadata {
            name: Some(name.into()),
            vendor: vendor.into(),
            target_hashes: BTreeMap::from([(target.clone(), hash)]),
            ..Default::default()
        },
    };
    let token = trellis_lattice::claims::encode_provider(&claims, issuer).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            tar.append_data(&mut header, path, data).map_err(|e| format!("cannot write the archive: {e}"))
        };
        add("claims.jwt", token.as_bytes(), 0o644)?;
        add(&format!("{target}.bin"), executable, 0o755)?;
        tar.finish().map_err(|e| format!("cannot write the archive: {e}"))?;
    }
    gz.finish().map_err(|e| format!("cannot write the archive: {e}"))
}

/// The config of the CNCF Wasm OCI layout (`application/vnd.wasm.config.v0+json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
    component: ComponentConfig,
}

#[derive(Serialize)]
struct ComponentConfig {
    exports: Vec<String>,
    imports: Vec<String>,
}

/// Pushes `bytes` (a component or a provider archive: `payload`) to registry reference `r`,
/// returning the manifest's digest.
pub async fn push_oci(oci: &OciSettings, r: &OciRef, payload: Payload, bytes: Vec<u8>) -> Result<String, String> {
    let client = crate::artifacts::build_client(oci)?;
    let auth = crate::artifacts::auth_for(oci, &r.registry);
    let tag = r.tag.clone().unwrap_or_else(|| artifact::LATEST.into());
    let reference = oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), tag);
    let layer_digest = sha256(&bytes);
    let created = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let config = match payload {
        Payload::Wasm => {
            let world = world(&bytes)?;
            let config = WasmConfig {
                created: created.clone(),
                architecture: "wasm",
                os: "wasip2",
                layer_digests: vec![layer_digest.clone()],
                component: ComponentConfig { exports: world.exports, imports: world.imports },
            };
            Config::new(serde_json::to_vec(&config).map_err(|e| e.to_string())?, artifact::WASM_CONFIG.into(), None)
        }
        _ => Config::new(b"{}".to_vec(), artifact::PAR_CONFIG.into(), None),
    };
    let layer = ImageLayer::new(bytes, payload.layer_media_type().into(), None);
    let annotations = BTreeMap::from([("org.opencontainers.image.created".to_string(), created)]);
    let manifest = oci_client::manifest::OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    let timeout = oci.pull_timeout;
    let pushed = tokio::time::timeout(timeout, client.push(&reference, &[layer], config, &auth, Some(manifest)))
        .await
        .map_err(|_| format!("pushing to `{}` took longer than {} s", r.registry, timeout.as_secs()))?;
    pushed.map_err(|e| crate::artifacts::oci_error(&e, &r.registry, oci))?;
    // The digest the registry files it under, as it says.
    client.fetch_manifest_digest(&reference, &auth).await.map_err(|e| crate::artifacts::oci_error(&e, &r.registry, oci))
}

/// A component's world, as its top-level imports and exports name it.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct World {
    /// What it imports (`wasi:http/types@0.2.0`, …).
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
}

/// Reads the top-level imports and exports of component `wasm` without compiling it.
pub fn world(wasm: &[u8]) -> Result<World, String> {
    use wasmparser::{Encoding, Parser, Payload as P};
    let mut world = World::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("it is not a valid Wasm binary: {e}"))? {
            P::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("it is a core Wasm module, not a component; make one with `wasm-tools component new` or build for wasm32-wasip2".into());
                }
                depth += 1;
            }
            P::End(_) => depth = depth.saturating_sub(1),
            P::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    world.imports.push(import.map_err(|e| format!("its import section is malformed: {e}"))?.name.name.to_string());
                }
            }
            P::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    world.exports.push(export.map_err(|e| format!("its export section is malformed: {e}"))?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(world)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_archive_made_here_unpacks_and_verifies() {
        let (issuer, subject) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_service());
        let exe = b"\x7fELF pretend executable".to_vec();
        let par = provider_archive(&exe, "demo", "trellis", &issuer, &subject).unwrap();
        assert_eq!(Payload::sniff(&par).unwrap(), Payload::ProviderArchive);
        let dir = tempfile::tempdir().unwrap();
        let (path, claims) = crate::artifacts::unpack_provider(&par, dir.path(), trellis_lattice::claims::now()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), exe);
        assert_eq!(claims.sub, subject.public_key());
        // Another archive's claims for other bytes do not verify these.
        let other = provider_archive(b"\x7fELF other", "demo", "trellis", &issuer, &subject).unwrap();
        let mut swapped = Vec::new();
        {
            let mut gz = flate2::read::GzDecoder::new(&other[..]);
            std::io::Read::read_to_end(&mut gz, &mut swapped).unwrap();
        }
        let mut tampered = tar::Builder::new(Vec::new());
        let mut archive = tar::Archive::new(&swapped[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if path.to_string_lossy().ends_with(".bin") {
                data = exe.clone();
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_cksum();
            tampered.append_data(&mut header, path, &data[..]).unwrap();
        }
        let tampered = tampered.into_inner().unwrap();
        let err = crate::artifacts::unpack_provider(&tampered, dir.path(), trellis_lattice::claims::now()).unwrap_err();
        assert!(err.contains("hash"), "{err}");
    }

    #[test]
    fn the_world_of_a_component_is_read_and_a_module_is_named() {
        let component =
            wat::parse_str(r#"(component (import "wasi:cli/environment@0.2.0" (instance)) (core module $m) (export "run" (core module $m)))"#).unwrap();
        let w = world(&component).unwrap();
        assert_eq!(w.imports, vec!["wasi:cli/environment@0.2.0".to_string()]);
        assert_eq!(w.exports, vec!["run".to_string()]);
        let module = wat::parse_str("(module)").unwrap();
        assert!(world(&module).unwrap_err().contains("core Wasm module"));
    }
}
