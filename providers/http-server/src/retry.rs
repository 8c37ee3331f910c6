//! Going beyond at-most-once where it is safe: which requests may be sent again after their
//! call was [`RpcErrorKind::Lost`], and the request body kept so that they can be.
//!
//! A `Lost` call may or may not have run (the replica that took it is gone), so it is sent
//! again only when running it twice does no harm: the method is idempotent (`GET`, `HEAD`,
//! `OPTIONS`, or one the link lists in `idempotent_methods`) and the body read so far, at
//! most [`REPLAY_BYTES`], is still held, so the second replica sees the same request.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use trellis_lattice::rpc::{Body, CallInfo, RpcError, RpcErrorKind};

/// How much of a request body is kept for a retry. A request whose body grows past it before
/// its call is lost is not retried (its bytes went to the lost replica and are gone).
pub const REPLAY_BYTES: usize = 64 * 1024;

/// Methods that are always idempotent (RFC 9110 §9.2.2, less `PUT` and `DELETE`, which many
/// handlers implement with side effects that are not; a link opts them in).
const IDEMPOTENT: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// Most methods a link's `idempotent_methods` may list.
pub const MAX_EXTRA_METHODS: usize = 16;

/// Which requests of one link may be retried after a lost call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Methods beyond [`IDEMPOTENT`] that the link declares idempotent, upper case.
    extra: Vec<String>,
}

impl Policy {
    /// Parses `idempotent_methods`: methods separated by commas (`PUT,DELETE`); an empty value
    /// adds none.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut extra = Vec::new();
        for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                return Err(format!("idempotent_methods: `{}` is not an HTTP method; list methods separated by commas, e.g. `PUT,DELETE`", m.escape_debug()));
            }
            let m = m.to_ascii_uppercase();
            if !extra.contains(&m) {
                extra.push(m);
            }
        }
        if extra.len() > MAX_EXTRA_METHODS {
            return Err(format!("idempotent_methods lists {} methods; at most {MAX_EXTRA_METHODS} are accepted", extra.len()));
        }
        Ok(Self { extra })
    }

    /// Whether a request with `method` may be sent again after its call was lost.
    pub fn allows(&self, method: &http::Method) -> bool {
        let m = method.as_str();
        IDEMPOTENT.contains(&m) || self.extra.iter().any(|e| e.eq_ignore_ascii_case(m))
    }

    /// Why `method` is not retried, for the error a client gets.
    pub fn refusal(&self, method: &http::Method) -> String {
        let mut listed: Vec<&str> = IDEMPOTENT.to_vec();
        listed.extend(self.extra.iter().map(String::as_str));
        format!("not retried: `{method}` is not idempotent for this link (retried: {}; a link adds methods with `idempotent_methods`)", listed.join(", "))
    }
}

struct State {
    /// The client's body, read on demand by the current attempt.
    source: Body,
    /// What has been read so far, while it fits in the cap.
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The body outgrew the cap or failed: it can no longer be replayed.
    spent: bool,
    ended: bool,
    /// Which attempt may read; an earlier one that reads on gets an error.
    attempt: u64,
}

/// A request body that can be read again from its start, while what was read fits in `cap`.
#[derive(Clone)]
pub struct Replay {
    state: Arc<tokio::sync::Mutex<State>>,
    cap: usize,
    call: CallInfo,
}

impl Replay {
    /// Wraps `source`, keeping at most `cap` bytes of it; returns the body of the first attempt
    /// too.
    pub fn new(source: Body, cap: usize, call: CallInfo) -> (Self, Body) {
        let state = State { source, kept: Vec::new(), kept_len: 0, spent: false, ended: false, attempt: 1 };
        let replay = Self { state: Arc::new(tokio::sync::Mutex::new(state)), cap, call };
        let first = replay.reader(1);
        (replay, first)
    }

    /// The body for the next attempt: what earlier attempts read, then the rest from the
    /// client. `None` once the body can no longer be replayed (it outgrew the cap or failed).
    /// The previous attempt's body stops yielding.
    pub async fn attempt(&self) -> Option<Body> {
        let mut s = self.state.lock().await;
        if s.spent {
            return None;
        }
        s.attempt += 1;
        Some(self.reader(s.attempt))
    }

    /// The body of attempt `me`.
    fn reader(&self, me: u64) -> Body {
        let (state, call) = (self.state.clone(), self.call.clone());
        let cap = self.cap;
        let stream = futures::stream::unfold(Some(0usize), move |next| {
            let (state, call) = (state.clone(), call.clone());
            async move {
                let at = next?;
                let mut s = state.lock().await;
                if s.attempt != me {
                    let e = RpcError::new(RpcErrorKind::Transport, &call, "the request body was handed to a later attempt of the call");
                    return Some((Err(e), None));
                }
                if let Some(b) = s.kept.get(at) {
                    return Some((Ok(b.clone()), Some(at + 1)));
                }
                if s.ended {
                    return None;
                }
                match s.source.next().await {
                    Some(Ok(b)) => {
                        if !s.spent && s.kept_len + b.len() <= cap {
                            s.kept_len += b.len();
                            s.kept.push(b.clone());
                        } else {
                            // Past the cap: nothing kept is of use any more.
                            s.spent = true;
                            s.kept = Vec::new();
                        }
                        Some((Ok(b), Some(at + 1)))
                    }
                    Some(Err(e)) => {
                        s.spent = true;
                        Some((Err(e), None))
                    }
                    None => {
                        s.ended = true;
                        None
                    }
                }
            }
        });
        stream.boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use trellis_lattice::rpc::collect_body;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        futures::stream::iter(parts.iter().map(|p| Bytes::from_static(p)).collect::<Vec<_>>()).map(Ok).boxed()
    }

    #[test]
    fn get_head_options_and_listed_methods_are_retried_and_nothing_else() {
        let none = Policy::default();
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert!(none.allows(&http::Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"] {
            assert!(!none.allows(&http::Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        let put = Policy::parse(" put , DELETE,,").unwrap();
        assert!(put.allows(&http::Method::PUT) && put.allows(&http::Method::DELETE));
        assert!(!put.allows(&http::Method::POST));
        assert!(put.refusal(&http::Method::POST).contains("GET, HEAD, OPTIONS, PUT, DELETE"), "{}", put.refusal(&http::Method::POST));
        let bad = Policy::parse("PUT,GET POST").unwrap_err();
        assert!(bad.contains("`GET POST` is not an HTTP method"), "{bad}");
        let many = (0..17).map(|i| format!("M{i}")).collect::<Vec<_>>().join(",");
        assert!(Policy::parse(&many).unwrap_err().contains("at most 16"));
    }

    #[tokio::test]
    async fn a_body_is_replayed_from_its_start_while_it_fits_the_cap() {
        // The first attempt reads part of the body, then its call is lost.
        let (replay, mut first) = Replay::new(chunks(&[b"ab", b"cd", b"ef"]), 6, CallInfo::default());
        assert_eq!(first.next().await.unwrap().unwrap(), "ab");
        // The second reads all of it from the start; the first may not read on.
        let second = replay.attempt().await.unwrap();
        assert!(first.next().await.unwrap().is_err(), "a superseded attempt reads nothing more");
        assert_eq!(collect_body(second).await.unwrap(), "abcdef");
        let third = replay.attempt().await.unwrap();
        assert_eq!(collect_body(third).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn a_body_read_past_the_cap_is_not_replayed() {
        let (replay, first) = Replay::new(chunks(&[b"abc", b"def", b"g"]), 6, CallInfo::default());
        assert_eq!(collect_body(first).await.unwrap(), "abcdefg", "the first attempt still gets the whole body");
        assert!(replay.attempt().await.is_none(), "7 bytes were read, 6 kept at most");

        // Within the cap but not yet read past it: still replayable.
        let (replay, mut first) = Replay::new(chunks(&[b"abc", b"def", b"g"]), 6, CallInfo::default());
        first.next().await.unwrap().unwrap();
        first.next().await.unwrap().unwrap();
        assert_eq!(collect_body(replay.attempt().await.unwrap()).await.unwrap(), "abcdefg");
    }
}
