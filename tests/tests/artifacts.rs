//! Artifacts from a real OCI registry (Debian's docker-registry) and from the lattice's own
//! store (real JetStream), through real hosts: what a user sees is the `component_scaled` /
//! `component_scale_failed` event, the inventory and the HTTP answer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use trellis_host::artifacts::OciSettings;
use trellis_host::publish::{self, Payload};
use trellis_host::{Host, HostConfig};
use trellis_lattice::artifact::{ArtifactRef, LatticeRef, LatticeStore, OciRef};
use trellis_lattice::ctl::ScaleComponentCommand;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::{config, http_server_provider_binary, init_tracing};
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::registry::Registry;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

fn oci_ref(reference: &str) -> OciRef {
    match ArtifactRef::parse(reference).unwrap() {
        ArtifactRef::Oci(r) => r,
        other => panic!("{other:?}"),
    }
}

fn insecure(registry: &Registry) -> OciSettings {
    OciSettings { allowed_insecure: vec![registry.addr.clone()], ..Default::default() }
}

/// Pushes the hello component to `registry` as `repo_tag`; its manifest digest.
async fn push_hello(registry: &Registry, repo_tag: &str) -> String {
    let bytes = std::fs::read(http_hello()).unwrap();
    publish::push_oci(&insecure(registry), &oci_ref(&registry.reference(repo_tag)), Payload::Wasm, bytes).await.unwrap()
}

fn host_config(nats: &str, oci: OciSettings, cache: Option<&std::path::Path>) -> HostConfig {
    let mut c = config(nats, &[]);
    c.oci = oci;
    c.cache_dir = cache.map(Into::into);
    c
}

/// Scales `reference` as `id` on `host`; the `component_scaled` or `component_scale_failed` data.
async fn scale(l: &mut Lattice, host: &Host, id: &str, reference: &str) -> (&'static str, Value) {
    let cmd =
        ScaleComponentCommand { component_ref: reference.into(), component_id: id.into(), max_instances: 2, host_id: host.id().into(), ..Default::default() };
    l.ctl.scale_component(&cmd).await.unwrap();
    let ev =
        l.events.wait_for_any(&["component_scaled", "component_scale_failed"], WAIT, |e| e.data["component_id"] == id && e.source == host.id()).await.unwrap();
    (if ev.name() == "component_scaled" { "scaled" } else { "failed" }, ev.data)
}

/// Serves `id` over a built-in http-server on `host` at a new address; waits for "Hello".
async fn serve_and_get(l: &mut Lattice, host: &Host, id: &str) {
    if !host.inventory().await.providers.iter().any(|p| p.id == "http") {
        l.start_provider(host, "http", "builtin://http-server", &[]).await;
    }
    let addr = free_addr().unwrap();
    l.link_at("http", id, addr, &[]).await;
    let reply = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert!(reply.text().contains("Hello"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_from_the_registry_serves_http_and_carries_its_digest_in_every_reference_form() {
    init_tracing();
    let registry = Registry::start().await.unwrap();
    let digest = push_hello(&registry, "hello:1.0").await;
    let nats = NatsServer::start().await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = Host::start(host_config(&nats.url(), insecure(&registry), Some(cache.path()))).await.unwrap();
    let mut l = lattice(nats).await;

    let typed = format!("oci://{}", registry.reference("hello:1.0"));
    let (outcome, data) = scale(&mut l, &host, "hello", &typed).await;
    assert_eq!(outcome, "scaled", "{data}");
    assert_eq!(data["image_ref"], typed.as_str(), "image_ref stays what the user typed");
    assert_eq!(data["image_digest"], digest.as_str());
    serve_and_get(&mut l, &host, "hello").await;
    let inventory = host.inventory().await;
    let entry = inventory.components.iter().find(|c| c.id == "hello").unwrap();
    assert_eq!((entry.image_ref.as_str(), entry.image_digest.as_deref()), (typed.as_str(), Some(digest.as_str())));

    // Without oci://, and pinned by digest (with and without the tag).
    for (id, reference) in [
        ("bare", registry.reference("hello:1.0")),
        ("pinned", registry.reference(&format!("hello@{digest}"))),
        ("both", registry.reference(&format!("hello:1.0@{digest}"))),
    ] {
        let (outcome, data) = scale(&mut l, &host, id, &reference).await;
        assert_eq!(outcome, "scaled", "{reference}: {data}");
        assert_eq!(data["image_digest"], digest.as_str(), "{reference}");
    }
    serve_and_get(&mut l, &host, "pinned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_and_bad_registries_fail_with_what_to_do_and_the_host_keeps_serving() {
    init_tracing();
    let registry = Registry::start().await.unwrap();
    let digest = push_hello(&registry, "hello:1.0").await;
    // A provider archive where a component is expected.
    let (issuer, subject) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_service());
    let par = publish::provider_archive(b"\x7fELF not really", "p", "t", &issuer, &subject).unwrap();
    publish::push_oci(&insecure(&registry), &oci_ref(&registry.reference("prov:1.0")), Payload::ProviderArchive, par).await.unwrap();
    // A "registry" that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hang.accept().await {
            held.push(conn);
        }
    });
    let closed = free_addr().unwrap();

    let nats = NatsServer::start().await.unwrap();
    let mut oci = insecure(&registry);
    oci.allowed_insecure.push(hang_addr.to_string());
    oci.allowed_insecure.push(closed.to_string());
    oci.pull_timeout = Duration::from_secs(3);
    let host = Host::start(host_config(&nats.url(), oci, None)).await.unwrap();
    let strict = Host::start(host_config(&nats.url(), OciSettings::default(), None)).await.unwrap();
    let mut l = lattice(nats).await;
    let (outcome, _) = scale(&mut l, &host, "hello", &registry.reference("hello:1.0")).await;
    assert_eq!(outcome, "scaled");
    serve_and_get(&mut l, &host, "hello").await;

    let zero = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let cases: Vec<(&Host, String, &[&str])> = vec![
        (&host, registry.reference("hello:2.0"), &["hello:2.0", "no such", "push it first"]),
        (&host, registry.reference("nothing:1.0"), &["no such", "push it first"]),
        (&host, registry.reference(&format!("hello@{zero}")), &["no such"]),
        (&host, registry.reference("hello"), &["latest", "--allow-latest"]),
        (&host, registry.reference("hello:latest"), &["latest", "--allow-latest"]),
        (&host, registry.reference("prov:1.0"), &["provider archive", "wash start provider"]),
        (&host, format!("{closed}/hello:1.0"), &["cannot reach registry", "check the address"]),
        (&host, format!("{hang_addr}/hello:1.0"), &["longer than 3 s", "--oci-pull-timeout-seconds"]),
        (&strict, registry.reference("hello:1.0"), &["TLS", "--allowed-insecure"]),
        (&host, "ghcr.io/Org/x:1".to_string(), &["lower-case"]),
        (&host, "lattice://hello:1.0".to_string(), &["no artifact store", "wash push lattice://"]),
    ];
    for (i, (on, reference, want)) in cases.iter().enumerate() {
        let (outcome, data) = scale(&mut l, on, &format!("bad{i}"), reference).await;
        assert_eq!(outcome, "failed", "{reference}: {data}");
        let error = data["error"].as_str().unwrap();
        assert!(error.contains(reference.as_str()), "the error names the reference: {error}");
        trellis_tests::assert_contains_all(error, want);
    }

    // A truncated download: the registry's copy of the layer loses its tail.
    let blob = walk(registry.storage()).into_iter().find(|p| p.ends_with("data") && std::fs::metadata(p).unwrap().len() > 10_000).unwrap();
    let len = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&blob).unwrap().set_len(len / 2).unwrap();
    let (outcome, data) = scale(&mut l, &host, "cut", &registry.reference(&format!("hello@{digest}"))).await;
    assert_eq!(outcome, "failed", "{data}");
    let error = data["error"].as_str().unwrap();
    assert!(error.contains("try again") || error.contains("digest") || error.contains("bytes"), "{error}");

    // Through all of it the host kept serving what it runs.
    serve_and_get(&mut l, &host, "hello").await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_tls_and_basic_auth_takes_the_right_credentials_and_names_the_wrong_ones() {
    init_tracing();
    let registry = Registry::start_secured("trellis", "s3cret").await.unwrap();
    let ca = registry.ca_file.clone().unwrap();
    let good = OciSettings { user: Some("trellis".into()), password: Some("s3cret".into()), ca_file: Some(ca.clone()), ..Default::default() };
    let bytes = std::fs::read(http_hello()).unwrap();
    let reference = registry.reference("secure/hello:1.0");
    let digest = publish::push_oci(&good, &oci_ref(&reference), Payload::Wasm, bytes.clone()).await.unwrap();
    let wrong = OciSettings { password: Some("guess".into()), ..good.clone() };
    let err = publish::push_oci(&wrong, &oci_ref(&registry.reference("secure/other:1.0")), Payload::Wasm, bytes).await.unwrap_err();
    assert!(err.contains("refused"), "{err}");

    let nats = NatsServer::start().await.unwrap();
    let host = Host::start(host_config(&nats.url(), good.clone(), None)).await.unwrap();
    let bad_password = Host::start(host_config(&nats.url(), wrong, None)).await.unwrap();
    let no_ca = Host::start(host_config(&nats.url(), OciSettings { ca_file: None, ..good.clone() }, None)).await.unwrap();
    // Docker's config.json is where credentials come from when no user is given.
    let docker = tempfile::tempdir().unwrap();
    let docker_config = docker.path().join("config.json");
    std::fs::write(&docker_config, format!(r#"{{"auths":{{"{}":{{"auth":"dHJlbGxpczpzM2NyZXQ="}}}}}}"#, registry.addr)).unwrap();
    let from_docker =
        Host::start(host_config(&nats.url(), OciSettings { user: None, password: None, docker_config: Some(docker_config), ..good }, None)).await.unwrap();
    let mut l = lattice(nats).await;

    let (outcome, data) = scale(&mut l, &host, "hello", &reference).await;
    assert_eq!((outcome, data["image_digest"].as_str()), ("scaled", Some(digest.as_str())), "{data}");
    serve_and_get(&mut l, &host, "hello").await;
    let (outcome, data) = scale(&mut l, &from_docker, "docker", &reference).await;
    assert_eq!(outcome, "scaled", "{data}");
    let (outcome, data) = scale(&mut l, &bad_password, "bad-password", &reference).await;
    assert_eq!(outcome, "failed");
    trellis_tests::assert_contains_all(data["error"].as_str().unwrap(), &["refused", "--oci-user"]);
    let (outcome, data) = scale(&mut l, &no_ca, "no-ca", &reference).await;
    assert_eq!(outcome, "failed");
    trellis_tests::assert_contains_all(data["error"].as_str().unwrap(), &["--oci-ca-file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_pull_nothing_twice_compile_nothing_twice_and_survive_damage_and_a_dead_registry() {
    init_tracing();
    let registry = Registry::start().await.unwrap();
    let digest = push_hello(&registry, "hello:1.0").await;
    let nats = NatsServer::start().await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut l = Lattice::on(&nats).await;
    let reference = registry.reference("hello:1.0");

    // Concurrent scales of one reference on one host share one pull.
    let first = Host::start(host_config(&nats.url(), insecure(&registry), Some(cache.path()))).await.unwrap();
    for id in ["a", "b", "c"] {
        let cmd = ScaleComponentCommand {
            component_ref: reference.clone(),
            component_id: id.into(),
            max_instances: 1,
            host_id: first.id().into(),
            ..Default::default()
        };
        l.ctl.scale_component(&cmd).await.unwrap();
    }
    for id in ["a", "b", "c"] {
        l.events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == id).await.unwrap();
    }
    assert_eq!(registry.blob_gets("hello"), 1, "three concurrent scales of one reference pull its layer once");
    let blobs = walk(&cache.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    // The compiled code is written to disk beside the scale (it does not hold the scale up):
    // wait for it. The three scales shared one compilation, so there is one entry.
    let cwasm = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        if !dir.is_dir() {
            return Vec::new();
        }
        walk(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let compiled = loop {
        let found = cwasm(&cache.path().join("compiled"));
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    first.stop(Duration::from_secs(5)).await;

    // A damaged compiled entry is discarded and rebuilt, not trusted.
    let entry = &compiled[0];
    let mut bytes = std::fs::read(entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(entry, &bytes).unwrap();
    // The registry goes away: a digest reference needs nothing of it, a tag falls back to
    // the digest it had when last pulled.
    let settings = insecure(&registry);
    let pinned = registry.reference(&format!("hello@{digest}"));
    drop(registry);
    let second = Host::start(host_config(&nats.url(), settings, Some(cache.path()))).await.unwrap();
    let (outcome, data) = scale(&mut l, &second, "pinned", &pinned).await;
    assert_eq!((outcome, data["image_digest"].as_str()), ("scaled", Some(digest.as_str())), "{data}");
    let (outcome, data) = scale(&mut l, &second, "again", &reference).await;
    assert_eq!((outcome, data["image_digest"].as_str()), ("scaled", Some(digest.as_str())), "{data}");
    serve_and_get(&mut l, &second, "again").await;
    // Written beside the scale, like the first one.
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::read(entry).ok().is_none_or(|now| now == bytes) {
        assert!(tokio::time::Instant::now() < deadline, "the damaged entry was not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_host_behind_a_leaf_starts_a_component_and_a_provider_from_the_hubs_lattice_store() {
    init_tracing();
    let hub = NatsServer::start_hub("hub").await.unwrap();
    let leaf = NatsServer::start_leaf(&hub, Some("edge")).await.unwrap();
    // Pushed at the hub, into the lattice's store in the hub's domain.
    let store = LatticeStore::new(trellis_lattice::state::jetstream(hub.client().await.unwrap(), Some("hub")), "default");
    let hello = std::fs::read(http_hello()).unwrap();
    let stored =
        store.put(&LatticeRef { name: "hello".into(), tag: Some("1.0".into()), digest: None }, trellis_lattice::artifact::WASM_LAYER, &hello).await.unwrap();
    let (issuer, subject) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_service());
    let exe = std::fs::read(http_server_provider_binary().unwrap()).unwrap();
    let par = publish::provider_archive(&exe, "http-server", "trellis", &issuer, &subject).unwrap();
    store.put(&LatticeRef { name: "http-server".into(), tag: Some("1.0".into()), digest: None }, trellis_lattice::artifact::PAR_LAYER, &par).await.unwrap();

    // The edge host reaches no registry at all: only its leaf server.
    let cache = tempfile::tempdir().unwrap();
    let mut edge_config = host_config(&leaf.url(), OciSettings::default(), Some(cache.path()));
    edge_config.js_domain = Some("hub".into());
    let edge = Host::start(edge_config).await.unwrap();
    let mut l = Lattice::on(&hub).await;
    let (outcome, data) = scale(&mut l, &edge, "hello", "lattice://hello:1.0").await;
    assert_eq!((outcome, data["image_digest"].as_str()), ("scaled", Some(stored.digest.as_str())), "{data}");
    l.start_provider(&edge, "http", "lattice://http-server:1.0", &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "hello", addr, &[]).await;
    let reply = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert!(reply.text().contains("Hello"), "{}", reply.text());
    // Pinned by digest too; and a name the store lacks says how to put it there.
    let (outcome, _) = scale(&mut l, &edge, "pinned", &format!("lattice://hello@{}", stored.digest)).await;
    assert_eq!(outcome, "scaled");
    let (outcome, data) = scale(&mut l, &edge, "missing", "lattice://nope:1.0").await;
    assert_eq!(outcome, "failed");
    trellis_tests::assert_contains_all(data["error"].as_str().unwrap(), &["lattice://nope:1.0", "wash push lattice://nope:1.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_archive_from_the_registry_runs_as_a_provider_process() {
    init_tracing();
    let registry = Registry::start().await.unwrap();
    push_hello(&registry, "hello:1.0").await;
    let (issuer, subject) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_service());
    let exe = std::fs::read(http_server_provider_binary().unwrap()).unwrap();
    let par = publish::provider_archive(&exe, "http-server", "trellis", &issuer, &subject).unwrap();
    publish::push_oci(&insecure(&registry), &oci_ref(&registry.reference("http-server:1.0")), Payload::ProviderArchive, par).await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = Host::start(host_config(&nats.url(), insecure(&registry), Some(cache.path()))).await.unwrap();
    let mut l = lattice(nats).await;
    let (outcome, _) = scale(&mut l, &host, "hello", &registry.reference("hello:1.0")).await;
    assert_eq!(outcome, "scaled");
    l.start_provider(&host, "http", &registry.reference("http-server:1.0"), &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "hello", addr, &[]).await;
    let reply = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert!(reply.text().contains("Hello"), "{}", reply.text());
    host.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_fifos_and_directories_are_refused_at_once_and_block_no_other_scale_or_the_stop() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("component.wasm");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let nats = NatsServer::start().await.unwrap();
    let host = Host::start(host_config(&nats.url(), OciSettings::default(), None)).await.unwrap();
    let mut l = lattice(nats).await;
    let cases = [
        ("zero", "file:///dev/zero".to_string()),
        ("random", "file:///dev/urandom".to_string()),
        ("fifo", format!("file://{}", fifo.display())),
        ("dir", format!("file://{}", dir.path().display())),
    ];
    for (id, reference) in &cases {
        let started = std::time::Instant::now();
        let (outcome, data) = scale(&mut l, &host, id, reference).await;
        assert_eq!(outcome, "failed", "{reference}: {data}");
        trellis_tests::assert_contains_all(data["error"].as_str().unwrap(), &["not a regular file", reference.trim_start_matches("file://")]);
        assert!(started.elapsed() < Duration::from_secs(5), "{reference} took {:?}", started.elapsed());
    }
    // The host goes on scaling, serving and stopping.
    l.scale(&host, "hello", http_hello(), 1).await;
    serve_and_get(&mut l, &host, "hello").await;
    tokio::time::timeout(Duration::from_secs(10), host.stop(Duration::from_secs(5))).await.expect("the host stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_whose_component_is_in_the_registry_deploys_and_serves() {
    use trellis_lattice::app::{AppClient, StatusType};
    init_tracing();
    let registry = Registry::start().await.unwrap();
    let digest = push_hello(&registry, "apps/hello:1.0").await;
    let nats = NatsServer::start().await.unwrap();
    let host = Host::start(host_config(&nats.url(), insecure(&registry), None)).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let addr = free_addr().unwrap();
    let manifest = format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: oci-app
  annotations:
    version: v1
spec:
  components:
    - name: hello
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 2
    - name: http
      type: capability
      properties:
        image: builtin://http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: oci-app-http
                  properties:
                    address: "{addr}"
            target:
              name: hello
"#,
        image = registry.reference("apps/hello:1.0")
    );
    apps.put(&manifest).await.unwrap();
    apps.deploy("oci-app", None).await.unwrap();
    trellis_tests::apps::wait_status(&apps, "oci-app", StatusType::Deployed, Duration::from_secs(60)).await;
    let reply = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert!(reply.text().contains("Hello"), "{}", reply.text());
    let inventory = host.inventory().await;
    assert!(inventory.components.iter().any(|c| c.image_digest.as_deref() == Some(digest.as_str())), "{inventory:?}");
}
