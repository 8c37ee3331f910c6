//! `Serving::drain`, what scaling a component to 0 (and so draining a host) rests on: the
//! replica stops taking calls (the queue group sends them to the other replicas), and every
//! call it had already taken is still answered. And what happens when a replica vanishes
//! instead: a call it held fails as lost within two probes, not at the caller's deadline.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, RpcError};
use trellis_tests::nats::NatsServer;

/// Answers `name` after `delay`, counting its calls.
struct Slow {
    name: &'static str,
    delay: Duration,
    calls: Arc<AtomicU32>,
}

impl Handler for Slow {
    fn call(&self, _inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        let (name, delay, calls) = (self.name, self.delay, self.calls.clone());
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Response { head: Bytes::new(), body: rpc::full_body(Bytes::from_static(name.as_bytes())) })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_replica_answers_what_it_took_and_takes_nothing_more() {
    let nats = NatsServer::start().await.unwrap();
    let (a_calls, b_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let ra = rpc::Router::new(nats.client().await.unwrap(), "default");
    let rb = rpc::Router::new(nats.client().await.unwrap(), "default");
    let caller = rpc::Router::new(nats.client().await.unwrap(), "default");
    let a = ra.serve("slow", Arc::new(Slow { name: "a", delay: Duration::from_millis(400), calls: a_calls.clone() })).await.unwrap();
    let _b = rb.serve("slow", Arc::new(Slow { name: "b", delay: Duration::from_millis(400), calls: b_calls.clone() })).await.unwrap();
    let call = CallInfo {
        lattice: "default".into(),
        source: "tests".into(),
        target: "slow".into(),
        interface: "test:slow/api".into(),
        function: "go".into(),
        link_name: "default".into(),
    };
    let send = |n: usize| {
        let (caller, call) = (caller.clone(), call.clone());
        futures::future::join_all((0..n).map(move |_| {
            let (caller, call) = (caller.clone(), call.clone());
            async move {
                let inv = Invocation {
                    call,
                    traceparent: None,
                    deadline: tokio::time::Instant::now() + Duration::from_secs(10),
                    head: Bytes::new(),
                    body: rpc::full_body(Bytes::new()),
                };
                let r = caller.call(inv).await?;
                Ok::<_, RpcError>(rpc::collect_body(r.body).await.map_err(|e| e.to_string()).unwrap_or_default())
            }
        }))
    };
    // 40 calls in flight over both replicas; A is drained while they run.
    let first = tokio::spawn(send(40));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let taken_by_a = a_calls.load(Ordering::SeqCst);
    assert!(taken_by_a > 0, "A took none of the calls");
    let drained = tokio::time::Instant::now();
    a.drain(Duration::from_secs(5)).await;
    assert!(drained.elapsed() >= Duration::from_millis(200), "the drain did not wait for the calls in flight");
    let answers = first.await.unwrap();
    let failed: Vec<_> = answers.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} calls failed: {failed:?}", failed.len());
    let from_a = answers.iter().filter(|r| r.as_ref().is_ok_and(|b| b.as_ref() == b"a")).count() as u32;
    assert_eq!(from_a, a_calls.load(Ordering::SeqCst), "every call A took was answered");
    // After the drain everything goes to B.
    let after = a_calls.load(Ordering::SeqCst);
    let second = send(20).await;
    assert!(second.iter().all(|r| r.as_ref().is_ok_and(|b| b.as_ref() == b"b")), "{second:?}");
    assert_eq!(a_calls.load(Ordering::SeqCst), after, "a drained replica took a call");
    assert!(b_calls.load(Ordering::SeqCst) >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_replica_vanishes_fails_as_lost_within_two_probes_and_a_slow_one_does_not() {
    let nats = NatsServer::start().await.unwrap();
    let doomed_client = nats.client().await.unwrap();
    let doomed = rpc::Router::new(doomed_client.clone(), "default");
    let healthy = rpc::Router::new(nats.client().await.unwrap(), "default");
    let caller = rpc::Router::new(nats.client().await.unwrap(), "default");
    let stuck_calls = Arc::new(AtomicU32::new(0));
    let _stuck = doomed.serve("stuck", Arc::new(Slow { name: "stuck", delay: Duration::from_secs(60), calls: stuck_calls.clone() })).await.unwrap();
    let _patient = healthy.serve("patient", Arc::new(Slow { name: "patient", delay: Duration::from_millis(2500), calls: Arc::default() })).await.unwrap();
    let call = |target: &str| Invocation {
        call: CallInfo {
            lattice: "default".into(),
            source: "tests".into(),
            target: target.into(),
            interface: "test:slow/api".into(),
            function: "go".into(),
            link_name: "default".into(),
        },
        traceparent: None,
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        head: Bytes::new(),
        body: rpc::full_body(Bytes::new()),
    };
    // A call that takes 2.5 s is asked about twice, held both times, and answered.
    let started = tokio::time::Instant::now();
    let patient = tokio::spawn({
        let (caller, inv) = (caller.clone(), call("patient"));
        async move { rpc::collect_body(caller.call(inv).await?.body).await }
    });
    // The replica holding `stuck` loses its NATS connection mid-call (as when its host is
    // killed): nobody will ever answer, and the caller learns so at the next probe.
    let stuck = tokio::spawn({
        let (caller, inv) = (caller.clone(), call("stuck"));
        async move { caller.call(inv).await.map(|_| ()) }
    });
    while stuck_calls.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the stuck replica never took the call");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed_client.drain().await.unwrap();
    let err = stuck.await.unwrap().expect_err("a call nobody holds cannot succeed");
    let lost_after = started.elapsed();
    assert_eq!(err.kind, rpc::RpcErrorKind::Lost, "{err}");
    assert!(err.to_string().contains("the replica of `stuck` that took the call is gone"), "{err}");
    assert!(lost_after < rpc::PROBE_AFTER * 2 + rpc::PROBE_TIMEOUT, "lost only after {lost_after:?}");
    assert_eq!(patient.await.unwrap().unwrap().as_ref(), b"patient");
    assert!(started.elapsed() >= Duration::from_millis(2500));
}
