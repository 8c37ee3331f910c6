//! The one trait every backend implements, and what the backends share.

use futures::future::BoxFuture;
use trellis_lattice::keyvalue::{CasOutcome, KvError, KvResult, Reply, Request};

/// What a backend operation returns.
pub type KvFuture<'a, T> = BoxFuture<'a, Result<T, KvError>>;

/// A key and its value.
pub type KeyValue = (String, Vec<u8>);

/// How many keys one `list-keys` page holds at most.
pub const LIST_PAGE_SIZE: usize = 1000;

/// One page of `list-keys`: the keys and the cursor of the next page (`None`: last page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// The keys of this page.
    pub keys: Vec<String>,
    /// Where the next page starts.
    pub cursor: Option<u64>,
}

/// One bucket of one backend. Every error is a [`KvError`] whose text names the backend and
/// the cause; no method panics.
pub trait KeyValueStore: Send + Sync {
    /// Who this is, for messages: e.g. `nats backend (bucket `counters`)`.
    fn describe(&self) -> String;

    /// Checks that the bucket can be used now (what `store.open` answers).
    fn check(&self) -> KvFuture<'_, ()>;

    /// The value of `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;

    /// Stores `value` under `key`.
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()>;

    /// Removes `key`; a missing key is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()>;

    /// Whether `key` holds a value.
    fn exists<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool>;

    /// A page of keys, starting where `cursor` (from the previous page) says.
    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage>;

    /// Adds `delta` to the ASCII decimal number under `key` (a missing key counts as 0),
    /// atomically, and returns the new value.
    fn increment<'a>(&'a self, key: &'a str, delta: u64) -> KvFuture<'a, u64>;

    /// Per key asked, the key and its value, or `None` when it is absent.
    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, Vec<Option<KeyValue>>>;

    /// Stores every pair.
    fn set_many<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> KvFuture<'a, ()>;

    /// Removes every key.
    fn delete_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, ()>;

    /// Sets `key` to `new` only if its value is `expected` now (`None`: only if it is absent),
    /// atomically; otherwise reports the current value.
    fn compare_and_swap<'a>(&'a self, key: &'a str, expected: Option<&'a [u8]>, new: Vec<u8>) -> KvFuture<'a, CasOutcome>;
}

/// Runs one request on `store`.
pub async fn execute(store: &dyn KeyValueStore, req: Request) -> KvResult {
    Ok(match req {
        Request::Open { .. } => {
            store.check().await?;
            Reply::Unit
        }
        Request::Get { key, .. } => Reply::Value(store.get(&key).await?),
        Request::Set { key, value, .. } => {
            store.set(&key, value).await?;
            Reply::Unit
        }
        Request::Delete { key, .. } => {
            store.delete(&key).await?;
            Reply::Unit
        }
        Request::Exists { key, .. } => Reply::Exists(store.exists(&key).await?),
        Request::ListKeys { cursor, .. } => {
            let page = store.list_keys(cursor).await?;
            Reply::Keys { keys: page.keys, cursor: page.cursor }
        }
        Request::Increment { key, delta, .. } => Reply::Number(store.increment(&key, delta).await?),
        Request::GetMany { keys, .. } => Reply::Values(store.get_many(&keys).await?),
        Request::SetMany { items, .. } => {
            store.set_many(&items).await?;
            Reply::Unit
        }
        Request::DeleteMany { keys, .. } => {
            store.delete_many(&keys).await?;
            Reply::Unit
        }
        Request::CompareAndSwap { key, expected, new, .. } => Reply::Cas(store.compare_and_swap(&key, expected.as_deref(), new).await?),
    })
}

/// Reads a counter: ASCII decimal digits (what wasmCloud stores); `who` names the backend.
pub(crate) fn parse_counter(who: &str, key: &str, value: &[u8]) -> Result<u64, KvError> {
    std::str::from_utf8(value).ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
        let shown = String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned();
        let more = if value.len() > 40 { "…" } else { "" };
        KvError::Other(format!("{who}: cannot increment key `{key}`: its value `{shown}{more}` is not a decimal number (counters are stored as ASCII digits)"))
    })
}

/// `current + delta`, or an error naming the key when it would pass `u64::MAX`.
pub(crate) fn add(who: &str, key: &str, current: u64, delta: u64) -> Result<u64, KvError> {
    current
        .checked_add(delta)
        .ok_or_else(|| KvError::Other(format!("{who}: cannot increment key `{key}` by {delta}: {current} + {delta} does not fit in a u64")))
}

/// The page of a sorted key list that starts at offset `cursor`.
pub(crate) fn page_of(mut sorted: Vec<String>, cursor: Option<u64>) -> KeyPage {
    let start = cursor.map_or(0, |c| usize::try_from(c).unwrap_or(usize::MAX)).min(sorted.len());
    let end = start.saturating_add(LIST_PAGE_SIZE).min(sorted.len());
    let next = (end < sorted.len()).then_some(end as u64);
    sorted.truncate(end);
    KeyPage { keys: sorted.split_off(start), cursor: next }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn counters_are_ascii_decimal() {
        assert_eq!(parse_counter("memory backend", "k", b"42"), Ok(42));
        assert_eq!(parse_counter("memory backend", "k", b"0"), Ok(0));
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1.5", b"abc", b"99999999999999999999"] {
            let err = parse_counter("memory backend", "k", bad).unwrap_err();
            let KvError::Other(msg) = err else { panic!("{err:?}") };
            assert!(msg.contains("memory backend") && msg.contains("not a decimal number"), "{msg}");
        }
        assert!(add("x", "k", u64::MAX, 1).is_err());
        assert_eq!(add("x", "k", 1, 2), Ok(3));
    }

    #[test]
    fn pages_walk_the_sorted_list() {
        let keys: Vec<String> = (0..LIST_PAGE_SIZE * 2 + 5).map(|i| format!("k{i:05}")).collect();
        let first = page_of(keys.clone(), None);
        assert_eq!(first.keys.len(), LIST_PAGE_SIZE);
        assert_eq!(first.cursor, Some(LIST_PAGE_SIZE as u64));
        let second = page_of(keys.clone(), first.cursor);
        assert_eq!(second.keys[0], keys[LIST_PAGE_SIZE]);
        let third = page_of(keys.clone(), second.cursor);
        assert_eq!(third.keys.len(), 5);
        assert_eq!(third.cursor, None);
        assert_eq!(page_of(keys, Some(u64::MAX)), KeyPage::default());
    }
}
