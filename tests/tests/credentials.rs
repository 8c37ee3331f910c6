//! NATS credentials and TLS: `trellis-host` processes join a lattice whose nats-server demands
//! an nkey user or TLS, the provider processes they start connect with what the host hands them
//! in host data, and a wrong seed or a missing CA stops a host with an error that says so.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::StartProviderCommand;
use trellis_lattice::{ConnectOptions, connect};
use trellis_tests::hosts::{Events, ProcessHost, host_binary, http_server_provider_binary};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh NATS user key: (public key `U…`, seed `SU…`).
fn nkey_user() -> (String, String) {
    let kp = nkeys::KeyPair::new_user();
    (kp.public_key(), kp.seed().expect("a new key has a seed"))
}

/// A nats-server that admits only the nkey user `user`.
async fn nkey_server(user: &str) -> NatsServer {
    NatsServer::start_with_config(&format!("authorization {{\n  users = [ {{ nkey: {user} }} ]\n}}\n")).await.expect("nats-server with an nkey user")
}

/// Runs `trellis-host --nats-url URL ARGS…` with `env` added, expecting it to give up: its exit
/// status and stderr. A host that joins instead runs until the timeout fails the test.
async fn host_gives_up(url: &str, args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let run = tokio::process::Command::new(host_binary().expect("trellis-host builds"))
        .arg("--nats-url")
        .arg(url)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run).await.expect("trellis-host neither joined nor gave up within 30 s").expect("trellis-host runs");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts the http-server provider executable as `id` on `host` and waits until it answers a
/// health check, which it can only do once its own NATS connection is up.
async fn provider_connects(ctl: &CtlClient, events: &mut Events, host: &ProcessHost, id: &str) {
    let binary = http_server_provider_binary().expect("the provider executable builds");
    ctl.start_provider(&StartProviderCommand {
        provider_id: id.into(),
        provider_ref: format!("file://{}", binary.display()),
        host_id: host.id.clone(),
        ..Default::default()
    })
    .await
    .expect("provider.start is accepted");
    events
        .wait_for("health_check_passed", WAIT, |e| e.data["provider_id"] == id && e.source == host.id)
        .await
        .expect("the provider process connected to NATS and answered its health check");
}

/// Stops `host` in order (SIGTERM), which stops its provider processes too; a killed host would
/// leave them behind.
async fn stop(mut host: ProcessHost) {
    host.sigterm().unwrap();
    let status = host.wait(WAIT).await.unwrap();
    assert!(status.success(), "trellis-host exited with {status} on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_the_right_nkey_seed_joins_and_its_provider_connects_too() {
    let (user, seed) = nkey_user();
    let nats = nkey_server(&user).await;
    // The server really demands the key.
    let anonymous = connect(&ConnectOptions::new(nats.url())).await.expect_err("an anonymous client got in").to_string();
    assert!(anonymous.contains("authorization violation"), "{anonymous}");

    let client = connect(&ConnectOptions { nkey_seed: Some(seed.clone()), ..ConnectOptions::new(nats.url()) }).await.unwrap();
    let ctl = CtlClient::new(client.clone(), "default");
    let mut events = Events::subscribe(&client, "default").await.unwrap();
    let host = ProcessHost::start(&nats.url(), &["--nats-seed", &seed, "--provider-health-interval-seconds", "1"]).await.unwrap();
    let hosts = ctl.ping_hosts().await.unwrap();
    assert!(hosts.iter().any(|h| h.id == host.id), "host {} did not answer ping: {hosts:?}", host.id);

    // A provider process gets the host's NATS user through host data, and nothing on its
    // command line or in its (cleared) environment.
    provider_connects(&ctl, &mut events, &host, "http").await;
    stop(host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_wrong_or_no_nkey_seed_exits_saying_authorization_failed() {
    let (user, _) = nkey_user();
    let (_, wrong_seed) = nkey_user();
    let nats = nkey_server(&user).await;

    // The seed from the environment, as an operator would give it.
    let (status, stderr) = host_gives_up(&nats.url(), &[], &[("WASMCLOUD_NATS_SEED", &wrong_seed)]).await;
    assert!(!status.success(), "exited with {status}");
    assert!(stderr.contains("authorization violation") && stderr.contains(&nats.url()), "{stderr}");
    assert!(stderr.contains("check the credentials"), "{stderr}");
    assert!(!stderr.contains(&wrong_seed), "the seed is in the error output: {stderr}");

    let (status, stderr) = host_gives_up(&nats.url(), &[], &[]).await;
    assert!(!status.success(), "exited with {status}");
    assert!(stderr.contains("authorization violation"), "{stderr}");

    // Not a seed at all: refused before connecting.
    let (status, stderr) = host_gives_up(&nats.url(), &["--nats-seed", "SUNOTASEED"], &[]).await;
    assert!(!status.success(), "exited with {status}");
    assert!(stderr.contains("not a valid seed"), "{stderr}");
}

fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    trellis_tests::tls::make_certs(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_host_with_the_ca_joins_and_one_without_it_exits_saying_why() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let quoted = |p: &Path| serde_json::to_string(p).unwrap();
    let nats = NatsServer::start_with_config(&format!("tls {{\n  cert_file: {}\n  key_file: {}\n}}\n", quoted(&cert), quoted(&key))).await.unwrap();
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let ca_arg = ca.to_str().unwrap();

    let client = connect(&ConnectOptions { tls_ca_file: Some(ca.clone()), ..ConnectOptions::new(&url) }).await.unwrap();
    let ctl = CtlClient::new(client.clone(), "default");
    let mut events = Events::subscribe(&client, "default").await.unwrap();
    let host = ProcessHost::start(&url, &["--nats-tls-ca-file", ca_arg, "--provider-health-interval-seconds", "1"]).await.unwrap();
    let hosts = ctl.ping_hosts().await.unwrap();
    assert!(hosts.iter().any(|h| h.id == host.id), "host {} did not answer ping: {hosts:?}", host.id);
    // Its provider process trusts the same CA, from host data.
    provider_connects(&ctl, &mut events, &host, "http").await;
    stop(host).await;

    // Without the CA, the server's certificate is from an unknown issuer.
    let (status, stderr) = host_gives_up(&url, &[], &[]).await;
    assert!(!status.success(), "exited with {status}");
    assert!(stderr.contains("TLS handshake") && stderr.contains("private CA"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer") || stderr.contains("unknown issuer"), "{stderr}");
    // A plain nats:// URL gets no further: the server demands TLS.
    let (status, stderr) = host_gives_up(&format!("nats://127.0.0.1:{}", nats.port()), &[], &[]).await;
    assert!(!status.success(), "exited with {status}");
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}
