//! Blobstore end to end: `examples/http-blobstore` behind the http-server provider, linked to
//! the blobstore provider, on the filesystem backend (a root in a temp dir) and on the NATS
//! object store backend (the test's own nats-server with JetStream). Upload, download, list,
//! copy, move, delete, containers, errors as values, path escapes, and a 100 MB round trip
//! through a `trellis-host` process whose peak memory is read from /proc.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use trellis_host::Host;
use trellis_lattice::ctl::*;
use trellis_tests::components::http_blobstore;
use trellis_tests::hosts::{ProcessHost, start_host};
use trellis_tests::http::{Reply, free_addr, get_until, request};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

const TIMEOUT: Duration = Duration::from_secs(30);

/// One host running the http-server and blobstore providers (built in) and the example.
struct Setup {
    l: Lattice,
    host: Host,
}

async fn setup() -> Setup {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    l.start_provider(&host, "blobstore", "builtin://blobstore", &[]).await;
    Setup { l, host }
}

impl Setup {
    /// Starts the example as `id`, serves it at a fresh address and links it to the
    /// blobstore provider with target config `cfg` (none: no blobstore link at all).
    async fn files(&mut self, id: &str, cfg: Option<&[(&str, &str)]>) -> SocketAddr {
        let host = self.host.clone();
        self.l.start_component(&host, id, http_blobstore(), 4, None).await;
        let addr = free_addr().unwrap();
        self.l.link("http", id, &format!("{id}-addr"), &[("address", &addr.to_string())]).await;
        if let Some(cfg) = cfg {
            blob_link(&self.l, id, cfg).await;
        }
        // The listener is up once any answer comes (the root path is a 400 of the example's).
        get_until(addr, "/", 400, WAIT).await.unwrap();
        addr
    }
}

async fn blob_link(l: &Lattice, id: &str, cfg: &[(&str, &str)]) {
    let name = format!("{id}-blobs");
    l.put_config(&name, cfg).await;
    l.ctl
        .put_link(&Link {
            source_id: id.into(),
            target: "blobstore".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "blobstore".into(),
            interfaces: vec!["blobstore".into()],
            source_config: vec![],
            target_config: vec![name],
        })
        .await
        .unwrap();
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    request(addr, method, path, Bytes::copy_from_slice(body), TIMEOUT).await.unwrap()
}

/// Asserts `method path` answers `status` with a body containing `text`.
async fn expect(addr: SocketAddr, method: &str, path: &str, body: &[u8], status: u16, text: &str) -> Reply {
    let r = call(addr, method, path, body).await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    assert!(r.text().contains(text), "{method} {path}: expected `{text}` in {:?}", r.text());
    r
}

/// What every backend must do, as a user of the example sees it.
async fn behaves_like_a_blobstore(addr: SocketAddr) {
    // Containers.
    expect(addr, "GET", "/photos?exists", b"", 200, "false").await;
    expect(addr, "PUT", "/photos", b"", 200, "created container photos").await;
    expect(addr, "GET", "/photos?exists", b"", 200, "true").await;
    expect(addr, "PUT", "/photos", b"", 500, "already exists").await;
    expect(addr, "GET", "/photos?info", b"", 200, "photos created-at=").await;
    expect(addr, "GET", "/photos", b"", 200, "").await;

    // Upload (streamed after write-data, and written before it), download, list.
    let cat: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    expect(addr, "PUT", "/photos/cat.jpg", &cat, 200, "stored 300000 bytes").await;
    expect(addr, "PUT", "/photos/dog.txt?write-first", b"woof", 200, "stored 4 bytes").await;
    let got = call(addr, "GET", "/photos/cat.jpg", b"").await;
    assert_eq!(got.status, 200);
    assert!(got.body == cat, "the download is the upload ({} bytes back)", got.body.len());
    expect(addr, "GET", "/photos/dog.txt?sync", b"", 200, "woof").await;
    expect(addr, "GET", "/photos/dog.txt?range=1-2", b"", 200, "oo").await;
    expect(addr, "GET", "/photos/cat.jpg?info", b"", 200, "cat.jpg in photos size=300000").await;
    assert_eq!(call(addr, "GET", "/photos", b"").await.text(), "cat.jpg\ndog.txt\n");
    // Replacing an object replaces it whole.
    expect(addr, "PUT", "/photos/dog.txt", b"bark", 200, "stored 4 bytes").await;
    expect(addr, "GET", "/photos/dog.txt?sync", b"", 200, "bark").await;

    // Copy and move, within and across containers.
    expect(addr, "PUT", "/archive", b"", 200, "created").await;
    expect(addr, "POST", "/photos/dog.txt?copy-to=archive/dog-copy.txt", b"", 200, "copied").await;
    expect(addr, "POST", "/photos/cat.jpg?move-to=archive/cat.jpg", b"", 200, "moved").await;
    assert_eq!(call(addr, "GET", "/photos", b"").await.text(), "dog.txt\n");
    assert_eq!(call(addr, "GET", "/archive", b"").await.text(), "cat.jpg\ndog-copy.txt\n");
    let moved = call(addr, "GET", "/archive/cat.jpg", b"").await;
    assert!(moved.body == cat, "the moved object is whole");
    expect(addr, "POST", "/photos/dog.txt?copy-to=nowhere/x", b"", 404, "container `nowhere`").await;

    // Errors are values: a missing object or container is a clear error, and the host goes on.
    expect(addr, "GET", "/photos/cat.jpg?info", b"", 404, "no object `cat.jpg` in container `photos`").await;
    expect(addr, "GET", "/photos/cat.jpg", b"", 404, "no object cat.jpg").await;
    expect(addr, "GET", "/ghosts", b"", 404, "no such container `ghosts`").await;
    expect(addr, "PUT", "/bad/..", b"x", 400, "object name `..` is refused").await;

    // Delete objects (a missing one is fine) and containers.
    expect(addr, "DELETE", "/photos/dog.txt", b"", 200, "deleted").await;
    expect(addr, "DELETE", "/photos/dog.txt", b"", 200, "deleted").await;
    expect(addr, "GET", "/photos", b"", 200, "").await;
    assert_eq!(call(addr, "GET", "/photos", b"").await.text(), "");
    expect(addr, "DELETE", "/archive", b"", 200, "deleted container").await;
    expect(addr, "GET", "/archive?exists", b"", 200, "false").await;
    expect(addr, "GET", "/photos/dog.txt?sync", b"", 404, "no object").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_on_the_filesystem_backend() {
    let root = tempfile::tempdir().unwrap();
    let mut s = setup().await;
    let addr = s.files("files", Some(&[("root", root.path().to_str().unwrap())])).await;
    behaves_like_a_blobstore(addr).await;
    // What the backend keeps is plain files under the root, and nothing else.
    expect(addr, "PUT", "/photos/on-disk.txt", b"hello disk", 200, "stored").await;
    assert_eq!(std::fs::read(root.path().join("photos").join("on-disk.txt")).unwrap(), b"hello disk");
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("photos")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("on-disk.txt")], "no upload temp files stay behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_on_the_object_store_backend() {
    let mut s = setup().await;
    let addr = s.files("files", Some(&[("backend", "nats")])).await;
    behaves_like_a_blobstore(addr).await;
    // Containers are object stores, named as documented.
    expect(addr, "PUT", "/my_pics/x.txt", b"in nats", 200, "stored").await;
    let js = async_nats::jetstream::new(s.l.client());
    let store = js.get_object_store("BLOB_my_5Fpics").await.unwrap();
    let mut object = store.get("x.txt").await.unwrap();
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut data).await.unwrap();
    assert_eq!(data, b"in nats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_link_every_call_is_an_error_naming_the_link_to_add() {
    let mut s = setup().await;
    let addr = s.files("unlinked", None).await;
    expect(addr, "GET", "/photos?exists", b"", 500, "no link from component `unlinked` for `wasi:blobstore/blobstore`").await;
    let r = expect(addr, "PUT", "/photos/a.txt?write-first", b"data", 500, "wash link put unlinked <target> wasi blobstore --interface blobstore").await;
    assert!(!r.text().contains("panic"), "{}", r.text());
    // A link whose settings are wrong is an error value too, naming the key.
    blob_link(&s.l, "unlinked", &[("backend", "fs")]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = call(addr, "GET", "/photos?exists", b"").await;
        if r.text().contains("no `root` is set") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the link's settings error never came: {}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes a FIFO (`mkfifo`, coreutils).
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_root_is_reachable() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"TOP SECRET").unwrap();
    let mut s = setup().await;
    let grant = root.path().join("grant");
    std::fs::create_dir(&grant).unwrap();
    std::fs::write(root.path().join("beside.txt"), b"NOT GRANTED").unwrap();
    let addr = s.files("files", Some(&[("root", grant.to_str().unwrap())])).await;
    expect(addr, "PUT", "/box", b"", 200, "created").await;
    expect(addr, "PUT", "/box/ok.txt", b"fine", 200, "stored").await;

    // `..`, absolute paths, separators: refused before any file is touched.
    expect(addr, "GET", "/box/..", b"", 400, "object name `..` is refused").await;
    expect(addr, "GET", "/../beside.txt", b"", 400, "container name `..` is refused").await;
    expect(addr, "GET", "/box//etc/passwd", b"", 400, "is an absolute path").await;
    expect(addr, "PUT", "/box/..", b"x", 400, "refused").await;
    // Refused while the guest is still streaming (past the host's 1 MiB pipe): the guest's
    // stream closes and `finish` gives the provider's reason.
    expect(addr, "PUT", "/box/..", &vec![0u8; 3 << 20], 400, "object name `..` is refused").await;
    expect(addr, "POST", "/box/ok.txt?copy-to=../stolen.txt", b"", 400, "refused").await;
    expect(addr, "PUT", "/..", b"", 400, "container name `..` is refused").await;
    assert!(!root.path().join("stolen.txt").exists());

    // A symbolic link in the root, to a file or a directory outside: refused, never followed.
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), grant.join("box").join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), grant.join("elsewhere")).unwrap();
    let r = expect(addr, "GET", "/box/link.txt", b"", 400, "is a symbolic link; refused").await;
    assert!(!r.text().contains("TOP SECRET"));
    expect(addr, "GET", "/box/link.txt?info", b"", 400, "symbolic link").await;
    expect(addr, "GET", "/elsewhere/secret.txt", b"", 400, "container `elsewhere` is a symbolic link").await;
    expect(addr, "GET", "/elsewhere", b"", 400, "symbolic link").await;
    expect(addr, "PUT", "/elsewhere/new.txt", b"x", 400, "symbolic link").await;
    expect(addr, "DELETE", "/elsewhere", b"", 400, "symbolic link").await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "nothing was written or deleted outside the root");
    assert_eq!(std::fs::read(outside.path().join("secret.txt")).unwrap(), b"TOP SECRET");
    // The listing shows regular files only.
    assert_eq!(call(addr, "GET", "/box", b"").await.text(), "ok.txt\n");

    // A FIFO in the root: refused at once, never blocking a read (no writer will ever come).
    mkfifo(&grant.join("box").join("pipe"));
    let started = std::time::Instant::now();
    expect(addr, "GET", "/box/pipe", b"", 400, "not a regular file").await;
    expect(addr, "GET", "/box/pipe?sync", b"", 400, "not a regular file").await;
    assert!(started.elapsed() < Duration::from_secs(5), "the FIFO was refused without waiting ({:?})", started.elapsed());
    // And the host goes on serving.
    expect(addr, "GET", "/box/ok.txt?sync", b"", 200, "fine").await;
}

/// Peak resident memory of process `pid` (VmHWM, bytes).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Streams `GET path` and returns (bytes, a checksum), holding one chunk at a time.
async fn download(addr: SocketAddr, path: &str) -> (u16, u64, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder().uri(path).header(http::header::HOST, addr.to_string()).body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req)).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(frame) = tokio::time::timeout(TIMEOUT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            for b in data.iter() {
                sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
            }
            len += data.len() as u64;
        }
    }
    (status, len, sum)
}

/// A body of `len` bytes with a pattern that a shifted or truncated copy does not match.
pub fn pattern(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i.wrapping_mul(7) ^ (i >> 11)) as u8).collect::<Vec<u8>>())
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

/// A 100 MiB object up and down through a `trellis-host` process (http-server and blobstore
/// built in, so the data passes through the host's memory twice each way), link target config
/// `cfg`; the host's peak memory may grow by much less than the object.
async fn round_trip_100_mib(cfg: &[(&str, &str)], stored: impl Fn() -> Option<u64>) {
    const SIZE: usize = 100 << 20;
    let nats = NatsServer::start().await.unwrap();
    let host = ProcessHost::start(&nats.url(), &["--max-execution-time-ms", "300000"]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider_on(&host.id, "http", "builtin://http-server", &[]).await;
    l.start_provider_on(&host.id, "blobstore", "builtin://blobstore", &[]).await;
    l.start_component_on(&host.id, "files", http_blobstore(), 2, None).await;
    let addr = free_addr().unwrap();
    l.link("http", "files", "files-addr", &[("address", &addr.to_string()), ("timeout_ms", "300000")]).await;
    blob_link(&l, "files", cfg).await;
    get_until(addr, "/", 400, WAIT).await.unwrap();
    // Warm up every path once (compilation, first connections), then take the baseline.
    expect(addr, "PUT", "/big/warm", &[7u8; 300_000], 200, "stored").await;
    assert_eq!(download(addr, "/big/warm").await.1, 300_000);
    let pid = host.pid().unwrap();
    let before = peak_rss(pid);

    let data = pattern(SIZE);
    let want = checksum(&data);
    let started = std::time::Instant::now();
    let up = request(addr, "PUT", "/big/object.bin", data, Duration::from_secs(300)).await.unwrap();
    let uploaded = started.elapsed();
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.text(), format!("stored {SIZE} bytes\n"));
    if let Some(len) = stored() {
        assert_eq!(len, SIZE as u64, "the backend holds the whole object");
    }
    let started = std::time::Instant::now();
    let (status, len, sum) = download(addr, "/big/object.bin").await;
    eprintln!("100 MiB up in {uploaded:?}, down in {:?}", started.elapsed());
    assert_eq!((status, len), (200, SIZE as u64));
    assert_eq!(sum, want, "the download is the upload, byte for byte");

    let growth = peak_rss(pid).saturating_sub(before);
    eprintln!("host VmHWM before {} MiB, growth over a 100 MiB round trip {} MiB", before >> 20, growth >> 20);
    assert!(growth < 40 << 20, "the host's peak memory grew {} MiB over a 100 MiB round trip", growth >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_object_round_trips_on_the_filesystem_with_bounded_host_memory() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("big").join("object.bin");
    round_trip_100_mib(&[("root", root.path().to_str().unwrap())], || std::fs::metadata(&file).ok().map(|m| m.len())).await;
}

// The object store's own reader (a push consumer) once let the server fill the client with
// the whole object: 62 MiB of growth here. Reads now pull a few chunks at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_object_round_trips_on_the_object_store_with_bounded_host_memory() {
    round_trip_100_mib(&[("backend", "nats")], || None).await;
}
