//! The admin endpoint (`--http-admin ADDR`, wasmCloud's name): `/livez`, `/readyz` and
//! `/metrics` over HTTP/1, for probes and scrapers on the operator's network.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (one more is closed at once), a
//! request head must arrive within [`HEADER_TIMEOUT`], and a connection lasts at most
//! [`CONNECTION_LIFETIME`]. Requests have no body to read; anything but `GET`/`HEAD` of the
//! three paths is a 404 or 405 naming what there is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::error::{HostError, Result};
use crate::metrics::Metrics;

/// The most admin connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one admin connection stays open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What `/readyz` checks, filled in as the host comes up.
#[derive(Default)]
pub(crate) struct Readiness {
    nats: OnceLock<async_nats::Client>,
    buckets: AtomicBool,
    reconciler: OnceLock<Vec<tokio::task::AbortHandle>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// The host's NATS connection is made.
    pub fn nats(&self, nats: &async_nats::Client) {
        let _ = self.nats.set(nats.clone());
    }

    /// The lattice state buckets are open.
    pub fn buckets_open(&self) {
        self.buckets.store(true, Ordering::Relaxed);
    }

    /// The reconciler (and app API) run as these tasks.
    pub fn reconciler(&self, tasks: Vec<tokio::task::AbortHandle>) {
        let _ = self.reconciler.set(tasks);
    }

    /// The host is stopping: no longer ready.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Each check and whether it passes, with what it saw.
    fn checks(&self) -> Vec<(&'static str, bool, String)> {
        let nats = match self.nats.get().map(|n| n.connection_state()) {
            Some(async_nats::connection::State::Connected) => (true, "connected".to_string()),
            Some(state) => (false, format!("{state}").to_lowercase()),
            None => (false, "not connected yet".into()),
        };
        let buckets = self.buckets.load(Ordering::Relaxed);
        let reconciler = match self.reconciler.get() {
            Some(tasks) if tasks.iter().all(|t| !t.is_finished()) => (true, "running".to_string()),
            Some(_) => (false, "stopped".into()),
            None => (false, "not started yet".into()),
        };
        let stopping = self.stopping.load(Ordering::Relaxed);
        vec![
            ("nats", nats.0, nats.1),
            ("state_buckets", buckets, if buckets { "open".into() } else { "not open yet".into() }),
            ("reconciler", reconciler.0, reconciler.1),
            ("host", !stopping, if stopping { "stopping".into() } else { "running".into() }),
        ]
    }
}

/// Binds `addr` and serves the admin endpoint until the returned task is aborted; returns the
/// bound address (useful with port 0) and the task.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, ready: Arc<Readiness>) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HostError::Invalid(format!("cannot listen on --http-admin {addr}: {e}; pick a free address (e.g. 127.0.0.1:8081)")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "admin endpoint: {MAX_CONNECTIONS} connections open; closed one more");
                continue;
            };
            let (metrics, ready) = (metrics.clone(), ready.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let (metrics, ready) = (metrics.clone(), ready.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics, &ready)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    });
    tracing::info!(addr = %bound, "admin endpoint listening (/livez, /readyz, /metrics)");
    Ok((bound, task))
}

fn answer(req: &http::Request<Incoming>, metrics: &Metrics, ready: &Readiness) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
    };
    let path = req.uri().path();
    if !matches!(path, "/livez" | "/readyz" | "/metrics") {
        return reply(404, "text/plain", format!("no admin page `{}`; there are /livez, /readyz and /metrics\n", path.escape_debug()));
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return reply(405, "text/plain", format!("{} is not served here; use GET\n", req.method()));
    }
    match path {
        "/livez" => reply(200, "application/json", "{\"status\":\"ok\"}\n".into()),
        "/readyz" => {
            let checks = ready.checks();
            let ok = checks.iter().all(|(_, pass, _)| *pass);
            let body = serde_json::json!({
                "ready": ok,
                "checks": checks.iter().map(|(name, pass, what)| (name.to_string(), serde_json::json!({"ok": pass, "status": what}))).collect::<serde_json::Map<_, _>>(),
                "not_ready": checks.iter().filter(|(_, pass, _)| !pass).map(|(name, _, _)| *name).collect::<Vec<_>>(),
            });
            reply(if ok { 200 } else { 503 }, "application/json", format!("{body}\n"))
        }
        _ => reply(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
    }
}
