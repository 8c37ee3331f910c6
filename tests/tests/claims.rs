//! Signed components end to end on a real nats-server: claims travel in `component_scaled` and
//! `claims.get`; tampered, expired, foreign and (under --require-signed) unsigned components
//! are refused with `component_scale_failed` naming the check that failed.

use std::time::Duration;

use bytes::Bytes;
use nkeys::KeyPair;
use trellis_lattice::claims::{self, Claims};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::{ScaleComponentCommand, UpdateComponentCommand};
use trellis_lattice::event::{ComponentScaleFailed, ComponentScaled};
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{Events, ProcessHost, config, init_tracing};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(30);

/// An account that signs and the module key of the component it signs.
struct Signer {
    account: KeyPair,
    module: KeyPair,
}

impl Signer {
    fn new() -> Self {
        Self { account: KeyPair::new_account(), module: KeyPair::new_module() }
    }

    /// http-hello signed as `name`, after `edit` has had its way with the claims.
    fn sign(&self, name: &str, edit: impl FnOnce(&mut Claims)) -> Vec<u8> {
        let wasm = std::fs::read(http_hello()).expect("http-hello");
        let mut c = Claims::new(&self.account.public_key(), &self.module.public_key(), claims::now());
        c.wascap.name = Some(name.into());
        c.wascap.ver = Some("0.1.0".into());
        c.wascap.rev = Some(7);
        c.wascap.tags = Some(vec!["example".into(), "http".into()]);
        edit(&mut c);
        claims::sign(&wasm, c, &self.account).expect("signs").0
    }
}

/// Writes `bytes` as `name` in `dir`; returns its file:// reference.
fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writes");
    file_ref(path)
}

/// `bytes` with one byte of the component's data changed (inside the nested core module's data
/// section, well away from the token).
fn tamper(mut bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes.windows(19).position(|w| w == b"Hello from Trellis!").expect("http-hello's greeting is in its data");
    bytes[at] = b'J';
    bytes
}

fn scale(host_id: &str, id: &str, reference: &str) -> ScaleComponentCommand {
    ScaleComponentCommand { component_ref: reference.into(), component_id: id.into(), max_instances: 1, host_id: host_id.into(), ..Default::default() }
}

async fn ctl(nats: &NatsServer) -> CtlClient {
    CtlClient::new(nats.client().await.expect("client"), "default")
}

/// Scales `id` from `reference` on `host_id` and returns the refusal's error text.
async fn refused(ctl: &CtlClient, events: &mut Events, host_id: &str, id: &str, reference: &str) -> String {
    ctl.scale_component(&scale(host_id, id, reference)).await.expect("control request");
    let ev = events.wait_for("component_scale_failed", WAIT, |e| e.data["component_id"] == id).await.expect("component_scale_failed");
    let failed: ComponentScaleFailed = ev.data_as().expect("event data");
    assert_eq!(failed.scaled.host_id, host_id);
    failed.error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_component_runs_and_its_claims_are_published() {
    init_tracing();
    let nats = NatsServer::start().await.expect("nats-server");
    let signer = Signer::new();
    let mut cfg = config(&nats.url(), &[]);
    cfg.allowed_issuers = vec![signer.account.public_key()];
    cfg.require_signed = true;
    let host = trellis_host::Host::start(cfg).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let dir = tempfile::tempdir().expect("tempdir");
    let signed = write(&dir, "hello_s.wasm", &signer.sign("hello", |_| {}));

    ctl.scale_component(&scale(host.id(), "hello", &signed)).await.expect("control request");
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hello").await.expect("component_scaled");
    let scaled: ComponentScaled = ev.data_as().expect("event data");
    let module = signer.module.public_key();
    assert_eq!(scaled.public_key.as_deref(), Some(module.as_str()));
    let map = scaled.claims.expect("claims in component_scaled");
    assert_eq!(map["name"], "hello");
    assert_eq!(map["iss"], signer.account.public_key());
    assert_eq!(map["sub"], module);
    assert_eq!(map["version"], "0.1.0");
    assert_eq!(map["rev"], "7");
    assert_eq!(map["tags"], "example,http");
    assert_eq!(map["expires_human"], "never");

    // It serves, and the inventory names it from its claims.
    let req = http::Request::get("http://localhost/").body(Bytes::new()).expect("request");
    assert_eq!(host.invoke_http("hello", req).await.expect("invocation").body().as_ref(), b"Hello from Trellis!\n");
    let inv = ctl.get_host_inventory(host.id()).await.expect("control request");
    assert_eq!((inv.components[0].name.as_deref(), inv.components[0].revision), (Some("hello"), 7));

    // claims.get lists what the host stored.
    let listed = ctl.get_claims().await.expect("control request");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0], map);

    // Scaling the running version keeps its claims.
    let mut more = scale(host.id(), "hello", &signed);
    more.max_instances = 3;
    ctl.scale_component(&more).await.expect("control request");
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["max_instances"] == 3).await.expect("component_scaled");
    assert_eq!(ev.data["public_key"], module.as_str());

    // An update to a new signed revision carries the new claims; one to tampered bytes is refused
    // and the signed version keeps running.
    let v2 = write(&dir, "hello_v2_s.wasm", &signer.sign("hello", |c| c.wascap.rev = Some(8)));
    let update = |to: &str| UpdateComponentCommand { component_id: "hello".into(), new_component_ref: to.into(), host_id: host.id().into(), annotations: None };
    ctl.update_component(&update(&v2)).await.expect("control request");
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["image_ref"] == v2.as_str()).await.expect("component_scaled");
    assert_eq!(ev.data["claims"]["rev"], "8");
    assert_eq!(ctl.get_host_inventory(host.id()).await.expect("control request").components[0].revision, 8);
    let bad = write(&dir, "hello_tampered.wasm", &tamper(signer.sign("hello", |_| {})));
    ctl.update_component(&update(&bad)).await.expect("control request");
    let ev = events.wait_for("component_scale_failed", WAIT, |e| e.data["image_ref"] == bad.as_str()).await.expect("component_scale_failed");
    let err = ev.data["error"].as_str().expect("error text");
    assert!(err.contains("hash mismatch: the component's bytes changed after it was signed"), "{err}");
    assert_eq!(ctl.get_host_inventory(host.id()).await.expect("control request").components[0].image_ref, v2);
    host.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_foreign_components_are_refused() {
    init_tracing();
    let nats = NatsServer::start().await.expect("nats-server");
    let signer = Signer::new();
    let mut cfg = config(&nats.url(), &[]);
    cfg.allowed_issuers = vec![signer.account.public_key()];
    let host = trellis_host::Host::start(cfg).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let dir = tempfile::tempdir().expect("tempdir");

    let tampered = write(&dir, "tampered.wasm", &tamper(signer.sign("hello", |_| {})));
    let err = refused(&ctl, &mut events, host.id(), "tampered", &tampered).await;
    assert!(
        err.starts_with(&format!("cannot load component from `{tampered}`: hash mismatch: the component's bytes changed after it was signed (token hash ")),
        "{err}"
    );
    assert!(err.contains(", actual "), "{err}");

    let now = claims::now();
    let expired = write(
        &dir,
        "expired.wasm",
        &signer.sign("hello", |c| {
            c.iat = now - 100;
            c.exp = Some(now - 10);
        }),
    );
    let err = refused(&ctl, &mut events, host.id(), "expired", &expired).await;
    assert!(err.contains(&format!("the token expired at {}", claims::human_time(now - 10))), "{err}");

    let early = write(&dir, "early.wasm", &signer.sign("hello", |c| c.nbf = Some(now + 3600)));
    let err = refused(&ctl, &mut events, host.id(), "early", &early).await;
    assert!(err.contains(&format!("the token is not valid before {}", claims::human_time(now + 3600))), "{err}");

    let stranger = Signer::new();
    let foreign = write(&dir, "foreign.wasm", &stranger.sign("hello", |_| {}));
    let err = refused(&ctl, &mut events, host.id(), "foreign", &foreign).await;
    assert!(err.contains(&format!("issuer {} is not on this host's allowed issuers list (--allowed-issuers)", stranger.account.public_key())), "{err}");

    // A token whose signature does not match its claims.
    let mut forged = Claims::new(&signer.account.public_key(), &signer.module.public_key(), now);
    let plain = std::fs::read(http_hello()).expect("http-hello");
    forged.wascap.hash = claims::hash(&plain).expect("hash");
    let token = claims::encode(&forged, &stranger.account).expect("encodes");
    let forged = write(&dir, "forged.wasm", &claims::embed(&plain, &token).expect("embeds"));
    let err = refused(&ctl, &mut events, host.id(), "forged", &forged).await;
    assert!(err.contains("bad signature"), "{err}");

    // None of them runs or left claims behind; an unsigned component is still welcome here.
    assert!(ctl.get_host_inventory(host.id()).await.expect("control request").components.is_empty());
    assert!(ctl.get_claims().await.expect("control request").is_empty());
    ctl.scale_component(&scale(host.id(), "unsigned", &file_ref(http_hello()))).await.expect("control request");
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "unsigned").await.expect("component_scaled");
    let scaled: ComponentScaled = ev.data_as().expect("event data");
    assert_eq!((scaled.public_key, scaled.claims), (None, None));
    host.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_components_are_refused_only_under_require_signed() {
    init_tracing();
    let nats = NatsServer::start().await.expect("nats-server");
    let signer = Signer::new();
    let mut strict_cfg = config(&nats.url(), &[("policy", "strict")]);
    strict_cfg.require_signed = true;
    let strict = trellis_host::Host::start(strict_cfg).await.expect("host");
    let lenient = trellis_host::Host::start(config(&nats.url(), &[("policy", "lenient")])).await.expect("host");
    // The flags of the binary reach the same switches.
    let process = ProcessHost::start(&nats.url(), &["--require-signed", "--allowed-issuers", &signer.account.public_key()]).await.expect("process host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let dir = tempfile::tempdir().expect("tempdir");
    let unsigned = file_ref(http_hello());
    let signed = write(&dir, "hello_s.wasm", &signer.sign("hello", |_| {}));

    for host_id in [strict.id(), process.id.as_str()] {
        let err = refused(&ctl, &mut events, host_id, "plain", &unsigned).await;
        assert_eq!(
            err,
            format!(
                "cannot load component from `{unsigned}`: it is not signed, and this host runs only signed components \
                 (--require-signed); sign it with `wash claims sign FILE --name NAME` and start the signed file"
            )
        );
    }
    ctl.scale_component(&scale(lenient.id(), "plain", &unsigned)).await.expect("control request");
    events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "plain" && e.source == lenient.id()).await.expect("component_scaled");

    for host_id in [strict.id(), process.id.as_str()] {
        ctl.scale_component(&scale(host_id, "signed", &signed)).await.expect("control request");
        let ev = events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "signed" && e.source == host_id).await.expect("component_scaled");
        assert_eq!(ev.data["public_key"], signer.module.public_key().as_str());
    }
    // The process host's allowed-issuers list is in force too.
    let other = write(&dir, "other_s.wasm", &Signer::new().sign("other", |_| {}));
    let err = refused(&ctl, &mut events, &process.id, "other", &other).await;
    assert!(err.contains("is not on this host's allowed issuers list"), "{err}");
    strict.stop(Duration::from_secs(1)).await;
    lenient.stop(Duration::from_secs(1)).await;
}
