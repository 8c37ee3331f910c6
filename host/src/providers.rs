//! Providers a host runs. This module starts `file://` executables with a cleared environment
//! and the host data on stdin, stops them, and reports their exits; `builtin://` providers and
//! restart-with-backoff supervision build on it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, oneshot};
use trellis_lattice::ctl::{ProviderDescription, StringMap};
use trellis_lattice::event::ProviderStopped;
use trellis_lattice::provider::HostData;

use crate::error::{HostError, Result};
use crate::events::Events;

/// Built-in providers this host can run in-process (none yet).
pub const BUILTINS: &[&str] = &[];

/// One running provider.
struct Running {
    description: ProviderDescription,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

/// The providers of one host.
#[derive(Default, Clone)]
pub struct Providers {
    table: Arc<Mutex<HashMap<String, Running>>>,
}

/// Resolves a provider reference to an executable path, or says why it cannot run.
pub fn resolve_ref(reference: &str, allow_file_load: bool) -> Result<std::path::PathBuf> {
    if let Some(name) = reference.strip_prefix("builtin://") {
        return Err(HostError::Provider(format!(
            "no built-in provider named `{name}` on this host; built-ins available: {}",
            if BUILTINS.is_empty() { "none".to_string() } else { BUILTINS.join(", ") }
        )));
    }
    let Some(path) = reference.strip_prefix("file://") else {
        return Err(HostError::Provider(format!(
            "provider reference `{reference}` is not supported; use file:///path/to/executable"
        )));
    };
    if !allow_file_load {
        return Err(HostError::Provider(format!("`{reference}`: loading from files is disabled on this host (--allow-file-load)")));
    }
    let path = std::path::PathBuf::from(path);
    let meta = std::fs::metadata(&path).map_err(|e| HostError::Provider(format!("cannot read provider `{}`: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(HostError::Provider(format!("provider `{}` is not an executable file; chmod +x it", path.display())));
        }
    }
    Ok(path)
}

impl Providers {
    /// Whether `id` runs here.
    pub async fn contains(&self, id: &str) -> bool {
        self.table.lock().await.contains_key(id)
    }

    /// Inventory entries, sorted by id.
    pub async fn list(&self) -> Vec<ProviderDescription> {
        let mut v: Vec<_> = self.table.lock().await.values().map(|r| r.description.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Starts the executable at `path` as provider `id`, giving it `host_data` on stdin.
    pub async fn start(
        &self,
        path: &std::path::Path,
        reference: &str,
        id: &str,
        annotations: StringMap,
        host_data: &HostData,
        events: Events,
    ) -> Result<()> {
        let line = host_data.encode().map_err(|e| HostError::Provider(e.to_string()))?;
        let mut child = tokio::process::Command::new(path)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "RUST_LOG" || k.starts_with("OTEL_")))
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HostError::Provider(format!("cannot start provider `{}`: {e}", path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A provider that exits at once closes its stdin; its exit is reported below.
            let _ = stdin.write_all(line.as_bytes()).await;
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let description = ProviderDescription {
            id: id.into(),
            image_ref: Some(reference.into()),
            name: None,
            revision: 0,
            annotations: annotations.clone(),
        };
        self.table
            .lock()
            .await
            .insert(id.into(), Running { description, stop: stop_tx, done: done_rx });
        let table = self.table.clone();
        let (id, host_id) = (id.to_string(), host_data.host_id.clone());
        tokio::spawn(async move {
            let reason = tokio::select! {
                status = child.wait() => {
                    table.lock().await.remove(&id);
                    match status {
                        Ok(s) => format!("exited ({s})"),
                        Err(e) => format!("lost ({e})"),
                    }
                }
                _ = stop_rx => {
                    let _ = child.kill().await;
                    "stop".to_string()
                }
            };
            tracing::info!(provider_id = id, reason, "provider stopped");
            events.publish(&ProviderStopped { host_id, provider_id: id, annotations, reason }).await;
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Stops provider `id`; false if it was not running.
    pub async fn stop(&self, id: &str) -> bool {
        let Some(running) = self.table.lock().await.remove(id) else { return false };
        let _ = running.stop.send(());
        let _ = running.done.await;
        true
    }

    /// Stops every provider.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.table.lock().await.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}
