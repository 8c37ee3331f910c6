//! Bounded under hostile or careless input: reads of lattice state create no JetStream consumer
//! and never starve writes, large listings are paged, inputs that grow a reply are capped, the
//! registry and the routing view agree about an unreadable entry, and a deleted and recreated
//! state bucket is followed again at once.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trellis_lattice::ctl::*;
use trellis_lattice::subject::{CtlOp, CtlSubjects};
use trellis_tests::scenario::{Lattice, wait_until};

fn link(source: &str, target: &str, name: &str) -> Link {
    Link {
        source_id: source.into(),
        target: target.into(),
        name: name.into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into()],
        source_config: vec![],
        target_config: vec![],
    }
}

/// How many consumers the server holds on the stream of the lattice bucket.
async fn consumers(js: &async_nats::jetstream::Context) -> usize {
    let mut stream = js.get_stream("KV_LATTICEDATA_default").await.unwrap();
    let n = stream.info().await.unwrap().state.consumer_count;
    if std::env::var("DEBUG_CONSUMERS").is_ok() {
        use futures::StreamExt;
        let mut list = stream.consumers();
        while let Some(Ok(c)) = list.next().await {
            println!("consumer {} {:?} created {:?} delivered {:?}", c.name, c.config.description, c.created, c.delivered);
        }
    }
    n
}

/// A raw control request, the way a client that does not page (wasmCloud's) sends it.
async fn raw(l: &Lattice, op: CtlOp, body: &[u8]) -> async_nats::Message {
    let subject = CtlSubjects::new("default").subject(&op);
    tokio::time::timeout(Duration::from_secs(10), l.client().request(subject, body.to_vec().into())).await.expect("an answer in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_link_get_leaves_no_consumers_and_link_puts_all_succeed() {
    let l = Lattice::new().await;
    let _host = l.host().await;
    let js = async_nats::jetstream::new(l.client());
    let before = consumers(&js).await;

    // A dashboard gone wild: link.get and claims.get back to back from 4 tasks at once.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for i in 0..4 {
        let (ctl, stop, reads) = (l.ctl.clone(), stop.clone(), reads.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 0 {
                    ctl.get_links().await.unwrap();
                } else {
                    ctl.get_claims().await.unwrap();
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut most = 0;
    for n in 0..30 {
        l.ctl.put_link(&link(&format!("src{n}"), "store", "default")).await.unwrap();
        most = most.max(consumers(&js).await);
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await.unwrap();
    }
    let elapsed = started.elapsed();
    let reads = reads.load(Ordering::Relaxed);
    println!("{reads} reads in {elapsed:?} beside 30 link.puts; at most {most} consumers on the lattice bucket (at start: {before})");
    assert!(reads as f64 / elapsed.as_secs_f64() > 50.0, "the pollers read more than 50 times a second ({reads} in {elapsed:?})");
    assert_eq!(l.ctl.get_links().await.unwrap().len(), 30, "every link.put succeeded and is listed");
    assert!(most <= before + 1, "reads leave no consumer behind: {most} consumers while polling, {before} at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_beyond_max_payload_are_paged_and_reassembled() {
    let l = Lattice::new().await;
    let host = l.host().await;
    // 300 links of ~5 KB each: 1.5 MB, over NATS' 1 MiB max_payload.
    let interfaces: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "i".repeat(240))).collect();
    let mut expected = Vec::new();
    for n in 0..300 {
        let link = Link { interfaces: interfaces.clone(), ..link(&format!("src{n:03}"), "store", "default") };
        l.ctl.put_link(&link).await.unwrap();
        expected.push(link);
    }
    expected.sort();

    // A client that does not page gets the first page, which says there is more.
    let first = raw(&l, CtlOp::LinkGet, b"").await;
    assert!(first.payload.len() <= REPLY_BUDGET + 4096, "a page fits the reply budget: {} bytes", first.payload.len());
    let page: CtlResponse<Vec<Link>> = serde_json::from_slice(&first.payload).unwrap();
    assert!(page.success && page.next.is_some(), "the first page names the next: {}", page.message);
    assert!(page.message.contains("{\"after\": NEXT}"), "{}", page.message);
    assert!(!page.response.unwrap().is_empty());

    // CtlClient (and so wash) puts the pages together.
    let mut all = l.ctl.get_links().await.unwrap();
    all.sort();
    assert_eq!(all, expected);
    assert_eq!(host.links().len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_naming_one_config_35000_times_is_deduplicated_and_config_lists_are_capped() {
    let l = Lattice::new().await;
    let host = l.host().await;
    l.put_config("shared", &[("k", "v")]).await;
    l.put_config("other", &[("k", "w")]).await;
    let mut many = link("http", "hello", "default");
    // The last mention of each name stays, so `shared` (mentioned last) still wins the merge.
    many.source_config = std::iter::once("other".to_string()).chain(std::iter::repeat_n("shared".to_string(), 35_000)).collect();
    let started = Instant::now();
    l.ctl.put_link(&many).await.unwrap();
    let took = started.elapsed();
    println!("link.put naming one config 35,000 times took {took:?}");
    assert!(took < Duration::from_secs(1), "the repeats cost no KV reads: {took:?}");
    let stored = l.ctl.get_links().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].source_config, vec!["other", "shared"]);
    wait_until("the host to see the link", || host.links().len() == 1).await;

    let mut wide = link("http", "hello2", "wide");
    for i in 0..65 {
        let name = format!("c{i}");
        l.put_config(&name, &[("k", "v")]).await;
        wide.target_config.push(name);
    }
    let err = l.ctl.put_link(&wide).await.unwrap_err().to_string();
    trellis_tests::assert_contains_all(&err, &["65 distinct configs in target_config", "the limit is 64"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_a_link_key_is_listed_as_unreadable_and_not_routed_to() {
    let l = Lattice::new().await;
    let host = l.host().await;
    let good = link("http", "hello", "default");
    let other = link("http", "other", "admin");
    l.put_link_seen(&[&host], &good).await;
    l.put_link_seen(&[&host], &other).await;

    let js = async_nats::jetstream::new(l.client());
    let kv = js.get_key_value("LATTICEDATA_default").await.unwrap();
    let key = trellis_lattice::state::link_key(&good);
    kv.put(&key, "\u{1b}[2J not a link".into()).await.unwrap();

    // The routing view lets go of the old value...
    wait_until("the host to stop routing by the overwritten link", || !host.links().contains(&good)).await;
    assert_eq!(host.links(), vec![other.clone()]);
    // ... and the registry says why, by key.
    let listing = l.ctl.get_links_listing().await.unwrap();
    assert_eq!(listing.links, vec![other.clone()]);
    assert_eq!(listing.unreadable.len(), 1, "{listing:?}");
    assert_eq!(listing.unreadable[0].key, key);
    let raw_reply: CtlResponse<Vec<Link>> = serde_json::from_slice(&raw(&l, CtlOp::LinkGet, b"").await.payload).unwrap();
    assert!(raw_reply.message.contains(&key), "a client that reads only the message is told too: {}", raw_reply.message);

    // Valid JSON of another link under this key is no better.
    kv.put(&key, serde_json::to_vec(&other).unwrap().into()).await.unwrap();
    wait_until("the misplaced link to be listed as unreadable", || host.links() == vec![other.clone()]).await;
    let listing = l.ctl.get_links_listing().await.unwrap();
    assert!(listing.unreadable.iter().any(|u| u.key == key && u.error.contains("is the link of key")), "{listing:?}");

    // Deleting the slot clears the unreadable entry; putting the link again repairs it.
    l.ctl.delete_link(&good.slot()).await.unwrap();
    assert!(l.ctl.get_links_listing().await.unwrap().unreadable.is_empty());
    l.put_link_seen(&[&host], &good).await;
    kv.put(&key, "garbage".into()).await.unwrap();
    wait_until("the host to drop the link again", || !host.links().contains(&good)).await;
    l.put_link_seen(&[&host], &good).await;
    assert!(l.ctl.get_links_listing().await.unwrap().unreadable.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_state_bucket_is_followed_within_two_seconds() {
    let l = Lattice::new().await;
    let host = l.host().await;
    let first = link("http", "hello", "default");
    l.put_link_seen(&[&host], &first).await;

    let js = async_nats::jetstream::new(l.client());
    js.delete_key_value("LATTICEDATA_default").await.unwrap();
    let deleted = Instant::now();
    // The bucket is gone, so is every link: the host routes by none, soon.
    wait_until("the host's view to empty with its bucket", || host.links().is_empty()).await;
    let emptied = deleted.elapsed();
    println!("the view emptied {emptied:?} after the bucket was deleted");
    assert!(emptied <= Duration::from_secs(2), "the watch noticed the deletion promptly: {emptied:?}");

    js.create_key_value(async_nats::jetstream::kv::Config { bucket: "LATTICEDATA_default".into(), history: 1, ..Default::default() }).await.unwrap();
    let recreated = Instant::now();
    let second = link("http", "world", "other");
    l.ctl.put_link(&second).await.unwrap();
    wait_until("the new link to apply", || host.links() == vec![second.clone()]).await;
    let took = recreated.elapsed();
    println!("a link put after the bucket was recreated applied in {took:?}");
    assert!(took <= Duration::from_secs(2), "the watch resumed promptly: {took:?}");
    assert_eq!(l.ctl.get_links().await.unwrap(), vec![second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_capped_on_label_put_and_at_start() {
    let nats = trellis_tests::nats::NatsServer::start().await.unwrap();
    let l = Lattice::on(&nats).await;
    let host = l.host().await;
    // Many small labels: refused once the host would carry more than 64.
    let mut refused = None;
    for i in 0..70 {
        if let Err(e) = l.ctl.put_label(host.id(), &format!("k{i}"), "v").await {
            refused = Some((i, e.to_string()));
            break;
        }
    }
    let (at, err) = refused.expect("a label past the cap is refused");
    assert_eq!(at + 3, 64, "64 labels with the three hostcore.* ones: {err}");
    assert!(err.contains("at most 64 labels"), "{err}");
    // Large ones: refused by size, in all and one by one.
    let err = l.ctl.put_label(host.id(), "big", &"v".repeat(5000)).await.unwrap_err().to_string();
    assert!(err.contains("the limit is 4096"), "{err}");
    for i in 0..20 {
        l.ctl.delete_label(host.id(), &format!("k{i}")).await.unwrap();
    }
    let mut err = String::new();
    for i in 0..6 {
        if let Err(e) = l.ctl.put_label(host.id(), &format!("wide{i}"), &"v".repeat(4000)).await {
            err = e.to_string();
            break;
        }
    }
    assert!(err.contains("at most 16384 bytes"), "{err}");
    // The host still answers, small.
    let pinged = l.ctl.ping_hosts().await.unwrap();
    assert_eq!(pinged.len(), 1);
    assert!(serde_json::to_vec(&pinged[0]).unwrap().len() < 20 * 1024);

    let mut config = trellis_tests::hosts::config(&nats.url(), &[]);
    config.labels = (0..100).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let err = trellis_host::Host::start(config).await.err().expect("a host with 100 labels does not start").to_string();
    assert!(err.contains("at most 64 labels") && err.contains("-l"), "{err}");
}
