//! A small HTTP/1.1 client for tests (hyper's connection API; no pooling, one request per
//! connection) and a free-port helper.

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
