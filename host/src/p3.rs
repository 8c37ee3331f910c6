//! WASI 0.3 components: `wasi:http/handler@0.3.0` exports (an `async func handle`), beside
//! the WASI 0.2 `wasi:http/incoming-handler` ones [`crate::runtime`] serves.
//!
//! What this module owns:
//! - **Kind detection at load** ([`service_pre`]): a component exporting
//!   `wasi:http/handler@0.3.0` gets a [`ServicePre`]; one exporting another version of that
//!   interface (a `0.3.0-rc-…` pre-release) is refused at start with what to rebuild against.
//! - **Invocation** ([`invoke_http`]): a fresh store per request, as for 0.2, under the same
//!   limits (memory cap through the store limiter, deadline through epoch interruption and a
//!   tokio timer, the caller's concurrency permit held until the guest's last task is done).
//!   The store runs its guest tasks in [`Store::run_concurrent`]; the request body streams in
//!   as a host body the guest reads as a `stream<u8>`, the response body streams out through a
//!   bounded channel ([`BODY_CHUNKS`] chunks of at most wasmtime-wasi-http's
//!   [`wasmtime_wasi_http::p3::DEFAULT_OUTGOING_BODY_CHUNK_SIZE`]), never whole in memory.
//! - **Clear start errors for imports** ([`explain_unlinkable`]): when a component imports an
//!   interface in a form the host does not provide (a WASI 0.3 pre-release, `wasi:io@0.3`, a
//!   capability at a version we do not implement), the error names the import and the form to
//!   use instead.
//!
//! One request per instance, for both kinds: a 0.3 instance may run several tasks at once
//! (its body writer, awaits on clocks or links), but never two requests, so `max_instances`
//! means the same for both kinds: requests in flight, which equals instances alive.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use wasmtime::Engine;
#[cfg(test)]
use wasmtime::component::Linker;
use wasmtime::component::{Component, InstancePre, types::ComponentItem};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::error::{HostError, Result};
use crate::runtime::{AbortOnDrop, Guest, GuestBody, GuestErrors, Runtime, State};

/// The WASI 0.3 version wasmtime 48 implements (its `wasmtime-wasi` and `wasmtime-wasi-http`
/// `p3` WIT, vendored in `interfaces/wasi-http-0.3`); the only 0.3 version a component may
/// import or export here.
pub const WASI_P3_VERSION: &str = "0.3.0";

/// The 0.3 HTTP export this host serves.
pub const HANDLER: &str = "wasi:http/handler@0.3.0";

/// Response-body chunks in flight between the guest's store and the caller, per request. A
/// chunk is at most wasmtime-wasi-http's outgoing chunk size (1 MiB), so a slow reader holds at
/// most this many MiB of one response in the host.
pub const BODY_CHUNKS: usize = 2;

/// The component's `wasi:http/handler@0.3.0` export, ready to instantiate: `None` when it
/// exports none; an error naming the version when it exports another `wasi:http/handler`.
pub(crate) fn service_pre(engine: &Engine, component: &Component, pre: &InstancePre<State>) -> std::result::Result<Option<ServicePre<State>>, String> {
    let exports = component.component_type();
    let Some((name, _)) = exports.exports(engine).find(|(name, _)| name.starts_with("wasi:http/handler@")) else { return Ok(None) };
    if name != HANDLER {
        return Err(format!(
            "it exports `{name}`; this host serves `{HANDLER}` (WASI 0.3) and `wasi:http/incoming-handler@0.2.x` (WASI 0.2); \
             rebuild it against WASI {WASI_P3_VERSION} (the WIT in interfaces/wasi-http-0.3, e.g. with wit-bindgen 0.57)"
        ));
    }
    ServicePre::new(pre.clone()).map(Some).map_err(|e| format!("its `{HANDLER}` export does not match WASI {WASI_P3_VERSION}: {e:#}"))
}

/// What the host's linker offers, per package: the advice of a start error for an import it
/// cannot satisfy. (A test proves each named form links.)
const OFFERED: &[(&str, &str)] = &[
    ("wasi:cli", "`wasi:cli@0.2.x` or `wasi:cli@0.3.0`"),
    ("wasi:clocks", "`wasi:clocks@0.2.x` or `wasi:clocks@0.3.0`"),
    ("wasi:filesystem", "`wasi:filesystem@0.2.x` or `wasi:filesystem@0.3.0` (no directories are preopened)"),
    ("wasi:random", "`wasi:random@0.2.x` or `wasi:random@0.3.0`"),
    ("wasi:sockets", "`wasi:sockets@0.2.x` or `wasi:sockets@0.3.0` (every connection is refused)"),
    ("wasi:http", "`wasi:http@0.2.x` (types, outgoing-handler) or `wasi:http@0.3.0` (types, client); a handler is exported, never imported"),
    ("wasi:io", "`wasi:io@0.2.x`; WASI 0.3 has no `wasi:io` (streams and futures are built into the component model)"),
    ("wasi:keyvalue", "`wasi:keyvalue/{store,atomics,batch}@0.2.0-draft`, which a WASI 0.3 component may import as it is"),
    ("trellis:keyvalue", "`trellis:keyvalue/cas@0.1.0`"),
    ("wasi:logging", "`wasi:logging/logging@0.1.0-draft`"),
    ("wasi:config", "`wasi:config/{store,runtime}@0.2.0-draft`"),
    ("wasmcloud:bus", "`wasmcloud:bus/lattice@2.0.0`"),
    ("wasmcloud:secrets", "`wasmcloud:secrets/{store,reveal}@0.1.0-draft`"),
    ("wasi:blobstore", "`wasi:blobstore/{blobstore,container,types}@0.2.0-draft`"),
];

/// Why `component` cannot be instantiated, given wasmtime's `error` from `instantiate_pre`:
/// the import at fault (a WASI 0.3 pre-release first, else the one wasmtime names), with the
/// form of its package the host offers; wasmtime's own words when it names none.
pub(crate) fn explain_unlinkable(engine: &Engine, component: &Component, error: &wasmtime::Error) -> String {
    let ty = component.component_type();
    let instances: Vec<&str> = ty.imports(engine).filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_))).map(|(name, _)| name).collect();
    // A WASI 0.3 pre-release may share a name's semver key with 0.3.0 and differ inside,
    // so it is named by its version first.
    let prerelease = instances.iter().copied().find(|name| {
        let package = name.split_once('/').map_or(*name, |(p, _)| p);
        let version = name.rsplit_once('@').map_or("", |(_, v)| v);
        package.starts_with("wasi:") && version.starts_with("0.3.") && version != WASI_P3_VERSION && offered(package).is_some()
    });
    // Otherwise the import wasmtime's linker (version-aware) found no match for, as its
    // error names it: "component imports instance `NAME`, but a matching implementation…".
    let text = format!("{error:#}");
    let named = text.split_once("component imports instance `").and_then(|(_, rest)| rest.split_once('`')).map(|(name, _)| name);
    let Some(name) = prerelease.or(named) else {
        return format!("it needs an import this host does not provide: {error:#}; link a provider for it or rebuild the component without it");
    };
    let package = name.split_once('/').map_or(name, |(p, _)| p);
    let note = if prerelease.is_some() {
        format!(" (a WASI 0.3 pre-release; this host implements WASI {WASI_P3_VERSION} exactly, as wasmtime 48 does)")
    } else {
        String::new()
    };
    match offered(package) {
        Some(offered) => format!("it imports `{name}`{note}, which this host does not provide; it provides {offered}: rebuild the component against that"),
        None => format!("it imports `{name}`, which this host does not provide; link a provider for it or rebuild the component without it"),
    }
}

/// What the host offers of `package`, in words.
fn offered(package: &str) -> Option<&'static str> {
    OFFERED.iter().find(|(p, _)| *p == package).map(|(_, o)| *o)
}

/// Whether `linker` defines something named exactly `name`: defining it a second time fails
/// (the linker allows no shadowing). (An import of an empty instance would not tell: it
/// typechecks even against nothing.)
#[cfg(test)]
fn links(linker: &Linker<State>, name: &str) -> bool {
    linker.clone().root().func_wrap(name, |_, (): ()| Ok(())).is_err()
}

/// Instantiates `service` in a fresh store and hands it `req` through
/// `wasi:http/handler@0.3.0`. Like [`Runtime::invoke_http_streaming`] (whose contract this
/// keeps): returns once the guest has returned a response head, the body streams as the guest
/// writes it and ends with the guest's own error if it fails later, `permit` is held until the
/// guest's store is done, and dropping the body stops the guest.
pub(crate) async fn invoke_http<B, P>(
    runtime: &Runtime,
    service: ServicePre<State>,
    guest: Guest<'_>,
    req: http::Request<B>,
    permit: P,
) -> Result<http::Response<GuestBody>>
where
    B: hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    P: Send + 'static,
{
    let Guest { id: component_id, config, prepared: _, limits, traceparent } = guest;
    let id: Arc<str> = Arc::from(component_id);
    let fail = |reason: String| HostError::Invocation { id: component_id.into(), reason };
    let errors = GuestErrors { id: id.clone(), deadline_ms: limits.max_execution_time.as_millis() as u64 };
    let mut store = runtime.new_store(component_id, config, limits, traceparent);
    // The request body stays a host body: the guest pulls it as a `stream<u8>` when it reads.
    // The returned future only reports errors the guest's `consume-body` result carries.
    let (request, _request_io) = wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, req);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<std::result::Result<http::response::Parts, String>>();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, String>>(BODY_CHUNKS);
    let mut task = AbortOnDrop(tokio::spawn(async move {
        let _permit = permit;
        let service = service.instantiate_async(&mut store).await?;
        store
            .run_concurrent(async move |store| -> wasmtime::Result<()> {
                let response = match service.handle(store, request).await? {
                    Ok(response) => response,
                    Err(code) => {
                        let _ = head_tx.send(Err(format!("it answered with error code {code:?}")));
                        return Ok(());
                    }
                };
                let response = store.with(|s| response.into_http(s, async { Ok(()) }))?;
                let (parts, mut body) = response.into_parts();
                if head_tx.send(Ok(parts)).is_err() {
                    return Ok(()); // the caller went away
                }
                while let Some(frame) = body.frame().await {
                    let chunk = match frame {
                        Ok(frame) => match frame.into_data() {
                            Ok(data) => Ok(data),
                            Err(_trailers) => continue, // the data plane carries no trailers
                        },
                        Err(e) => Err(format!("its response body failed: {e}")),
                    };
                    let failed = chunk.is_err();
                    if body_tx.send(chunk).await.is_err() || failed {
                        break;
                    }
                }
                Ok(())
            })
            .await?
    }));
    let deadline = tokio::time::Instant::now() + limits.max_execution_time;
    let head = tokio::select! {
        r = head_rx => r,
        // Reaching the deadline before a head: the guest is stopped with its task.
        _ = tokio::time::sleep_until(deadline) => return Err(errors.deadline()),
    };
    let parts = match head {
        Ok(Ok(parts)) => parts,
        Ok(Err(why)) => return Err(fail(why)),
        // The sender is gone without a head: the guest trapped or its store failed.
        Err(_) => {
            return Err(match tokio::time::timeout_at(deadline, &mut task.0).await {
                Err(_) => errors.deadline(),
                Ok(Ok(Ok(()))) => fail("it returned without a response".into()),
                Ok(Ok(Err(e))) => errors.guest(e),
                Ok(Err(join)) => fail(format!("the invocation task failed: {join}")),
            });
        }
    };
    let chunks = tokio_stream_of(body_rx);
    let stream = futures::stream::unfold(Some((chunks, task, errors)), move |state| async move {
        let (mut chunks, mut task, errors) = state?;
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => Some((Err(errors.deadline()), None)),
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some((chunks, task, errors)))),
            Ok(Some(Err(why))) => {
                // The body failed: report the guest's own error (a trap) when there is one.
                let err = match tokio::time::timeout_at(deadline, &mut task.0).await {
                    Ok(Ok(Err(guest))) => errors.guest(guest),
                    _ => HostError::Invocation { id: errors.id.to_string(), reason: why },
                };
                Some((Err(err), None))
            }
            Ok(None) => match tokio::time::timeout_at(deadline, &mut task.0).await {
                Err(_) => Some((Err(errors.deadline()), None)),
                Ok(Ok(Err(guest))) => Some((Err(errors.guest(guest)), None)),
                Ok(Err(join)) => Some((Err(HostError::Invocation { id: errors.id.to_string(), reason: format!("the invocation task failed: {join}") }), None)),
                Ok(Ok(Ok(()))) => None,
            },
        }
    });
    Ok(http::Response::from_parts(parts, stream.boxed()))
}

/// The receiving end of a bounded channel as a stream.
fn tokio_stream_of<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> futures::stream::BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) }).boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::runtime::RuntimeConfig;

    fn runtime() -> Runtime {
        let config = RuntimeConfig { pooling: false, ..RuntimeConfig::default() };
        Runtime::new(&config, Arc::new(crate::c2c::tests::Nowhere)).unwrap()
    }

    /// Every form the start errors advise links (so the advice cannot drift from the linker).
    #[test]
    fn every_offered_form_links() {
        let rt = runtime();
        let linker = rt.host_linker();
        for name in [
            "wasi:cli/stdout@0.2.12",
            "wasi:cli/stdout@0.3.0",
            "wasi:cli/environment@0.3.0",
            "wasi:clocks/monotonic-clock@0.2.12",
            "wasi:clocks/monotonic-clock@0.3.0",
            "wasi:filesystem/preopens@0.2.12",
            "wasi:filesystem/preopens@0.3.0",
            "wasi:random/random@0.2.12",
            "wasi:random/random@0.3.0",
            "wasi:sockets/types@0.3.0",
            "wasi:sockets/tcp@0.2.12",
            "wasi:http/types@0.2.12",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:http/types@0.3.0",
            "wasi:http/client@0.3.0",
            "wasi:io/streams@0.2.12",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
            "wasi:keyvalue/batch@0.2.0-draft",
            "trellis:keyvalue/cas@0.1.0",
            "wasi:logging/logging@0.1.0-draft",
            "wasi:config/store@0.2.0-draft",
            "wasi:config/runtime@0.2.0-draft",
            "wasmcloud:bus/lattice@2.0.0",
            "wasmcloud:secrets/store@0.1.0-draft",
            "wasmcloud:secrets/reveal@0.1.0-draft",
            "wasi:blobstore/blobstore@0.2.0-draft",
            "wasi:blobstore/container@0.2.0-draft",
            "wasi:blobstore/types@0.2.0-draft",
        ] {
            assert!(links(linker, name), "the host's linker does not provide `{name}`");
        }
        assert!(!links(linker, "wasi:io/streams@0.3.0") && !links(linker, "wasi:nothing/here@1.0.0"));
        for package in ["wasi:cli", "wasi:io", "wasi:keyvalue", "wasi:http", "wasmcloud:bus", "wasi:blobstore"] {
            assert!(OFFERED.iter().any(|(p, _)| *p == package), "{package}");
        }
    }

    #[test]
    fn an_import_in_a_form_we_lack_is_named_with_what_to_use() {
        let rt = runtime();
        let (linker, engine) = (rt.host_linker(), rt.engine());
        let cases = [
            ("wasi:http/types@0.3.0-rc-2025-09-16", &["`wasi:http/types@0.3.0-rc-2025-09-16`", "pre-release", "`wasi:http@0.3.0`"][..]),
            ("wasi:io/streams@0.3.0", &["`wasi:io/streams@0.3.0`", "`wasi:io@0.2.x`", "WASI 0.3 has no `wasi:io`"]),
            ("wasi:keyvalue/store@0.3.0-draft", &["`wasi:keyvalue/store@0.3.0-draft`", "`wasi:keyvalue/{store,atomics,batch}@0.2.0-draft`"]),
            ("wasi:http/handler@0.3.0", &["`wasi:http/handler@0.3.0`", "a handler is exported, never imported"]),
            ("wasi:nothing/here@1.0.0", &["`wasi:nothing/here@1.0.0`", "link a provider for it"]),
        ];
        for (name, parts) in cases {
            let component = Component::new(engine, format!("(component (import \"{name}\" (instance (export \"trellis-probe\" (func)))))")).unwrap();
            let err = linker.instantiate_pre(&component).err().unwrap();
            let why = explain_unlinkable(engine, &component, &err);
            for p in parts {
                assert!(why.contains(p), "`{p}` is missing from: {why}");
            }
        }
        // A form we do provide is not blamed.
        let fine =
            Component::new(engine, "(component (import \"wasi:clocks/monotonic-clock@0.3.0\" (instance (export \"now\" (func (result u64))))))").unwrap();
        assert!(linker.instantiate_pre(&fine).is_ok());
    }

    #[test]
    fn a_pre_release_handler_export_is_refused_with_the_version() {
        let rt = runtime();
        let engine = rt.engine();
        let component = Component::new(engine, "(component (instance $i) (export \"wasi:http/handler@0.3.0-rc-2025-09-16\" (instance $i)))").unwrap();
        let pre = rt.host_linker().instantiate_pre(&component).unwrap();
        let err = service_pre(engine, &component, &pre).err().unwrap();
        assert!(err.contains("`wasi:http/handler@0.3.0-rc-2025-09-16`") && err.contains("`wasi:http/handler@0.3.0`"), "{err}");
        // No handler export at all: not a 0.3 HTTP component, and no error.
        let plain = Component::new(engine, "(component)").unwrap();
        let pre = rt.host_linker().instantiate_pre(&plain).unwrap();
        assert!(service_pre(engine, &plain, &pre).unwrap().is_none());
    }
}
