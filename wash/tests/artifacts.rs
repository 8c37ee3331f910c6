//! `wash push`, `wash pull`, `wash inspect` and `wash start component REF` against a real
//! docker-registry and a real lattice store, with hosts that run what was pushed.

mod common;

use common::{Wash, ctl};
use trellis_tests::components::http_hello;
use trellis_tests::hosts::{Events, config, http_server_provider_binary};
use trellis_tests::nats::NatsServer;
use trellis_tests::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_inspect_pull_and_start_from_a_registry_and_from_the_lattice_store() {
    let registry = Registry::start().await.expect("registry");
    let nats = NatsServer::start().await.expect("nats");
    let mut host_config = config(&nats.url(), &[]);
    host_config.oci.allowed_insecure = vec![registry.addr.clone()];
    let host = trellis_host::Host::start(host_config).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);
    let reference = registry.reference("demo/hello:0.1.0");

    // Push: the CNCF layout, a digest back.
    let pushed = wash.run_async(&["push", &reference, http_hello(), "--insecure", "-o", "json"]).await.json();
    let digest = pushed["digest"].as_str().expect("digest").to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{pushed}");
    assert_eq!(pushed["kind"], "component");
    let text = wash.run_async(&["push", &registry.reference("demo/hello:0.1.1"), http_hello(), "--insecure"]).await.ok().to_string();
    assert!(text.contains(&format!("Pushed {}", registry.reference("demo/hello:0.1.1"))) && text.contains("digest: sha256:"), "{text}");

    // Inspect, from the registry and from the file: digest, claims state, world.
    let v = wash.run_async(&["inspect", &reference, "--insecure", "-o", "json"]).await.json();
    assert_eq!(v["digest"], digest.as_str());
    let exports: Vec<String> = serde_json::from_value(v["world"]["exports"].clone()).expect("exports");
    assert!(exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler")), "{v}");
    let imports: Vec<String> = serde_json::from_value(v["world"]["imports"].clone()).expect("imports");
    assert!(imports.iter().any(|i| i.starts_with("wasi:")), "{v}");
    let text = wash.run_async(&["inspect", http_hello()]).await.ok().to_string();
    assert!(text.contains("component, unsigned") && text.contains("exports:") && text.contains("wasi:http/incoming-handler"), "{text}");

    // Pull: the same bytes.
    let out = wash.home.join("pulled.wasm");
    let v = wash.run_async(&["pull", &reference, "--insecure", "--destination", out.to_str().expect("utf-8"), "-o", "json"]).await.json();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(std::fs::read(&out).expect("pulled"), std::fs::read(http_hello()).expect("built"));

    // Start from the registry with a bare reference; the host reports the digest.
    let v = wash.run_async(&["-o", "json", "start", "component", &reference, "from-registry"]).await.json();
    assert_eq!(v["component_id"], "from-registry", "{v}");
    let ev = events.wait_for("component_scaled", common::WAIT, |e| e.data["component_id"] == "from-registry").await.expect("scaled");
    assert_eq!((ev.data["image_ref"].as_str(), ev.data["image_digest"].as_str()), (Some(reference.as_str()), Some(digest.as_str())));

    // The lattice store: push, inspect, start.
    let v = wash.run_async(&["push", "lattice://demo/hello:0.1.0", http_hello(), "-o", "json"]).await.json();
    let stored = v["digest"].as_str().expect("digest").to_string();
    let v = wash.run_async(&["inspect", "lattice://demo/hello:0.1.0", "-o", "json"]).await.json();
    assert_eq!(v["digest"], stored.as_str());
    wash.run_async(&["start", "component", "lattice://demo/hello:0.1.0", "from-lattice"]).await.ok();
    let ev = events.wait_for("component_scaled", common::WAIT, |e| e.data["component_id"] == "from-lattice").await.expect("scaled");
    assert_eq!(ev.data["image_digest"], stored.as_str());
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert!(inv.components.iter().any(|c| c.id == "from-lattice" && c.image_digest.as_deref() == Some(stored.as_str())), "{inv:?}");

    // A provider executable is wrapped in a provider archive, which inspect shows.
    let provider = http_server_provider_binary().expect("provider binary");
    let v = wash.run_async(&["push", "lattice://http-server:0.1.0", provider.to_str().expect("utf-8"), "-o", "json"]).await.json();
    assert_eq!(v["kind"], "provider");
    let text = wash.run_async(&["inspect", "lattice://http-server:0.1.0"]).await.ok().to_string();
    assert!(text.contains("provider archive") && text.contains(&format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)), "{text}");
    wash.run_async(&["start", "provider", "lattice://http-server:0.1.0", "http"]).await.ok();

    // Mistakes are named.
    let err = wash.run_async(&["push", &registry.reference("demo/hello"), http_hello(), "--insecure"]).await.error();
    assert!(err.contains("latest") && err.contains("--allow-latest"), "{err}");
    let err = wash.run_async(&["push", &reference, "Cargo.toml", "--insecure"]).await.error();
    assert!(err.contains("neither a Wasm component"), "{err}");
    let err = wash.run_async(&["push", &reference, http_hello()]).await.error();
    assert!(err.contains("--insecure") || err.contains("TLS"), "{err}");
    let err = wash.run_async(&["pull", "lattice://nothing:1.0"]).await.error();
    assert!(err.contains("wash push lattice://nothing:1.0"), "{err}");
    let err = wash.run_async(&["start", "component", "no/such/file.wasm", "x"]).await.error();
    assert!(err.contains("no file at `no/such/file.wasm`"), "{err}");
    host.stop(std::time::Duration::from_secs(5)).await;
}
