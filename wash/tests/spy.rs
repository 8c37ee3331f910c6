//! `wash spy`: while a load loop sends HTTP requests through the http-server provider to
//! `pinger`, which calls `ponger` for each, `wash spy pinger` shows both the calls in (the
//! provider on pinger's host: local routing, never on NATS) and the calls out (ponger on
//! another host: over NATS), as JSON lines and as text with bodies, and exits 0 on Ctrl-C
//! (SIGINT).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{WAIT, Wash};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use trellis_lattice::ctl::Link;
use trellis_tests::components::{pinger, ponger};
use trellis_tests::http::{free_addr, get, get_until};

/// A running `wash spy …`, its stdout read line by line.
struct SpyProcess {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl SpyProcess {
    fn start(wash: &Wash, args: &[&str]) -> Self {
        let mut cmd = tokio::process::Command::from(wash.cmd(args));
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("wash spy starts");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, lines }
    }

    /// The next line, within [`WAIT`].
    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line()).await.expect("a line from wash spy in time").expect("read").expect("wash spy is still running")
    }

    /// Sends SIGINT and returns the exit code.
    async fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill runs");
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("wash spy exits on SIGINT").expect("wait");
        status.code()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spy_shows_the_calls_of_a_load_loop_and_stops_on_ctrl_c() {
    let nats = trellis_tests::nats::NatsServer::start().await.expect("nats");
    let wash = Wash::on(&nats);
    let mut l = trellis_tests::scenario::lattice(nats).await;
    let host = l.host().await;
    l.scale(&host, "pinger", pinger(), 4).await;
    let elsewhere = l.host().await;
    l.scale(&elsewhere, "ponger", ponger(), 4).await;
    let pingpong = Link {
        source_id: "pinger".into(),
        target: "ponger".into(),
        name: "default".into(),
        wit_namespace: "trellis".into(),
        wit_package: "examples".into(),
        interfaces: vec!["pingpong".into()],
        source_config: vec![],
        target_config: vec![],
    };
    l.put_link_seen(&[&host, &elsewhere], &pingpong).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().expect("addr");
    l.link_at("http", "pinger", addr, &[]).await;
    get_until(addr, "/?message=hi", 200, WAIT).await.expect("pinger answers");

    // Nobody spies yet: the hosts publish no records. (Were they published regardless, the
    // 20 calls' records would be here after the round trip, but perhaps the last few.)
    let client = l.client();
    let mut raw = client.subscribe(trellis_lattice::spy::records_subject("default", "pinger")).await.expect("subscribe");
    for _ in 0..20 {
        assert_eq!(get(addr, "/?message=hi").await.expect("request").status, 200);
    }
    trellis_lattice::round_trip(&client).await.expect("round trip");
    assert!(futures::FutureExt::now_or_never(futures::StreamExt::next(&mut raw)).is_none(), "a record was published with no spy listening");

    let mut json = SpyProcess::start(&wash, &["spy", "pinger", "-o", "json"]);
    let mut text = SpyProcess::start(&wash, &["spy", "pinger", "--with-bodies"]);
    // The load loop: one request every 20 ms until the test has seen enough.
    let load = tokio::spawn(async move {
        let mut sent = 0u32;
        loop {
            let r = get(addr, "/?message=hi").await.expect("request");
            assert_eq!(r.status, 200, "{}", r.text());
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if sent > 10_000 {
                break sent;
            }
        }
    });

    let (mut ins, mut outs) = (0, 0);
    while ins < 5 || outs < 5 {
        let line = json.line().await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["outcome"], "ok", "{v}");
        assert_eq!(v["host_id"], host.id(), "{v}");
        assert!(v["duration_us"].as_u64().is_some(), "{v}");
        assert!(v.get("request").is_none(), "no bodies unless asked: {v}");
        match v["direction"].as_str() {
            Some("in") => {
                assert_eq!((v["source"].as_str(), v["target"].as_str()), (Some("http"), Some("pinger")), "{v}");
                assert_eq!((v["interface"].as_str(), v["function"].as_str()), (Some("wasi:http/incoming-handler"), Some("handle")), "{v}");
                assert_eq!(v["link_name"], "pinger", "{v}");
                assert_eq!(v["route"], "local", "{v}");
                assert!(v["response_bytes"].as_u64().unwrap() > 0, "{v}");
                ins += 1;
            }
            Some("out") => {
                assert_eq!((v["source"].as_str(), v["target"].as_str()), (Some("pinger"), Some("ponger")), "{v}");
                assert_eq!((v["interface"].as_str(), v["function"].as_str()), (Some("trellis:examples/pingpong"), Some("ping")), "{v}");
                assert_eq!(v["link_name"], "default", "{v}");
                assert_eq!(v["route"], "nats", "{v}");
                assert!(v["request_bytes"].as_u64().unwrap() > 0 && v["response_bytes"].as_u64().unwrap() > 0, "{v}");
                outs += 1;
            }
            other => panic!("direction {other:?}: {v}"),
        }
    }

    // Text: a line per call, and with bodies one more per side: the HTTP response body, and
    // the ping's arguments and results as WIT values. Both spies read one subject, so the
    // text spy also prints the records hosts made for the JSON spy before they heard that
    // bodies are wanted: a call line followed by another call line is one of those.
    let (mut saw_in, mut saw_out) = (false, false);
    let mut carried: Option<String> = None;
    let mut read = 0;
    while !(saw_in && saw_out) {
        read += 1;
        assert!(read < 500, "no call with its bodies among 500 lines of `wash spy --with-bodies`");
        let line = match carried.take() {
            Some(l) => l,
            None => text.line().await,
        };
        let is_in = line.contains("in  http → pinger  wasi:http/incoming-handler.handle  link=pinger");
        let is_out = line.contains("out pinger → ponger  trellis:examples/pingpong.ping  link=default");
        if !(is_in || is_out) {
            continue;
        }
        let request = text.line().await;
        if !request.starts_with("    > ") {
            carried = Some(request);
            continue;
        }
        let response = text.line().await;
        if is_in {
            assert!(line.contains("  ok  ") && line.contains("  local host="), "{line}");
            assert!(request.starts_with("    > \"\""), "an empty GET body: {request}");
            assert!(response.starts_with("    < \"ok\\n") && response.contains("hi #1"), "{response}");
            saw_in = true;
        } else {
            assert!(request.starts_with("    > [") && request.contains("\"hi\""), "{request}");
            assert!(response.starts_with("    < [") && response.contains("hi #1"), "{response}");
            saw_out = true;
        }
    }

    assert_eq!(json.interrupt().await, Some(0), "wash spy -o json exits 0 on Ctrl-C");
    assert_eq!(text.interrupt().await, Some(0), "wash spy exits 0 on Ctrl-C");
    load.abort();
}
