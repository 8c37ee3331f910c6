//! `wasi:blobstore@0.2.0-draft` for components (generated from `interfaces/wasi-blobstore`,
//! the WIT wasmCloud 1.x's `wasmcloud-component` crate vendors).
//!
//! The resources stay in the store: a `container` is the name it was opened with, an
//! `outgoing-value` a bounded pipe, an `incoming-value` the body of a reply, a
//! `stream-object-names` a cursor and one page of names. Every operation becomes a linked call
//! to the provider of the component's `wasi:blobstore` link (interface `blobstore`), in the
//! wire form of [`trellis_lattice::blobstore`], through [`crate::c2c::Outbound`]. Object data
//! is the call's body, streamed both ways in bounded chunks:
//!
//! - writing: `outgoing-value-write-body` hands the guest a wasmtime-wasi `output-stream` over
//!   a pipe of [`PIPE_BYTES`]; `write-data` starts the call with the pipe's other end as its
//!   body, so bytes reach the provider as they are written; `finish` ends the body and answers
//!   the provider's outcome. A value dropped without `finish` ends its body with an error, and
//!   the provider stores nothing. A guest may write up to [`PIPE_BYTES`] before `write-data`
//!   (wasmCloud's examples write first for small values); past that its writes wait for
//!   `write-data`.
//! - reading: `get-data` answers an `incoming-value` holding the reply body;
//!   `incoming-value-consume-async` gives the guest an `input-stream` fed as chunks arrive;
//!   `incoming-value-consume-sync` reads at most [`MAX_SYNC_BYTES`] (a larger value is an
//!   error naming the size and `consume-async`).
//!
//! The streams are wasmtime-wasi's own resources (bindgen `with` maps `wasi:io` to them), so a
//! component's `wasi:io/streams` calls on them are the ordinary ones. Every failure (no link,
//! no provider, a bad name, a backend error) reaches the component as the WIT `error` string;
//! nothing here traps on a provider's account.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use trellis_lattice::blobstore::{self as wire, ObjectId, Reply, Request};
use trellis_lattice::rpc::{self, RpcError, RpcErrorKind};
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use crate::c2c::{InterfaceName, LinkedCall};
use crate::runtime::State;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../interfaces/wasi-blobstore",
        world: "wasi:blobstore/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": super::Container,
            "wasi:blobstore/container.stream-object-names": super::ObjectNames,
            "wasi:blobstore/types.incoming-value": super::IncomingValue,
            "wasi:blobstore/types.outgoing-value": super::OutgoingValue,
        },
    });
}

use bindings::wasi::blobstore::{blobstore, container, types};

/// The packages this module implements.
pub const PACKAGES: &[&str] = &["wasi:blobstore"];

/// The most `incoming-value-consume-sync` reads into the guest at once (16 MiB).
pub const MAX_SYNC_BYTES: u64 = 16 << 20;

/// The pipe between an `outgoing-value`'s stream and its call (1 MiB): what a guest may write
/// before `write-data`, and the most of an upload the host holds at any time.
pub const PIPE_BYTES: usize = 1 << 20;

/// How much one write to an outgoing stream may hand over (`check-write`).
const WRITE_BUDGET: usize = 64 << 10;

/// The largest body chunk an upload sends.
const UPLOAD_CHUNK: usize = 256 << 10;

/// A container a component opened: its name.
#[derive(Debug)]
pub struct Container {
    name: String,
}

/// An object's data on its way in.
pub struct IncomingValue {
    body: Option<rpc::Body>,
    size: u64,
    what: String,
}

/// An object's data on its way out.
pub struct OutgoingValue {
    writer: Option<tokio::io::DuplexStream>,
    reader: Option<tokio::io::DuplexStream>,
    /// The rep of the output-stream handed out, to refuse `finish` while it lives.
    stream: Option<u32>,
    finished: Option<tokio::sync::oneshot::Sender<()>>,
    upload: Option<Upload>,
}

/// An upload's call: aborted when its value goes away.
struct Upload(tokio::task::JoinHandle<Result<(), String>>);

impl Drop for Upload {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listing under way.
#[derive(Debug)]
pub struct ObjectNames {
    container: String,
    after: Option<String>,
    names: VecDeque<String>,
    done: bool,
}

/// Adds the blobstore interfaces to `linker` (wasi:io comes from wasmtime-wasi's own).
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    blobstore::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    container::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    types::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    Ok(())
}

type Outcome<T> = wasmtime::Result<Result<T, String>>;

impl State {
    /// The linked call that carries `req`.
    fn blob_call(&self, req: &Request) -> LinkedCall {
        let link = self.link_context();
        let interface = InterfaceName { namespace: "wasi".into(), package: "blobstore".into(), interface: "blobstore".into() };
        LinkedCall {
            source: link.component_id.clone(),
            link_name: link.link_name(&interface).to_string(),
            interface,
            via: None,
            function: req.function().to_string(),
            deadline: link.deadline,
            args: Vec::new(),
            traceparent: link.traceparent.clone(),
        }
    }

    /// Sends `req` (with `body`) to the component's blobstore provider; its reply and body.
    async fn blob(&mut self, req: Request, body: rpc::Body) -> Result<(Reply, rpc::Body), String> {
        let call = self.blob_call(&req);
        send(self.outbound().call_with_body(call, req.encode(), body)).await
    }

    /// `req`, whose reply carries no body.
    async fn blob_simple(&mut self, req: Request) -> Result<Reply, String> {
        self.blob(req, rpc::full_body(Bytes::new())).await.map(|(r, _)| r)
    }
}

async fn send(call: futures::future::BoxFuture<'static, Result<rpc::Response, String>>) -> Result<(Reply, rpc::Body), String> {
    let resp = call.await?;
    let outcome = wire::decode_outcome(&resp.head).map_err(|e| format!("the blobstore provider's answer could not be decoded: {e}"))?;
    outcome.map(|r| (r, resp.body))
}

fn unexpected(reply: &Reply) -> String {
    format!("the blobstore provider answered with the wrong kind of reply ({reply:?})")
}

fn unit(r: Result<Reply, String>) -> Result<(), String> {
    match r {
        Ok(Reply::Unit) => Ok(()),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e),
    }
}

fn boolean(r: Result<Reply, String>) -> Result<bool, String> {
    match r {
        Ok(Reply::Bool(b)) => Ok(b),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e),
    }
}

fn object_id(id: types::ObjectId) -> ObjectId {
    ObjectId { container: id.container, object: id.object }
}

impl blobstore::Host for State {
    async fn create_container(&mut self, name: String) -> Outcome<Resource<Container>> {
        match unit(self.blob_simple(Request::CreateContainer { name: name.clone() }).await) {
            Ok(()) => Ok(Ok(self.table_mut().push(Container { name })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get_container(&mut self, name: String) -> Outcome<Resource<Container>> {
        match unit(self.blob_simple(Request::GetContainer { name: name.clone() }).await) {
            Ok(()) => Ok(Ok(self.table_mut().push(Container { name })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_container(&mut self, name: String) -> Outcome<()> {
        Ok(unit(self.blob_simple(Request::DeleteContainer { name }).await))
    }

    async fn container_exists(&mut self, name: String) -> Outcome<bool> {
        Ok(boolean(self.blob_simple(Request::ContainerExists { name }).await))
    }

    async fn copy_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Outcome<()> {
        Ok(unit(self.blob_simple(Request::CopyObject { src: object_id(src), dest: object_id(dest) }).await))
    }

    async fn move_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Outcome<()> {
        Ok(unit(self.blob_simple(Request::MoveObject { src: object_id(src), dest: object_id(dest) }).await))
    }
}

impl container::Host for State {}

impl container::HostContainer for State {
    async fn name(&mut self, c: Resource<Container>) -> Outcome<String> {
        Ok(Ok(self.table().get(&c)?.name.clone()))
    }

    async fn info(&mut self, c: Resource<Container>) -> Outcome<types::ContainerMetadata> {
        let container = self.table().get(&c)?.name.clone();
        Ok(match self.blob_simple(Request::ContainerInfo { container }).await {
            Ok(Reply::Container(m)) => Ok(types::ContainerMetadata { name: m.name, created_at: m.created_at }),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    async fn get_data(&mut self, c: Resource<Container>, name: String, start: u64, end: u64) -> Outcome<Resource<IncomingValue>> {
        let container = self.table().get(&c)?.name.clone();
        let what = format!("object `{name}` in container `{container}`");
        match self.blob(Request::GetData { container, name, start, end }, rpc::full_body(Bytes::new())).await {
            Ok((Reply::Object(meta), body)) => Ok(Ok(self.table_mut().push(IncomingValue { body: Some(body), size: meta.size, what })?)),
            Ok((other, _)) => Ok(Err(unexpected(&other))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn write_data(&mut self, c: Resource<Container>, name: String, data: Resource<OutgoingValue>) -> Outcome<()> {
        let container = self.table().get(&c)?.name.clone();
        let req = Request::WriteData { container: container.clone(), name: name.clone() };
        let value = self.table_mut().get_mut(&data)?;
        let Some(reader) = value.reader.take() else {
            return Ok(Err(format!(
                "write-data was already called with this outgoing-value (for object `{name}` in container `{container}`); make a new one per write"
            )));
        };
        let (finished, ended) = tokio::sync::oneshot::channel();
        value.finished = Some(finished);
        let body = upload_body(reader, ended, format!("object `{name}` in container `{container}`"));
        let call = self.blob_call(&req);
        let sent = self.outbound().call_with_body(call, req.encode(), body);
        let task = tokio::spawn(async move { unit(send(sent).await.map(|(r, _)| r)) });
        self.table_mut().get_mut(&data)?.upload = Some(Upload(task));
        Ok(Ok(()))
    }

    async fn list_objects(&mut self, c: Resource<Container>) -> Outcome<Resource<ObjectNames>> {
        let container = self.table().get(&c)?.name.clone();
        let mut names = ObjectNames { container, after: None, names: VecDeque::new(), done: false };
        // The first page now, so a missing container is this call's error.
        if let Err(e) = self.fetch_names(&mut names).await {
            return Ok(Err(e));
        }
        Ok(Ok(self.table_mut().push(names)?))
    }

    async fn delete_object(&mut self, c: Resource<Container>, name: String) -> Outcome<()> {
        let container = self.table().get(&c)?.name.clone();
        Ok(unit(self.blob_simple(Request::DeleteObject { container, name }).await))
    }

    async fn delete_objects(&mut self, c: Resource<Container>, names: Vec<String>) -> Outcome<()> {
        let container = self.table().get(&c)?.name.clone();
        for batch in names.chunks(wire::MAX_DELETE_BATCH) {
            if let Err(e) = unit(self.blob_simple(Request::DeleteObjects { container: container.clone(), names: batch.to_vec() }).await) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn has_object(&mut self, c: Resource<Container>, name: String) -> Outcome<bool> {
        let container = self.table().get(&c)?.name.clone();
        Ok(boolean(self.blob_simple(Request::HasObject { container, name }).await))
    }

    async fn object_info(&mut self, c: Resource<Container>, name: String) -> Outcome<types::ObjectMetadata> {
        let container = self.table().get(&c)?.name.clone();
        Ok(match self.blob_simple(Request::ObjectInfo { container, name }).await {
            Ok(Reply::Object(m)) => Ok(types::ObjectMetadata { name: m.name, container: m.container, created_at: m.created_at, size: m.size }),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    async fn clear(&mut self, c: Resource<Container>) -> Outcome<()> {
        let container = self.table().get(&c)?.name.clone();
        Ok(unit(self.blob_simple(Request::Clear { container }).await))
    }

    async fn drop(&mut self, c: Resource<Container>) -> wasmtime::Result<()> {
        self.table_mut().delete(c)?;
        Ok(())
    }
}

impl State {
    /// Fetches the next page of `names` (at most [`wire::MAX_LIST_PAGE`] names).
    async fn fetch_names(&mut self, names: &mut ObjectNames) -> Result<(), String> {
        let req = Request::ListObjects { container: names.container.clone(), after: names.after.clone(), limit: wire::MAX_LIST_PAGE };
        match self.blob_simple(req).await {
            Ok(Reply::Names { names: page, done }) => {
                if let Some(last) = page.last() {
                    names.after = Some(last.clone());
                }
                // A page that brings nothing new ends the listing, whatever it says.
                names.done = done || page.is_empty();
                names.names.extend(page);
                Ok(())
            }
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        }
    }

    /// Takes up to `len` names (at most a page's worth), fetching pages as needed.
    async fn next_names(&mut self, r: &Resource<ObjectNames>, len: u64) -> Result<(Vec<String>, bool), String> {
        let want = usize::try_from(len.min(u64::from(wire::MAX_LIST_PAGE))).unwrap_or(0);
        let table_err = |e: wasmtime::component::ResourceTableError| e.to_string();
        let listing = self.table_mut().get_mut(r).map_err(table_err)?;
        let mut names =
            ObjectNames { container: listing.container.clone(), after: listing.after.take(), names: std::mem::take(&mut listing.names), done: listing.done };
        let mut outcome = Ok(());
        while names.names.len() < want && !names.done {
            outcome = self.fetch_names(&mut names).await;
            if outcome.is_err() {
                break;
            }
        }
        let taken: Vec<String> = names.names.drain(..want.min(names.names.len())).collect();
        let end = names.done && names.names.is_empty();
        let listing = self.table_mut().get_mut(r).map_err(table_err)?;
        listing.after = names.after;
        listing.names = names.names;
        listing.done = names.done;
        outcome.map(|()| (taken, end))
    }
}

impl container::HostStreamObjectNames for State {
    async fn read_stream_object_names(&mut self, r: Resource<ObjectNames>, len: u64) -> Outcome<(Vec<String>, bool)> {
        Ok(self.next_names(&r, len).await)
    }

    async fn skip_stream_object_names(&mut self, r: Resource<ObjectNames>, num: u64) -> Outcome<(u64, bool)> {
        let mut skipped = 0u64;
        loop {
            match self.next_names(&r, num - skipped).await {
                Ok((names, end)) => {
                    skipped += names.len() as u64;
                    if end || names.is_empty() || skipped >= num {
                        return Ok(Ok((skipped, end)));
                    }
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    async fn drop(&mut self, r: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table_mut().delete(r)?;
        Ok(())
    }
}

impl types::Host for State {}

impl types::HostOutgoingValue for State {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        // A duplex end closes when dropped (a simplex half does not), so the reader sees the end
        // of the data once the guest drops its stream.
        let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
        Ok(self.table_mut().push(OutgoingValue { writer: Some(writer), reader: Some(reader), stream: None, finished: None, upload: None })?)
    }

    async fn outgoing_value_write_body(&mut self, v: Resource<OutgoingValue>) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let Some(writer) = self.table_mut().get_mut(&v)?.writer.take() else { return Ok(Err(())) };
        let stream: DynOutputStream = Box::new(wasmtime_wasi::p2::pipe::AsyncWriteStream::new(WRITE_BUDGET, writer));
        let stream = self.table_mut().push(stream)?;
        self.table_mut().get_mut(&v)?.stream = Some(stream.rep());
        Ok(Ok(stream))
    }

    async fn finish(&mut self, v: Resource<OutgoingValue>) -> Outcome<()> {
        let mut value = self.table_mut().delete(v)?;
        if let Some(rep) = value.stream
            && self.table().get(&Resource::<DynOutputStream>::new_borrow(rep)).is_ok()
        {
            return Ok(Err("the outgoing-value's output-stream is still open; drop it before `finish` (its upload is cancelled)".into()));
        }
        drop(value.writer.take());
        let Some(upload) = value.upload.take() else {
            return Ok(Err("`finish` before `write-data`: nothing was stored; call `container.write-data(name, value)` first".into()));
        };
        if let Some(finished) = value.finished.take() {
            let _ = finished.send(());
        }
        let mut upload = upload;
        Ok(match (&mut upload.0).await {
            Ok(outcome) => outcome,
            Err(e) => Err(format!("the upload ended abnormally: {e}")),
        })
    }

    async fn drop(&mut self, v: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        self.table_mut().delete(v)?;
        Ok(())
    }
}

/// The body of an upload: what the guest writes into the pipe, in chunks of at most
/// [`UPLOAD_CHUNK`]. It ends well only once `finish` said so (`ended`); a pipe closed
/// without it (the value dropped, the guest stopped) ends it with an error, so the provider
/// keeps nothing.
fn upload_body(reader: tokio::io::DuplexStream, ended: tokio::sync::oneshot::Receiver<()>, what: String) -> rpc::Body {
    let failed = |what: &str, why: String| RpcError::new(RpcErrorKind::Handler, &rpc::CallInfo::default(), format!("the upload of {what} {why}"));
    futures::stream::unfold(Some((reader, ended, what)), move |state| async move {
        let (mut reader, ended, what) = state?;
        let mut buf = BytesMut::with_capacity(UPLOAD_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => match ended.await {
                Ok(()) => None,
                Err(_) => Some((Err(failed(&what, "was abandoned before `finish`".into())), None)),
            },
            Ok(_) => Some((Ok(buf.freeze()), Some((reader, ended, what)))),
            Err(e) => Some((Err(failed(&what, format!("failed: {e}"))), None)),
        }
    })
    .boxed()
}

impl types::HostIncomingValue for State {
    async fn incoming_value_consume_sync(&mut self, v: Resource<IncomingValue>) -> Outcome<Vec<u8>> {
        let mut value = self.table_mut().delete(v)?;
        if value.size > MAX_SYNC_BYTES {
            return Ok(Err(format!(
                "{} is {} bytes; incoming-value-consume-sync reads at most {MAX_SYNC_BYTES}; use incoming-value-consume-async to stream it",
                value.what, value.size
            )));
        }
        let Some(mut body) = value.body.take() else { return Ok(Err(format!("{} was already consumed", value.what))) };
        let mut out = Vec::with_capacity(usize::try_from(value.size).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) if (out.len() + chunk.len()) as u64 <= MAX_SYNC_BYTES => out.extend_from_slice(&chunk),
                Ok(_) => return Ok(Err(format!("{} grew past {MAX_SYNC_BYTES} bytes while being read; use incoming-value-consume-async", value.what))),
                Err(e) => return Ok(Err(format!("reading {} failed: {e}", value.what))),
            }
        }
        Ok(Ok(out))
    }

    async fn incoming_value_consume_async(&mut self, v: Resource<IncomingValue>) -> Outcome<Resource<DynInputStream>> {
        let mut value = self.table_mut().delete(v)?;
        let Some(body) = value.body.take() else { return Ok(Err(format!("{} was already consumed", value.what))) };
        let stream: DynInputStream = Box::new(wasmtime_wasi::p2::pipe::AsyncReadStream::new(wire::BodyReader::new(body)));
        Ok(Ok(self.table_mut().push(stream)?))
    }

    async fn size(&mut self, v: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table().get(&v)?.size)
    }

    async fn drop(&mut self, v: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table_mut().delete(v)?;
        Ok(())
    }
}
