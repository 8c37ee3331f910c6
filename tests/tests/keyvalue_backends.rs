//! The keyvalue provider's backends against real servers (memory, NATS JetStream KV from
//! [`NatsServer`], Redis from [`RedisServer`]), and the provider through the data plane.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::ctl::{Link, StringMap};
use trellis_lattice::keyvalue::{self, CasOutcome, KvError, KvResult, Reply, Request};
use trellis_lattice::provider::HostData;
use trellis_lattice::rpc::{self, CallInfo, Invocation, Router, RpcError, RpcErrorKind};
use trellis_lattice::state::{self, StateView};
use trellis_lattice::wit_value::{self, WitValue};
use trellis_provider_keyvalue::{KeyValueStore, LIST_PAGE_SIZE, MemoryStore, NatsStore, RedisConnection, RedisStore};
use trellis_tests::nats::NatsServer;
use trellis_tests::redis::RedisServer;

const WAIT: Duration = Duration::from_secs(10);

fn other(e: KvError) -> String {
    match e {
        KvError::Other(m) => m,
        e => panic!("expected error::other, got {e:?}"),
    }
}

/// What every backend must do, on an empty bucket.
async fn behaves_like_a_store(s: &dyn KeyValueStore) {
    let who = s.describe();
    s.check().await.unwrap();
    // set / get / exists / delete
    assert_eq!(s.get("a").await.unwrap(), None, "{who}");
    assert!(!s.exists("a").await.unwrap());
    s.set("a", b"one".to_vec()).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"one".to_vec()));
    assert!(s.exists("a").await.unwrap());
    s.set("a", b"two".to_vec()).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"two".to_vec()));
    s.set("empty", Vec::new()).await.unwrap();
    assert_eq!(s.get("empty").await.unwrap(), Some(Vec::new()), "{who}: an empty value is a value");
    assert!(s.exists("empty").await.unwrap());
    s.delete("a").await.unwrap();
    s.delete("a").await.unwrap(); // deleting a missing key is fine
    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(!s.exists("a").await.unwrap());
    s.delete("empty").await.unwrap();

    // increment: a missing key counts as 0; values are ASCII decimal
    assert_eq!(s.increment("n", 5).await.unwrap(), 5);
    assert_eq!(s.increment("n", 0).await.unwrap(), 5);
    assert_eq!(s.increment("n", 37).await.unwrap(), 42);
    assert_eq!(s.get("n").await.unwrap(), Some(b"42".to_vec()));
    s.set("m", b"100".to_vec()).await.unwrap();
    assert_eq!(s.increment("m", 1).await.unwrap(), 101);
    s.set("word", b"hello".to_vec()).await.unwrap();
    let msg = other(s.increment("word", 1).await.unwrap_err());
    assert!(msg.contains(&who) && msg.contains("word"), "{msg}");
    assert_eq!(s.get("word").await.unwrap(), Some(b"hello".to_vec()), "a failed increment changes nothing");
    s.delete("n").await.unwrap();
    assert_eq!(s.increment("n", 3).await.unwrap(), 3, "{who}: a deleted counter starts again at 0");

    // batch
    s.set_many(&[("b1".into(), b"x".to_vec()), ("b2".into(), b"y".to_vec()), ("b3".into(), Vec::new())]).await.unwrap();
    let got = s.get_many(&["b1".into(), "missing".into(), "b3".into(), "b2".into()]).await.unwrap();
    assert_eq!(got, vec![Some(("b1".into(), b"x".to_vec())), None, Some(("b3".into(), Vec::new())), Some(("b2".into(), b"y".to_vec()))], "{who}");
    s.delete_many(&["b1".into(), "b2".into(), "missing".into()]).await.unwrap();
    assert_eq!(s.get_many(&["b1".into(), "b2".into(), "b3".into()]).await.unwrap(), vec![None, None, Some(("b3".into(), Vec::new()))]);
    assert_eq!(s.get_many(&[]).await.unwrap(), vec![]);
    s.set_many(&[]).await.unwrap();
    s.delete_many(&[]).await.unwrap();

    // compare-and-swap
    assert_eq!(s.compare_and_swap("c", None, b"1".to_vec()).await.unwrap(), CasOutcome::Swapped);
    assert_eq!(s.compare_and_swap("c", None, b"x".to_vec()).await.unwrap(), CasOutcome::Conflict(Some(b"1".to_vec())));
    assert_eq!(s.compare_and_swap("c", Some(b"2"), b"x".to_vec()).await.unwrap(), CasOutcome::Conflict(Some(b"1".to_vec())));
    assert_eq!(s.compare_and_swap("c", Some(b"1"), b"2".to_vec()).await.unwrap(), CasOutcome::Swapped);
    assert_eq!(s.get("c").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(s.compare_and_swap("absent", Some(b"1"), b"2".to_vec()).await.unwrap(), CasOutcome::Conflict(None));
    assert!(!s.exists("absent").await.unwrap());
    s.delete("c").await.unwrap();
    assert_eq!(s.compare_and_swap("c", None, b"again".to_vec()).await.unwrap(), CasOutcome::Swapped, "{who}: a deleted key is absent");

    // list-keys, over several pages
    let before = all_keys(s).await;
    assert_eq!(before, ["b3", "c", "m", "n", "word"].into_iter().map(String::from).collect(), "{who}");
    let many: Vec<(String, Vec<u8>)> = (0..LIST_PAGE_SIZE + 7).map(|i| (format!("page.{i:05}"), b"v".to_vec())).collect();
    s.set_many(&many).await.unwrap();
    let first = s.list_keys(None).await.unwrap();
    assert!(first.cursor.is_some(), "{who}: {} keys fit one page", LIST_PAGE_SIZE + 12);
    let keys = all_keys(s).await;
    assert_eq!(keys.len(), LIST_PAGE_SIZE + 12, "{who}");
    assert!(many.iter().all(|(k, _)| keys.contains(k)));
}

/// Every key, following cursors to the end (a Redis SCAN may repeat a key: deduplicated).
async fn all_keys(s: &dyn KeyValueStore) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = s.list_keys(cursor).await.unwrap();
        keys.extend(page.keys);
        match page.cursor {
            None => return keys,
            next => cursor = next,
        }
    }
    panic!("list-keys never reached its last page");
}

/// 200 increments from 32 tasks at once: the counter ends at exactly 200 and every increment
/// saw a different value.
async fn increments_are_atomic(s: Arc<dyn KeyValueStore>) {
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..(200 / 32 + usize::from(t < 200 % 32)) {
                    seen.push(s.increment("hits", 1).await.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=200).collect::<Vec<u64>>(), "{}", s.describe());
    assert_eq!(s.get("hits").await.unwrap(), Some(b"200".to_vec()));
}

/// Many tasks swap from the same expected value at once: exactly one wins, every other one
/// gets a conflict carrying the winner's value. Then the same from an absent key.
async fn one_swap_wins(s: Arc<dyn KeyValueStore>) {
    for expected in [Some(b"start".to_vec()), None] {
        let key = if expected.is_some() { "race" } else { "race-absent" };
        if let Some(v) = &expected {
            s.set(key, v.clone()).await.unwrap();
        }
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let (s, expected) = (s.clone(), expected.clone());
                tokio::spawn(async move {
                    let new = format!("winner-{i}").into_bytes();
                    (new.clone(), s.compare_and_swap(key, expected.as_deref(), new).await.unwrap())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let winners: Vec<&Vec<u8>> = outcomes.iter().filter(|(_, o)| *o == CasOutcome::Swapped).map(|(n, _)| n).collect();
        assert_eq!(winners.len(), 1, "{}: {outcomes:?}", s.describe());
        let winner = winners[0].clone();
        for (_, o) in &outcomes {
            assert!(*o == CasOutcome::Swapped || *o == CasOutcome::Conflict(Some(winner.clone())), "{o:?}");
        }
        assert_eq!(s.get(key).await.unwrap(), Some(winner));
    }
}

async fn all_behaviour(fresh: impl AsyncFn(&str) -> Arc<dyn KeyValueStore>) {
    behaves_like_a_store(fresh("conformance").await.as_ref()).await;
    increments_are_atomic(fresh("increments").await).await;
    one_swap_wins(fresh("cas").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend() {
    all_behaviour(async |name: &str| -> Arc<dyn KeyValueStore> {
        let s: Arc<dyn KeyValueStore> = Arc::new(MemoryStore::new(name));
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_backend() {
    let nats = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    all_behaviour(async |name: &str| -> Arc<dyn KeyValueStore> {
        let s: Arc<dyn KeyValueStore> = Arc::new(NatsStore::open(&js, name, true).await.unwrap());
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_missing_bucket_is_no_such_store_unless_auto_create() {
    let nats = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    assert_eq!(NatsStore::open(&js, "absent", false).await.unwrap_err(), KvError::NoSuchStore);
    assert!(js.get_key_value("absent").await.is_err(), "opening without auto-create created the bucket");
    let msg = other(NatsStore::open(&js, "not.valid", true).await.unwrap_err());
    assert!(msg.contains("nats backend") && msg.contains("not a valid JetStream KV bucket name"), "{msg}");

    let created = NatsStore::open(&js, "absent", true).await.unwrap();
    created.set("k", b"v".to_vec()).await.unwrap();
    let raw = js.get_key_value("absent").await.unwrap();
    assert_eq!(raw.get("k").await.unwrap().unwrap(), Bytes::from_static(b"v"));
    // Opening again (auto-create or not) finds the same bucket.
    let again = NatsStore::open(&js, "absent", false).await.unwrap();
    assert_eq!(again.get("k").await.unwrap(), Some(b"v".to_vec()));
    // A bad key is an error that says why, not a panic.
    let msg = other(again.set("a key", b"v".to_vec()).await.unwrap_err());
    assert!(msg.contains("nats backend (bucket `absent`)") && msg.contains("not a valid NATS KV key"), "{msg}");
    // A bucket deleted under an open store: check says so.
    js.delete_key_value("absent").await.unwrap();
    assert_eq!(again.check().await.unwrap_err(), KvError::NoSuchStore);
}

fn redis_store(server: &RedisServer, prefix: Option<&str>) -> Arc<dyn KeyValueStore> {
    let conn = Arc::new(RedisConnection::new(&server.url()).unwrap());
    Arc::new(RedisStore::new(conn, prefix.map(|p| format!("{p}:"))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend() {
    let redis = RedisServer::start().await.unwrap();
    let conn = Arc::new(RedisConnection::new(&redis.url()).unwrap());
    // Each part on its own prefix, so the configured-bucket (unprefixed) listing stays clean.
    all_behaviour(async |name: &str| -> Arc<dyn KeyValueStore> {
        let s: Arc<dyn KeyValueStore> = Arc::new(RedisStore::new(conn.clone(), Some(format!("{name}:"))));
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_default_bucket_uses_keys_as_they_are_and_identifiers_prefix_them() {
    let redis = RedisServer::start().await.unwrap();
    let plain = redis_store(&redis, None);
    behaves_like_a_store(plain.as_ref()).await;
    let sessions = redis_store(&redis, Some("sessions"));
    sessions.set("a", b"1".to_vec()).await.unwrap();
    assert_eq!(plain.get("sessions:a").await.unwrap(), Some(b"1".to_vec()), "prefixed as `IDENTIFIER:`");
    assert_eq!(plain.get("a").await.unwrap(), None);
    assert_eq!(all_keys(sessions.as_ref()).await, BTreeSet::from(["a".to_string()]));
    // Glob characters in an identifier are matched literally.
    let star = redis_store(&redis, Some("s*"));
    star.set("x", b"1".to_vec()).await.unwrap();
    assert_eq!(all_keys(star.as_ref()).await, BTreeSet::from(["x".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_an_error_naming_backend_and_cause_and_recovers_by_itself() {
    let mut redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    let store = redis_store(&redis, None);
    store.set("k", b"before".to_vec()).await.unwrap();

    redis.stop();
    let mut messages = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        messages.push(other(store.get("k").await.unwrap_err()));
        assert!(started.elapsed() < Duration::from_secs(5), "a call to a Redis that is down took {:?}", started.elapsed());
    }
    messages.push(other(store.check().await.unwrap_err()));
    messages.push(other(store.increment("n", 1).await.unwrap_err()));
    for m in &messages {
        assert!(m.starts_with(&format!("redis backend ({url})")), "{m}");
    }
    assert!(messages[1..].iter().all(|m| m.ends_with(": connection refused")), "{messages:#?}");

    redis.restart().await.unwrap();
    assert_eq!(redis.url(), url);
    // The same store object works again, from the first call on (the data is gone: the test
    // server does not persist).
    store.check().await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    store.set("k", b"after".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(b"after".to_vec()));
    assert_eq!(store.increment("n", 2).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_url_is_an_error_not_a_hang() {
    let addr = trellis_tests::http::free_addr().unwrap(); // nothing listens there
    let url = format!("redis://{addr}/");
    let store = RedisStore::new(Arc::new(RedisConnection::new(&url).unwrap()), None);
    let msg = other(store.check().await.unwrap_err());
    assert!(msg.starts_with(&format!("redis backend ({url})")) && msg.contains("connection refused"), "{msg}");
    let msg = other(RedisConnection::new("definitely not a url").unwrap_err());
    assert!(msg.contains("redis backend") && msg.contains("not a usable Redis URL"), "{msg}");
}

// ---- through the data plane ----

const LATTICE: &str = "kvtest";
const PROVIDER: &str = "kv";

fn invocation(source: &str, link_name: &str, interface: &str, function: &str, head: Bytes) -> Invocation {
    Invocation {
        call: CallInfo {
            lattice: LATTICE.into(),
            source: source.into(),
            target: PROVIDER.into(),
            interface: interface.into(),
            function: function.into(),
            link_name: link_name.into(),
        },
        traceparent: None,
        deadline: tokio::time::Instant::now() + WAIT,
        head,
        body: rpc::full_body(Bytes::new()),
    }
}

/// Sends `req` from `source` and decodes the reply.
async fn call(router: &Router, source: &str, req: &Request) -> Result<KvResult, RpcError> {
    let inv = invocation(source, "default", req.interface(), req.function(), wit_value::encode(&req.to_args()));
    let resp = router.call(inv).await?;
    let results = wit_value::decode(&resp.head).unwrap();
    Ok(req.decode_results(results).unwrap())
}

/// Calls until the provider answers something other than "no replica" / "no link yet".
async fn call_until(router: &Router, source: &str, req: &Request, done: impl Fn(&KvResult) -> bool) -> KvResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = call(router, source, req).await;
        match last {
            Ok(r) if done(&r) => return r,
            other if tokio::time::Instant::now() > deadline => panic!("{req:?} never answered as expected; last: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn put_config(js: &async_nats::jetstream::Context, name: &str, pairs: &[(&str, &str)]) {
    let bucket = js.get_key_value(state::config_bucket(LATTICE)).await.unwrap();
    let map: StringMap = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    bucket.put(name, serde_json::to_vec(&map).unwrap().into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_serves_calls_over_the_data_plane() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let view = StateView::open(&js, LATTICE).await.unwrap();
    put_config(&js, "kv-cfg", &[("bucket", "counters"), ("enable_bucket_auto_create", "true")]).await;
    let link = Link {
        source_id: "app".into(),
        target: PROVIDER.into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into(), "atomics".into(), "batch".into()],
        source_config: vec![],
        target_config: vec!["kv-cfg".into()],
    };
    let links = js.get_key_value(state::lattice_bucket(LATTICE)).await.unwrap();
    links.put(state::link_key(&link), serde_json::to_vec(&link).unwrap().into()).await.unwrap();

    let provider_router = Router::new(client.clone(), LATTICE);
    let host_data = HostData {
        host_id: "test-host".into(),
        lattice_rpc_url: nats.url(),
        lattice: LATTICE.into(),
        provider_key: PROVIDER.into(),
        instance_id: "i-1".into(),
        ..Default::default()
    };
    let mut running = trellis_provider_sdk::start_builtin(&trellis_provider_keyvalue::builtin(), host_data, client.clone(), provider_router.clone(), view);

    // A caller on another connection: the call crosses NATS.
    let remote = Router::new(nats.client().await.unwrap(), LATTICE);
    let open = Request::Open { bucket: "default".into() };
    assert_eq!(call_until(&remote, "app", &open, Result::is_ok).await, Ok(Reply::Unit));
    let inc = Request::Increment { bucket: "default".into(), key: "hits".into(), delta: 5 };
    assert_eq!(call(&remote, "app", &inc).await.unwrap(), Ok(Reply::Number(5)));
    // The same provider through the router it registered with: a local call, same answers.
    assert_eq!(call(&provider_router, "app", &inc).await.unwrap(), Ok(Reply::Number(10)));
    let get = Request::Get { bucket: "default".into(), key: "hits".into() };
    assert_eq!(call(&remote, "app", &get).await.unwrap(), Ok(Reply::Value(Some(b"10".to_vec()))));
    // It landed in the configured JetStream bucket, as ASCII decimal.
    let counters = js.get_key_value("counters").await.unwrap();
    assert_eq!(counters.get("hits").await.unwrap().unwrap(), Bytes::from_static(b"10"));
    // cas travels over the same link.
    let cas = Request::CompareAndSwap { bucket: "default".into(), key: "hits".into(), expected: Some(b"10".to_vec()), new: b"11".to_vec() };
    assert_eq!(call(&remote, "app", &cas).await.unwrap(), Ok(Reply::Cas(CasOutcome::Swapped)));
    assert_eq!(call(&remote, "app", &cas).await.unwrap(), Ok(Reply::Cas(CasOutcome::Conflict(Some(b"11".to_vec())))));
    let many = Request::GetMany { bucket: "default".into(), keys: vec!["hits".into(), "nope".into()] };
    assert_eq!(call(&remote, "app", &many).await.unwrap(), Ok(Reply::Values(vec![Some(("hits".into(), b"11".to_vec())), None])));
    // Another identifier is another bucket (auto-created here).
    let other_inc = Request::Increment { bucket: "sessions".into(), key: "hits".into(), delta: 1 };
    assert_eq!(call(&remote, "app", &Request::Open { bucket: "sessions".into() }).await.unwrap(), Ok(Reply::Unit));
    assert_eq!(call(&remote, "app", &other_inc).await.unwrap(), Ok(Reply::Number(1)));
    assert!(js.get_key_value("sessions").await.is_ok());
    // The buckets that hold lattice state are out of reach: writing links there would let a
    // component link itself to anything.
    for reserved in [state::lattice_bucket(LATTICE), state::config_bucket(LATTICE), "latticedata_other".to_string()] {
        let open = Request::Open { bucket: reserved.clone() };
        assert_eq!(call(&remote, "app", &open).await.unwrap(), Err(KvError::AccessDenied), "{reserved}");
        let set = Request::Set { bucket: reserved.clone(), key: "LINKDEF.app.wasi.http.default.x".into(), value: b"{}".to_vec() };
        assert_eq!(call(&remote, "app", &set).await.unwrap(), Err(KvError::AccessDenied), "{reserved}");
    }
    assert_eq!(futures::StreamExt::count(links.keys().await.unwrap()).await, 1, "the lattice bucket holds only the test's link");

    // A change of the link's config applies to the next calls, without a restart.
    put_config(&js, "kv-cfg", &[("bucket", "counters2"), ("enable_bucket_auto_create", "true")]).await;
    let moved = call_until(&remote, "app", &inc, |r| *r == Ok(Reply::Number(5))).await;
    assert_eq!(moved, Ok(Reply::Number(5)));
    assert_eq!(js.get_key_value("counters2").await.unwrap().get("hits").await.unwrap().unwrap(), Bytes::from_static(b"5"));
    // Switched to memory: the provider keeps its own map.
    put_config(&js, "kv-cfg", &[("backend", "memory")]).await;
    assert_eq!(call_until(&remote, "app", &get, |r| *r == Ok(Reply::Value(None))).await, Ok(Reply::Value(None)));
    // Without auto-create a missing bucket is no-such-store.
    put_config(&js, "kv-cfg", &[("bucket", "nowhere")]).await;
    let missing = call_until(&remote, "app", &open, |r| r.is_err()).await;
    let missing = other(missing.unwrap_err());
    assert!(missing.starts_with("nats backend: no such store: the KV bucket `nowhere` does not exist"), "{missing}");
    assert!(missing.contains("enable_bucket_auto_create=true"), "{missing}");
    // Bad settings are an error that names the key.
    put_config(&js, "kv-cfg", &[("backend", "etcd")]).await;
    let bad = call_until(&remote, "app", &get, |r| matches!(r, Err(KvError::Other(m)) if m.contains("etcd"))).await;
    assert!(matches!(&bad, Err(KvError::Other(m)) if m.contains("`backend` is `etcd`")), "{bad:?}");

    // No link from the caller: an error value naming the link and how to add it.
    let stranger = call(&remote, "stranger", &get).await.unwrap();
    let msg = other(stranger.unwrap_err());
    assert!(msg.contains("no wasi:keyvalue link from `stranger`") && msg.contains("wash link put stranger kv wasi keyvalue"), "{msg}");

    // Calls that cannot be read: a Malformed data-plane error that says what is wrong.
    let garbage = invocation("app", "default", keyvalue::STORE, "get", Bytes::from_static(b"\xc1\xc1 not msgpack"));
    let e = remote.call(garbage).await.err().unwrap();
    assert_eq!(e.kind, RpcErrorKind::Malformed, "{e}");
    assert!(e.message.contains("could not be decoded"), "{e}");
    let short = invocation("app", "default", keyvalue::STORE, "get", wit_value::encode(&[WitValue::String("default".into())]));
    let e = remote.call(short).await.err().unwrap();
    assert_eq!(e.kind, RpcErrorKind::Malformed);
    assert!(e.message.contains("`key` is missing"), "{e}");
    let unknown = invocation("app", "default", keyvalue::STORE, "teleport", wit_value::encode(&[WitValue::String("default".into())]));
    let e = remote.call(unknown).await.err().unwrap();
    assert!(e.kind == RpcErrorKind::Malformed && e.message.contains("teleport"), "{e}");

    running.request_shutdown();
    tokio::time::timeout(WAIT, running.wait()).await.unwrap().unwrap();
    // Stopped: no longer served locally or remotely.
    let after = call(&provider_router, "app", &get).await;
    assert!(after.is_err(), "{after:?}");
}
