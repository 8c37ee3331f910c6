//! `http-fetcher`: fetches a URL over `wasi:http/outgoing-handler` and streams its body back,
//! the shape of wasmCloud's `dog-fetcher`.
//!
//! It exports `wasi:http/incoming-handler` and imports `wasi:http/outgoing-handler` (served
//! by the http-client provider it is linked to), `wasi:config/store` and
//! `wasmcloud:bus/lattice`:
//!
//! - the URL is `?url=URL` (percent-encoded), else the component's config key `url`;
//! - the request goes out with the incoming method, `content-type` and body (streamed as it
//!   arrives), so `POST` uploads through it;
//! - `?connect_ms=N`, `?first_byte_ms=N`, `?between_bytes_ms=N` set the request options;
//! - `?link=NAME` sends it under the `wasi:http/outgoing-handler` link named `NAME`.
//!
//! The answer is the fetched response's status, `content-type` and body, streamed. A failed
//! request is an ordinary value: `502` with the body `error-code: CODE` (the `wasi:http`
//! `error-code`, e.g. `HttpRequestDenied`), never a trap.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, RequestOptions, ResponseOutparam, Scheme};

mod bindings {
    wit_bindgen::generate!({
    inline: "
        package trellis:http-fetcher;
        world fetcher {
            import wasi:config/store@0.2.0-draft;
            import wasmcloud:bus/lattice@2.0.0;
        }
    ",
    path: ["../../interfaces/wasi-config", "../../interfaces/wasmcloud-bus"],
    world: "trellis:http-fetcher/fetcher",
    generate_all,
    });
}

use bindings::wasmcloud::bus::lattice::{CallTargetInterface, set_link_name};

struct Fetcher;

wasi::http::proxy::export!(Fetcher);

/// The most moved between the two bodies at a time.
const PIECE: usize = 64 * 1024;

impl Guest for Fetcher {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let query = full.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v));
        let url = param("url").or_else(|| bindings::wasi::config::store::get("url").ok().flatten());
        let Some(url) = url else {
            return respond(response_out, 400, b"name the URL to fetch: ?url=URL, or the config key `url`\n");
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return respond(response_out, 400, format!("`{url}` is not an absolute http(s) URL\n").as_bytes());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if let Some(link) = param("link") {
            let target = CallTargetInterface::new("wasi", "http", "outgoing-handler");
            if let Err(e) = set_link_name(&link, vec![target]) {
                return respond(response_out, 400, format!("no link named `{link}`: {e}\n").as_bytes());
            }
        }

        let headers = Fields::new();
        for (name, value) in request.headers().entries() {
            if name.eq_ignore_ascii_case("content-type") {
                let _ = headers.append(&name, &value);
            }
        }
        let outgoing = OutgoingRequest::new(headers);
        let _ = outgoing.set_method(&request.method());
        let _ = outgoing.set_scheme(Some(&match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        }));
        let _ = outgoing.set_authority(Some(authority));
        let _ = outgoing.set_path_with_query(Some(path));
        let options = RequestOptions::new();
        let ms = |name: &str| param(name).and_then(|v| v.parse::<u64>().ok()).map(|n| n * 1_000_000);
        if let Some(ns) = ms("connect_ms") {
            let _ = options.set_connect_timeout(Some(ns));
        }
        if let Some(ns) = ms("first_byte_ms") {
            let _ = options.set_first_byte_timeout(Some(ns));
        }
        if let Some(ns) = ms("between_bytes_ms") {
            let _ = options.set_between_bytes_timeout(Some(ns));
        }

        let out_body = outgoing.body().expect("the outgoing body is taken only once");
        let pending = match outgoing_handler::handle(outgoing, Some(options)) {
            Ok(p) => p,
            Err(code) => return respond(response_out, 502, error_text(&code).as_bytes()),
        };
        // The request body goes out as it arrives.
        let incoming = request.consume().expect("the request body is taken only once");
        {
            let input = incoming.stream().expect("the request stream is taken only once");
            let mut output = out_body.write().expect("the outgoing stream is taken only once");
            while let Ok(piece) = input.blocking_read(PIECE as u64) {
                if output.write_all(&piece).is_err() {
                    break;
                }
            }
            let _ = output.flush();
        }
        let _ = OutgoingBody::finish(out_body, None);

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return respond(response_out, 502, error_text(&code).as_bytes()),
            _ => return respond(response_out, 502, b"error-code: InternalError (no response)\n"),
        };
        let headers = Fields::new();
        for (name, value) in response.headers().entries() {
            if name.eq_ignore_ascii_case("content-type") {
                let _ = headers.append(&name, &value);
            }
        }
        let answer = OutgoingResponse::new(headers);
        let _ = answer.set_status_code(response.status());
        let body = answer.body().expect("body is taken only once");
        ResponseOutparam::set(response_out, Ok(answer));
        let fetched = response.consume().expect("the response body is taken only once");
        let mut failed = None;
        {
            let input = fetched.stream().expect("the response stream is taken only once");
            let mut out = body.write().expect("the response stream is taken only once");
            loop {
                match input.blocking_read(PIECE as u64) {
                    Ok(piece) => out.write_all(&piece).expect("write the response body"),
                    Err(wasi::io::streams::StreamError::Closed) => break,
                    Err(wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                        failed = Some(e.to_debug_string());
                        break;
                    }
                }
            }
            out.flush().expect("flush the response body");
        }
        if let Some(e) = failed {
            // The head is out: the broken body is all that can say so.
            panic!("the fetched body broke off: {e}");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

fn error_text(code: &ErrorCode) -> String {
    let name = format!("{code:?}");
    let name = name.strip_prefix("ErrorCode::").unwrap_or(&name);
    let short = name.split(['(', ' ', '{']).next().unwrap_or(name).to_string();
    format!("error-code: {short}\n{name}\n")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body is taken only once");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = outgoing.write().expect("stream is taken only once");
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
