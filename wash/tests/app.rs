//! `wash app validate`: the example manifests are valid; a broken one gets every mistake, one
//! per line with file, line and field, and a non-zero exit; `-o json` gives them as a list.
//! No lattice is involved.

mod common;

use std::path::PathBuf;

use common::Wash;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).join("wadm.yaml").to_string_lossy().into_owned()
}

#[test]
fn valid_manifests() {
    let wash = Wash::new(common::free_port());
    let file = example("http-kv-counter");
    assert_eq!(wash.run(&["app", "validate", &file]).ok(), format!("{file}: valid (3 components, 2 links)\n"));
    let v = wash.run(&["app", "validate", &file, "-o", "json"]).json();
    assert_eq!((v["valid"].as_bool(), v["name"].as_str(), v["version"].as_str()), (Some(true), Some("http-kv-counter"), Some("v0.1.0")));
    assert_eq!((v["components"].as_u64(), v["links"].as_u64(), v["file"].as_str()), (Some(3), Some(2), Some(file.as_str())));

    let file = example("messaging-echo");
    assert_eq!(wash.run(&["app", "validate", &file]).ok(), format!("{file}: valid (2 components, 2 links)\n"));

    // JSON works as well as YAML.
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("app.json");
    std::fs::write(
        &json,
        r#"{"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "one"},
            "spec": {"components": [{"name": "c", "type": "component", "properties": {"image": "file:///c.wasm"}}]}}"#,
    )
    .expect("write");
    let json = json.to_string_lossy().into_owned();
    assert_eq!(wash.run(&["app", "validate", &json]).ok(), format!("{json}: valid (1 component, 0 links)\n"));
}

#[test]
fn invalid_manifests_list_every_mistake() {
    let wash = Wash::new(common::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wadm.yaml");
    std::fs::write(
        &file,
        "apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: broken
spec:
  components:
    - name: web
      type: component
      properties:
        image: http://example.com/web.wasm
      traits:
        - type: spreadscaler
          properties:
            instances: 0
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store]
            target:
              name: kv
",
    )
    .expect("write");
    let file = file.to_string_lossy().into_owned();

    let out = wash.run(&["app", "validate", &file]);
    assert!(!out.success, "should fail: {}", out.stdout);
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{file}:10: spec.components[0].properties.image: unsupported scheme `http://`; expected file:///path/to/file.wasm, REGISTRY/REPOSITORY:TAG (such as ghcr.io/org/hello:0.1.0 or localhost:5000/hello:1.0, optionally with oci://), or lattice://NAME:TAG"
            ),
            format!("{file}:14: spec.components[0].traits[0].properties.instances: must be a positive integer (1 to 4294967295); got the number `0`"),
            format!("{file}:17: spec.components[0].traits[1].properties.target.name: names no component of this manifest: `kv`; expected one of: web"),
            format!("error: {file}: 3 mistakes; the manifest is not valid"),
        ]
    );

    let out = wash.run(&["app", "validate", &file, "-o", "json"]);
    assert!(!out.success);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!((v["success"].as_bool(), v["valid"].as_bool()), (Some(false), Some(false)));
    assert_eq!(v["error"], format!("{file}: 3 mistakes; the manifest is not valid"));
    let errors = v["errors"].as_array().expect("errors");
    let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["spec.components[0].properties.image", "spec.components[0].traits[0].properties.instances", "spec.components[0].traits[1].properties.target.name"]
    );
    assert_eq!(errors[1]["line"], 14);
    assert!(errors[1]["message"].as_str().is_some_and(|m| m.starts_with("must be a positive integer")));
    assert_eq!(out.stderr.trim(), format!("error: {file}: 3 mistakes; the manifest is not valid"));

    // A syntax error is one mistake with its line; a missing file is an ordinary error.
    std::fs::write(&file, "apiVersion: core.oam.dev/v1beta1\nkind: [Application\n").expect("write");
    let out = wash.run(&["app", "validate", &file]);
    assert!(!out.success);
    assert!(out.stderr.starts_with(&format!("{file}:3: not valid YAML: ")), "{}", out.stderr);
    let missing = dir.path().join("nope.yaml").to_string_lossy().into_owned();
    let err = wash.run(&["app", "validate", &missing]).error();
    assert!(err.starts_with(&format!("cannot read {missing}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_status_history_get_undeploy_delete() {
    let nats = trellis_tests::nats::NatsServer::start().await.expect("nats");
    let host = trellis_tests::hosts::start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wadm.yaml");
    let manifest = format!(
        "apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: hi
  annotations:
    version: v1
    description: says hello
spec:
  components:
    - name: hello
      type: component
      properties:
        image: file://{}
      traits:
        - type: spreadscaler
          properties:
            instances: 2
",
        trellis_tests::components::http_hello()
    );
    std::fs::write(&file, &manifest).expect("write");
    let file = file.to_string_lossy().into_owned();

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, manifest.replace("instances: 2", "instances: 0")).expect("write");
    let bad = bad.to_string_lossy().into_owned();
    let out = wash.run_async(&["app", "deploy", &bad]).await;
    assert!(!out.success && out.stderr.contains(&format!("{bad}:17: spec.components[0].traits[0].properties.instances")), "{}", out.stderr);

    let out = wash.run_async(&["app", "deploy", &file]).await;
    assert!(out.ok().contains("App `hi` v1 deployed"), "{}", out.stdout);
    let inv = common::ctl(&nats).await.get_host_inventory(host.id()).await.expect("inventory");
    assert!(inv.components.iter().any(|c| c.id == "hi-hello" && c.max_instances == 2), "{inv:?}");

    let list = wash.run_async(&["app", "list"]).await.ok().to_string();
    assert!(list.lines().any(|l| l.split_whitespace().eq(["hi", "v1", "v1", "Deployed", "says", "hello"])), "{list}");
    let v = wash.run_async(&["app", "status", "hi", "-o", "json"]).await.json();
    assert_eq!(v["status"]["type"], "deployed");
    let v = wash.run_async(&["app", "history", "hi", "-o", "json"]).await.json();
    assert_eq!((v["versions"][0]["version"].as_str(), v["versions"][0]["deployed"].as_bool()), (Some("v1"), Some(true)));
    // wadm's API carries the manifest as JSON: the same manifest, in its JSON form.
    let got = wash.run_async(&["app", "get", "hi", "--version", "v1"]).await.ok().to_string();
    let parse = |t: &str| trellis_lattice::manifest::Manifest::parse(t).unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert_eq!(parse(&got), parse(&manifest));
    let err = wash.run_async(&["app", "delete", "hi", "--version", "v1"]).await.error();
    assert!(err.contains("is deployed; undeploy it first"), "{err}");

    let out = wash.run_async(&["app", "undeploy", "hi"]).await;
    assert!(out.ok().contains("App `hi` undeployed"), "{}", out.stdout);
    let inv = common::ctl(&nats).await.get_host_inventory(host.id()).await.expect("inventory");
    assert!(inv.components.is_empty(), "{inv:?}");
    wash.run_async(&["app", "delete", "hi"]).await.ok();
    let err = wash.run_async(&["app", "status", "hi"]).await.error();
    assert!(err.contains("no app `hi`"), "{err}");
}
