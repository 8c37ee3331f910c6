//! The protocol guard: a relay on the loopback interface between async-nats and the NATS
//! server that drops, before the client sees them, the messages the client cannot parse.
//!
//! nats-server forwards whatever subject, reply subject and header bytes a publisher sends, valid
//! UTF-8 or not, to every subscription they match (a wildcard matches any bytes). async-nats 0.51
//! refuses such a `MSG`/`HMSG` line as a protocol error and drops the whole connection; it then
//! reconnects, resubscribes, and loses what was in flight. One client publishing non-UTF-8
//! subjects on `wasmbus.ctl.…` 400 times a second made a host reconnect ~1,870 times in 5 s. No
//! subscription design avoids it (a reply subject is the publisher's to choose, and inboxes are
//! wildcards), and no server permission filters bytes; so every connection made by
//! [`crate::connect`] goes through a guard, which parses the server's side of the protocol and
//! drops exactly what async-nats would refuse (a non-UTF-8 control line, a header block that is
//! not UTF-8 or not `NATS/1.0` with valid names), counting each. Everything else, both ways,
//! passes byte for byte. What a client sends to the server is not touched.
//!
//! Bounds: a control line is at most [`MAX_CONTROL_LINE`] bytes and a message at most
//! [`MAX_MESSAGE`] (nats-server's own ceiling); beyond either the stream cannot be followed and
//! the connection is closed (the client reconnects). A message's fate is decided on its control
//! line and header block; its payload then streams through, so a connection holds at most a
//! control line and a header block, plus one read (64 KiB). It serves one client: it stops once no connection has been open for
//! [`IDLE_EXIT`] (a live client reconnects far more often than that: async-nats backs off at
//! most 4 s).
//!
//! A server that asks for TLS is relayed without inspection: the guard does not terminate TLS,
//! so a TLS lattice is not guarded (one log line says so).

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The longest control line followed (`MSG`/`HMSG` with two subjects of NATS' usual sizes fits
/// many times over).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// The largest message followed: nats-server's maximum `max_payload` (64 MiB).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long a guard with no open connection waits for its client to come back before it stops.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// How long connecting to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most servers a guard keeps (the configured ones, then those the servers announce).
const MAX_SERVERS: usize = 64;

/// The most read from the server at a time.
const READ_SIZE: usize = 64 * 1024;

/// How often, at most, a connection logs the messages it dropped (with their count since).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A running guard: the loopback address to give async-nats.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub addr: SocketAddr,
}

/// The `host:port` of each server in a NATS URL list (`nats://a:4222,b:4223`), or `None` when
/// one of them is not plain NATS over TCP (`tls://`, `ws://`, …), which the guard cannot relay.
pub(crate) fn plain_servers(url: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let rest = match part.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => rest,
            Some(_) => return None,
            None => part,
        };
        // Credentials in the URL travel in CONNECT, which async-nats builds from the URL it is
        // given: keep them there, unguarded.
        if rest.contains('@') {
            return None;
        }
        let hostport = rest.trim_end_matches('/');
        let hostport = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:4222")
        };
        out.push(hostport);
    }
    (!out.is_empty()).then_some(out)
}

/// Starts a guard in front of `servers` (`host:port`), listening on a free loopback port.
pub(crate) async fn start(servers: Vec<String>) -> std::io::Result<Guard> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Shared { servers: std::sync::Mutex::new(servers), next: AtomicUsize::new(0), open: AtomicUsize::new(0) });
    tokio::spawn(accept(listener, state));
    Ok(Guard { addr })
}

struct Shared {
    servers: std::sync::Mutex<Vec<String>>,
    /// The server to try first (the last one that answered).
    next: AtomicUsize,
    open: AtomicUsize,
}

async fn accept(listener: TcpListener, state: Arc<Shared>) {
    loop {
        let accepted = tokio::time::timeout(IDLE_EXIT, listener.accept()).await;
        let client = match accepted {
            Ok(Ok((client, _))) => client,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "NATS guard: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_idle) if state.open.load(Ordering::Relaxed) == 0 => return,
            Err(_busy) => continue,
        };
        let _ = client.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            state.open.fetch_add(1, Ordering::Relaxed);
            relay(client, &state).await;
            state.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Connects to the first server that answers, starting with the last good one.
async fn connect_upstream(state: &Shared) -> Option<TcpStream> {
    let servers = state.servers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first = state.next.load(Ordering::Relaxed);
    for i in 0..servers.len() {
        let at = (first + i) % servers.len();
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&servers[at])).await {
            Ok(Ok(s)) => {
                state.next.store(at, Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Ok(Err(e)) => tracing::debug!(server = servers[at], error = %e, "NATS guard: cannot connect"),
            Err(_) => tracing::debug!(server = servers[at], "NATS guard: connecting timed out"),
        }
    }
    None
}

/// Relays one client connection until either side closes. Dropping the client's socket when
/// no server answers makes async-nats count a failed attempt and retry, as it would directly.
async fn relay(client: TcpStream, state: &Shared) {
    let Some(upstream) = connect_upstream(state).await else { return };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let to_server = tokio::io::copy(&mut cr, &mut uw);
    let to_client = async {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut out = BytesMut::with_capacity(READ_SIZE);
        let mut at = Sifting::default();
        let mut first = true;
        let (mut unlogged, mut logged_at) = (0u64, None::<tokio::time::Instant>);
        loop {
            // Room for a whole read each time (a full BytesMut would grow by 64 bytes a read).
            buf.reserve(READ_SIZE);
            if ur.read_buf(&mut buf).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if first && let Some(info) = first_info(&buf) {
                first = false;
                learn_servers(state, info);
                if info_requires_tls(info) {
                    tracing::warn!("NATS guard: the server requires TLS; this connection is relayed without protection against unparsable subjects");
                    cw.write_all(&buf).await?;
                    buf.clear();
                    tokio::io::copy(&mut ur, &mut cw).await?;
                    return Ok(());
                }
            }
            let mut dropped = 0;
            let sifted = sift(&mut at, &mut buf, &mut out, &mut dropped);
            unlogged += dropped;
            if unlogged > 0 && logged_at.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                tracing::warn!(
                    dropped = unlogged,
                    "NATS guard: dropped messages whose subject, reply subject or headers async-nats cannot parse (not UTF-8); some client publishes them"
                );
                (unlogged, logged_at) = (0, Some(tokio::time::Instant::now()));
            }
            if !out.is_empty() {
                cw.write_all(&out).await?;
                out.clear();
            }
            if let Err(why) = sifted {
                tracing::warn!(%why, "NATS guard: the server's protocol stream cannot be followed; reconnecting");
                return Ok(());
            }
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}

/// The JSON of the `INFO` line at the start of `buf`, once the whole line is there.
fn first_info(buf: &[u8]) -> Option<&[u8]> {
    let end = find_crlf(buf)?;
    let line = &buf[..end];
    (line.len() > 5 && line[..5].eq_ignore_ascii_case(b"INFO ")).then(|| &line[5..])
}

fn info_requires_tls(info: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(info).ok().and_then(|v| v.get("tls_required").and_then(|t| t.as_bool())).unwrap_or(false)
}

/// Adds the servers an `INFO` announces (`connect_urls`, as `host:port`) to those tried next.
fn learn_servers(state: &Shared, info: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(info) else { return };
    let Some(urls) = v.get("connect_urls").and_then(|u| u.as_array()) else { return };
    let mut servers = state.servers.lock().unwrap_or_else(|p| p.into_inner());
    for u in urls.iter().filter_map(|u| u.as_str()) {
        if servers.len() < MAX_SERVERS && !servers.iter().any(|s| s == u) {
            servers.push(u.to_string());
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).take(MAX_CONTROL_LINE + 1).position(|w| w == b"\r\n")
}

/// Where the stream is inside a message whose start was already decided.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sifting {
    /// Bytes of an accepted message still to pass (payload and its CRLF).
    passing: usize,
    /// Bytes of a dropped message still to skip.
    skipping: usize,
}

/// Moves every operation off the front of `buf`: what async-nats can parse is appended to
/// `out` as it was, a message it would refuse is dropped (counted in `dropped`). A message's
/// fate is decided on its control line (and, for `HMSG`, its header block); its payload then
/// streams through (or is skipped) as it arrives, so the guard holds no whole message. What
/// cannot be decided yet stays in `buf` for the next read. `Err` when the stream cannot be
/// followed (a control line or message over the bounds, a size that is not a number).
pub(crate) fn sift(at: &mut Sifting, buf: &mut BytesMut, out: &mut BytesMut, dropped: &mut u64) -> Result<(), String> {
    loop {
        if at.passing > 0 || at.skipping > 0 {
            let n = (at.passing + at.skipping).min(buf.len());
            if at.passing > 0 {
                out.extend_from_slice(&buf[..n]);
                at.passing -= n;
            } else {
                at.skipping -= n;
            }
            buf.advance(n);
            if buf.is_empty() {
                return Ok(());
            }
            continue;
        }
        let Some(end) = find_crlf(buf) else {
            if buf.len() > MAX_CONTROL_LINE {
                return Err(format!("a control line is longer than {MAX_CONTROL_LINE} bytes"));
            }
            return Ok(());
        };
        let line = &buf[..end];
        let op = line.split(|b| *b == b' ' || *b == b'\t').next().unwrap_or_default();
        let (is_msg, is_hmsg) = (op.eq_ignore_ascii_case(b"MSG"), op.eq_ignore_ascii_case(b"HMSG"));
        if !is_msg && !is_hmsg {
            out.extend_from_slice(&buf[..end + 2]);
            buf.advance(end + 2);
            continue;
        }
        let args: Vec<&[u8]> = line[op.len()..].split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty()).collect();
        let number = |a: Option<&&[u8]>| -> Result<usize, String> {
            a.and_then(|a| std::str::from_utf8(a).ok()).and_then(|a| a.parse::<usize>().ok()).ok_or_else(|| "a message size is not a number".to_string())
        };
        let (header_len, total) = if is_hmsg { (number(args.iter().rev().nth(1))?, number(args.last())?) } else { (0, number(args.last())?) };
        if total > MAX_MESSAGE || header_len > total {
            return Err(format!("a message of {total} bytes (headers {header_len}) is over the {MAX_MESSAGE}-byte bound"));
        }
        // Decided on the line and the header block: wait for both.
        let decided = end + 2 + header_len;
        if buf.len() < decided {
            return Ok(());
        }
        let parsable = std::str::from_utf8(line).is_ok() && (!is_hmsg || header_parsable(&buf[end + 2..decided]));
        let rest = total - header_len + 2;
        if parsable {
            out.extend_from_slice(&buf[..decided]);
            at.passing = rest;
        } else {
            *dropped += 1;
            at.skipping = rest;
        }
        buf.advance(decided);
    }
}

/// Whether async-nats 0.51 parses this header block (its `HMSG` rules: UTF-8, a `NATS/1.0`
/// version line with an optional status code, then `name: value` lines with valid names and
/// continuation lines that start with whitespace).
fn header_parsable(block: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(block) else { return false };
    let mut lines = text.lines().peekable();
    let Some(version) = lines.next() else { return false };
    let Some(suffix) = version.strip_prefix("NATS/1.0").map(str::trim) else { return false };
    let status = suffix.split_once(' ').map(|(s, _)| s.trim()).unwrap_or(suffix);
    if !status.is_empty() && async_nats::StatusCode::from_str(status).is_err() {
        return false;
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else { return false };
        if async_nats::HeaderName::from_str(name).is_err() {
            return false;
        }
        while lines.next_if(|s| s.starts_with(char::is_whitespace)).is_some() {}
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// (what, input, passed through, dropped, left for the next read)
    type Row = (&'static str, Vec<u8>, Vec<u8>, u64, Vec<u8>);

    fn sifted(input: &[u8]) -> (Vec<u8>, u64, Vec<u8>) {
        let mut buf = BytesMut::from(input);
        let mut out = BytesMut::new();
        let mut dropped = 0;
        sift(&mut Sifting::default(), &mut buf, &mut out, &mut dropped).unwrap();
        (out.to_vec(), dropped, buf.to_vec())
    }

    #[test]
    fn what_async_nats_refuses_is_dropped_and_the_rest_passes_byte_for_byte() {
        let good = b"MSG a.b 1 2\r\nhi\r\nHMSG a.b 2 _INBOX.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n+OK\r\n".to_vec();
        let table: Vec<Row> = vec![
            ("valid operations", good.clone(), good.clone(), 0, vec![]),
            ("a non-UTF-8 subject", b"MSG wasmbus.ctl.\xff\xfe 1 2\r\nhi\r\nPING\r\n".to_vec(), b"PING\r\n".to_vec(), 1, vec![]),
            ("a non-UTF-8 reply", b"MSG a 1 _INBOX.\xc3\x28 2\r\nhi\r\nPONG\r\n".to_vec(), b"PONG\r\n".to_vec(), 1, vec![]),
            ("a non-UTF-8 HMSG subject", b"HMSG a.\xff 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".to_vec(), vec![], 1, vec![]),
            ("a non-UTF-8 header", b"HMSG a 1 17 19\r\nNATS/1.0\r\nk:\xff\r\n\r\nhi\r\n".to_vec(), vec![], 1, vec![]),
            ("no version line", b"HMSG a 1 10 12\r\nHTTP/1.1\r\nhi\r\n".to_vec(), vec![], 1, vec![]),
            ("a bad header name", b"HMSG a 1 20 20\r\nNATS/1.0\r\nk k: v\r\n\r\n\r\n".to_vec(), vec![], 1, vec![]),
            ("a status code", b"HMSG a 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n".to_vec(), b"HMSG a 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n".to_vec(), 0, vec![]),
            ("non-UTF-8 payload is fine", b"MSG a 1 2\r\n\xff\xfe\r\n".to_vec(), b"MSG a 1 2\r\n\xff\xfe\r\n".to_vec(), 0, vec![]),
            ("a payload streams as it comes", b"PING\r\nMSG a 1 5\r\nhel".to_vec(), b"PING\r\nMSG a 1 5\r\nhel".to_vec(), 0, vec![]),
            ("a header block is waited for", b"HMSG a 1 12 14\r\nNATS/1.0\r\n".to_vec(), vec![], 0, b"HMSG a 1 12 14\r\nNATS/1.0\r\n".to_vec()),
            ("an incomplete line waits", b"MSG a 1".to_vec(), vec![], 0, b"MSG a 1".to_vec()),
        ];
        for (what, input, passed, dropped, left) in table {
            let (out, d, rest) = sifted(&input);
            assert_eq!((out, d, rest), (passed, dropped, left), "{what}");
        }
        // Split anywhere, the same bytes pass.
        let stream = [b"MSG x.\xff 1 2\r\nhi\r\n".as_slice(), &good].concat();
        for cut in 0..stream.len() {
            for second in cut..stream.len() {
                let (mut at, mut out, mut dropped) = (Sifting::default(), BytesMut::new(), 0);
                let mut buf = BytesMut::new();
                for piece in [&stream[..cut], &stream[cut..second], &stream[second..]] {
                    buf.extend_from_slice(piece);
                    sift(&mut at, &mut buf, &mut out, &mut dropped).unwrap();
                }
                assert_eq!((out.to_vec(), dropped, at), (good.clone(), 1, Sifting::default()), "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn a_stream_past_the_bounds_is_given_up() {
        let mut out = BytesMut::new();
        let mut d = 0;
        let mut at = Sifting::default();
        assert!(sift(&mut at, &mut BytesMut::from(vec![b'x'; MAX_CONTROL_LINE + 10].as_slice()), &mut out, &mut d).is_err());
        assert!(sift(&mut at, &mut BytesMut::from(format!("MSG a 1 {}\r\n", MAX_MESSAGE + 1).as_bytes()), &mut out, &mut d).is_err());
        assert!(sift(&mut at, &mut BytesMut::from(b"MSG a 1 lots\r\n".as_slice()), &mut out, &mut d).is_err());
    }

    #[test]
    fn urls_the_guard_can_relay() {
        assert_eq!(plain_servers("nats://127.0.0.1:4222"), Some(vec!["127.0.0.1:4222".to_string()]));
        assert_eq!(plain_servers("nats://a:1, b:2,nats://c"), Some(vec!["a:1".into(), "b:2".into(), "c:4222".into()]));
        assert_eq!(plain_servers("tls://a:1"), None);
        assert_eq!(plain_servers("ws://a:1"), None);
        assert_eq!(plain_servers("nats://u:p@a:1"), None);
        assert_eq!(plain_servers(""), None);
    }
}
