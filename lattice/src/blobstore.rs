//! `wasi:blobstore@0.2.0-draft` on the data plane.
//!
//! Every blobstore operation a component makes is one linked call under the interface
//! [`INTERFACE`] (`wasi:blobstore/blobstore`, the interface a component's link names) whose
//! function is [`Request::function`]. The head is a MessagePack [`Request`]; the reply head a
//! MessagePack [`Outcome`]. Object data never travels in a head: `write-data` sends it as the
//! call's *body* and `get-data` answers it as the reply's body, both streamed in bounded
//! chunks by [`crate::rpc`], so no side holds a whole object.
//!
//! The resources of the WIT (`container`, `incoming-value`, `outgoing-value`,
//! `stream-object-names`) stay in the caller's store; on the wire a container is its name.
//! Listing is paged: [`Request::ListObjects`] asks for at most [`MAX_LIST_PAGE`] names after a
//! cursor (the last name of the previous page, names in byte order).

use serde::{Deserialize, Serialize};

use crate::Error;

/// The interface every blobstore call travels under (no version).
pub const INTERFACE: &str = "wasi:blobstore/blobstore";

/// The most names one [`Request::ListObjects`] returns (a larger `limit` is lowered to it).
pub const MAX_LIST_PAGE: u32 = 1000;

/// The most names one [`Request::DeleteObjects`] carries.
pub const MAX_DELETE_BATCH: usize = 1000;

/// An object in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    /// The container's name.
    pub container: String,
    /// The object's name.
    pub object: String,
}

/// One blobstore operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `create-container`: an error if it exists.
    CreateContainer {
        /// The container.
        name: String,
    },
    /// `get-container`: an error if it does not exist.
    GetContainer {
        /// The container.
        name: String,
    },
    /// `delete-container`, with every object in it.
    DeleteContainer {
        /// The container.
        name: String,
    },
    /// `container-exists`
    ContainerExists {
        /// The container.
        name: String,
    },
    /// `copy-object`: the destination container must exist; the destination is replaced.
    CopyObject {
        /// From.
        src: ObjectId,
        /// To.
        dest: ObjectId,
    },
    /// `move-object`: as copy, then the source is gone.
    MoveObject {
        /// From.
        src: ObjectId,
        /// To.
        dest: ObjectId,
    },
    /// `container.info`
    ContainerInfo {
        /// The container.
        container: String,
    },
    /// `container.get-data`: bytes `start..=end` (clamped to the object's size) as the reply body.
    GetData {
        /// The container.
        container: String,
        /// The object.
        name: String,
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// `container.write-data`: the call's body is the object's data; it replaces the object
    /// only once the body has ended well.
    WriteData {
        /// The container.
        container: String,
        /// The object.
        name: String,
    },
    /// `container.list-objects` / `stream-object-names`: one page of names.
    ListObjects {
        /// The container.
        container: String,
        /// Names after this one (byte order); `None`: from the first.
        after: Option<String>,
        /// At most this many (at most [`MAX_LIST_PAGE`]).
        limit: u32,
    },
    /// `container.delete-object` (a missing object is not an error)
    DeleteObject {
        /// The container.
        container: String,
        /// The object.
        name: String,
    },
    /// `container.delete-objects`
    DeleteObjects {
        /// The container.
        container: String,
        /// The objects (at most [`MAX_DELETE_BATCH`]).
        names: Vec<String>,
    },
    /// `container.has-object`
    HasObject {
        /// The container.
        container: String,
        /// The object.
        name: String,
    },
    /// `container.object-info`
    ObjectInfo {
        /// The container.
        container: String,
        /// The object.
        name: String,
    },
    /// `container.clear`
    Clear {
        /// The container.
        container: String,
    },
}

impl Request {
    /// The function name the call travels under.
    pub fn function(&self) -> &'static str {
        match self {
            Self::CreateContainer { .. } => "create-container",
            Self::GetContainer { .. } => "get-container",
            Self::DeleteContainer { .. } => "delete-container",
            Self::ContainerExists { .. } => "container-exists",
            Self::CopyObject { .. } => "copy-object",
            Self::MoveObject { .. } => "move-object",
            Self::ContainerInfo { .. } => "container.info",
            Self::GetData { .. } => "container.get-data",
            Self::WriteData { .. } => "container.write-data",
            Self::ListObjects { .. } => "container.list-objects",
            Self::DeleteObject { .. } => "container.delete-object",
            Self::DeleteObjects { .. } => "container.delete-objects",
            Self::HasObject { .. } => "container.has-object",
            Self::ObjectInfo { .. } => "container.object-info",
            Self::Clear { .. } => "container.clear",
        }
    }

    /// The head of the call.
    pub fn encode(&self) -> bytes::Bytes {
        crate::rpc::encode_head(self)
    }

    /// Reads a call's head.
    pub fn decode(head: &[u8]) -> Result<Self, Error> {
        crate::rpc::decode(head)
    }
}

/// `container-metadata`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// The container's name.
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// `object-metadata`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMetadata {
    /// The object's name.
    pub name: String,
    /// Its container.
    pub container: String,
    /// Seconds since the Unix epoch (the last write: objects are replaced whole).
    pub created_at: u64,
    /// Bytes.
    pub size: u64,
}

/// What a [`Request`] returns when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// create, get, delete, copy, move, write, delete-object(s), clear
    Unit,
    /// `container-exists`, `has-object`
    Bool(bool),
    /// `container.info`
    Container(ContainerMetadata),
    /// `object-info`; `get-data` (its data follows as the reply body, `size` bytes of it
    /// being the whole object's size).
    Object(ObjectMetadata),
    /// A page of names; `done`: no names after these.
    Names {
        /// The names, in byte order.
        names: Vec<String>,
        /// Whether this was the last page.
        done: bool,
    },
}

/// A call's outcome: the WIT `result<…, error>` (`error` is a string naming the container or
/// object and what to do).
pub type Outcome = Result<Reply, String>;

/// The head of a reply.
pub fn encode_outcome(outcome: &Outcome) -> bytes::Bytes {
    crate::rpc::encode_head(outcome)
}

/// Reads a reply's head.
pub fn decode_outcome(head: &[u8]) -> Result<Outcome, Error> {
    crate::rpc::decode(head)
}

/// Reads a data-plane body as a byte stream (`tokio::io::AsyncRead`), one chunk at a time:
/// memory stays at the chunk being read. A body that fails reads as an I/O error.
pub struct BodyReader {
    body: crate::rpc::Body,
    chunk: bytes::Bytes,
}

impl BodyReader {
    /// Reads `body`.
    pub fn new(body: crate::rpc::Body) -> Self {
        Self { body, chunk: bytes::Bytes::new() }
    }
}

impl tokio::io::AsyncRead for BodyReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use futures::StreamExt as _;
        loop {
            if !self.chunk.is_empty() {
                let n = buf.remaining().min(self.chunk.len());
                let part = self.chunk.split_to(n);
                buf.put_slice(&part);
                return std::task::Poll::Ready(Ok(()));
            }
            match std::task::ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return std::task::Poll::Ready(Err(std::io::Error::other(e.to_string()))),
                None => return std::task::Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_outcomes_round_trip() {
        let reqs = [
            Request::WriteData { container: "c".into(), name: "o".into() },
            Request::ListObjects { container: "c".into(), after: Some("a".into()), limit: 10 },
            Request::CopyObject { src: ObjectId { container: "a".into(), object: "x".into() }, dest: ObjectId { container: "b".into(), object: "y".into() } },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let outcomes: [Outcome; 2] = [Ok(Reply::Names { names: vec!["a".into()], done: true }), Err("no such container `c`".into())];
        for o in outcomes {
            assert_eq!(decode_outcome(&encode_outcome(&o)).unwrap(), o);
        }
        assert!(Request::decode(b"\xc1").is_err());
    }
}
