//! `wash keys gen|get|list` and `wash claims sign|inspect`, and a component signed by `wash`
//! started on a host that checks issuers: its claims show in `wash get claims`; a tampered copy
//! and an expired token are refused with the host's reason.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::{Wash, ctl};
use trellis_tests::components::http_hello;
use trellis_tests::hosts::{config, init_tracing};
use trellis_tests::nats::NatsServer;

#[test]
fn keys_are_generated_stored_and_listed() {
    let wash = Wash::new(common::free_port());

    let v = wash.run(&["keys", "gen", "account", "--name", "ops", "-o", "json"]).json();
    let account = v["public_key"].as_str().expect("public key").to_string();
    assert!(account.starts_with('A') && account.len() == 56, "{account}");
    assert_eq!(v["type"], "account");
    let path = wash.path("keys/ops.nk");
    assert_eq!(v["path"], path.to_string_lossy().as_ref());
    let seed = std::fs::read_to_string(&path).expect("seed file");
    assert!(seed.trim().starts_with("SA"), "{seed}");
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);

    let text = wash.run(&["keys", "gen", "component", "--name", "hello"]).ok().to_string();
    assert!(text.contains("Generated component key `hello`: M"), "{text}");
    // Without --name nothing is stored; the seed is printed.
    let v = wash.run(&["keys", "gen", "host", "-o", "json"]).json();
    assert!(v["public_key"].as_str().is_some_and(|k| k.starts_with('N')) && v["seed"].as_str().is_some_and(|s| s.starts_with("SN")), "{v}");
    for (kind, prefix) in [("provider", 'V'), ("user", 'U'), ("module", 'M'), ("server", 'N')] {
        let v = wash.run(&["keys", "gen", kind, "-o", "json"]).json();
        assert!(v["public_key"].as_str().is_some_and(|k| k.starts_with(prefix)), "{kind}: {v}");
    }

    let err = wash.run(&["keys", "gen", "account", "--name", "ops"]).error();
    assert!(err.contains("a key named `ops` already exists"), "{err}");
    let err = wash.run(&["keys", "gen", "account", "--name", "../ops"]).error();
    assert!(err.contains("key name `../ops`"), "{err}");

    let v = wash.run(&["keys", "get", "ops", "-o", "json"]).json();
    assert_eq!((v["public_key"].as_str(), v["seed"].as_str()), (Some(account.as_str()), Some(seed.trim())));
    let err = wash.run(&["keys", "get", "nope"]).error();
    assert!(err.contains("no key named `nope`") && err.contains("wash keys list"), "{err}");

    let v = wash.run(&["keys", "list", "-o", "json"]).json();
    let names: Vec<&str> = v["keys"].as_array().expect("keys").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["hello", "ops"]);
    let text = wash.run(&["keys", "list"]).ok().to_string();
    assert!(text.lines().any(|l| l.split_whitespace().eq(["ops", "account", account.as_str()])), "{text}");
}

#[test]
fn sign_and_inspect() {
    let wash = Wash::new(common::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("hello.wasm");
    std::fs::copy(http_hello(), &input).expect("copy");
    let input = input.to_string_lossy().to_string();

    // With no keys given, wash makes (and then reuses) an account key and the component's key.
    let v = wash.run(&["claims", "sign", &input, "--name", "hello", "--ver", "1.2.3", "--rev", "4", "--tag", "a", "--tag", "b", "-o", "json"]).json();
    let signed = dir.path().join("hello_s.wasm");
    assert_eq!(v["destination"], signed.to_string_lossy().as_ref());
    let generated: Vec<String> = v["generated_keys"].as_array().expect("list").iter().filter_map(|p| p.as_str().map(String::from)).collect();
    assert_eq!(generated.len(), 2, "{v}");
    assert!(generated.iter().any(|p| p.ends_with("_account.nk")) && generated.iter().any(|p| p.ends_with("/hello_module.nk")), "{generated:?}");
    let (iss, sub) = (v["claims"]["iss"].as_str().expect("iss").to_string(), v["claims"]["sub"].as_str().expect("sub").to_string());

    let again_out = dir.path().join("again.wasm").to_string_lossy().to_string();
    let again = wash.run(&["claims", "sign", &input, "--name", "hello", "--destination", &again_out, "-o", "json"]).json();
    assert_eq!((again["claims"]["iss"].as_str(), again["claims"]["sub"].as_str()), (Some(iss.as_str()), Some(sub.as_str())));
    assert_eq!(again["generated_keys"].as_array().map(Vec::len), Some(0));

    let text = wash.run(&["claims", "inspect", &signed.to_string_lossy()]).ok().to_string();
    let line = |label: &str| text.lines().find(|l| l.starts_with(label)).map(|l| l[label.len()..].trim().to_string()).unwrap_or_default();
    assert_eq!(line("Component "), "hello");
    assert_eq!(line("Account"), iss);
    assert_eq!(line("Component key"), sub);
    assert_eq!(line("Expires"), "never");
    assert_eq!(line("Can be used"), "immediately");
    assert_eq!(line("Valid"), "yes");
    let v = wash.run(&["claims", "inspect", &signed.to_string_lossy(), "-o", "json"]).json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["wascap"]["name"], "hello");
    assert_eq!(v["map"]["version"], "1.2.3");
    assert_eq!(v["map"]["rev"], "4");
    assert_eq!(v["map"]["tags"], "a,b");
    let jwt = wash.run(&["claims", "inspect", &signed.to_string_lossy(), "--jwt-only"]).ok().trim().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    assert_eq!(v["token"], jwt.as_str());

    // Explicit keys: a key name for the issuer, a seed for the subject; an expiry that has passed.
    let ops = wash.run(&["keys", "gen", "account", "--name", "ops", "-o", "json"]).json();
    let module = wash.run(&["keys", "gen", "component", "-o", "json"]).json();
    let expired = dir.path().join("expired.wasm").to_string_lossy().to_string();
    let seed = module["seed"].as_str().expect("seed");
    wash.run(&["claims", "sign", &input, "--name", "x", "--issuer", "ops", "--subject", seed, "--expires-in-secs", "0", "--destination", &expired]).ok();
    let v = wash.run(&["claims", "inspect", &expired, "-o", "json"]).json();
    assert_eq!((v["claims"]["iss"].as_str(), v["claims"]["sub"].as_str()), (ops["public_key"].as_str(), module["public_key"].as_str()));
    assert_eq!(v["valid"], false);
    assert!(v["problem"].as_str().is_some_and(|p| p.starts_with("the token expired at ")), "{v}");

    // A changed byte shows as a hash mismatch.
    let mut bytes = std::fs::read(&signed).expect("signed");
    let at = bytes.windows(19).position(|w| w == b"Hello from Trellis!").expect("greeting");
    bytes[at] = b'J';
    let tampered = dir.path().join("tampered.wasm");
    std::fs::write(&tampered, bytes).expect("write");
    let text = wash.run(&["claims", "inspect", &tampered.to_string_lossy()]).ok().to_string();
    let valid = text.lines().find_map(|l| l.strip_prefix("Valid")).map(str::trim).unwrap_or_default();
    assert!(valid.starts_with("no: hash mismatch: the component's bytes changed after it was signed"), "{text}");

    // Errors.
    let err = wash.run(&["claims", "inspect", &input]).error();
    assert!(err.contains("carries no claims") && err.contains("wash claims sign"), "{err}");
    let err = wash.run(&["claims", "sign", &input, "--name", "x", "--issuer", seed]).error();
    assert!(err.contains("--issuer") && err.contains("is a component key; it must be an account key"), "{err}");
    let err = wash.run(&["claims", "sign", &input, "--name", "x", "--issuer", "nobody"]).error();
    assert!(err.contains("--issuer `nobody` is not a seed (S…), a seed file, or a key in"), "{err}");
    let fresh = Wash::new(common::free_port());
    let err = fresh.run(&["claims", "sign", &input, "--name", "x", "--disable-keygen"]).error();
    assert!(err.contains("--disable-keygen"), "{err}");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").expect("write");
    let err = wash.run(&["claims", "sign", &garbage.to_string_lossy(), "--name", "x"]).error();
    assert!(err.contains("malformed WebAssembly"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_what_wash_signed_and_refuses_the_rest() {
    init_tracing();
    let nats = NatsServer::start().await.expect("nats");
    let wash = Wash::on(&nats);
    let ops = wash.run_async(&["keys", "gen", "account", "--name", "ops", "-o", "json"]).await.json();
    let mut cfg = config(&nats.url(), &[]);
    cfg.allowed_issuers = vec![ops["public_key"].as_str().expect("key").to_string()];
    let host = trellis_host::Host::start(cfg).await.expect("host");
    let ctl = ctl(&nats).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name).to_string_lossy().to_string();

    let signed = out("hello_s.wasm");
    wash.run_async(&["claims", "sign", http_hello(), "--name", "hello", "--rev", "3", "--issuer", "ops", "--destination", &signed]).await.ok();
    let v = wash.run_async(&["start", "component", &signed, "hello", "-o", "json"]).await.json();
    assert_eq!(v["host_id"], host.id());
    let claims = ctl.get_claims().await.expect("claims");
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0]["name"].as_str(), claims[0]["rev"].as_str()), ("hello", "3"));
    let text = wash.run_async(&["get", "claims"]).await.ok().to_string();
    assert!(text.lines().any(|l| l.starts_with("hello ") && l.contains(&claims[0]["sub"]) && l.trim_end().ends_with('3')), "{text}");

    let mut bytes = std::fs::read(&signed).expect("signed");
    let at = bytes.windows(19).position(|w| w == b"Hello from Trellis!").expect("greeting");
    bytes[at] = b'J';
    let tampered = out("tampered.wasm");
    std::fs::write(&tampered, bytes).expect("write");
    let err = wash.run_async(&["start", "component", &tampered, "tampered"]).await.error();
    assert!(err.contains("hash mismatch: the component's bytes changed after it was signed"), "{err}");

    let expired = out("expired.wasm");
    wash.run_async(&["claims", "sign", http_hello(), "--name", "old", "--issuer", "ops", "--expires-in-secs", "0", "--destination", &expired]).await.ok();
    let err = wash.run_async(&["start", "component", &expired, "old"]).await.error();
    assert!(err.contains("the token expired at"), "{err}");

    // Signed by an account the host does not know (wash's default account).
    let foreign = out("foreign.wasm");
    wash.run_async(&["claims", "sign", http_hello(), "--name", "foreign", "--destination", &foreign]).await.ok();
    let err = wash.run_async(&["start", "component", &foreign, "foreign"]).await.error();
    assert!(err.contains("is not on this host's allowed issuers list (--allowed-issuers)"), "{err}");

    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["hello"]);
    host.stop(std::time::Duration::from_secs(1)).await;
}
