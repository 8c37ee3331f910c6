//! Outgoing HTTP: a component's `wasi:http/outgoing-handler.handle` becomes a data-plane call
//! to the http-client provider its `wasi:http/outgoing-handler` link names.
//!
//! - [`OutgoingHttp`] is the store's `WasiHttpHooks`: wasmtime-wasi-http builds the request
//!   (absolute URI, headers, the guest's request options) and hands it to `send_request`,
//!   which turns it into [`HttpCall`] and sends it through [`Outbound::send_http`]. The
//!   request body streams out as the guest writes it and the response body streams in as the
//!   provider sends it (the data plane's pull-based chunks, or local routing); neither is
//!   buffered whole.
//! - The call's deadline is the invocation's; the guest's connect, first-byte and
//!   between-bytes timeouts travel in the head and the provider enforces them.
//! - Every failure reaches the guest as a `wasi:http` `error-code` (never a trap): no link is
//!   `HttpRequestDenied` with a warning in the host log (at most one per component per
//!   [`WARN_EVERY`]) naming the component, the URL's authority and the `wash link put` that
//!   allows it; the provider's own answers ([`HttpError`]) keep their code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use hyper::body::Frame;
use trellis_lattice::ctl::DEFAULT_LINK_NAME;
use trellis_lattice::rpc::http::ResponseHead;
use trellis_lattice::rpc::outgoing_http::{self, ErrorCode, HttpError, RequestHead};
use trellis_lattice::rpc::{self, CallInfo, Invocation, Router, RpcErrorKind};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::c2c::{InterfaceName, Outbound};
use crate::registry::Registry;
use crate::runtime::LinkContext;

/// Longest gap between two "denied: no link" warnings for one component.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Most components whose last warning is remembered; past it the memory is cleared (and the
/// next denial of each is logged again).
const MAX_WARNED: usize = 4096;

/// `wasi:http/outgoing-handler`, split.
pub fn interface() -> InterfaceName {
    InterfaceName { namespace: "wasi".into(), package: "http".into(), interface: "outgoing-handler".into() }
}

/// One outgoing request of a component.
pub struct HttpCall {
    /// The calling component.
    pub source: Arc<str>,
    /// The link name in force for `wasi:http/outgoing-handler`.
    pub link_name: String,
    /// When the caller's execution budget runs out.
    pub deadline: Instant,
    /// The W3C trace context the caller runs in.
    pub traceparent: Option<Arc<str>>,
    /// Method, absolute URI, headers and the guest's timeouts.
    pub head: RequestHead,
    /// The request body, as the guest writes it.
    pub body: rpc::Body,
}

/// Why an outgoing request got no response head.
#[derive(Debug)]
pub enum HttpFailure {
    /// The component has no `wasi:http/outgoing-handler` link (under that name).
    NoLink,
    /// The provider (or the data plane) answered with an error.
    Failed(HttpError),
}

/// A response head and its body.
pub type HttpAnswer = (ResponseHead, rpc::Body);

/// The host's [`Outbound::send_http`]: the link from the live view, the call through the router.
pub(crate) fn send(router: &Router, registry: &Registry, c: HttpCall) -> BoxFuture<'static, Result<HttpAnswer, HttpFailure>> {
    let i = interface();
    let link = registry.view().links_in_slot(&c.source, &i.namespace, &i.package, &c.link_name).into_iter().find(|l| l.interfaces.contains(&i.interface));
    let Some(link) = link else { return Box::pin(std::future::ready(Err(HttpFailure::NoLink))) };
    let router = router.clone();
    Box::pin(async move {
        let call = CallInfo {
            lattice: router.lattice().to_string(),
            source: c.source.to_string(),
            target: link.target,
            interface: outgoing_http::INTERFACE.into(),
            function: outgoing_http::FUNCTION.into(),
            link_name: c.link_name,
        };
        let head = outgoing_http::encode(&c.head);
        if head.len() > rpc::MAX_HEAD_BYTES {
            return Err(HttpFailure::Failed(HttpError::new(
                ErrorCode::HttpRequestHeaderSectionSize,
                format!("the request head takes {} bytes; at most {} travel", head.len(), rpc::MAX_HEAD_BYTES),
            )));
        }
        let inv = Invocation {
            call: call.clone(),
            traceparent: c.traceparent.as_deref().map(str::to_string),
            deadline: tokio::time::Instant::from_std(c.deadline),
            head,
            body: c.body,
        };
        let resp = router.call(inv).await.map_err(|e| {
            let code = match e.kind {
                RpcErrorKind::Deadline => ErrorCode::HttpResponseTimeout,
                RpcErrorKind::Busy => ErrorCode::ConnectionLimitReached,
                _ => ErrorCode::InternalError,
            };
            HttpFailure::Failed(HttpError::new(code, e.to_string()))
        })?;
        match outgoing_http::decode::<outgoing_http::Reply>(&resp.head) {
            Ok(outgoing_http::Reply::Response(head)) => Ok((head, resp.body)),
            Ok(outgoing_http::Reply::Error(e)) => Err(HttpFailure::Failed(e)),
            Err(e) => Err(HttpFailure::Failed(HttpError::new(ErrorCode::InternalError, format!("the http-client's reply could not be decoded: {e}")))),
        }
    })
}

/// When each component was last warned about, so a loop of denied requests logs one line per
/// [`WARN_EVERY`], not one per request.
#[derive(Default)]
pub struct DenialLog {
    last: Mutex<HashMap<Arc<str>, (Instant, u64)>>,
}

impl DenialLog {
    /// Whether to log a denial of `component` now, and how many went unlogged before it.
    fn should_log(&self, component: &Arc<str>) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= MAX_WARNED && !last.contains_key(component) {
            last.clear();
        }
        let entry = last.entry(component.clone()).or_insert((now - WARN_EVERY, 0));
        if now.duration_since(entry.0) >= WARN_EVERY {
            let suppressed = entry.1;
            *entry = (now, 0);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }
}

/// The store's `wasi:http` hooks: outgoing requests go through links.
pub(crate) struct OutgoingHttp {
    pub outbound: Arc<dyn Outbound>,
    pub link: LinkContext,
    pub denials: Arc<DenialLog>,
}

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>> + Send> {
        let (parts, body) = request.into_parts();
        let authority = parts.uri.authority().map_or_else(String::new, |a| a.to_string());
        let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let options = options.unwrap_or_default();
        let head = RequestHead {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec()))).collect(),
            connect_timeout_ms: ms(options.connect_timeout),
            first_byte_timeout_ms: ms(options.first_byte_timeout),
            between_bytes_timeout_ms: ms(options.between_bytes_timeout),
        };
        let body: rpc::Body = BodyDataStream::new(body)
            .map_err(|e| rpc::RpcError::new(RpcErrorKind::Handler, &CallInfo::default(), format!("the component's request body failed: {e}")))
            .boxed();
        let link_name = self.link.link_name(&interface()).to_string();
        let call = HttpCall {
            source: self.link.component_id.clone(),
            link_name: link_name.clone(),
            deadline: self.link.deadline,
            traceparent: self.link.traceparent.clone(),
            head,
            body,
        };
        let (outbound, denials) = (self.outbound.clone(), self.denials.clone());
        Box::new(async move {
            let source = call.source.clone();
            match outbound.send_http(call).await {
                Ok((head, body)) => {
                    let response = response(head, body)?;
                    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
                }
                Err(HttpFailure::NoLink) => {
                    if let Some(suppressed) = denials.should_log(&source) {
                        let name_flag = if link_name == DEFAULT_LINK_NAME { String::new() } else { format!(" --link-name {link_name}") };
                        tracing::warn!(
                            component_id = %source,
                            authority = %authority,
                            suppressed,
                            "denied outgoing HTTP request of component `{source}` to `{authority}`: it has no `wasi:http/outgoing-handler` link (link name `{link_name}`); \
                             allow it with `wash link put {source} <http-client-id> wasi http --interface outgoing-handler{name_flag}`"
                        );
                    }
                    Err(wasmtime_wasi_http::Error::HttpRequestDenied)
                }
                Err(HttpFailure::Failed(e)) => {
                    tracing::debug!(component_id = %source, authority = %authority, error = %e, "outgoing HTTP request failed");
                    Err(error_code(e))
                }
            }
        })
    }
}

/// The response the guest reads: `head`, and `body` fed to it as it arrives.
fn response(head: ResponseHead, body: rpc::Body) -> wasmtime_wasi_http::Result<http::Response<WasiBody>> {
    if head.headers.len() > outgoing_http::MAX_HEADERS {
        return Err(wasmtime_wasi_http::Error::HttpResponseHeaderSectionSize(u32::try_from(head.headers.len()).ok()));
    }
    let mut builder = http::Response::builder().status(head.status);
    for (name, value) in head.headers {
        builder = builder.header(name, value.into_vec());
    }
    let frames = body.map(|chunk| match chunk {
        Ok(bytes) => Ok(Frame::data(bytes)),
        Err(e) => Err(match e.kind {
            RpcErrorKind::Deadline => wasmtime_wasi_http::Error::ConnectionReadTimeout,
            _ => wasmtime_wasi_http::Error::HttpResponseIncomplete,
        }),
    });
    builder.body(StreamBody::new(frames).boxed_unsync()).map_err(|_| wasmtime_wasi_http::Error::HttpProtocolError)
}

/// The `wasi:http` error for `e`.
fn error_code(e: HttpError) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    match e.code {
        ErrorCode::DnsTimeout => E::DnsTimeout,
        ErrorCode::DnsError => E::DnsError { rcode: Some(e.message), info_code: None },
        ErrorCode::DestinationNotFound => E::DestinationNotFound,
        ErrorCode::DestinationUnavailable => E::DestinationUnavailable,
        ErrorCode::DestinationIpProhibited => E::DestinationIpProhibited,
        ErrorCode::ConnectionRefused => E::ConnectionRefused,
        ErrorCode::ConnectionTerminated => E::ConnectionTerminated,
        ErrorCode::ConnectionTimeout => E::ConnectionTimeout,
        ErrorCode::ConnectionReadTimeout => E::ConnectionReadTimeout,
        ErrorCode::ConnectionWriteTimeout => E::ConnectionWriteTimeout,
        ErrorCode::ConnectionLimitReached => E::ConnectionLimitReached,
        ErrorCode::TlsProtocolError => E::TlsProtocolError,
        ErrorCode::TlsCertificateError => E::TlsCertificateError,
        ErrorCode::TlsAlertReceived => E::TlsAlertReceived { alert_id: None, alert_message: Some(e.message) },
        ErrorCode::HttpRequestDenied => E::HttpRequestDenied,
        ErrorCode::HttpRequestUriInvalid => E::HttpRequestUriInvalid,
        ErrorCode::HttpRequestMethodInvalid => E::HttpRequestMethodInvalid,
        ErrorCode::HttpRequestHeaderSectionSize => E::HttpRequestHeaderSectionSize(None),
        ErrorCode::HttpResponseIncomplete => E::HttpResponseIncomplete,
        ErrorCode::HttpResponseHeaderSectionSize => E::HttpResponseHeaderSectionSize(None),
        ErrorCode::HttpResponseTimeout => E::HttpResponseTimeout,
        ErrorCode::HttpProtocolError => E::HttpProtocolError,
        _ => E::InternalError(Some(e.message)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_loop_of_denials_logs_once_per_period() {
        let log = DenialLog::default();
        let c: Arc<str> = Arc::from("fetcher");
        assert_eq!(log.should_log(&c), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.should_log(&c), None);
        }
        // Another component has its own period.
        assert_eq!(log.should_log(&Arc::from("other")), Some(0));
    }

    #[test]
    fn provider_error_codes_keep_their_meaning() {
        let e = error_code(HttpError::new(ErrorCode::ConnectionRefused, "x"));
        assert!(matches!(e, wasmtime_wasi_http::Error::ConnectionRefused));
        let e = error_code(HttpError::new(ErrorCode::DnsError, "no such name"));
        assert!(matches!(e, wasmtime_wasi_http::Error::DnsError { rcode: Some(r), .. } if r == "no such name"));
    }
}
