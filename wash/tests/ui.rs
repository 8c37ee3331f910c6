//! `wash ui` against a real lattice of three `trellis-host` processes (two labelled
//! `zone=cloud`, one `zone=edge`), driven in Debian's headless chromium over WebDriver: the
//! page lists the hosts and what they run, follows the lattice live (a component started with
//! `wash` appears within 2 s without a reload, a stopped host is marked gone, an unreachable
//! NATS shows a banner that clears by itself), and its actions (scale, drain, validate,
//! deploy) take effect, checked with `wash get inventory` and `wash app status`. A second test
//! speaks raw HTTP to the backend: actions from a foreign origin, without the session token
//! or to a foreign Host are refused, and the caps hold.
//!
//! Screenshots of every view go to `target/ui-screenshots/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::time::{Duration, Instant};

use common::Wash;
use serde_json::{Value, json};
use trellis_tests::browser::{Browser, screenshot_dir};
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::ProcessHost;
use trellis_tests::nats::NatsServer;

/// A `wash ui` process, killed on drop.
struct Ui {
    child: std::process::Child,
    url: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ui {
    fn start(wash: &Wash) -> Ui {
        let mut child = wash
            .cmd(&["ui", "--addr", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("wash ui starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in `{line}`")).to_string();
        Ui { child, url }
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").trim_end_matches('/').to_string()
    }
}

fn shot(name: &str) -> std::path::PathBuf {
    screenshot_dir().join(format!("{name}.png"))
}

/// The JSON inventory of one host, through `wash get inventory`.
async fn inventory(wash: &Wash, host: &str) -> Value {
    wash.run_async(&["get", "inventory", host, "-o", "json"]).await.json()["inventories"][0].clone()
}

fn component<'a>(inv: &'a Value, id: &str) -> Option<&'a Value> {
    inv["components"].as_array().and_then(|c| c.iter().find(|c| c["id"] == id))
}

/// Waits until `check` holds for what `wash get inventory HOST` shows.
async fn wait_inventory(wash: &Wash, host: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inv = inventory(wash, host).await;
        if check(&inv) {
            return inv;
        }
        assert!(Instant::now() < deadline, "host {host} never showed {what}: {inv}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn card(host: &str) -> String {
    format!("article.host[data-host=\"{host}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_lattice_live_and_acts_on_it() {
    let mut nats = NatsServer::start().await.expect("nats");
    let url = nats.url();
    let cloud1 = ProcessHost::start(&url, &["-l", "zone=cloud", "--http-admin", "127.0.0.1:0"]).await.expect("host");
    let edge = ProcessHost::start(&url, &["-l", "zone=edge", "-l", "note=<img src=x onerror=alert(1)>"]).await.expect("host");
    let cloud2 = ProcessHost::start(&url, &["-l", "zone=cloud"]).await.expect("host");
    let wash = Wash::on(&nats);
    let hello = file_ref(http_hello());
    wash.run_async(&["start", "component", &hello, "hello", "--host-id", &cloud1.id]).await.ok();
    wash.run_async(&["start", "provider", "builtin://http-server", "http-server", "--host-id", &cloud1.id]).await.ok();
    let listen = trellis_tests::http::free_addr().unwrap();
    wash.run_async(&["config", "put", "hello-http", &format!("address={listen}")]).await.ok();
    wash.run_async(&["link", "put", "http-server", "hello", "wasi", "http", "--interface", "incoming-handler", "--source-config", "hello-http"]).await.ok();

    let ui = Ui::start(&wash);
    let browser = Browser::start(1400, 1000).await.expect("chromium and chromedriver (run .ci/bootstrap to install them)");
    browser.goto(&ui.url).await.unwrap();

    // Hosts, what they run, their zone, their metrics link; labels shown as text.
    browser.wait_for("three hosts", "return document.querySelectorAll('article.host:not(.gone)').length === 3", 10 * SECOND).await.unwrap();
    let row = format!("{} tr[data-component=\"hello\"]", card(&cloud1.id));
    let shown = browser
        .wait_for(
            "hello on the first host",
            &format!("const r = document.querySelector('{row}'); return r && [r.querySelector('.image').textContent, r.querySelector('.max').textContent]"),
            10 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(shown, json!([hello, "1"]));
    let provider = browser
        .eval(&format!("return document.querySelector('{} tr[data-provider=\"http-server\"] .image').textContent", card(&cloud1.id)), vec![])
        .await
        .unwrap();
    assert_eq!(provider, "builtin://http-server");
    let classes = browser
        .eval(&format!("return [document.querySelector('{}').className, document.querySelector('{}').className]", card(&edge.id), card(&cloud2.id)), vec![])
        .await
        .unwrap();
    assert!(classes[0].as_str().unwrap().contains("edge") && classes[1].as_str().unwrap().contains("cloud"), "{classes}");
    let metrics = browser
        .wait_for("the metrics link", &format!("const a = document.querySelector('{} .facts a'); return a && a.href", card(&cloud1.id)), 15 * SECOND)
        .await
        .unwrap();
    assert!(metrics.as_str().unwrap().starts_with("http://127.0.0.1:") && metrics.as_str().unwrap().ends_with("/metrics"), "{metrics}");
    let reply = trellis_tests::http::get(metrics.as_str().unwrap().trim_start_matches("http://").split('/').next().unwrap().parse().unwrap(), "/metrics")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "the linked admin endpoint serves metrics");
    let label = browser
        .eval(
            &format!(
                "const c = document.querySelector('{}'); return [c.querySelectorAll('img').length, c.querySelector('.labels').textContent]",
                card(&edge.id)
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(label[0], 0, "a label's HTML is shown, never rendered");
    assert!(label[1].as_str().unwrap().contains("note=<img src=x onerror=alert(1)>"), "{label}");
    browser.screenshot(&shot("hosts")).await.unwrap();

    // A component started with wash appears without a reload, within 2 s.
    browser.eval("window.__sameDocument = true; return true", vec![]).await.unwrap();
    wash.run_async(&["start", "component", &hello, "hello2", "--host-id", &edge.id]).await.ok();
    let started = Instant::now();
    browser
        .wait_for("hello2 on the edge host", &format!("return !!document.querySelector('{} tr[data-component=\"hello2\"]')", card(&edge.id)), 2 * SECOND)
        .await
        .unwrap();
    let appeared = started.elapsed();
    assert_eq!(browser.eval("return window.__sameDocument === true", vec![]).await.unwrap(), true, "the page reloaded");
    eprintln!("hello2 appeared on the page {} ms after `wash start component` returned", appeared.as_millis());

    // Scale from the page, with its confirmation step.
    browser.click(&format!("{row} button.act-scale")).await.unwrap();
    browser.wait_for("the scale dialog", "return document.querySelector('#confirm').open", 5 * SECOND).await.unwrap();
    browser.clear("#scale-count").await.unwrap();
    browser.type_into("#scale-count", "3").await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    wait_inventory(&wash, &cloud1.id, "hello at max instances 3", |inv| component(inv, "hello").is_some_and(|c| c["max_instances"] == 3)).await;
    browser.wait_for("the new limit", &format!("return document.querySelector('{row} .max').textContent === '3'"), 5 * SECOND).await.unwrap();
    // Cancelling changes nothing: Escape closes the dialog, and the keyboard reaches the buttons.
    browser.eval(&format!("document.querySelector('{row} button.act-scale').focus(); return true"), vec![]).await.unwrap();
    browser.keys("\u{E007}").await.unwrap();
    browser.wait_for("the dialog opened by Enter", "return document.querySelector('#confirm').open", 5 * SECOND).await.unwrap();
    browser.keys("\u{E00C}").await.unwrap();
    browser.wait_for("the dialog closed by Escape", "return !document.querySelector('#confirm').open", 5 * SECOND).await.unwrap();

    // Links as a graph; a click shows the config names.
    browser.goto(&format!("{}#links", ui.url)).await.unwrap();
    browser.wait_for("one link in the graph", "return document.querySelectorAll('#graph .edge').length === 1", 10 * SECOND).await.unwrap();
    browser.click("#graph .edge").await.unwrap();
    let detail =
        browser.wait_for("the link's config", "const d = document.querySelector('#link-detail'); return !d.hidden && d.textContent", 5 * SECOND).await.unwrap();
    for part in ["http-server → hello", "wasi:http/incoming-handler", "hello-http"] {
        assert!(detail.as_str().unwrap().contains(part), "{part} missing from {detail}");
    }
    browser.screenshot(&shot("links")).await.unwrap();

    // A bad manifest, pasted: each mistake at its line, as `wash app validate` finds them.
    let dir = tempfile::tempdir().unwrap();
    let bad = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: ui-broken\n  annotations:\n    version: v1\nspec:\n  components:\n    - name: greeter\n      type: component\n      properties:\n        image: file:///nowhere/greeter.wasm\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: many\n    - name: <b>bold</b>\n      type: gadget\n      properties:\n        image: builtin://http-server\n";
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let out = wash.run_async(&["app", "validate", dir.path().join("bad.yaml").to_str().unwrap(), "-o", "json"]).await;
    assert!(!out.success, "the bad manifest passed `wash app validate`");
    let expected: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let errors = expected["errors"].as_array().unwrap().clone();
    assert!(errors.len() >= 2, "{expected}");
    browser.goto(&format!("{}#apps", ui.url)).await.unwrap();
    browser.type_into("#manifest", bad).await.unwrap();
    assert_eq!(browser.eval("return document.querySelector('#manifest').value", vec![]).await.unwrap(), bad);
    browser.click("#validate").await.unwrap();
    browser.wait_for("the mistakes", "return !document.querySelector('#manifest-lines').hidden", 5 * SECOND).await.unwrap();
    for e in &errors {
        let line = e["line"].as_u64().unwrap();
        let text = browser
            .eval(&format!("const l = document.querySelector('#manifest-lines li[data-line=\"{line}\"] .line-error'); return l && l.textContent"), vec![])
            .await
            .unwrap();
        let (path, message) = (e["path"].as_str().unwrap(), e["message"].as_str().unwrap());
        assert!(text.as_str().is_some_and(|t| t.contains(path) && t.contains(message)), "line {line} shows {text}, not {e}");
    }
    let marked = browser.eval("return document.querySelectorAll('#manifest-lines li.has-error').length", vec![]).await.unwrap();
    assert_eq!(marked, errors.len(), "only the lines with mistakes are marked");
    assert_eq!(browser.eval("return document.querySelectorAll('#manifest-lines b').length", vec![]).await.unwrap(), 0);
    browser.screenshot(&shot("apps-invalid")).await.unwrap();

    // A good one, uploaded: deploys and turns Deployed.
    let good = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: uidemo\n  annotations:\n    version: v1\n    description: the dashboard's test app\nspec:\n  components:\n    - name: greeter\n      type: component\n      properties:\n        image: {hello}\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n            spread:\n              - name: cloud\n                requirements:\n                  zone: cloud\n"
    );
    let good_file = dir.path().join("good.yaml");
    std::fs::write(&good_file, &good).unwrap();
    browser.type_into("#manifest-file", good_file.to_str().unwrap()).await.unwrap();
    browser
        .wait_for("the uploaded manifest, valid", "return document.querySelector('#manifest-verdict').className === 'verdict ok'", 5 * SECOND)
        .await
        .unwrap();
    browser.click("#deploy").await.unwrap();
    browser.wait_for("the deploy dialog", "return document.querySelector('#confirm').open", 5 * SECOND).await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    browser
        .wait_for(
            "uidemo Deployed",
            "const r = document.querySelector('#apps-table tr[data-app=\"uidemo\"] .badge'); return r && r.textContent === 'Deployed'",
            60 * SECOND,
        )
        .await
        .unwrap();
    let status = wash.run_async(&["app", "status", "uidemo", "-o", "json"]).await.json();
    assert_eq!(status["status"]["type"], "deployed", "{status}");
    // An app the lattice cannot place shows why, as the reconciler says it.
    let stuck = good.replace("name: uidemo", "name: uistuck").replace("zone: cloud", "zone: mars");
    let stuck_file = dir.path().join("stuck.yaml");
    std::fs::write(&stuck_file, &stuck).unwrap();
    wash.run_async(&["app", "deploy", stuck_file.to_str().unwrap(), "--skip-wait"]).await.ok();
    let why = browser
        .wait_for(
            "uistuck Reconciling, with the reason",
            "const r = document.querySelector('#apps-table tr[data-app=\"uistuck\"]'); return r && r.querySelector('.badge').textContent === 'Reconciling' && r.querySelector('.why').textContent",
            30 * SECOND,
        )
        .await
        .unwrap();
    assert!(why.as_str().unwrap().contains("no host matches zone=mars"), "{why}");
    browser.screenshot(&shot("apps")).await.unwrap();
    wash.run_async(&["app", "undeploy", "uistuck"]).await.ok();

    // Drain, from the page, the cloud host that runs the app's replica: it moves to the other.
    let id = trellis_lattice::manifest::default_component_id("uidemo", "greeter");
    let (from, to) = if component(&inventory(&wash, &cloud1.id).await, &id).is_some() { (&cloud1.id, &cloud2.id) } else { (&cloud2.id, &cloud1.id) };
    browser.goto(&format!("{}#hosts", ui.url)).await.unwrap();
    browser
        .wait_for("the replica on its host", &format!("return !!document.querySelector('{} tr[data-component=\"{id}\"]')", card(from)), 10 * SECOND)
        .await
        .unwrap();
    browser.click(&format!("{} button.act-drain", card(from))).await.unwrap();
    browser.wait_for("the drain dialog", "return document.querySelector('#confirm').open", 5 * SECOND).await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    wait_inventory(&wash, to, "the replica moved here", |inv| component(inv, &id).is_some()).await;
    wait_inventory(&wash, from, "drained, the replica gone", |inv| inv["schedule"] == "drained" && component(inv, &id).is_none()).await;
    browser
        .wait_for(
            "the host shown drained",
            &format!("return document.querySelector('{} h3 .badge:last-child').textContent === 'drained'", card(from)),
            10 * SECOND,
        )
        .await
        .unwrap();

    // The live event feed, filtered.
    browser.goto(&format!("{}#events", ui.url)).await.unwrap();
    wash.run_async(&["scale", "component", "hello", "--max-instances", "2", "--host-id", &cloud1.id]).await.ok();
    browser
        .wait_for("component_scaled in the feed", "return document.querySelectorAll('#events li[data-type=\"component_scaled\"]').length > 0", 10 * SECOND)
        .await
        .unwrap();
    browser
        .eval("const s = document.querySelector('#filter-type'); s.value = 'component_scaled'; s.dispatchEvent(new Event('input')); return true", vec![])
        .await
        .unwrap();
    let types = browser.eval("return [...document.querySelectorAll('#events li')].map(l => l.dataset.type)", vec![]).await.unwrap();
    assert!(types.as_array().unwrap().iter().all(|t| t == "component_scaled"), "{types}");
    browser.screenshot(&shot("events")).await.unwrap();

    // A component's live calls, through the spy machinery.
    browser.goto(&format!("{}#calls/hello", ui.url)).await.unwrap();
    let calls = async {
        for _ in 0..100 {
            let _ = wash.run_async(&["call", "hello", "/"]).await;
            if browser.eval("return document.querySelectorAll('#calls-table tr.call').length", vec![]).await.unwrap().as_u64() >= Some(2) {
                return true;
            }
        }
        false
    };
    assert!(tokio::time::timeout(Duration::from_secs(60), calls).await.unwrap_or(false), "no calls shown");
    let first = browser.eval("return document.querySelector('#calls-table tr.call').textContent", vec![]).await.unwrap();
    assert!(first.as_str().unwrap().contains("wasi:http/incoming-handler.handle"), "{first}");
    browser.screenshot(&shot("calls")).await.unwrap();

    // Phone width, and dark mode. Notices go away by themselves first.
    browser.goto(&format!("{}#hosts", ui.url)).await.unwrap();
    browser.wait_for("the notices gone", "return document.querySelector('#toast').children.length === 0", 15 * SECOND).await.unwrap();
    browser.resize(390, 844).await.unwrap();
    browser.wait_for("hosts at phone width", "return document.querySelectorAll('article.host').length === 3", 10 * SECOND).await.unwrap();
    let wider = browser
        .eval(
            "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 0.5 && !e.closest('.table-wrap, .sr-only, .skip')).map(e => `${e.tagName}.${e.className}`).slice(0, 10)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wider, json!([]), "these stick out of a phone's width");
    browser.screenshot(&shot("hosts-phone")).await.unwrap();
    browser.resize(1400, 1000).await.unwrap();
    let light = browser.eval("return getComputedStyle(document.body).backgroundColor", vec![]).await.unwrap();
    browser.cdp("Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]})).await.unwrap();
    let dark = browser.eval("return getComputedStyle(document.body).backgroundColor", vec![]).await.unwrap();
    assert_ne!(light, dark, "dark mode changes nothing");
    browser.screenshot(&shot("hosts-dark")).await.unwrap();
    browser.cdp("Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]})).await.unwrap();

    // Stopping a host marks it gone.
    wash.run_async(&["stop", "host", &edge.id]).await.ok();
    browser
        .wait_for("the edge host gone", &format!("return document.querySelector('{}').classList.contains('gone')", card(&edge.id)), 5 * SECOND)
        .await
        .unwrap();

    // NATS down: a banner; back: it clears and the page follows the lattice again.
    nats.kill();
    let banner = browser
        .wait_for("the unreachable banner", "const b = document.querySelector('#banner'); return !b.hidden && b.textContent", 10 * SECOND)
        .await
        .unwrap();
    assert!(banner.as_str().unwrap().contains("unreachable"), "{banner}");
    browser.screenshot(&shot("unreachable")).await.unwrap();
    nats.restart().await.unwrap();
    browser.wait_for("the banner gone", "return document.querySelector('#banner').hidden", 30 * SECOND).await.unwrap();
    wash.run_async(&["scale", "component", "hello", "--max-instances", "5", "--host-id", &cloud1.id]).await.ok();
    browser.wait_for("updates after the outage", &format!("return document.querySelector('{row} .max').textContent === '5'"), 10 * SECOND).await.unwrap();
    drop(cloud2);
}

/// Sends a raw HTTP/1.1 request and returns (status, body).
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = format!("POST {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(addr, &req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_session_token_and_the_dashboards_origin() {
    let nats = NatsServer::start().await.expect("nats");
    let host = ProcessHost::start(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    let ui = Ui::start(&wash);
    let addr = ui.addr();
    let (status, page) = raw(&addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 200);
    let token = page.split("name=\"trellis-token\" content=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let origin = format!("http://{addr}");
    let cordon = format!("/api/hosts/{}/cordon", host.id);

    // A foreign page's POST carries its own Origin: refused, whatever else it has.
    let (status, body) = post(&addr, &cordon, &[("Host", &addr), ("Origin", "http://evil.example"), ("X-Trellis-Token", &token)], "{}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin `http://evil.example` is not this dashboard's"), "{body}");
    // No token, or a wrong one.
    let (status, body) = post(&addr, &cordon, &[("Host", &addr), ("Origin", &origin)], "{}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("X-Trellis-Token"), "{body}");
    let (status, body) = post(&addr, &cordon, &[("Host", &addr), ("Origin", &origin), ("X-Trellis-Token", &"0".repeat(64))], "{}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not this session's token"), "{body}");
    // No Origin at all.
    let (status, body) = post(&addr, &cordon, &[("Host", &addr), ("X-Trellis-Token", &token)], "{}");
    assert_eq!(status, 403, "{body}");
    // A rebinding name for the loopback address, even for a GET.
    let (status, body) = raw(&addr, "GET /api/state HTTP/1.1\r\nHost: attacker.example:3030\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host `attacker.example:3030`"), "{body}");
    // None of that touched the host.
    assert!(inventory(&wash, &host.id).await.get("schedule").is_none(), "a refused action cordoned the host");

    // The page's own request works.
    let (status, body) = post(&addr, &cordon, &[("Host", &addr), ("Origin", &origin), ("X-Trellis-Token", &token)], "{}");
    assert_eq!((status, body.contains("\"cordoned\"")), (200, true), "{body}");
    assert_eq!(inventory(&wash, &host.id).await["schedule"], "cordoned");

    // Bad input gets a clear error; the caps hold; the backend keeps serving.
    let ok = [("Host", addr.as_str()), ("Origin", origin.as_str()), ("X-Trellis-Token", token.as_str())];
    let (status, body) = post(&addr, "/api/scale", &ok, "{\"host_id\": 5}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("scale request"), "{body}");
    let (status, body) = post(&addr, &format!("/api/hosts/{}/explode", host.id), &ok, "{}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("cordon, uncordon and drain"), "{body}");
    let (status, body) = post(&addr, "/api/apps/validate", &ok, &"#".repeat(1024 * 1024 + 1));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1048576 bytes"), "{body}");
    let (status, body) = post(&addr, "/api/apps/validate", &ok, "kind: [");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"valid\":false"), "{body}");

    // At most 16 live event streams.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        streams.push(s);
    }
    let (status, body) = raw(&addr, &format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("16 live event streams"), "{body}");
    drop(streams);
    let (status, _) = raw(&addr, &format!("GET /api/state HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 200);
}
