//! The Redis backend: one server (`URL`), keys as they are for the configured bucket and
//! prefixed `IDENTIFIER:` for any other identifier.
//!
//! Increment is `INCRBY` and compare-and-swap one Lua script run with `EVAL`, both atomic in
//! Redis. The connection is made lazily, on the first call, and dropped when it breaks (I/O
//! error, timeout, server gone): the next call connects again, so the backend recovers by
//! itself once Redis is back, without a restart. While Redis is down every call fails fast
//! with an error naming the backend, the server and the cause.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use trellis_lattice::keyvalue::{CasOutcome, KvError};

use crate::store::{KeyPage, KeyValue, KeyValueStore, KvFuture, LIST_PAGE_SIZE};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Compare-and-swap in one step. KEYS[1]: the key; ARGV[1]: `1` if a value is expected, else
/// `0`; ARGV[2]: the expected value; ARGV[3]: the new value.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then matches = (current == ARGV[2]) else matches = (current == false) end
if matches then
  redis.call('SET', KEYS[1], ARGV[3])
  return {'swapped'}
end
if current == false then return {'absent'} end
return {'conflict', current}
";

/// One Redis server, shared by every bucket on it; connects lazily and reconnects after a
/// failure.
pub struct RedisConnection {
    client: redis::Client,
    /// The URL without credentials, for messages.
    shown: String,
    conn: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisConnection({})", self.shown)
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_string(),
            };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

impl RedisConnection {
    /// A connection to `url` (`redis://[user:password@]host:port[/db]`); nothing is
    /// connected until the first command. Fails only when `url` cannot be parsed.
    pub fn new(url: &str) -> Result<Self, KvError> {
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|e| KvError::Other(format!("redis backend ({shown}): `URL` is not a usable Redis URL: {e}")))?;
        Ok(Self { client, shown, conn: tokio::sync::Mutex::new(None), generation: Default::default() })
    }

    /// The URL without credentials.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn who(&self, prefix: Option<&str>) -> String {
        match prefix {
            None => format!("redis backend ({})", self.shown),
            Some(p) => format!("redis backend ({}, keys prefixed `{p}`)", self.shown),
        }
    }

    /// The current connection, made now if there is none.
    async fn connection(&self, who: &str, what: &str) -> Result<(u64, MultiplexedConnection), KvError> {
        let mut slot = self.conn.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((*generation, conn.clone()));
        }
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT)).set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn =
            self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| KvError::Other(format!("{who}: {what}: {}", cause(&e))))?;
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(redis = self.shown, "connected to Redis");
        *slot = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Runs `cmd`; a failure that means the connection is broken drops it, so the next
    /// command connects again.
    async fn query<T: redis::FromRedisValue>(&self, prefix: Option<&str>, what: &str, cmd: &redis::Cmd) -> Result<T, KvError> {
        let who = self.who(prefix);
        let (generation, mut conn) = self.connection(&who, what).await?;
        match cmd.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_broken(&e) {
                    let mut slot = self.conn.lock().await;
                    if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                        tracing::warn!(redis = self.shown, error = %e, "dropping a broken Redis connection; the next call reconnects");
                        *slot = None;
                    }
                }
                Err(KvError::Other(format!("{who}: {what}: {}", cause(&e))))
            }
        }
    }
}

/// Whether `e` means the connection can no longer be used.
fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.is_unrecoverable_error()
}

/// The cause in words, leading with the plain reason for the usual network failures.
fn cause(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        format!("timed out ({e})")
    } else if e.is_connection_dropped() {
        format!("connection lost ({e})")
    } else {
        e.to_string()
    }
}

/// One bucket on a Redis server: the whole keyspace, or the keys under `IDENTIFIER:`.
#[derive(Debug, Clone)]
pub struct RedisStore {
    conn: Arc<RedisConnection>,
    prefix: Option<String>,
}

impl RedisStore {
    /// The bucket of `conn` whose keys start with `prefix` (`None`: keys as they are).
    pub fn new(conn: Arc<RedisConnection>, prefix: Option<String>) -> Self {
        Self { conn, prefix }
    }

    fn key(&self, key: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}{key}"),
            None => key.to_string(),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, KvError> {
        self.conn.query(self.prefix.as_deref(), what, cmd).await
    }
}

/// `s` with Redis glob specials escaped, for `SCAN … MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl KeyValueStore for RedisStore {
    fn describe(&self) -> String {
        self.conn.who(self.prefix.as_deref())
    }

    fn check(&self) -> KvFuture<'_, ()> {
        Box::pin(async move {
            let _: String = self.query("cannot reach the server", &redis::cmd("PING")).await?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.query(&format!("cannot read key `{key}`"), redis::cmd("GET").arg(self.key(key))).await })
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        Box::pin(async move { self.query(&format!("cannot write key `{key}`"), redis::cmd("SET").arg(self.key(key)).arg(value)).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self.query(&format!("cannot delete key `{key}`"), redis::cmd("DEL").arg(self.key(key))).await?;
            Ok(())
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self.query(&format!("cannot read key `{key}`"), redis::cmd("EXISTS").arg(self.key(key))).await?;
            Ok(n > 0)
        })
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor.unwrap_or(0));
            if let Some(p) = &self.prefix {
                cmd.arg("MATCH").arg(format!("{}*", glob_escape(p)));
            }
            cmd.arg("COUNT").arg(LIST_PAGE_SIZE);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query("cannot list keys", &cmd).await?;
            // Keys that are not UTF-8 cannot be named through wasi:keyvalue; leave them out.
            let keys = keys.into_iter().filter_map(|k| String::from_utf8(k).ok());
            let keys = match &self.prefix {
                Some(p) => keys.filter_map(|k| k.strip_prefix(p.as_str()).map(str::to_string)).collect(),
                None => keys.collect(),
            };
            Ok(KeyPage { keys, cursor: (next != 0).then_some(next) })
        })
    }

    fn increment<'a>(&'a self, key: &'a str, delta: u64) -> KvFuture<'a, u64> {
        Box::pin(async move {
            let who = self.describe();
            let delta_i = i64::try_from(delta)
                .map_err(|_| KvError::Other(format!("{who}: cannot increment key `{key}` by {delta}: Redis counters stop at {}", i64::MAX)))?;
            let n: i64 = self
                .query(&format!("cannot increment key `{key}` (a counter must hold a decimal number)"), redis::cmd("INCRBY").arg(self.key(key)).arg(delta_i))
                .await?;
            u64::try_from(n).map_err(|_| KvError::Other(format!("{who}: key `{key}` holds {n} after the increment, which is not a u64")))
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, Vec<Option<KeyValue>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut cmd = redis::cmd("MGET");
            for k in keys {
                cmd.arg(self.key(k));
            }
            let values: Vec<Option<Vec<u8>>> = self.query("cannot read keys (MGET)", &cmd).await?;
            Ok(keys.iter().zip(values).map(|(k, v)| v.map(|v| (k.clone(), v))).collect())
        })
    }

    fn set_many<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> KvFuture<'a, ()> {
        Box::pin(async move {
            if items.is_empty() {
                return Ok(());
            }
            let mut cmd = redis::cmd("MSET");
            for (k, v) in items {
                cmd.arg(self.key(k)).arg(v.as_slice());
            }
            self.query("cannot write keys (MSET)", &cmd).await
        })
    }

    fn delete_many<'a>(&'a self, keys: &'a [String]) -> KvFuture<'a, ()> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let mut cmd = redis::cmd("DEL");
            for k in keys {
                cmd.arg(self.key(k));
            }
            let _: i64 = self.query("cannot delete keys", &cmd).await?;
            Ok(())
        })
    }

    fn compare_and_swap<'a>(&'a self, key: &'a str, expected: Option<&'a [u8]>, new: Vec<u8>) -> KvFuture<'a, CasOutcome> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(CAS_SCRIPT).arg(1).arg(self.key(key)).arg(if expected.is_some() { "1" } else { "0" }).arg(expected.unwrap_or_default()).arg(new);
            let reply: Vec<Vec<u8>> = self.query(&format!("compare-and-swap on key `{key}` failed"), &cmd).await?;
            let mut reply = reply.into_iter();
            match (reply.next().as_deref(), reply.next()) {
                (Some(b"swapped"), None) => Ok(CasOutcome::Swapped),
                (Some(b"absent"), None) => Ok(CasOutcome::Conflict(None)),
                (Some(b"conflict"), Some(current)) => Ok(CasOutcome::Conflict(Some(current))),
                _ => Err(KvError::Other(format!("{}: the compare-and-swap script answered something unexpected", self.describe()))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact("redis://user:secret@host/"), "redis://user:***@host/");
        assert_eq!(redact("redis://user@host/"), "redis://user@host/");
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
