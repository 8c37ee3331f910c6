//! `wash ui`: the lattice dashboard. A small HTTP/1 server (hyper) in the `wash` binary serves
//! one page (`assets/`, embedded at build time: hand-written HTML, CSS and JavaScript, no
//! build step), JSON endpoints over `CtlClient` / `AppClient`, and Server-Sent Events that
//! relay the lattice's events and app status changes, so the page updates without a reload.
//! The browser never talks to NATS.
//!
//! This module owns the listener, the request guard (Host, Origin, session token, body caps)
//! and the routing; [`api`] owns the lattice side (the live view, the event relay, actions).
//!
//! Security: it binds 127.0.0.1:3030 by default; any other address that is not loopback needs
//! `--allow-remote` and prints a warning. On a loopback address a request whose `Host` is not
//! a loopback name is refused (DNS rebinding). Every POST must carry the per-process random
//! session token (embedded in the served page) in `X-Trellis-Token` and an `Origin` equal to
//! `http://{Host}`; anything else is a 403 naming what was wrong. GETs change nothing.

mod api;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::cli::Global;
use crate::output::Report;

/// The most connections served at once (one more waits for a free slot).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest manifest `validate` and `deploy` take.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The largest body of any other POST.
pub const MAX_ACTION_BODY: usize = 16 * 1024;
/// The header every POST carries the session token in.
pub const TOKEN_HEADER: &str = "x-trellis-token";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// What index.html holds where the session token goes.
const TOKEN_SLOT: &str = "__TRELLIS_SESSION_TOKEN__";

/// `wash ui`.
#[derive(Debug, Args)]
#[command(after_help = "Serves until Ctrl-C. Every action on the page asks for confirmation first; \
the page needs no NATS port of its own: the backend talks to the lattice.")]
pub struct UiArgs {
    /// The address to serve the dashboard on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:3030")]
    pub addr: SocketAddr,
    /// Allow an address other than loopback (anyone who can reach it and loads the page can
    /// act on the lattice).
    #[arg(long)]
    pub allow_remote: bool,
}

type Body = BoxBody<Bytes, Infallible>;

/// What every handler sees.
struct Server {
    api: Arc<api::Api>,
    token: String,
    /// The page, with the token in it.
    index: String,
    /// `Host` values accepted on a loopback address (`None`: any, with --allow-remote).
    hosts: Option<Vec<String>>,
}

/// `wash ui`: serves until SIGINT or SIGTERM, then exits 0.
pub async fn run(g: &Global, args: &UiArgs) -> anyhow::Result<Report> {
    let loopback = args.addr.ip().is_loopback();
    if !loopback && !args.allow_remote {
        anyhow::bail!(
            "`{}` is not a loopback address; the dashboard can act on the lattice, so binding it elsewhere needs --allow-remote (or use --addr 127.0.0.1:{})",
            args.addr,
            args.addr.port()
        );
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}; is another `wash ui` running there? pick another with --addr", args.addr))?;
    let bound = listener.local_addr()?;
    if !loopback {
        eprintln!(
            "warning: the dashboard listens on {bound}, beyond this machine; anyone who can reach it can load the page and act on lattice `{}` (actions need the session token the page carries)",
            g.lattice
        );
    }
    let token = session_token();
    let hosts = loopback.then(|| {
        let p = bound.port();
        vec![format!("127.0.0.1:{p}"), format!("localhost:{p}"), format!("[::1]:{p}"), bound.to_string()]
    });
    let api = api::Api::start(g).await;
    let server = Arc::new(Server { index: INDEX_HTML.replace(TOKEN_SLOT, &token), token, hosts, api });
    let url = match bound.ip() {
        ip if ip.is_unspecified() => format!("http://127.0.0.1:{}/", bound.port()),
        _ => format!("http://{bound}/"),
    };
    crate::output::print_stdout(&format!("Dashboard of lattice `{}` at {url} (Ctrl-C to stop)\n", crate::output::escape(&g.lattice)));
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "dashboard connection ended");
            }
            drop(permit);
        });
    }
    Ok(Report::none())
}

/// 32 random bytes as hex: the session token.
fn session_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut resp = match self.route(req).await {
            Ok(r) => r,
            Err((status, message)) => json_response(status, &serde_json::json!({"error": message})),
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        );
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        resp
    }

    /// Refuses a request whose Host is not this dashboard's (loopback binds only), and a POST
    /// without the session token or from another origin.
    fn guard(&self, req: &Request<Incoming>) -> Result<(), (StatusCode, String)> {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if let Some(allowed) = &self.hosts
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
        {
            return Err((
                StatusCode::FORBIDDEN,
                format!("Host `{}` is not this dashboard's (it serves {}); open the address `wash ui` printed", host.escape_debug(), allowed[0]),
            ));
        }
        if req.method() != Method::POST {
            return Ok(());
        }
        let origin = req.headers().get(header::ORIGIN).and_then(|h| h.to_str().ok());
        let want = format!("http://{host}");
        match origin {
            None => return Err((StatusCode::FORBIDDEN, format!("an action needs an Origin header of {want}; send it from the dashboard page"))),
            Some(o) if !o.eq_ignore_ascii_case(&want) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("Origin `{}` is not this dashboard's ({want}); actions come only from its own page", o.escape_debug()),
                ));
            }
            Some(_) => {}
        }
        match req.headers().get(TOKEN_HEADER).and_then(|h| h.to_str().ok()) {
            None => Err((StatusCode::FORBIDDEN, "an action needs the session token in the X-Trellis-Token header; reload the dashboard page to get it".into())),
            Some(t) if !same_secret(t, &self.token) => Err((
                StatusCode::FORBIDDEN,
                "the X-Trellis-Token header is not this session's token (wash ui was restarted?); reload the dashboard page".into(),
            )),
            Some(_) => Ok(()),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, (StatusCode, String)> {
        self.guard(&req)?;
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) | (&Method::GET, ["index.html"]) => Ok(text_response("text/html; charset=utf-8", self.index.clone())),
            (&Method::GET, ["app.js"]) => Ok(text_response("text/javascript; charset=utf-8", APP_JS.to_string())),
            (&Method::GET, ["app.css"]) => Ok(text_response("text/css; charset=utf-8", APP_CSS.to_string())),
            (&Method::GET, ["api", "state"]) => Ok(json_response(StatusCode::OK, &self.api.snapshot().await)),
            (&Method::GET, ["api", "events"]) => self.api.event_stream().map(sse_response),
            (&Method::GET, ["api", "spy", id]) => self.api.spy_stream(&percent_decode(id)?).await.map(sse_response),
            (&Method::POST, ["api", "hosts", id, action]) => {
                let _ = read_body(req, MAX_ACTION_BODY).await?;
                let reply = self.api.schedule(&percent_decode(id)?, action).await?;
                Ok(json_response(StatusCode::OK, &reply))
            }
            (&Method::POST, ["api", "scale"]) => {
                let body = read_body(req, MAX_ACTION_BODY).await?;
                let cmd: api::ScaleRequest = serde_json::from_slice(&body)
                    .map_err(|e| (StatusCode::BAD_REQUEST, format!("the scale request is not {{host_id, component_id, max_instances}}: {e}")))?;
                Ok(json_response(StatusCode::OK, &self.api.scale(&cmd).await?))
            }
            (&Method::POST, ["api", "apps", "validate"]) => {
                let text = manifest_text(read_body(req, MAX_MANIFEST_BYTES).await?)?;
                Ok(json_response(StatusCode::OK, &api::validate(&text)))
            }
            (&Method::POST, ["api", "apps", "deploy"]) => {
                let text = manifest_text(read_body(req, MAX_MANIFEST_BYTES).await?)?;
                self.api.deploy(&text).await.map(|(status, v)| json_response(status, &v))
            }
            (&Method::POST, ["api", "apps", name, "undeploy"]) => {
                let _ = read_body(req, MAX_ACTION_BODY).await?;
                Ok(json_response(StatusCode::OK, &self.api.undeploy(&percent_decode(name)?).await?))
            }
            (_, ["api", ..]) | (_, [""]) | (_, ["app.js"]) | (_, ["app.css"]) | (_, ["index.html"]) => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not served on {}; the dashboard's pages are GET, its actions POST", path.escape_debug()),
            )),
            _ => Err((StatusCode::NOT_FOUND, format!("nothing at {}; the dashboard is at /", path.escape_debug()))),
        }
    }
}

/// Reads a whole body of at most `cap` bytes.
async fn read_body(req: Request<Incoming>, cap: usize) -> Result<Bytes, (StatusCode, String)> {
    match Limited::new(req.into_body(), cap).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {cap} bytes, the limit here")))
        }
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    }
}

fn manifest_text(body: Bytes) -> Result<String, (StatusCode, String)> {
    String::from_utf8(body.to_vec()).map_err(|_| (StatusCode::BAD_REQUEST, "the manifest is not UTF-8 text; paste or upload a YAML or JSON file".to_string()))
}

/// `%XX` escapes of a path segment decoded (ids are ASCII; anything else is refused later).
fn percent_decode(segment: &str) -> Result<String, (StatusCode, String)> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else { return Err((StatusCode::BAD_REQUEST, format!("`{}` has a broken %-escape", segment.escape_debug()))) };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| (StatusCode::BAD_REQUEST, format!("`{}` is not UTF-8", segment.escape_debug())))
}

fn text_response(content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"cannot encode the reply\"}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        let t = session_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, session_token());
    }

    #[test]
    fn path_segments_decode() {
        assert_eq!(percent_decode("a%2Db").expect("decodes"), "a-b");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn the_page_has_a_slot_for_the_token() {
        assert_eq!(INDEX_HTML.matches(TOKEN_SLOT).count(), 1);
        // Data from the lattice is never put into markup.
        assert!(!APP_JS.contains("innerHTML"), "app.js must build the page with textContent");
    }
}
