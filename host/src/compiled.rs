//! The compiled-code cache on disk: a component's machine code, kept so a restarted host, or a
//! new id of bytes this host compiled before, never compiles again.
//!
//! Entries live in `{cache}/compiled/{engine}/{sha256 of the wasm}.cwasm`, where `{engine}` is a
//! hash of the engine's compatibility hash (wasmtime version, compiler settings, target), so a
//! host with another engine never reads them. Each file is `MAGIC`, the SHA-256 of the payload,
//! then the payload (`Component::serialize`). On load the payload's hash is checked before
//! wasmtime sees it; a file that fails that check, or that wasmtime itself refuses, is
//! deleted and the component compiled again. Files are written to a temporary name and renamed,
//! never rewritten in place. The directory is bounded (`max_bytes`): after each write, the
//! least recently used entries go until it fits.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifacts::{read_capped, write_atomically};

const MAGIC: &[u8; 16] = b"TRELLIS-CWASM-1\n";
/// The largest compiled entry read back (bytes): compiled code is a few times the wasm.
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// The compiled-code cache of one engine.
pub struct CompiledCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl CompiledCache {
    /// The cache under `root` for `engine`, holding at most `max_bytes`.
    pub fn new(root: &Path, engine: &Engine, max_bytes: u64) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir: root.join("compiled").join(format!("{:016x}", hasher.finish())), max_bytes }
    }

    fn path(&self, wasm_digest: &str) -> PathBuf {
        self.dir.join(format!("{wasm_digest}.cwasm"))
    }

    /// The component compiled from the wasm with SHA-256 `wasm_digest` (hex), if a sound entry is
    /// cached. Runs on a blocking thread.
    pub fn load(&self, engine: &Engine, wasm_digest: &str) -> Option<Component> {
        let path = self.path(wasm_digest);
        let file = read_capped(&path, MAX_ENTRY_BYTES)?;
        let discard = |why: &str| {
            tracing::warn!(path = %path.display(), why, "discarding a compiled-code cache entry; compiling again");
            let _ = std::fs::remove_file(&path);
        };
        let Some(rest) = file.strip_prefix(MAGIC.as_slice()) else {
            discard("not a Trellis cache entry");
            return None;
        };
        if rest.len() < 32 || Sha256::digest(&rest[32..]).as_slice() != &rest[..32] {
            discard("its checksum does not match (a damaged or altered file)");
            return None;
        }
        // SAFETY: `Component::deserialize` runs machine code produced by `Component::serialize`
        // without recompiling it, so it must be given only such output. The payload is exactly
        // what this module wrote (its SHA-256, written beside it, matches), into a directory
        // named by this engine's compatibility hash; wasmtime checks the header, version and
        // settings again and refuses a mismatch, which is handled below. The bytes are copied
        // into wasmtime's own memory, so later changes to the file cannot reach the code.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &rest[32..]) };
        match loaded {
            Ok(component) => {
                // Mark it used, for eviction.
                let _ = std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(component)
            }
            Err(e) => {
                discard(&format!("wasmtime refused it: {e}"));
                None
            }
        }
    }

    /// Stores `component` (compiled from the wasm with SHA-256 `wasm_digest`), then evicts
    /// least recently used entries past the cap. Runs on a blocking thread.
    pub fn store(&self, wasm_digest: &str, component: &Component) {
        let Ok(payload) = component.serialize() else { return };
        let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        if write_atomically(&self.path(wasm_digest), &file) {
            self.evict();
        }
    }

    /// Deletes the least recently used entries until the directory fits `max_bytes`.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), "compiled-code cache over its cap; evicted");
                total -= len;
            }
        }
    }
}
