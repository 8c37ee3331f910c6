//! `pinger`: exports `wasi:http/incoming-handler` and, for each request, calls
//! `trellis:examples/pingpong.ping` through a link, then writes what came back as text.
//!
//! The ping is taken from the query string: `message`, `count` (default 1), `tags`
//! (comma-separated), `reply-to` (absent means none), `volume` (`quiet`, `normal` or
//! `loud`; default `normal`) and `marks` (comma-separated `urgent`, `signed`, `twice`).
//! For `?message=hi&count=3&tags=a,b&reply-to=inbox&volume=loud&marks=urgent` the body is
//!
//! ```text
//! ok
//! outcome pong "HI #1"
//! outcome pong "HI #2"
//! outcome refused "#3 is a multiple of three"
//! reply-to some "inbox"
//! tags ["b", "a"]
//! stats 18446744073709551612 -3 0.75 'i'
//! marks urgent
//! ```
//!
//! and an error result is the single line `err "…"`. A query the pinger cannot parse
//! answers 400. The import has no error channel of its own: if no link allows the call, the
//! host traps the instance and the request fails with the host's message.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`.

use std::fmt::Write as _;
use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../interfaces/trellis-examples",
    world: "pinger",
});

use trellis::examples::pingpong::{Marks, Outcome, Request, Volume, ping};

struct Pinger;

wasi::http::proxy::export!(Pinger);

impl Guest for Pinger {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let query = query.split_once('?').map(|(_, q)| q).unwrap_or("");
        let (status, text) = match parse(query) {
            Ok(p) => (200, render(ping(&p))),
            Err(e) => (400, format!("{e}\n")),
        };
        respond(response_out, status, text.as_bytes());
    }
}

/// Reads a ping from a query string.
fn parse(query: &str) -> Result<Request, String> {
    let mut p = Request { message: String::new(), count: 1, tags: vec![], reply_to: None, volume: Volume::Normal, marks: Marks::empty() };
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "message" => p.message = value,
            "count" => p.count = value.parse().map_err(|_| format!("count must be a whole number, not `{value}`"))?,
            "tags" => p.tags = value.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
            "reply-to" => p.reply_to = Some(value),
            "volume" => {
                p.volume = match value.as_str() {
                    "quiet" => Volume::Quiet,
                    "normal" => Volume::Normal,
                    "loud" => Volume::Loud,
                    other => return Err(format!("volume must be quiet, normal or loud, not `{other}`")),
                }
            }
            "marks" => {
                for m in value.split(',').filter(|m| !m.is_empty()) {
                    p.marks |= match m {
                        "urgent" => Marks::URGENT,
                        "signed" => Marks::SIGNED,
                        "twice" => Marks::TWICE,
                        other => return Err(format!("unknown mark `{other}`; use urgent, signed or twice")),
                    };
                }
            }
            other => return Err(format!("unknown query parameter `{other}`")),
        }
    }
    Ok(p)
}

/// The reply as lines of text (see the module docs).
fn render(result: Result<trellis::examples::pingpong::Reply, String>) -> String {
    let r = match result {
        Ok(r) => r,
        Err(e) => return format!("err {e:?}\n"),
    };
    let mut out = String::from("ok\n");
    for o in &r.outcomes {
        let _ = match o {
            Outcome::Pong(s) => writeln!(out, "outcome pong {s:?}"),
            Outcome::Refused(s) => writeln!(out, "outcome refused {s:?}"),
            Outcome::Silence => writeln!(out, "outcome silence"),
        };
    }
    let _ = match &r.reply_to {
        Some(s) => writeln!(out, "reply-to some {s:?}"),
        None => writeln!(out, "reply-to none"),
    };
    let (big, neg, quarter, last) = r.stats;
    let marks: Vec<&str> = [(Marks::URGENT, "urgent"), (Marks::SIGNED, "signed"), (Marks::TWICE, "twice")]
        .into_iter()
        .filter(|(m, _)| r.marks.contains(*m))
        .map(|(_, name)| name)
        .collect();
    let _ = writeln!(out, "tags {:?}", r.tags);
    let _ = writeln!(out, "stats {big} {neg} {quarter:?} {last:?}");
    let _ = writeln!(out, "marks {}", if marks.is_empty() { "none".to_string() } else { marks.join("|") });
    out
}

/// `%XX` escapes and `+` for space, as in `application/x-www-form-urlencoded`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(response_out: ResponseOutparam, status: u16, body_bytes: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain; charset=utf-8".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status code");
    let body = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = body.write().expect("stream is taken only once");
    out.write_all(body_bytes).expect("write body");
    out.flush().expect("flush body");
    drop(out); // the stream must be dropped before the body is finished
    OutgoingBody::finish(body, None).expect("finish body");
}
