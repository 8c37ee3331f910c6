//! The NATS JetStream object store backend: one object store per container.
//!
//! Container names are any valid name ([`crate::store::check_name`], at most
//! [`MAX_CONTAINER_BYTES`] bytes here); object store bucket names allow only `A-Z a-z 0-9 _ -`.
//! So a container's bucket is [`bucket_name`]: `BLOB_` followed by the name with every byte
//! outside `A-Z a-z 0-9 -` written `_XX` (two upper-case hex digits), e.g. `photos` →
//! `BLOB_photos`, `my_pics.2024` → `BLOB_my_5Fpics_2E2024`. The mapping is one-to-one, and
//! the prefix keeps containers apart from every other bucket (lattice state, artifacts).
//! Objects are written in 128 KiB chunks as the data arrives (one chunk in flight, each
//! acknowledged before the next); the object store publishes an object's metadata (and so
//! replaces the old one) only after its last chunk. Reads go through a pull consumer on the
//! object's chunks, [`PULL_BATCH`] chunks at a time, so a slow reader holds at most that much.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use trellis_lattice::blobstore::{BodyReader, ContainerMetadata, ObjectId, ObjectMetadata};
use trellis_lattice::rpc::{self, Body, CallInfo, RpcError, RpcErrorKind};

use crate::store::{BlobFuture, BlobStore, Page, missing};

/// The longest container name this backend takes (bytes).
pub const MAX_CONTAINER_BYTES: usize = 64;

/// The chunk size objects are stored in.
const CHUNK: usize = 128 << 10;

/// How many chunks a read asks the server for at once (at most 512 KiB in the client).
const PULL_BATCH: usize = 4;

fn read_failed(what: &str, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(RpcErrorKind::Handler, &CallInfo::default(), format!("nats backend: reading {what} failed: {e}"))
}

/// The object store bucket of container `name`.
pub fn bucket_name(name: &str) -> String {
    let mut out = String::from("BLOB_");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Containers as object stores in one JetStream domain.
pub struct NatsBlobStore {
    js: async_nats::jetstream::Context,
}

impl NatsBlobStore {
    /// Object stores reached through `js`.
    pub fn new(js: async_nats::jetstream::Context) -> Self {
        Self { js }
    }

    fn bucket(name: &str) -> Result<String, String> {
        if name.len() > MAX_CONTAINER_BYTES {
            return Err(format!("container name `{name}` is refused: the NATS object store backend takes names of at most {MAX_CONTAINER_BYTES} bytes"));
        }
        Ok(bucket_name(name))
    }

    /// The stream behind container `name`, `None` if it does not exist.
    async fn stream(&self, name: &str) -> Result<Option<async_nats::jetstream::stream::Stream>, String> {
        let bucket = Self::bucket(name)?;
        match self.js.get_stream(format!("OBJ_{bucket}")).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => match e.kind() {
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND => {
                    Ok(None)
                }
                _ => Err(format!("nats backend: container `{name}` (object store `{bucket}`): {e}")),
            },
        }
    }

    async fn store(&self, name: &str) -> Result<async_nats::jetstream::object_store::ObjectStore, String> {
        if self.stream(name).await?.is_none() {
            return Err(format!("no such container `{name}`; create it first (`create-container`)"));
        }
        let bucket = Self::bucket(name)?;
        self.js.get_object_store(&bucket).await.map_err(|e| format!("nats backend: container `{name}` (object store `{bucket}`): {e}"))
    }

    fn metadata(container: &str, info: &async_nats::jetstream::object_store::ObjectInfo) -> ObjectMetadata {
        ObjectMetadata {
            name: info.name.clone(),
            container: container.to_string(),
            created_at: info.modified.map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0)),
            size: info.size as u64,
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("nats backend: {what}: {e}")
}

impl BlobStore for NatsBlobStore {
    fn create_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            if self.stream(name).await?.is_some() {
                return Err(format!("container `{name}` already exists; open it with `get-container`"));
            }
            let bucket = Self::bucket(name)?;
            let config = async_nats::jetstream::object_store::Config {
                bucket: bucket.clone(),
                description: Some(format!("wasi:blobstore container `{name}`")),
                ..Default::default()
            };
            self.js.create_object_store(config).await.map(|_| ()).map_err(|e| failed(&format!("cannot create container `{name}` (object store `{bucket}`)"), e))
        })
    }

    fn container_exists<'a>(&'a self, name: &'a str) -> BlobFuture<'a, bool> {
        Box::pin(async move { Ok(self.stream(name).await?.is_some()) })
    }

    fn delete_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            if self.stream(name).await?.is_none() {
                return Err(format!("no such container `{name}`"));
            }
            let bucket = Self::bucket(name)?;
            self.js.delete_object_store(&bucket).await.map(|_| ()).map_err(|e| failed(&format!("cannot delete container `{name}`"), e))
        })
    }

    fn container_info<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ContainerMetadata> {
        Box::pin(async move {
            let Some(mut stream) = self.stream(name).await? else { return Err(format!("no such container `{name}`; create it first (`create-container`)")) };
            let info = stream.info().await.map_err(|e| failed(&format!("container `{name}`"), e))?;
            Ok(ContainerMetadata { name: name.to_string(), created_at: u64::try_from(info.created.unix_timestamp()).unwrap_or(0) })
        })
    }

    fn write<'a>(&'a self, container: &'a str, name: &'a str, data: Body) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            let store = self.store(container).await?;
            let meta = async_nats::jetstream::object_store::ObjectMetadata { name: name.to_string(), chunk_size: Some(CHUNK), ..Default::default() };
            let mut reader = BodyReader::new(data);
            store.put(meta, &mut reader).await.map(|_| ()).map_err(|e| {
                format!(
                    "nats backend: object `{name}` in container `{container}` was not stored (the data did not arrive whole, or the server refused it): {e}"
                )
            })
        })
    }

    fn read<'a>(&'a self, container: &'a str, name: &'a str, start: u64, len: u64) -> BlobFuture<'a, (ObjectMetadata, Body)> {
        Box::pin(async move {
            let what = format!("object `{name}` in container `{container}`");
            let store = self.store(container).await?;
            let info = match store.info(name).await {
                Ok(info) if !info.deleted => info,
                Ok(_) => return Err(missing(container, name)),
                Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => return Err(missing(container, name)),
                Err(e) => return Err(failed(&what, e)),
            };
            if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
                return Err(format!("{what} is an object store link; this backend reads only objects stored in the container itself"));
            }
            let mut meta = Self::metadata(container, &info);
            let start = start.min(meta.size);
            let len = len.min(meta.size - start);
            meta.size = len;
            if len == 0 {
                return Ok((meta, rpc::full_body(bytes::Bytes::new())));
            }
            // The object store's own reader is a push consumer, which the server feeds as fast
            // as it can whatever the reader takes: a slow reader would hold the whole object in
            // the client. A pull consumer asks for PULL_BATCH chunks at a time instead.
            let bucket = Self::bucket(container)?;
            let stream = self.js.get_stream(format!("OBJ_{bucket}")).await.map_err(|e| failed(&what, e))?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    filter_subject: format!("$O.{bucket}.C.{}", info.nuid),
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(10),
                    memory_storage: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed(&what, e))?;
            let messages = consumer.stream().max_messages_per_batch(PULL_BATCH).messages().await.map_err(|e| failed(&what, e))?;
            let body = futures::stream::unfold(Some((messages, start, len, what)), |state| async move {
                let (mut messages, mut skip, mut left, what) = state?;
                loop {
                    if left == 0 {
                        return None;
                    }
                    let chunk = match messages.next().await {
                        Some(Ok(m)) => m.payload.clone(),
                        Some(Err(e)) => return Some((Err(read_failed(&what, e)), None)),
                        None => return Some((Err(read_failed(&what, "the chunks ended early")), None)),
                    };
                    let n = chunk.len() as u64;
                    if skip >= n {
                        skip -= n;
                        continue;
                    }
                    let from = usize::try_from(skip).unwrap_or(0);
                    let to = usize::try_from((skip + left).min(n)).unwrap_or(chunk.len());
                    skip = 0;
                    left -= (to - from) as u64;
                    return Some((Ok(chunk.slice(from..to)), Some((messages, skip, left, what))));
                }
            });
            Ok((meta, body.boxed()))
        })
    }

    fn info<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, Option<ObjectMetadata>> {
        Box::pin(async move {
            let store = self.store(container).await?;
            match store.info(name).await {
                Ok(info) if !info.deleted => Ok(Some(Self::metadata(container, &info))),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => Ok(None),
                Err(e) => Err(failed(&format!("object `{name}` in container `{container}`"), e)),
            }
        })
    }

    fn list<'a>(&'a self, container: &'a str, after: Option<&'a str>, limit: usize) -> BlobFuture<'a, (Vec<String>, bool)> {
        Box::pin(async move {
            let store = self.store(container).await?;
            let mut page = Page::new(after, limit);
            let mut list = store.list().await.map_err(|e| failed(&format!("cannot list container `{container}`"), e))?;
            while let Some(info) = list.try_next().await.map_err(|e| failed(&format!("cannot list container `{container}`"), e))? {
                if !info.deleted {
                    page.offer(&info.name);
                }
            }
            Ok(page.finish())
        })
    }

    fn delete<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            let store = self.store(container).await?;
            match store.delete(name).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == async_nats::jetstream::object_store::DeleteErrorKind::NotFound => Ok(()),
                Err(e) => Err(failed(&format!("cannot delete object `{name}` in container `{container}`"), e)),
            }
        })
    }

    fn rename<'a>(&'a self, src: &'a ObjectId, dest: &'a ObjectId) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            if !self.container_exists(&dest.container).await? {
                return Err(format!("cannot move to container `{}`: no such container; create it first", dest.container));
            }
            // An object store has no rename: copy (streamed), then delete the source.
            let (_, data) = self.read(&src.container, &src.object, 0, u64::MAX).await?;
            self.write(&dest.container, &dest.object, data).await?;
            self.delete(&src.container, &src.object).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid_and_one_to_one() {
        assert_eq!(bucket_name("photos"), "BLOB_photos");
        assert_eq!(bucket_name("my_pics.2024"), "BLOB_my_5Fpics_2E2024");
        assert_eq!(bucket_name("ü"), "BLOB__C3_BC");
        // `_` itself is escaped, so an escape can never be mistaken for a name's own text.
        assert_ne!(bucket_name("a_2E"), bucket_name("a."));
        for name in ["a b", "x/y", "ü", "_", "-"] {
            assert!(bucket_name(name).bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
    }
}
