//! Secrets end to end: a `trellis-host` process serving the built-in secrets backend, the
//! `secret-reader` component behind the built-in http-server provider. The component reads a
//! secret it was granted and is refused one it was not; the value never crosses NATS in clear
//! (every message of the run is recorded), is stored sealed in the KV bucket, and is absent
//! from the host's log.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use trellis_lattice::ctl::ScaleComponentCommand;
use trellis_lattice::secrets::{self, SecretReference, SecretValue, SecretsClient};
use trellis_tests::components::{file_ref, secret_reader};
use trellis_tests::hosts::ProcessHost;
use trellis_tests::nats::NatsServer;
use trellis_tests::{http, scenario};

const VALUE: &str = "s3cr3t-value-7f3a9c-do-not-leak";
const OTHER: &str = "other-value-2b81e0-do-not-leak";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reads_what_it_was_granted_and_nothing_leaks() {
    let nats = NatsServer::start().await.expect("nats-server");
    let url = nats.url();
    // Every message on the server, to prove nothing carries the value in clear.
    let spy = nats.client().await.expect("connect");
    let mut all = spy.subscribe(">").await.expect("subscribe");
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = all.next().await {
            let mut bytes = m.payload.to_vec();
            for (k, vs) in m.headers.iter().flat_map(|h| h.iter()) {
                bytes.extend_from_slice(k.as_ref());
                vs.iter().for_each(|v| bytes.extend_from_slice(v.as_str().as_bytes()));
            }
            record.lock().unwrap().push(bytes);
        }
    });

    let seed = nkeys::XKey::new().seed().expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("host.log");
    let host = ProcessHost::start_logged(&url, &["--secrets-xkey-seed", &seed, "--log-level", "debug"], &log).await.expect("trellis-host");
    let mut l = scenario::lattice(nats).await;

    // Store two secrets through the backend, as `wash secrets put` does.
    let client = SecretsClient::new(l.client(), secrets::DEFAULT_BACKEND);
    client.put("api-key", SecretValue::String(VALUE.into())).await.expect("put api-key");
    client.put("other", SecretValue::String(OTHER.into())).await.expect("put other");
    let listed = client.list().await.expect("list");
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api-key", "other"]);

    // At rest: the bucket holds ciphertext.
    let js = async_nats::jetstream::new(l.client());
    let kv = js.get_key_value(secrets::bucket("default")).await.expect("secrets bucket");
    let stored = kv.get("api-key").await.expect("kv get").expect("stored");
    assert!(!stored.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()), "the KV holds the value in clear");

    // References for both; the component is granted only `api-key`.
    for name in ["api-key", "other"] {
        l.ctl.put_config(&secrets::config_name(name), &SecretReference::new(name, name).to_config()).await.expect("put reference");
    }
    l.ctl
        .scale_component(&ScaleComponentCommand {
            component_ref: file_ref(secret_reader()),
            component_id: "reader".into(),
            max_instances: 2,
            host_id: host.id.clone(),
            config: vec![secrets::config_name("api-key")],
            ..Default::default()
        })
        .await
        .expect("scale");
    l.events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "reader").await.expect("component_scaled");
    l.ctl
        .start_provider(&trellis_lattice::ctl::StartProviderCommand {
            provider_id: "http".into(),
            provider_ref: "builtin://http-server".into(),
            host_id: host.id.clone(),
            config: vec![],
            annotations: None,
        })
        .await
        .expect("start provider");
    l.events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == "http").await.expect("provider_started");
    let addr = http::free_addr().expect("free address");
    l.link_at("http", "reader", addr, &[]).await;

    let granted = http::get_until(addr, "/secret/api-key", 200, WAIT).await.expect("granted secret");
    assert_eq!(granted.text(), VALUE);
    let refused = http::get(addr, "/secret/other").await.expect("refused secret");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("was not granted to component `reader`"), "{}", refused.text());
    assert!(!refused.text().contains(OTHER));
    let missing = http::get(addr, "/secret/nope").await.expect("unknown secret");
    assert_eq!(missing.status, 403);

    // Nothing the lattice carried had the value in clear (the HTTP reply is not on NATS: the
    // provider runs in the host and calls the component locally). A marker published last tells
    // when the recorder has everything published before it.
    spy.publish("trellis.test.marker", "end-of-run".into()).await.expect("marker");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|b| b.as_slice() == b"end-of-run") {
        assert!(tokio::time::Instant::now() < deadline, "the recorder never saw the marker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for bytes in seen.lock().unwrap().iter() {
        for v in [VALUE, OTHER] {
            assert!(!bytes.windows(v.len()).any(|w| w == v.as_bytes()), "a NATS message carried a secret in clear");
        }
    }
    let text = std::fs::read_to_string(&log).expect("host log");
    assert!(text.contains("secrets backend serving"), "the log is the host's:\n{text}");
    for v in [VALUE, OTHER] {
        assert!(!text.contains(v), "the host log holds a secret value");
    }

    // Deleting removes every version.
    client.delete("other").await.expect("delete");
    assert_eq!(client.list().await.expect("list").len(), 1);
}

/// An app whose manifest names secrets (`properties.secrets`, with a secret policy naming the
/// backend): its component reads those and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_grants_its_component_the_secrets_its_manifest_names() {
    use trellis_lattice::app::{AppClient, StatusType};
    let nats = NatsServer::start().await.expect("nats-server");
    let seed = nkeys::XKey::new().seed().expect("seed");
    let _host = ProcessHost::start(&nats.url(), &["--secrets-xkey-seed", &seed]).await.expect("trellis-host");
    let l = scenario::lattice(nats).await;
    let client = SecretsClient::new(l.client(), secrets::DEFAULT_BACKEND);
    client.put("prod-api-key", SecretValue::String(VALUE.into())).await.expect("put");
    client.put("other", SecretValue::String(OTHER.into())).await.expect("put");
    let addr = http::free_addr().expect("free address");
    let manifest = format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: vault
  annotations:
    version: v1
spec:
  policies:
    - name: store
      type: policy.secret.wasmcloud.dev/v1alpha1
      properties:
        backend: nats-kv
  components:
    - name: reader
      type: component
      properties:
        image: {image}
        secrets:
          - name: api-key
            properties:
              policy: store
              key: prod-api-key
      traits:
        - type: spreadscaler
          properties:
            instances: 1
    - name: web
      type: capability
      properties:
        image: builtin://http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: reader
            source:
              config:
                - name: vault-http
                  properties:
                    address: "{addr}"
"#,
        image = file_ref(secret_reader())
    );
    let apps = AppClient::new(l.client(), "default");
    apps.put(&manifest).await.expect("put");
    apps.deploy("vault", None).await.expect("deploy");
    trellis_tests::apps::wait_status(&apps, "vault", StatusType::Deployed, WAIT).await;
    // The component reads the secret by the name the manifest gives it, from the key it names.
    assert_eq!(http::get_until(addr, "/secret/api-key", 200, WAIT).await.expect("granted").text(), VALUE);
    let refused = http::get(addr, "/secret/other").await.expect("refused");
    assert_eq!(refused.status, 403, "{}", refused.text());
    // The grant is a reference in config, never the value.
    let reference = l.ctl.get_config("SECRET_vault-reader_api-key").await.expect("the reference config");
    assert_eq!(reference.get("key").map(String::as_str), Some("prod-api-key"));
    assert!(reference.values().all(|v| !v.contains(VALUE)));
}

/// What the `secret-peek` provider read through its SDK, once it has.
static PEEKED: std::sync::Mutex<Option<Option<String>>> = std::sync::Mutex::new(None);

/// A built-in provider that reads secret `token` through `ProviderContext::secret` and records
/// it, then waits to be stopped.
fn peek(ctx: trellis_provider_sdk::ProviderContext) -> futures::future::BoxFuture<'static, Result<(), trellis_provider_sdk::ProviderError>> {
    Box::pin(async move {
        let seen = ctx.secret("token").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        *PEEKED.lock().unwrap() = Some(seen);
        ctx.shutdown_requested().await;
        Ok(())
    })
}

/// A provider reads the secrets its start config grants, through the provider SDK; its host
/// data (what the inventory and events describe) shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reads_the_secret_its_start_config_grants() {
    let nats = NatsServer::start().await.expect("nats-server");
    let mut config = trellis_tests::hosts::config(&nats.url(), &[]);
    config.secrets_xkey_seed = Some(nkeys::XKey::new().seed().expect("seed"));
    config.builtins.push(trellis_provider_sdk::Builtin { name: "secret-peek", run: peek });
    let host = trellis_host::Host::start(config).await.expect("host");
    let mut l = scenario::lattice(nats).await;
    SecretsClient::new(l.client(), secrets::DEFAULT_BACKEND).put("prov-token", SecretValue::String(VALUE.into())).await.expect("put");
    let reference = SecretReference { name: "token".into(), ..SecretReference::new("token", "prov-token") };
    l.ctl.put_config("SECRET_peek_token", &reference.to_config()).await.expect("put reference");
    l.ctl
        .start_provider(&trellis_lattice::ctl::StartProviderCommand {
            provider_id: "peek".into(),
            provider_ref: "builtin://secret-peek".into(),
            host_id: host.id().into(),
            config: vec!["SECRET_peek_token".into()],
            annotations: None,
        })
        .await
        .expect("start provider");
    let started = l.events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == "peek").await.expect("provider_started");
    assert!(!started.data.to_string().contains(VALUE), "the event carries the value");
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        if let Some(seen) = PEEKED.lock().unwrap().clone() {
            break seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "the provider never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen.as_deref(), Some(VALUE));
    let inventory = serde_json::to_string(&l.ctl.get_host_inventory(host.id()).await.expect("inventory")).expect("json");
    assert!(!inventory.contains(VALUE));
    host.stop(Duration::from_secs(5)).await;
}
