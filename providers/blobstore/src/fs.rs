//! The filesystem backend: one directory (the link's `root`) is the whole grant. A container
//! is a directory directly under it, an object a regular file directly in that.
//!
//! Nothing above or beside the root is reachable: names are one path component
//! ([`crate::store::check_name`]: no `..`, no separators, no absolute paths, no control
//! characters); a container that is a symbolic link is refused, and its canonical path must
//! be the root's child; objects are opened with `O_NOFOLLOW` (a symbolic link is refused, not
//! followed) and `O_NONBLOCK` (a FIFO cannot block the open), then must be regular files
//! (FIFOs, devices, sockets and directories are refused). Writes go to a temporary
//! `.trellis-upload-*` file in the container, flushed to disk and renamed over the object only
//! once the data has ended well, so a reader sees the old object or the new one, never part.

use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use trellis_lattice::blobstore::{ContainerMetadata, ObjectId, ObjectMetadata};
use trellis_lattice::rpc::{Body, CallInfo, RpcError, RpcErrorKind};

use crate::store::{BlobFuture, BlobStore, Page, READ_CHUNK, RESERVED_PREFIX, missing};

/// Containers and objects under one directory.
pub struct FsStore {
    root: PathBuf,
}

fn secs(t: std::io::Result<SystemTime>) -> u64 {
    t.ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

impl FsStore {
    /// The store under `root`, which must be an absolute path to an existing directory. The
    /// error names the root and what to do.
    pub fn open(root: &str) -> Result<Self, String> {
        let path = Path::new(root);
        if !path.is_absolute() {
            return Err(format!("the filesystem root `{root}` is not an absolute path; set `root` in the link's target config to an absolute directory"));
        }
        let root = std::fs::canonicalize(path).map_err(|e| format!("the filesystem root `{root}` cannot be used: {e}; create the directory or fix `root`"))?;
        if !root.is_dir() {
            return Err(format!("the filesystem root `{}` is not a directory; set `root` to a directory", root.display()));
        }
        Ok(Self { root })
    }

    /// The directory of container `name`, which must exist as a real directory under the root.
    fn container(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.root.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => Err(format!("container `{name}` is a symbolic link under the root; refused (the root is the whole grant)")),
            Ok(m) if m.is_dir() => {
                let real = std::fs::canonicalize(&path).map_err(|e| format!("container `{name}`: {e}"))?;
                if real.parent() != Some(self.root.as_path()) {
                    return Err(format!("container `{name}` resolves outside the root; refused"));
                }
                Ok(path)
            }
            Ok(_) => Err(format!("container `{name}` is not a directory under the root; refused")),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(format!("no such container `{name}`; create it first (`create-container`)")),
            Err(e) => Err(format!("container `{name}`: {e}")),
        }
    }

    /// Opens object `name` of `container` for reading: never following a symbolic link,
    /// never blocking on a FIFO, a regular file only. `Ok(None)`: it does not exist.
    fn open_object(&self, container: &str, name: &str) -> Result<Option<(std::fs::File, std::fs::Metadata)>, String> {
        let path = self.container(container)?.join(name);
        let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!("object `{name}` in container `{container}` is a symbolic link; refused (links could lead outside the root)"));
            }
            Err(e) => return Err(format!("object `{name}` in container `{container}` cannot be opened: {e}")),
        };
        let meta = file.metadata().map_err(|e| format!("object `{name}` in container `{container}`: {e}"))?;
        if !meta.is_file() {
            return Err(format!("object `{name}` in container `{container}` is not a regular file (a directory, FIFO, socket or device); refused"));
        }
        Ok(Some((file, meta)))
    }

    fn metadata(container: &str, name: &str, meta: &std::fs::Metadata) -> ObjectMetadata {
        ObjectMetadata { name: name.to_string(), container: container.to_string(), created_at: secs(meta.modified()), size: meta.len() }
    }
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("filesystem task failed: {e}"))?
}

impl FsStore {
    fn cloned(&self) -> Self {
        Self { root: self.root.clone() }
    }
}

impl BlobStore for FsStore {
    fn create_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()> {
        let (path, name) = (self.root.join(name), name.to_string());
        Box::pin(blocking(move || match std::fs::create_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(format!("container `{name}` already exists; open it with `get-container`")),
            Err(e) => Err(format!("cannot create container `{name}`: {e}")),
        }))
    }

    fn container_exists<'a>(&'a self, name: &'a str) -> BlobFuture<'a, bool> {
        let (me, name) = (self.cloned(), name.to_string());
        Box::pin(blocking(move || match std::fs::symlink_metadata(me.root.join(&name)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            _ => me.container(&name).map(|_| true),
        }))
    }

    fn delete_container<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ()> {
        let (me, name) = (self.cloned(), name.to_string());
        Box::pin(blocking(move || {
            let dir = me.container(&name)?;
            // remove_dir_all does not follow symbolic links inside.
            std::fs::remove_dir_all(dir).map_err(|e| format!("cannot delete container `{name}`: {e}"))
        }))
    }

    fn container_info<'a>(&'a self, name: &'a str) -> BlobFuture<'a, ContainerMetadata> {
        let (me, name) = (self.cloned(), name.to_string());
        Box::pin(blocking(move || {
            let meta = std::fs::metadata(me.container(&name)?).map_err(|e| format!("container `{name}`: {e}"))?;
            Ok(ContainerMetadata { name, created_at: secs(meta.created().or_else(|_| meta.modified())) })
        }))
    }

    fn write<'a>(&'a self, container: &'a str, name: &'a str, mut data: Body) -> BlobFuture<'a, ()> {
        Box::pin(async move {
            let what = format!("object `{name}` in container `{container}`");
            let me = self.cloned();
            let c = container.to_string();
            let dir = blocking(move || me.container(&c)).await?;
            let temp = dir.join(format!("{RESERVED_PREFIX}upload-{}", uuid::Uuid::new_v4().simple()));
            let target = dir.join(name);
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)
                .await
                .map_err(|e| format!("cannot write {what}: {e}"))?;
            let written: Result<(), String> = async {
                let mut file = file;
                while let Some(chunk) = data.next().await {
                    let chunk = chunk.map_err(|e| format!("the data of {what} did not arrive whole ({e}); nothing was stored"))?;
                    file.write_all(&chunk).await.map_err(|e| format!("cannot write {what}: {e}"))?;
                }
                file.sync_data().await.map_err(|e| format!("cannot write {what}: {e}"))?;
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err(format!("cannot write {what}: a directory has that name; refused"));
                }
                tokio::fs::rename(&temp, &target).await.map_err(|e| format!("cannot write {what}: {e}"))
            }
            .await;
            if written.is_err() {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            written
        })
    }

    fn read<'a>(&'a self, container: &'a str, name: &'a str, start: u64, len: u64) -> BlobFuture<'a, (ObjectMetadata, Body)> {
        let (me, c, n) = (self.cloned(), container.to_string(), name.to_string());
        Box::pin(async move {
            let (file, meta) = blocking(move || me.open_object(&c, &n)?.ok_or_else(|| missing(&c, &n))).await?;
            let size = meta.len();
            let start = start.min(size);
            let len = len.min(size - start);
            let mut file = tokio::fs::File::from_std(file);
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| format!("object `{name}` in container `{container}`: {e}"))?;
            let mut info = Self::metadata(container, name, &meta);
            info.size = len;
            let what = format!("object `{name}` in container `{container}`");
            let body = futures::stream::unfold(Some((file.take(len), what)), |state| async move {
                let (mut file, what) = state?;
                let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
                match file.read_buf(&mut buf).await {
                    Ok(0) => None,
                    Ok(_) => Some((Ok(buf.freeze()), Some((file, what)))),
                    Err(e) => Some((Err(RpcError::new(RpcErrorKind::Handler, &CallInfo::default(), format!("reading {what} failed: {e}"))), None)),
                }
            });
            Ok((info, body.boxed()))
        })
    }

    fn info<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, Option<ObjectMetadata>> {
        let (me, c, n) = (self.cloned(), container.to_string(), name.to_string());
        Box::pin(blocking(move || Ok(me.open_object(&c, &n)?.map(|(_, meta)| Self::metadata(&c, &n, &meta)))))
    }

    fn list<'a>(&'a self, container: &'a str, after: Option<&'a str>, limit: usize) -> BlobFuture<'a, (Vec<String>, bool)> {
        let (me, c, after) = (self.cloned(), container.to_string(), after.map(str::to_string));
        Box::pin(blocking(move || {
            let dir = me.container(&c)?;
            let mut page = Page::new(after.as_deref(), limit);
            for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list container `{c}`: {e}"))? {
                let entry = entry.map_err(|e| format!("cannot list container `{c}`: {e}"))?;
                // Regular files only (the file type of the entry itself: links are not followed).
                if !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                if let Some(name) = entry.file_name().to_str()
                    && !name.starts_with(RESERVED_PREFIX)
                {
                    page.offer(name);
                }
            }
            Ok(page.finish())
        }))
    }

    fn delete<'a>(&'a self, container: &'a str, name: &'a str) -> BlobFuture<'a, ()> {
        let (me, c, n) = (self.cloned(), container.to_string(), name.to_string());
        Box::pin(blocking(move || {
            let path = me.container(&c)?.join(&n);
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Ok(m) if m.is_dir() => Err(format!("object `{n}` in container `{c}` is a directory; refused")),
                // A link or a FIFO is removed itself; nothing it points to is touched.
                _ => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => Err(format!("cannot delete object `{n}` in container `{c}`: {e}")),
                    _ => Ok(()),
                },
            }
        }))
    }

    fn rename<'a>(&'a self, src: &'a ObjectId, dest: &'a ObjectId) -> BlobFuture<'a, ()> {
        let (me, src, dest) = (self.cloned(), src.clone(), dest.clone());
        Box::pin(blocking(move || {
            if me.open_object(&src.container, &src.object)?.is_none() {
                return Err(missing(&src.container, &src.object));
            }
            let to_dir = me.container(&dest.container).map_err(|e| format!("cannot move to container `{}`: {e}", dest.container))?;
            let target = to_dir.join(&dest.object);
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                return Err(format!("cannot move to object `{}` in container `{}`: a directory has that name", dest.object, dest.container));
            }
            let from = me.container(&src.container)?.join(&src.object);
            std::fs::rename(from, target)
                .map_err(|e| format!("cannot move object `{}` of container `{}` to `{}` in `{}`: {e}", src.object, src.container, dest.object, dest.container))
        }))
    }
}
