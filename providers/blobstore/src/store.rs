//! The one trait every backend implements, the name rules they share, and the WIT glue
//! ([`execute`]) written once over the trait.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::future::BoxFuture;
use trellis_lattice::blobstore::{ContainerMetadata, MAX_DELETE_BATCH, MAX_LIST_PAGE, ObjectId, ObjectMetadata, Outcome, Reply, Request};
use trellis_lattice::rpc::{self, Body};

/// What a backend operation returns: the value or the WIT `error` text.
pub type BlobFuture<'a, T> = BoxFuture<'a, Result<T, String>>;

/// The longest container or object name (bytes): one file name on common filesystems.
pub const MAX_NAME_BYTES: usize = 255;

/// Names starting with this are the filesystem backend's uploads in progress; refused as
/// object names on every backend, so the two agree.
pub const RESERVED_PREFIX: &str = ".trellis-";

/// How many bytes one chunk of object data read from a backend holds.
pub const READ_CHUNK: usize = 256 << 10;

/// A place that keeps containers of objects.
pub trait BlobStore: Send + Sync + 'static {
    /// Makes an empty container; an error if it exists.
    fn create_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()>;
    /// Whether the container exists.
    fn container_exists<'a>(&'a self, name: &'a str) -> BlobFuture<'a, bool>;
    /// Removes the container and everything in it; an error if it does not exist.
    fn delete_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()>;
    /// The container's metadata; an error if it does not exist.
    fn container_info<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ContainerMetadata>;
    /// Stores `data` as the object, replacing any, only once `data` has ended well.
    fn write<'a>(&'a self, container: &'a str, name: &'a str, data: Body) -> BlobFuture<'a, ()>;
    /// Bytes `start..start + len` of the object (fewer at its end), and its metadata.
    fn read<'a>(&'a self, container: &'a str, name: &'a str, start: u64, len: u64) -> BlobFuture<'a, (ObjectMetadata, Body)>;
    /// The object's metadata, `None` if it does not exist.
    fn info<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, Option<ObjectMetadata>>;
    /// Up to `limit` names after `after`, in byte order, and whether none follow them.
    fn list<'a>(&'a self, container: &'a str, after: Option<&'a str>, limit: usize) -> BlobFuture<'a, (Vec<String>, bool)>;
    /// Removes the object; a missing one is not an error.
    fn delete<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, ()>;
    /// Moves the object (same or another container), replacing the destination.
    fn rename<'a>(&'a self, src: &'a ObjectId, dest: &'a ObjectId) -> BlobFuture<'a, ()>;
}

/// Checks a container or object name: one path component of 1 to [`MAX_NAME_BYTES`] bytes,
/// not `.` or `..`, without `/`, `\` or control characters (NUL included), and (objects) not
/// starting with [`RESERVED_PREFIX`]. The error says what is wrong and what is allowed.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is longer than 255 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` name directories, not objects")
    } else if name.starts_with('/') {
        Some("it is an absolute path")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if kind == "object" && name.starts_with(RESERVED_PREFIX) {
        Some("names starting with `.trellis-` are reserved for uploads in progress")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "{kind} name `{}` is refused: {why}; a name is one path component (1 to 255 bytes, no `/`, `\\`, `.`, `..` or control characters)",
            name.escape_debug()
        )),
    }
}

/// Keeps the `limit` smallest names after `after` of those offered, in bounded memory
/// (`limit + 1` names), for listings that cannot ask their backend for a sorted page.
pub struct Page {
    after: Option<String>,
    limit: usize,
    names: BTreeSet<String>,
}

impl Page {
    /// An empty page.
    pub fn new(after: Option<&str>, limit: usize) -> Self {
        Self { after: after.map(str::to_string), limit, names: BTreeSet::new() }
    }

    /// Offers one name.
    pub fn offer(&mut self, name: &str) {
        if self.after.as_deref().is_some_and(|a| name <= a) {
            return;
        }
        if self.names.len() > self.limit && self.names.last().is_some_and(|last| name >= last.as_str()) {
            return;
        }
        self.names.insert(name.to_string());
        if self.names.len() > self.limit + 1 {
            self.names.pop_last();
        }
    }

    /// The page, and whether no names follow it.
    pub fn finish(mut self) -> (Vec<String>, bool) {
        let done = self.names.len() <= self.limit;
        if !done {
            self.names.pop_last();
        }
        (self.names.into_iter().collect(), done)
    }
}

fn check_object(container: &str, name: &str) -> Result<(), String> {
    check_name("container", container)?;
    check_name("object", name)
}

/// Runs `req` (with the call's `body`, the data of `write-data`) on `store`: the outcome for
/// the reply head and the reply body (the data of `get-data`).
pub async fn execute(store: &dyn BlobStore, req: Request, body: Body) -> (Outcome, Body) {
    let empty = || rpc::full_body(Bytes::new());
    let outcome = match req {
        Request::GetData { container, name, start, end } => {
            if let Err(e) = check_object(&container, &name) {
                return (Err(e), empty());
            }
            let len = if end < start { 0 } else { (end - start).saturating_add(1) };
            return match store.read(&container, &name, start, len).await {
                Ok((meta, data)) => (Ok(Reply::Object(meta)), data),
                Err(e) => (Err(e), empty()),
            };
        }
        Request::WriteData { container, name } => match check_object(&container, &name) {
            Ok(()) => store.write(&container, &name, body).await.map(|()| Reply::Unit),
            Err(e) => Err(e),
        },
        other => simple(store, other).await,
    };
    (outcome, empty())
}

async fn simple(store: &dyn BlobStore, req: Request) -> Outcome {
    match req {
        Request::CreateContainer { name } => {
            check_name("container", &name)?;
            store.create_container(&name).await.map(|()| Reply::Unit)
        }
        Request::GetContainer { name } => {
            check_name("container", &name)?;
            if store.container_exists(&name).await? {
                Ok(Reply::Unit)
            } else {
                Err(format!("no such container `{name}`; create it first (`create-container`)"))
            }
        }
        Request::DeleteContainer { name } => {
            check_name("container", &name)?;
            store.delete_container(&name).await.map(|()| Reply::Unit)
        }
        Request::ContainerExists { name } => {
            check_name("container", &name)?;
            store.container_exists(&name).await.map(Reply::Bool)
        }
        Request::ContainerInfo { container } => {
            check_name("container", &container)?;
            store.container_info(&container).await.map(Reply::Container)
        }
        Request::CopyObject { src, dest } => {
            check_object(&src.container, &src.object)?;
            check_object(&dest.container, &dest.object)?;
            copy(store, &src, &dest).await.map(|()| Reply::Unit)
        }
        Request::MoveObject { src, dest } => {
            check_object(&src.container, &src.object)?;
            check_object(&dest.container, &dest.object)?;
            if src == dest {
                return match store.info(&src.container, &src.object).await? {
                    Some(_) => Ok(Reply::Unit),
                    None => Err(missing(&src.container, &src.object)),
                };
            }
            store.rename(&src, &dest).await.map(|()| Reply::Unit)
        }
        Request::ListObjects { container, after, limit } => {
            check_name("container", &container)?;
            let limit = usize::try_from(limit.clamp(1, MAX_LIST_PAGE)).unwrap_or(1);
            let (names, done) = store.list(&container, after.as_deref(), limit).await?;
            Ok(Reply::Names { names, done })
        }
        Request::DeleteObject { container, name } => {
            check_object(&container, &name)?;
            store.delete(&container, &name).await.map(|()| Reply::Unit)
        }
        Request::DeleteObjects { container, names } => {
            if names.len() > MAX_DELETE_BATCH {
                return Err(format!("delete-objects carries {} names; at most {MAX_DELETE_BATCH} travel in one call", names.len()));
            }
            for name in &names {
                check_object(&container, name)?;
            }
            for name in &names {
                store.delete(&container, name).await?;
            }
            Ok(Reply::Unit)
        }
        Request::HasObject { container, name } => {
            check_object(&container, &name)?;
            store.info(&container, &name).await.map(|m| Reply::Bool(m.is_some()))
        }
        Request::ObjectInfo { container, name } => {
            check_object(&container, &name)?;
            match store.info(&container, &name).await? {
                Some(m) => Ok(Reply::Object(m)),
                None => Err(missing(&container, &name)),
            }
        }
        Request::Clear { container } => {
            check_name("container", &container)?;
            clear(store, &container).await.map(|()| Reply::Unit)
        }
        Request::GetData { .. } | Request::WriteData { .. } => Err("a data call reached the wrong path in the blobstore provider".into()),
    }
}

/// "no such object": which, where, and what to check.
pub fn missing(container: &str, name: &str) -> String {
    format!("no object `{name}` in container `{container}`; check the name, or list the container (`list-objects`)")
}

/// Copies through the trait: the source's data streamed into the destination.
async fn copy(store: &dyn BlobStore, src: &ObjectId, dest: &ObjectId) -> Result<(), String> {
    if !store.container_exists(&dest.container).await? {
        return Err(format!("cannot copy to container `{}`: no such container; create it first", dest.container));
    }
    if src == dest {
        return store.info(&src.container, &src.object).await?.map(|_| ()).ok_or_else(|| missing(&src.container, &src.object));
    }
    let (_, data) = store.read(&src.container, &src.object, 0, u64::MAX).await?;
    store.write(&dest.container, &dest.object, data).await
}

/// Deletes every object of `container`, a page at a time.
async fn clear(store: &dyn BlobStore, container: &str) -> Result<(), String> {
    loop {
        let (names, done) = store.list(container, None, MAX_LIST_PAGE as usize).await?;
        for name in &names {
            store.delete(container, name).await?;
        }
        if done || names.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_component() {
        for good in ["a", "photo.jpg", "with space", "ünïcode", ".hidden", "a..b"] {
            check_name("object", good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("..", "`..`"),
            (".", "`.`"),
            ("/etc/passwd", "absolute"),
            ("../x", "separator"),
            ("a/b", "separator"),
            ("a\\b", "separator"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            (".trellis-upload-1", "reserved"),
        ] {
            let e = check_name("object", bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_name("object", &"x".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn a_page_keeps_the_smallest_names_after_the_cursor() {
        let mut page = Page::new(Some("b"), 2);
        for n in ["e", "a", "d", "b", "c", "f"] {
            page.offer(n);
        }
        assert_eq!(page.finish(), (vec!["c".to_string(), "d".to_string()], false));
        let mut page = Page::new(None, 5);
        for n in ["b", "a"] {
            page.offer(n);
        }
        assert_eq!(page.finish(), (vec!["a".to_string(), "b".to_string()], true));
    }
}
