//! The NATS JetStream KV backend: one identifier is one KV bucket.
//!
//! Increment and compare-and-swap are atomic through revision-checked writes: read the key's
//! entry, decide, then write with "expected last revision" set to the revision read (0 when
//! the key never existed, the delete marker's when it was deleted). If anyone wrote the key in
//! between, the server refuses the write (wrong last sequence) and the operation reads again
//! and decides again.

use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, kv};
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_lattice::keyvalue::{CasOutcome, KvError};

use crate::store::{KeyPage, KeyValue, KeyValueStore, KvFuture, add, page_of, parse_counter};

/// How many times a conflicting increment or compare-and-swap reads and tries again before it
/// gives up (the caller's deadline usually ends it first).
const MAX_ATTEMPTS: u32 = 10_000;
/// How many keys of one batch call are in flight at once.
const BATCH_CONCURRENCY: usize = 32;

/// One JetStream KV bucket.
#[derive(Clone)]
pub struct NatsStore {
    js: jetstream::Context,
    kv: kv::Store,
    who: String,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.who)
    }
}

/// Whether `bucket` is a name JetStream KV accepts.
pub fn is_valid_bucket_name(bucket: &str) -> bool {
    !bucket.is_empty() && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('.') && !key.ends_with('.') && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

/// Whether `err` (or what caused it) is JetStream's "stream not found".
fn is_stream_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<jetstream::context::GetStreamError>()
            && let jetstream::context::GetStreamErrorKind::JetStream(js) = e.kind()
            && js.error_code() == ErrorCode::STREAM_NOT_FOUND
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl NatsStore {
    /// Opens `bucket` through `js`. A missing bucket is [`KvError::NoSuchStore`], unless
    /// `auto_create` is set: then it is created (history 1), and a creation raced by someone
    /// else opens theirs.
    pub async fn open(js: &jetstream::Context, bucket: &str, auto_create: bool) -> Result<Self, KvError> {
        let who = format!("nats backend (bucket `{bucket}`)");
        if !is_valid_bucket_name(bucket) {
            return Err(KvError::Other(format!("{who}: `{bucket}` is not a valid JetStream KV bucket name (letters, digits, `-` and `_` only)")));
        }
        let err = match js.get_key_value(bucket).await {
            Ok(kv) => return Ok(Self { js: js.clone(), kv, who }),
            Err(e) => e,
        };
        if !is_stream_not_found(&err) {
            return Err(KvError::Other(format!("{who}: cannot open the bucket: {err}")));
        }
        if !auto_create {
            return Err(KvError::NoSuchStore);
        }
        let config = kv::Config { bucket: bucket.to_string(), history: 1, ..Default::default() };
        match js.create_key_value(config).await {
            Ok(kv) => {
                tracing::info!(bucket, "created a JetStream KV bucket (enable_bucket_auto_create)");
                Ok(Self { js: js.clone(), kv, who })
            }
            Err(create) => match js.get_key_value(bucket).await {
                Ok(kv) => Ok(Self { js: js.clone(), kv, who }),
                Err(_) => Err(KvError::Other(format!("{who}: the bucket does not exist and could not be created: {create}"))),
            },
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    fn fail(&self, what: &str, err: impl std::fmt::Display) -> KvError {
        KvError::Other(format!("{}: {what}: {err}", self.who))
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if is_valid_key(key) {
            Ok(())
        } else {
            Err(KvError::Other(format!("{}: `{key}` is not a valid NATS KV key (letters, digits and `-/_=.`, not starting or ending with `.`)", self.who)))
        }
    }

    /// The key's value and the revision a conditional write must name: 0 when the key was
    /// never written, the delete marker's revision when it was deleted.
    async fn current(&self, key: &str) -> Result<(Option<bytes::Bytes>, u64), KvError> {
        match self.kv.entry(key).await.map_err(|e| self.fail(&format!("cannot read key `{key}`"), e))? {
            None => Ok((None, 0)),
            Some(e) if e.operation == kv::Operation::Put => Ok((Some(e.value), e.revision)),
            Some(e) => Ok((None, e.revision)),
        }
    }

    /// Writes `value` if the key is still at `revision`; `Ok(false)` when someone wrote first.
    async fn write_if(&self, key: &str, value: Vec<u8>, revision: u64) -> Result<bool, KvError> {
        match self.kv.update(key, value.into(), revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(self.fail(&format!("cannot write key `{key}`"), e)),
        }
    }

    async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        Ok(self.current(key).await?.0.map(|v| v.to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.check_key(key)?;
        self.kv.put(key, value.into()).await.map_err(|e| self.fail(&format!("cannot write key `{key}`"), e))?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), KvError> {
        self.check_key(key)?;
        self.kv.delete(key).await.map_err(|e| self.fail(&format!("cannot delete key `{key}`"), e))
    }

    /// A short pause after a lost race, growing with the attempt and jittered so that the
    /// losers do not all come back at once.
    async fn back_off(attempt: u32) {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let cap = 200 * u64::from(attempt.min(25));
        tokio::time::sleep(Duration::from_micros(u64::from(nanos) % cap.max(1))).await;
    }

    fn gave_up(&self, op: &str, key: &str) -> KvError {
        KvError::Other(format!("{}: {op} on key `{key}` lost {MAX_ATTEMPTS} races in a row to other writers; try again", self.who))
    }
}

impl KeyValueStore for NatsStore {
    fn describe(&self) -> String {
        self.who.clone()
    }

    fn check(&self) -> KvFuture<'_, ()> {
        Box::pin(async move {
            // Asks the server: the store's own status is what it was when opened.
            match self.js.get_stream(format!("KV_{}", self.kv.name)).await {
                Ok(_) => Ok(()),
                Err(e) if is_stream_not_found(&e) => Err(KvError::NoSuchStore),
                Err(e) => Err(self.fail("cannot read the bucket's stream", e)),
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_value(key))
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        Box::pin(self.put(key, value))
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(self.remove(key))
    }

    fn exists<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(async move { Ok(self.get_value(key).await?.is_some()) })
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        Box::pin(async move {
            let keys = self.kv.keys().await.map_err(|e| self.fail("cannot list keys", e))?;
            let mut keys: Vec<String> = keys.try_collect().await.map_err(|e| self.fail("cannot list keys", e))?;
            keys.sort_unstable();
            Ok(page_of(keys, cursor))
        })
    }

    fn increment<'a>(&'a self, key: &'a str, delta: u64) -> KvFuture<'a, u64> {
        Box::pin(async move {
            self.check_key(key)?;
            for attempt in 1..=MAX_ATTEMPTS {
                let (value, revision) = self.current(key).await?;
                let next = match value {
                    None => delta,
                    Some(v) => add(&self.who, key, parse_counter(&self.who, key, &v)?, delta)?,
                };
                if self.write_if(key, next.to_string().into_bytes(), revision).await? {
                    return Ok(next);
                }
                Self::back_off(attempt).await;
            }
            Err(self.gave_up("increment", key))
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, Vec<Option<KeyValue>>> {
        let reads: Vec<KvFuture<'a, Option<KeyValue>>> =
            keys.iter().map(|k| -> KvFuture<'a, _> { Box::pin(async move { Ok(self.get_value(k).await?.map(|v| (k.clone(), v))) }) }).collect();
        Box::pin(futures::stream::iter(reads).buffered(BATCH_CONCURRENCY).try_collect())
    }

    fn set_many<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> KvFuture<'a, ()> {
        let writes: Vec<KvFuture<'a, ()>> = items.iter().map(|(k, v)| -> KvFuture<'a, ()> { Box::pin(self.put(k, v.clone())) }).collect();
        Box::pin(futures::stream::iter(writes).buffer_unordered(BATCH_CONCURRENCY).try_collect())
    }

    fn delete_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, ()> {
        let deletes: Vec<KvFuture<'a, ()>> = keys.iter().map(|k| -> KvFuture<'a, ()> { Box::pin(self.remove(k)) }).collect();
        Box::pin(futures::stream::iter(deletes).buffer_unordered(BATCH_CONCURRENCY).try_collect())
    }

    fn compare_and_swap<'a>(&'a self, key: &'a str, expected: Option<&'a [u8]>, new: Vec<u8>) -> KvFuture<'a, CasOutcome> {
        Box::pin(async move {
            self.check_key(key)?;
            for attempt in 1..=MAX_ATTEMPTS {
                let (current, revision) = self.current(key).await?;
                if current.as_deref() != expected {
                    return Ok(CasOutcome::Conflict(current.map(|v| v.to_vec())));
                }
                if self.write_if(key, new.clone(), revision).await? {
                    return Ok(CasOutcome::Swapped);
                }
                // Someone wrote between our read and our write: read again and decide again.
                Self::back_off(attempt).await;
            }
            Err(self.gave_up("compare-and-swap", key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(is_valid_bucket_name("counters_1-a"));
        assert!(!is_valid_bucket_name("a.b"));
        assert!(!is_valid_bucket_name(""));
        assert!(is_valid_key("a/b=c.d_e-f"));
        assert!(!is_valid_key(".a"));
        assert!(!is_valid_key("a b"));
        assert!(!is_valid_key("a:b"));
        assert!(!is_valid_key(""));
    }
}
