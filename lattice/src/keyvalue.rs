//! `wasi:keyvalue` on the data plane.
//!
//! A component's key-value call travels like any linked call (see [`crate::wit_value`]): the
//! interface and function name the WIT function, the head carries its arguments and results
//! as WIT values. The one difference is the `bucket` resource, which lives in the caller's
//! store: on the wire it is replaced by the bucket's identifier, a string, as first argument
//! of every call. So `bucket.get(key)` on a bucket opened as `"counters"` is the call
//! `wasi:keyvalue/store` · `get("counters", key)`, answered with a WIT
//! `result<option<list<u8>>, error>`.
//!
//! [`Request`] and [`Reply`] are the typed form both sides use; the host turns component
//! calls into requests, a provider turns requests into backend operations.
//!
//! Besides the `wasi:keyvalue@0.2.0-draft` interfaces (`store`, `atomics`, `batch`), the host
//! offers `trellis:keyvalue/cas@0.1.0`: a compare-and-swap that is atomic on every backend.

use crate::wit_value::WitValue;
use crate::{Error, malformed};

/// `wasi:keyvalue/store`
pub const STORE: &str = "wasi:keyvalue/store";
/// `wasi:keyvalue/atomics`
pub const ATOMICS: &str = "wasi:keyvalue/atomics";
/// `wasi:keyvalue/batch`
pub const BATCH: &str = "wasi:keyvalue/batch";
/// `trellis:keyvalue/cas`
pub const CAS: &str = "trellis:keyvalue/cas";

/// One key-value operation on the bucket a component opened as `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `store.open`: checks that the bucket can be used.
    Open {
        /// The identifier the component opened.
        bucket: String,
    },
    /// `bucket.get`
    Get {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
    },
    /// `bucket.set`
    Set {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// `bucket.delete` (deleting a missing key is not an error)
    Delete {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
    },
    /// `bucket.exists`
    Exists {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
    },
    /// `bucket.list-keys`
    ListKeys {
        /// See [`Request::Open`].
        bucket: String,
        /// Where the previous page ended.
        cursor: Option<u64>,
    },
    /// `atomics.increment`: the value is a decimal number in ASCII; a missing key counts as 0.
    Increment {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
        /// How much to add.
        delta: u64,
    },
    /// `batch.get-many`
    GetMany {
        /// See [`Request::Open`].
        bucket: String,
        /// The keys.
        keys: Vec<String>,
    },
    /// `batch.set-many`
    SetMany {
        /// See [`Request::Open`].
        bucket: String,
        /// Keys and values.
        items: Vec<(String, Vec<u8>)>,
    },
    /// `batch.delete-many`
    DeleteMany {
        /// See [`Request::Open`].
        bucket: String,
        /// The keys.
        keys: Vec<String>,
    },
    /// `cas.compare-and-swap`: sets `key` to `new` only if its value is `expected` now
    /// (`None`: only if the key is absent).
    CompareAndSwap {
        /// See [`Request::Open`].
        bucket: String,
        /// The key.
        key: String,
        /// The value the caller last saw.
        expected: Option<Vec<u8>>,
        /// The value to store.
        new: Vec<u8>,
    },
}

/// What a [`Request`] returns when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `open`, `set`, `delete`, `set-many`, `delete-many`
    Unit,
    /// `get`
    Value(Option<Vec<u8>>),
    /// `exists`
    Exists(bool),
    /// `list-keys`: a page of keys and where the next one starts (`None`: this was the last).
    Keys {
        /// The keys of this page.
        keys: Vec<String>,
        /// The cursor of the next page.
        cursor: Option<u64>,
    },
    /// `increment`: the new value.
    Number(u64),
    /// `get-many`: per key asked, the key and its value, or `None` when it is absent.
    Values(Vec<Option<(String, Vec<u8>)>>),
    /// `compare-and-swap`
    Cas(CasOutcome),
}

/// How a compare-and-swap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The new value is stored.
    Swapped,
    /// Someone else changed the key first; its current value (`None`: absent).
    Conflict(Option<Vec<u8>>),
}

/// The `error` variant of `wasi:keyvalue/store`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The bucket does not exist.
    #[error("no such store")]
    NoSuchStore,
    /// The caller may not use it.
    #[error("access denied")]
    AccessDenied,
    /// Anything else, said in words (backend and cause).
    #[error("{0}")]
    Other(String),
}

/// A request's outcome.
pub type KvResult = Result<Reply, KvError>;

impl Request {
    /// The bucket identifier the request acts on.
    pub fn bucket(&self) -> &str {
        match self {
            Self::Open { bucket }
            | Self::Get { bucket, .. }
            | Self::Set { bucket, .. }
            | Self::Delete { bucket, .. }
            | Self::Exists { bucket, .. }
            | Self::ListKeys { bucket, .. }
            | Self::Increment { bucket, .. }
            | Self::GetMany { bucket, .. }
            | Self::SetMany { bucket, .. }
            | Self::DeleteMany { bucket, .. }
            | Self::CompareAndSwap { bucket, .. } => bucket,
        }
    }

    /// The interface (no version) the call travels under.
    pub fn interface(&self) -> &'static str {
        match self {
            Self::Open { .. } | Self::Get { .. } | Self::Set { .. } | Self::Delete { .. } | Self::Exists { .. } | Self::ListKeys { .. } => STORE,
            Self::Increment { .. } => ATOMICS,
            Self::GetMany { .. } | Self::SetMany { .. } | Self::DeleteMany { .. } => BATCH,
            Self::CompareAndSwap { .. } => CAS,
        }
    }

    /// The function name the call travels under.
    pub fn function(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open",
            Self::Get { .. } => "get",
            Self::Set { .. } => "set",
            Self::Delete { .. } => "delete",
            Self::Exists { .. } => "exists",
            Self::ListKeys { .. } => "list-keys",
            Self::Increment { .. } => "increment",
            Self::GetMany { .. } => "get-many",
            Self::SetMany { .. } => "set-many",
            Self::DeleteMany { .. } => "delete-many",
            Self::CompareAndSwap { .. } => "compare-and-swap",
        }
    }

    /// The arguments on the wire (the bucket identifier first).
    pub fn to_args(&self) -> Vec<WitValue> {
        let s = |v: &str| WitValue::String(v.to_string());
        let strings = |v: &[String]| WitValue::List(v.iter().map(|k| s(k)).collect());
        let mut args = vec![s(self.bucket())];
        match self {
            Self::Open { .. } => {}
            Self::Get { key, .. } | Self::Delete { key, .. } | Self::Exists { key, .. } => args.push(s(key)),
            Self::Set { key, value, .. } => args.extend([s(key), bytes(value)]),
            Self::ListKeys { cursor, .. } => args.push(WitValue::Option(cursor.map(|c| Box::new(WitValue::U64(c))))),
            Self::Increment { key, delta, .. } => args.extend([s(key), WitValue::U64(*delta)]),
            Self::GetMany { keys, .. } | Self::DeleteMany { keys, .. } => args.push(strings(keys)),
            Self::SetMany { items, .. } => args.push(WitValue::List(items.iter().map(|(k, v)| WitValue::Tuple(vec![s(k), bytes(v)])).collect())),
            Self::CompareAndSwap { key, expected, new, .. } => {
                args.extend([s(key), WitValue::Option(expected.as_deref().map(|e| Box::new(bytes(e)))), bytes(new)])
            }
        }
        args
    }

    /// Reads a call back into a request; the error says what did not fit.
    pub fn from_call(interface: &str, function: &str, args: Vec<WitValue>) -> Result<Self, Error> {
        let mut a = Args { args: args.into_iter(), what: format!("{interface}.{function}") };
        let bucket = a.string("bucket")?;
        let req = match (interface, function) {
            (STORE, "open") => Self::Open { bucket },
            (STORE, "get") => Self::Get { bucket, key: a.string("key")? },
            (STORE, "set") => Self::Set { bucket, key: a.string("key")?, value: a.bytes("value")? },
            (STORE, "delete") => Self::Delete { bucket, key: a.string("key")? },
            (STORE, "exists") => Self::Exists { bucket, key: a.string("key")? },
            (STORE, "list-keys") => Self::ListKeys {
                bucket,
                cursor: a.option("cursor", |v| match v {
                    WitValue::U64(c) => Some(c),
                    _ => None,
                })?,
            },
            (ATOMICS, "increment") => Self::Increment {
                bucket,
                key: a.string("key")?,
                delta: match a.next("delta")? {
                    WitValue::U64(d) => d,
                    other => return Err(a.wrong("delta", "u64", &other)),
                },
            },
            (BATCH, "get-many") => Self::GetMany { bucket, keys: a.strings("keys")? },
            (BATCH, "delete-many") => Self::DeleteMany { bucket, keys: a.strings("keys")? },
            (BATCH, "set-many") => {
                let WitValue::List(items) = a.next("key-values")? else {
                    return Err(malformed(format!("{}: `key-values` must be a list of (key, value) tuples", a.what)));
                };
                let items = items
                    .into_iter()
                    .map(|item| match item {
                        WitValue::Tuple(pair) if pair.len() == 2 => {
                            let mut pair = pair.into_iter();
                            match (pair.next().and_then(string), pair.next().and_then(byte_list)) {
                                (Some(k), Some(v)) => Ok((k, v)),
                                _ => Err(malformed(format!("{}: each of `key-values` must be a (string, list<u8>) tuple", a.what))),
                            }
                        }
                        _ => Err(malformed(format!("{}: each of `key-values` must be a (string, list<u8>) tuple", a.what))),
                    })
                    .collect::<Result<_, _>>()?;
                Self::SetMany { bucket, items }
            }
            (CAS, "compare-and-swap") => {
                Self::CompareAndSwap { bucket, key: a.string("key")?, expected: a.option("expected", byte_list)?, new: a.bytes("new")? }
            }
            _ => return Err(malformed(format!("`{interface}.{function}` is not a key-value function this provider knows"))),
        };
        if a.args.next().is_some() {
            return Err(malformed(format!("{}: too many arguments", a.what)));
        }
        Ok(req)
    }

    /// The results on the wire for `outcome`: one WIT `result<T, error>` shaped as this
    /// request's function returns it.
    pub fn encode_results(&self, outcome: &KvResult) -> Vec<WitValue> {
        let ok = |v: Option<WitValue>| WitValue::Result(Ok(v.map(Box::new)));
        let value = match outcome {
            Err(e) => WitValue::Result(Err(Some(Box::new(e.to_wit())))),
            Ok(Reply::Unit) => ok(None),
            Ok(Reply::Value(v)) => ok(Some(opt_bytes(v.as_deref()))),
            Ok(Reply::Exists(b)) => ok(Some(WitValue::Bool(*b))),
            Ok(Reply::Keys { keys, cursor }) => ok(Some(WitValue::Record(vec![
                ("keys".into(), WitValue::List(keys.iter().map(|k| WitValue::String(k.clone())).collect())),
                ("cursor".into(), WitValue::Option(cursor.map(|c| Box::new(WitValue::U64(c))))),
            ]))),
            Ok(Reply::Number(n)) => ok(Some(WitValue::U64(*n))),
            Ok(Reply::Values(vs)) => ok(Some(WitValue::List(
                vs.iter().map(|v| WitValue::Option(v.as_ref().map(|(k, v)| Box::new(WitValue::Tuple(vec![WitValue::String(k.clone()), bytes(v)]))))).collect(),
            ))),
            Ok(Reply::Cas(CasOutcome::Swapped)) => ok(Some(WitValue::Variant("swapped".into(), None))),
            Ok(Reply::Cas(CasOutcome::Conflict(current))) => ok(Some(WitValue::Variant("conflict".into(), Some(Box::new(opt_bytes(current.as_deref())))))),
        };
        vec![value]
    }

    /// Reads the results of this request back; the error says what did not fit.
    pub fn decode_results(&self, results: Vec<WitValue>) -> Result<KvResult, Error> {
        let what = format!("the reply to {}.{}", self.interface(), self.function());
        let bad = || malformed(format!("{what} does not have the shape its WIT function returns"));
        let mut results = results.into_iter();
        let (Some(WitValue::Result(r)), None) = (results.next(), results.next()) else { return Err(bad()) };
        let payload = match r {
            Err(e) => return e.and_then(|e| KvError::from_wit(*e)).map(Err).ok_or_else(bad),
            Ok(p) => p.map(|b| *b),
        };
        let reply = match (self, payload) {
            (Self::Open { .. } | Self::Set { .. } | Self::Delete { .. } | Self::SetMany { .. } | Self::DeleteMany { .. }, None) => Reply::Unit,
            (Self::Get { .. }, Some(WitValue::Option(v))) => Reply::Value(match v {
                None => None,
                Some(v) => Some(byte_list(*v).ok_or_else(bad)?),
            }),
            (Self::Exists { .. }, Some(WitValue::Bool(b))) => Reply::Exists(b),
            (Self::ListKeys { .. }, Some(WitValue::Record(fields))) => {
                let mut keys = None;
                let mut cursor = None;
                for (name, v) in fields {
                    match (name.as_str(), v) {
                        ("keys", WitValue::List(ks)) => keys = Some(ks.into_iter().map(string).collect::<Option<Vec<_>>>().ok_or_else(bad)?),
                        ("cursor", WitValue::Option(c)) => {
                            cursor = match c.map(|c| *c) {
                                None => None,
                                Some(WitValue::U64(c)) => Some(c),
                                Some(_) => return Err(bad()),
                            }
                        }
                        _ => return Err(bad()),
                    }
                }
                Reply::Keys { keys: keys.ok_or_else(bad)?, cursor }
            }
            (Self::Increment { .. }, Some(WitValue::U64(n))) => Reply::Number(n),
            (Self::GetMany { .. }, Some(WitValue::List(vs))) => Reply::Values(
                vs.into_iter()
                    .map(|v| match v {
                        WitValue::Option(None) => Some(None),
                        WitValue::Option(Some(pair)) => match *pair {
                            WitValue::Tuple(kv) if kv.len() == 2 => {
                                let mut kv = kv.into_iter();
                                Some(Some((kv.next().and_then(string)?, kv.next().and_then(byte_list)?)))
                            }
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(bad)?,
            ),
            (Self::CompareAndSwap { .. }, Some(WitValue::Variant(case, payload))) => match (case.as_str(), payload) {
                ("swapped", None) => Reply::Cas(CasOutcome::Swapped),
                ("conflict", Some(current)) => Reply::Cas(CasOutcome::Conflict(match *current {
                    WitValue::Option(None) => None,
                    WitValue::Option(Some(v)) => Some(byte_list(*v).ok_or_else(bad)?),
                    _ => return Err(bad()),
                })),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        Ok(Ok(reply))
    }
}

impl KvError {
    /// As the WIT `error` variant.
    pub fn to_wit(&self) -> WitValue {
        match self {
            Self::NoSuchStore => WitValue::Variant("no-such-store".into(), None),
            Self::AccessDenied => WitValue::Variant("access-denied".into(), None),
            Self::Other(m) => WitValue::Variant("other".into(), Some(Box::new(WitValue::String(m.clone())))),
        }
    }

    /// From the WIT `error` variant; `None` for anything else.
    pub fn from_wit(v: WitValue) -> Option<Self> {
        match v {
            WitValue::Variant(case, payload) => match (case.as_str(), payload.map(|p| *p)) {
                ("no-such-store", None) => Some(Self::NoSuchStore),
                ("access-denied", None) => Some(Self::AccessDenied),
                ("other", Some(WitValue::String(m))) => Some(Self::Other(m)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `list<u8>` on the wire.
pub fn bytes(v: &[u8]) -> WitValue {
    if v.is_empty() { WitValue::List(Vec::new()) } else { WitValue::Bytes(v.to_vec()) }
}

fn opt_bytes(v: Option<&[u8]>) -> WitValue {
    WitValue::Option(v.map(|v| Box::new(bytes(v))))
}

fn string(v: WitValue) -> Option<String> {
    match v {
        WitValue::String(s) => Some(s),
        _ => None,
    }
}

/// A `list<u8>` in either wire form.
pub fn byte_list(v: WitValue) -> Option<Vec<u8>> {
    match v {
        WitValue::Bytes(b) => Some(b),
        WitValue::List(items) => items
            .into_iter()
            .map(|i| match i {
                WitValue::U8(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

struct Args {
    args: std::vec::IntoIter<WitValue>,
    what: String,
}

impl Args {
    fn next(&mut self, name: &str) -> Result<WitValue, Error> {
        self.args.next().ok_or_else(|| malformed(format!("{}: the argument `{name}` is missing", self.what)))
    }

    fn wrong(&self, name: &str, expected: &str, got: &WitValue) -> Error {
        malformed(format!("{}: `{name}` must be a {expected}, not a {}", self.what, got.kind()))
    }

    fn string(&mut self, name: &str) -> Result<String, Error> {
        match self.next(name)? {
            WitValue::String(s) => Ok(s),
            other => Err(self.wrong(name, "string", &other)),
        }
    }

    fn bytes(&mut self, name: &str) -> Result<Vec<u8>, Error> {
        let v = self.next(name)?;
        let kind = v.kind();
        byte_list(v).ok_or_else(|| malformed(format!("{}: `{name}` must be a list<u8>, not a {kind}", self.what)))
    }

    fn strings(&mut self, name: &str) -> Result<Vec<String>, Error> {
        match self.next(name)? {
            WitValue::List(items) => {
                items.into_iter().map(string).collect::<Option<_>>().ok_or_else(|| malformed(format!("{}: `{name}` must be a list<string>", self.what)))
            }
            other => Err(self.wrong(name, "list<string>", &other)),
        }
    }

    fn option<T>(&mut self, name: &str, inner: impl FnOnce(WitValue) -> Option<T>) -> Result<Option<T>, Error> {
        match self.next(name)? {
            WitValue::Option(None) => Ok(None),
            WitValue::Option(Some(v)) => inner(*v).map(Some).ok_or_else(|| malformed(format!("{}: `{name}` holds the wrong kind of value", self.what))),
            other => Err(self.wrong(name, "option", &other)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::wit_value;

    fn every_request() -> Vec<(Request, KvResult)> {
        let b = || "counters".to_string();
        vec![
            (Request::Open { bucket: b() }, Ok(Reply::Unit)),
            (Request::Get { bucket: b(), key: "k".into() }, Ok(Reply::Value(Some(b"v".to_vec())))),
            (Request::Get { bucket: b(), key: "k".into() }, Ok(Reply::Value(None))),
            (Request::Get { bucket: b(), key: "k".into() }, Ok(Reply::Value(Some(vec![])))),
            (Request::Set { bucket: b(), key: "k".into(), value: vec![1, 2, 3] }, Ok(Reply::Unit)),
            (Request::Delete { bucket: b(), key: "k".into() }, Err(KvError::NoSuchStore)),
            (Request::Exists { bucket: b(), key: "k".into() }, Ok(Reply::Exists(true))),
            (Request::ListKeys { bucket: b(), cursor: Some(7) }, Ok(Reply::Keys { keys: vec!["a".into(), "b".into()], cursor: None })),
            (Request::ListKeys { bucket: b(), cursor: None }, Ok(Reply::Keys { keys: vec![], cursor: Some(3) })),
            (Request::Increment { bucket: b(), key: "n".into(), delta: 5 }, Ok(Reply::Number(205))),
            (Request::GetMany { bucket: b(), keys: vec!["a".into(), "z".into()] }, Ok(Reply::Values(vec![Some(("a".into(), b"1".to_vec())), None]))),
            (Request::SetMany { bucket: b(), items: vec![("a".into(), b"1".to_vec()), ("e".into(), vec![])] }, Ok(Reply::Unit)),
            (Request::DeleteMany { bucket: b(), keys: vec!["a".into()] }, Err(KvError::Other("redis backend: connection refused".into()))),
            (Request::CompareAndSwap { bucket: b(), key: "k".into(), expected: None, new: b"x".to_vec() }, Ok(Reply::Cas(CasOutcome::Swapped))),
            (
                Request::CompareAndSwap { bucket: b(), key: "k".into(), expected: Some(b"x".to_vec()), new: b"y".to_vec() },
                Ok(Reply::Cas(CasOutcome::Conflict(Some(b"z".to_vec())))),
            ),
            (Request::Exists { bucket: b(), key: "k".into() }, Err(KvError::AccessDenied)),
        ]
    }

    #[test]
    fn requests_and_results_survive_the_wire() {
        for (req, outcome) in every_request() {
            let args = wit_value::decode(&wit_value::encode(&req.to_args())).unwrap();
            assert_eq!(Request::from_call(req.interface(), req.function(), args).unwrap(), req);
            let results = wit_value::decode(&wit_value::encode(&req.encode_results(&outcome))).unwrap();
            assert_eq!(req.decode_results(results).unwrap(), outcome, "{req:?}");
        }
    }

    #[test]
    fn malformed_calls_say_what_is_wrong() {
        let s = |v: &str| WitValue::String(v.into());
        let e = Request::from_call(STORE, "get", vec![s("b")]).unwrap_err().to_string();
        assert!(e.contains("`key` is missing"), "{e}");
        let e = Request::from_call(ATOMICS, "increment", vec![s("b"), s("k"), WitValue::S64(1)]).unwrap_err().to_string();
        assert!(e.contains("`delta` must be a u64, not a s64"), "{e}");
        let e = Request::from_call(STORE, "teleport", vec![s("b")]).unwrap_err().to_string();
        assert!(e.contains("not a key-value function"), "{e}");
        let e = Request::from_call(STORE, "get", vec![s("b"), s("k"), s("extra")]).unwrap_err().to_string();
        assert!(e.contains("too many arguments"), "{e}");
        let e = Request::from_call(STORE, "get", vec![]).unwrap_err().to_string();
        assert!(e.contains("`bucket` is missing"), "{e}");
        let get = Request::Get { bucket: "b".into(), key: "k".into() };
        assert!(get.decode_results(vec![WitValue::Bool(true)]).is_err());
        assert!(get.decode_results(vec![]).is_err());
    }
}
