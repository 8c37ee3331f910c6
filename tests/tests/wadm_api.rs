//! wasmCloud's own tools against Trellis: the requests `wash` 0.39 sends through wadm-client
//! 0.21 (subjects, bodies, the put's `Content-Type: application/json`), sent over raw NATS to a
//! Trellis lattice; every reply must decode as wadm's type and tell the truth.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use serde::de::DeserializeOwned;
use trellis_lattice::app::*;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::start_host;
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::lattice;

const LONG: Duration = Duration::from_secs(90);

/// A request as wadm-client sends it; the reply decoded as wadm's `T`.
async fn ask<T: DeserializeOwned>(nats: &async_nats::Client, subject: &str, headers: Option<async_nats::HeaderMap>, body: &str) -> T {
    let body = body.as_bytes().to_vec().into();
    let msg = match headers {
        Some(h) => nats.request_with_headers(subject.to_string(), h, body).await,
        None => nats.request(subject.to_string(), body).await,
    }
    .unwrap();
    let text = String::from_utf8_lossy(&msg.payload).into_owned();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the reply on `{subject}` is not wadm's {}: {e}\n{text}", std::any::type_name::<T>()))
}

async fn status(nats: &async_nats::Client, app: &str) -> StatusResponse {
    ask(nats, &format!("wadm.api.default.model.status.{app}"), None, "").await
}

async fn wait_for(nats: &async_nats::Client, app: &str, want: StatusType) -> Status {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let r = status(nats, app).await;
        match r.status {
            Some(s) if r.result == StatusResult::Ok && s.state() == want => return s,
            last if tokio::time::Instant::now() >= deadline => panic!("app `{app}` is not {want:?} after {LONG:?}: {last:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmclouds_wash_drives_trellis_apps_through_wadms_api() {
    let nats = NatsServer::start().await.unwrap();
    let _host = start_host(&nats.url(), &[]).await.unwrap();
    let l = lattice(nats).await;
    let n = l.ctl.nats().clone();
    let mut updates = n.subscribe("wadm.status.default.hello").await.unwrap();

    // put: wadm-client serialises the manifest as JSON, as wadm-types does (empty maps and
    // lists left out), with `Content-Type: application/json`.
    let manifest = format!(
        r#"{{"apiVersion":"core.oam.dev/v1beta1","kind":"Application",
            "metadata":{{"name":"hello","annotations":{{"version":"v1","description":"says hello"}}}},
            "spec":{{"components":[{{"name":"hello","type":"component","properties":{{"image":"{image}"}},
                "traits":[{{"type":"spreadscaler","properties":{{"instances":1}}}}]}}]}}}}"#,
        image = file_ref(http_hello())
    );
    let mut json = async_nats::HeaderMap::new();
    json.insert("Content-Type", "application/json");
    let put: PutModelResponse = ask(&n, "wadm.api.default.model.put", Some(json.clone()), &manifest).await;
    assert_eq!((put.result, put.name.as_str(), put.current_version.as_str(), put.total_versions), (PutResult::Created, "hello", "v1", 1), "{put:?}");
    // A bad manifest is wadm's error reply, with our messages.
    let bad: PutModelResponse = ask(
        &n,
        "wadm.api.default.model.put",
        Some(json),
        r#"{"apiVersion":"core.oam.dev/v1beta1","kind":"Application","metadata":{},"spec":{"components":3}}"#,
    )
    .await;
    assert!(bad.result == PutResult::Error && bad.message.contains("metadata.name") && bad.message.contains("spec.components"), "{bad:?}");
    // YAML is accepted too.
    let yaml = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: hello\n  annotations:\n    version: v2\nspec:\n  components:\n    - name: hello\n      type: component\n      properties:\n        image: {}\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n",
        file_ref(http_hello())
    );
    let put: PutModelResponse = ask(&n, "wadm.api.default.model.put", None, &yaml).await;
    assert_eq!((put.result, put.current_version.as_str(), put.total_versions), (PutResult::NewVersion, "v2", 2), "{put:?}");

    // deploy: `{"version": …}` as wadm-client sends it with a version.
    let d: DeployModelResponse = ask(&n, "wadm.api.default.model.deploy.hello", None, r#"{"version":"v1"}"#).await;
    assert_eq!((d.result, d.name.as_str(), d.version.as_deref()), (DeployResult::Acknowledged, "hello", Some("v1")), "{d:?}");
    let s = wait_for(&n, "hello", StatusType::Deployed).await;
    assert_eq!(s.deployed_version(), Some("v1"));
    let inv = l.ctl.get_host_inventory(_host.id()).await.unwrap();
    assert!(inv.components.iter().any(|c| c.id == "hello-hello"), "{inv:?}");
    // The status was published on wadm's status subject too.
    let published = tokio::time::timeout(LONG, async {
        loop {
            let m = futures::StreamExt::next(&mut updates).await.unwrap();
            let s: Status = serde_json::from_slice(&m.payload).unwrap();
            if s.state() == StatusType::Deployed {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(published.deployed_version(), Some("v1"));

    // list: a bare array of ModelSummary.
    let list: Vec<ModelSummary> = ask(&n, "wadm.api.default.model.list", None, "").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    assert_eq!((a.name.as_str(), a.version.as_str(), a.deployed_version.as_deref()), ("hello", "v2", Some("v1")));
    assert_eq!((a.status, a.detailed_status.state()), (StatusType::Deployed, StatusType::Deployed));

    // get: the manifest as JSON; empty body for the latest, `{"version"}` for one.
    let g: GetModelResponse = ask(&n, "wadm.api.default.model.get.hello", None, "").await;
    assert_eq!(g.result, GetResult::Success);
    assert_eq!(g.manifest.unwrap()["metadata"]["annotations"]["version"], "v2");
    let g: GetModelResponse = ask(&n, "wadm.api.default.model.get.hello", None, r#"{"version":"v1"}"#).await;
    let m = g.manifest.unwrap();
    assert_eq!((m["metadata"]["annotations"]["description"].as_str(), m["spec"]["components"][0]["name"].as_str()), (Some("says hello"), Some("hello")));
    let g: GetModelResponse = ask(&n, "wadm.api.default.model.get.nope", None, "").await;
    assert_eq!((g.result, g.manifest), (GetResult::NotFound, None));

    // versions.
    let v: VersionResponse = ask(&n, "wadm.api.default.model.versions.hello", None, "").await;
    assert_eq!(v.result, GetResult::Success);
    assert_eq!(v.versions.iter().map(|v| (v.version.as_str(), v.deployed)).collect::<Vec<_>>(), [("v1", true), ("v2", false)]);
    let v: VersionResponse = ask(&n, "wadm.api.default.model.versions.nope", None, "").await;
    assert_eq!(v.result, GetResult::NotFound);

    // undeploy: an empty body.
    let u: DeployModelResponse = ask(&n, "wadm.api.default.model.undeploy.hello", None, "").await;
    assert_eq!((u.result, u.version.as_deref()), (DeployResult::Acknowledged, None), "{u:?}");
    wait_for(&n, "hello", StatusType::Undeployed).await;
    let inv = l.ctl.get_host_inventory(_host.id()).await.unwrap();
    assert!(inv.components.is_empty(), "{inv:?}");

    // del: one version, then every version.
    let del: DeleteModelResponse = ask(&n, "wadm.api.default.model.del.hello", None, r#"{"version":"v1"}"#).await;
    assert_eq!((del.result, del.undeploy), (DeleteResult::Deleted, false), "{del:?}");
    let del: DeleteModelResponse = ask(&n, "wadm.api.default.model.del.hello", None, "").await;
    assert_eq!(del.result, DeleteResult::Deleted, "{del:?}");
    let del: DeleteModelResponse = ask(&n, "wadm.api.default.model.del.hello", None, "").await;
    assert_eq!(del.result, DeleteResult::Noop, "{del:?}");
    let list: Vec<ModelSummary> = ask(&n, "wadm.api.default.model.list", None, "").await;
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(status(&n, "hello").await.result, StatusResult::NotFound);
    let d: DeployModelResponse = ask(&n, "wadm.api.default.model.deploy.hello", None, "").await;
    assert_eq!(d.result, DeployResult::NotFound, "{d:?}");
}
