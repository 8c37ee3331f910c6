//! The HTTP client: hyper-util's pooled client over a connector of our own that resolves the
//! name, drops the addresses the request may not reach, connects to a checked address (so a
//! DNS answer cannot change between the check and the connect), and speaks TLS with rustls
//! (ALPN `h2`, `http/1.1`).
//!
//! Two pools per provider: one whose connector refuses restricted addresses (requests that
//! only a pattern allows) and one that does not (requests to a host named exactly). A pooled
//! connection is reused only for the same scheme and authority in the same pool, so a
//! connection made for a named host never serves a pattern-allowed request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use trellis_lattice::rpc::outgoing_http::{ErrorCode, HttpError};

use crate::allow::is_restricted;

/// How long a connection may take when the guest sets no connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per host in each pool.
pub const POOL_MAX_IDLE_PER_HOST: usize = 32;
/// Most addresses of one name tried.
const MAX_ADDRESSES: usize = 16;

tokio::task_local! {
    /// The connect timeout of the request being sent (the connector runs in its task).
    pub static CONNECT_TIMEOUT: Duration;
}

/// A request body as hyper sends it.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, trellis_lattice::rpc::RpcError>;

/// The provider's two pools.
#[derive(Clone)]
pub struct Clients {
    /// For requests only a pattern allows: restricted addresses refused.
    pub public: Client<Connector, RequestBody>,
    /// For requests to a host named exactly.
    pub named: Client<Connector, RequestBody>,
}

impl Clients {
    /// Both pools, trusting webpki's roots, the system's and `extra_ca` (a PEM file).
    pub fn new(extra_ca: Option<&str>) -> Result<Self, String> {
        let tls = Arc::new(tls_config(extra_ca)?);
        let build = |restrict: bool| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(Connector { tls: tls.clone(), restrict })
        };
        Ok(Self { public: build(true), named: build(false) })
    }
}

/// The trust store: webpki roots, then the system's (those it can read), then `extra_ca`.
fn tls_config(extra_ca: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "system root certificates loaded");
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("`tls_ca_file` `{path}` cannot be read: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("`tls_ca_file` `{path}` is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("`tls_ca_file` `{path}` holds no certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("`tls_ca_file` `{path}`: a certificate is not usable as a root: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Why a connection was not made, with the `wasi:http` code it maps to; it travels inside the
/// `io::Error` hyper-util wraps, and the handler finds it in the error's sources.
#[derive(Debug)]
pub struct ConnectFailure(pub HttpError);

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.message.fmt(f)
    }
}

impl std::error::Error for ConnectFailure {}

fn failure(code: ErrorCode, message: String) -> std::io::Error {
    std::io::Error::other(ConnectFailure(HttpError::new(code, message)))
}

/// Resolves, filters, connects, and for `https` does the TLS handshake.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    restrict: bool,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let this = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, this.connect(uri)).await {
                Ok(r) => r,
                Err(_) => Err(failure(ErrorCode::ConnectionTimeout, format!("connecting took longer than the connect timeout ({} ms)", timeout.as_millis()))),
            }
        })
    }
}

impl Connector {
    async fn connect(&self, uri: http::Uri) -> Result<Conn, std::io::Error> {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(|| failure(ErrorCode::HttpRequestUriInvalid, format!("`{uri}` has no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.take(MAX_ADDRESSES).collect(),
            Err(e) => return Err(failure(ErrorCode::DnsError, format!("`{host}` does not resolve: {e}"))),
        };
        if addrs.is_empty() {
            return Err(failure(ErrorCode::DnsError, format!("`{host}` resolves to no address")));
        }
        let allowed: Vec<SocketAddr> = if self.restrict { addrs.iter().copied().filter(|a| !is_restricted(a.ip())).collect() } else { addrs.clone() };
        if allowed.is_empty() {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            return Err(failure(
                ErrorCode::DestinationIpProhibited,
                format!(
                    "`{host}` resolves to {} only, a loopback, link-local or private address that a pattern in `allowed_hosts` does not open; name the host exactly in `allowed_hosts` to allow it",
                    list.join(", ")
                ),
            ));
        }
        let mut last = None;
        let mut tcp = None;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some((addr, e))) => {
                let code = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorCode::ConnectionRefused,
                    std::io::ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
                    std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => ErrorCode::DestinationUnavailable,
                    _ => ErrorCode::ConnectionTerminated,
                };
                return Err(failure(code, format!("cannot connect to `{host}` at {addr}: {e}")));
            }
            (None, None) => return Err(failure(ErrorCode::DestinationUnavailable, format!("no address of `{host}` to connect to"))),
        };
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(Conn::Plain(TokioIo::new(tcp)));
        }
        let name =
            ServerName::try_from(host.clone()).map_err(|e| failure(ErrorCode::HttpRequestUriInvalid, format!("`{host}` is not a TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(|e| tls_failure(&host, e))?;
        Ok(Conn::Tls(Box::new(TokioIo::new(tls))))
    }
}

/// The code of a failed handshake: an untrusted or wrong certificate, an alert, or anything
/// else in the protocol.
fn tls_failure(host: &str, e: std::io::Error) -> std::io::Error {
    let code = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) | Some(rustls::Error::NoCertificatesPresented) => ErrorCode::TlsCertificateError,
        Some(rustls::Error::AlertReceived(_)) => ErrorCode::TlsAlertReceived,
        _ => ErrorCode::TlsProtocolError,
    };
    let hint = if code == ErrorCode::TlsCertificateError { "; trust its CA with the provider's `tls_ca_file`" } else { "" };
    failure(code, format!("TLS with `{host}` failed: {e}{hint}"))
}

/// A connection, plain or TLS.
pub enum Conn {
    /// `http`.
    Plain(TokioIo<TcpStream>),
    /// `https`.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(_) => Connected::new(),
            Conn::Tls(t) => {
                let h2 = t.inner().get_ref().1.alpn_protocol() == Some(b"h2");
                if h2 { Connected::new().negotiated_h2() } else { Connected::new() }
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The `wasi:http` error for a failed request: the connector's own when there is one, else
/// what hyper says.
pub fn request_error(e: &hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(ConnectFailure(f)) = s.downcast_ref::<ConnectFailure>() {
            return f.clone();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(ConnectFailure(f)) = io.get_ref().and_then(|i| i.downcast_ref::<ConnectFailure>())
        {
            return f.clone();
        }
        source = s.source();
    }
    let detail = {
        let mut parts = vec![e.to_string()];
        let mut s = std::error::Error::source(e);
        while let Some(x) = s {
            parts.push(x.to_string());
            s = x.source();
        }
        parts.join(": ")
    };
    let code = if e.is_connect() { ErrorCode::DestinationUnavailable } else { ErrorCode::HttpProtocolError };
    HttpError::new(code, format!("the request failed: {detail}"))
}
