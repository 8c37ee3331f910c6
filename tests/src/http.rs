//! A small HTTP/1.1 client for tests (hyper's connection API; no pooling, one request per
//! connection), a free-port helper, and [`Load`], steady keep-alive load that records every
//! request.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `body` to `addr`, waiting at most `timeout`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Bytes, timeout: Duration) -> anyhow::Result<Reply> {
    tokio::time::timeout(timeout, async {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder().method(method).uri(path).header(http::header::HOST, addr.to_string()).body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    })
    .await
    .with_context(|| format!("{method} http://{addr}{path} did not complete within {timeout:?}"))?
}

/// `GET path` with a 10 s timeout.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    request(addr, "GET", path, Bytes::new(), Duration::from_secs(10)).await
}

/// Retries `GET path` until it answers `status`, for at most `within`.
pub async fn get_until(addr: SocketAddr, path: &str, status: u16, within: Duration) -> anyhow::Result<Reply> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = get(addr, path).await;
        match last {
            Ok(r) if r.status == status => return Ok(r),
            other if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("GET {path} did not answer {status} within {within:?}; last: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A loopback address whose port was free a moment ago. The provider binds it right after;
/// the window in which another process could take it is tiny on a test machine.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Steady HTTP load on the app at `addr` (4 keep-alive loops) until [`Load::finish`] or
/// [`Load::stop`].
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<LoadRequest>>,
}

/// One request of a [`Load`] (or its failed connect): when it was sent, when its outcome was
/// known, and why it failed, if it did.
pub struct LoadRequest {
    /// When it was sent.
    pub sent: tokio::time::Instant,
    /// When its outcome was known.
    pub done: tokio::time::Instant,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Load {
    /// Starts the loops, accepting any of `bodies`, and lets them run for half a second.
    pub async fn start(addr: SocketAddr, bodies: &'static [&'static [u8]]) -> Load {
        Self::start_method(addr, "GET", bodies).await
    }

    /// [`Load::start`] with requests of `method` (`POST`, say) rather than `GET`.
    pub async fn start_method(addr: SocketAddr, method: &'static str, bodies: &'static [&'static [u8]]) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(hammer_for(addr, 4, stop.clone(), method, bodies));
        tokio::time::sleep(Duration::from_millis(500)).await;
        Load { stop, task }
    }

    /// Stops the loops now; every request they made, in no particular order.
    pub async fn stop(self) -> Vec<LoadRequest> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the load loops panicked")
    }

    /// Lets the loops run half a second more, stops them, and asserts that no request failed
    /// and that enough were answered to mean something.
    pub async fn finish(self, what: &str) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let requests = self.stop().await;
        let why: Vec<&str> = requests.iter().filter_map(|r| r.error.as_deref()).collect();
        let (ok, failed) = (requests.len() - why.len(), why.len());
        eprintln!("{what} under load: {ok} answered, {failed} failed");
        assert_eq!(failed, 0, "{failed} of {} requests failed: {:?}", ok + failed, &why[..why.len().min(5)]);
        assert!(ok > 20, "only {ok} requests answered");
    }
}

/// How long a [`Load`] request may take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive HTTP loops of `method /` against `addr` until `stop`, accepting any of `bodies`
/// (answered 200 with an expected body, or failed): every request made.
async fn hammer_for(
    addr: SocketAddr,
    loops: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    method: &'static str,
    bodies: &'static [&'static [u8]],
) -> Vec<LoadRequest> {
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::Ordering;
    use tokio::time::Instant;
    let workers = (0..loops).map(|_| {
        let stop = stop.clone();
        async move {
            let mut done = Vec::new();
            let mut sender = None;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if sender.is_none() {
                    let stream = match tokio::net::TcpStream::connect(addr).await {
                        Ok(s) => s,
                        Err(e) => {
                            done.push(LoadRequest { sent, done: Instant::now(), error: Some(format!("connect: {e}")) });
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
                        Ok((s, conn)) => {
                            tokio::spawn(conn);
                            sender = Some(s);
                        }
                        Err(e) => {
                            done.push(LoadRequest { sent, done: Instant::now(), error: Some(format!("handshake: {e}")) });
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let outcome: anyhow::Result<()> = async {
                    s.ready().await?;
                    let req = http::Request::builder().method(method).uri("/").header("host", "drain").body(Full::new(bytes::Bytes::new()))?;
                    let resp = tokio::time::timeout(REQUEST_TIMEOUT, s.send_request(req)).await??;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(status == 200 && bodies.contains(&body.as_ref()), "status {status}: {}", String::from_utf8_lossy(&body));
                    Ok(())
                }
                .await;
                let error = outcome.err().map(|e| e.to_string());
                if error.is_some() {
                    sender = None;
                }
                done.push(LoadRequest { sent, done: Instant::now(), error });
            }
            done
        }
    });
    futures::future::join_all(workers).await.into_iter().flatten().collect()
}
