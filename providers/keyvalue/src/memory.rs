//! The in-process backend: one sorted map per bucket, behind one lock, so that every
//! operation (increment and compare-and-swap included) is atomic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use trellis_lattice::keyvalue::CasOutcome;

use crate::store::{KeyPage, KeyValue, KeyValueStore, KvFuture, add, page_of, parse_counter};

/// A bucket held in this process's memory; gone when the provider stops.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bucket: String,
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty bucket named `bucket` (the name is only used in messages).
    pub fn new(bucket: &str) -> Self {
        Self { bucket: bucket.to_string(), map: Mutex::default() }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // No operation can leave the map half-changed, so a poisoned lock is still sound.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(v: Result<T, trellis_lattice::keyvalue::KvError>) -> KvFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl KeyValueStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory backend (bucket `{}`)", self.bucket)
    }

    fn check(&self) -> KvFuture<'_, ()> {
        ready(Ok(()))
    }

    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        ready(Ok(self.map().get(key).cloned()))
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        self.map().insert(key.to_string(), value);
        ready(Ok(()))
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        self.map().remove(key);
        ready(Ok(()))
    }

    fn exists<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        ready(Ok(self.map().contains_key(key)))
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        ready(Ok(page_of(self.map().keys().cloned().collect(), cursor)))
    }

    fn increment<'a>(&'a self, key: &'a str, delta: u64) -> KvFuture<'a, u64> {
        let who = self.describe();
        let mut map = self.map();
        let result = match map.get(key) {
            None => Ok(delta),
            Some(v) => parse_counter(&who, key, v).and_then(|n| add(&who, key, n, delta)),
        };
        if let Ok(n) = result {
            map.insert(key.to_string(), n.to_string().into_bytes());
        }
        ready(result)
    }

    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, Vec<Option<KeyValue>>> {
        let map = self.map();
        ready(Ok(keys.iter().map(|k| map.get(k).map(|v| (k.clone(), v.clone()))).collect()))
    }

    fn set_many<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> KvFuture<'a, ()> {
        let mut map = self.map();
        for (k, v) in items {
            map.insert(k.clone(), v.clone());
        }
        ready(Ok(()))
    }

    fn delete_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, ()> {
        let mut map = self.map();
        for k in keys {
            map.remove(k);
        }
        ready(Ok(()))
    }

    fn compare_and_swap<'a>(&'a self, key: &'a str, expected: Option<&'a [u8]>, new: Vec<u8>) -> KvFuture<'a, CasOutcome> {
        let mut map = self.map();
        let current = map.get(key);
        let outcome = if current.map(Vec::as_slice) == expected {
            map.insert(key.to_string(), new);
            CasOutcome::Swapped
        } else {
            CasOutcome::Conflict(current.cloned())
        };
        ready(Ok(outcome))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;

    use trellis_lattice::keyvalue::{KvError, Reply, Request};

    use super::*;
    use crate::store::{LIST_PAGE_SIZE, execute};

    #[tokio::test]
    async fn every_operation() {
        let s = MemoryStore::new("t");
        assert_eq!(s.get("a").await.unwrap(), None);
        s.set("a", b"1".to_vec()).await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert!(s.exists("a").await.unwrap());
        s.delete("a").await.unwrap();
        s.delete("a").await.unwrap();
        assert!(!s.exists("a").await.unwrap());
        assert_eq!(s.increment("n", 5).await.unwrap(), 5);
        assert_eq!(s.increment("n", 2).await.unwrap(), 7);
        assert_eq!(s.get("n").await.unwrap(), Some(b"7".to_vec()));
        s.set("word", b"abc".to_vec()).await.unwrap();
        let KvError::Other(msg) = s.increment("word", 1).await.unwrap_err() else { panic!() };
        assert!(msg.contains("memory backend (bucket `t`)") && msg.contains("not a decimal number"), "{msg}");
        s.set_many(&[("x".into(), b"1".to_vec()), ("y".into(), vec![])]).await.unwrap();
        let got = s.get_many(&["x".into(), "nope".into(), "y".into()]).await.unwrap();
        assert_eq!(got, vec![Some(("x".into(), b"1".to_vec())), None, Some(("y".into(), vec![]))]);
        s.delete_many(&["x".into(), "y".into()]).await.unwrap();
        assert_eq!(s.get_many(&["x".into(), "y".into()]).await.unwrap(), vec![None, None]);
        assert_eq!(s.compare_and_swap("c", None, b"1".to_vec()).await.unwrap(), CasOutcome::Swapped);
        assert_eq!(s.compare_and_swap("c", None, b"2".to_vec()).await.unwrap(), CasOutcome::Conflict(Some(b"1".to_vec())));
        assert_eq!(s.compare_and_swap("c", Some(b"1"), b"2".to_vec()).await.unwrap(), CasOutcome::Swapped);
        assert_eq!(s.compare_and_swap("gone", Some(b"1"), b"2".to_vec()).await.unwrap(), CasOutcome::Conflict(None));
        let reply = execute(&s, Request::Get { bucket: "t".into(), key: "c".into() }).await;
        assert_eq!(reply, Ok(Reply::Value(Some(b"2".to_vec()))));
    }

    #[tokio::test]
    async fn list_keys_pages() {
        let s = MemoryStore::new("t");
        let items: Vec<(String, Vec<u8>)> = (0..LIST_PAGE_SIZE + 10).map(|i| (format!("k{i:05}"), vec![])).collect();
        s.set_many(&items).await.unwrap();
        let first = s.list_keys(None).await.unwrap();
        assert_eq!(first.keys.len(), LIST_PAGE_SIZE);
        let second = s.list_keys(first.cursor).await.unwrap();
        assert_eq!((second.keys.len(), second.cursor), (10, None));
        assert_eq!(second.keys.last().unwrap(), &items.last().unwrap().0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn increments_and_swaps_are_atomic() {
        let s = Arc::new(MemoryStore::new("t"));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        s.increment("n", 1).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.get("n").await.unwrap(), Some(b"800".to_vec()));
    }
}
