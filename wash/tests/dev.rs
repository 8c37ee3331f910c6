//! The developer loop as a user runs it, for each built-in template: `wash new component`, `wash
//! build`, then `wash dev`, which starts its own lattice; a client keeps calling the component
//! while its source is edited (the new answer appears, with no failed call in between) and then
//! broken (the last good version keeps answering); Ctrl-C removes the app and the lattice.
//!
//! Template builds share `target/wash-templates` (so the Rust dependencies build once).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Wash, free_port, gone, listening};
use tokio::io::AsyncBufReadExt as _;
use trellis_tests::hosts::remove_cargo_test_env;

/// The first build of a template compiles its dependencies: minutes on a cold, busy machine.
const FIRST_BUILD: Duration = Duration::from_secs(420);
/// A change, rebuilt and swapped in.
const SWAP: Duration = Duration::from_secs(300);

/// How the test reaches the component.
#[derive(Clone)]
enum Probe {
    /// `GET /PATH` on the http-server's address.
    Http(std::net::SocketAddr, &'static str),
    /// A NATS request on SUBJECT, on the lattice's server.
    Nats(async_nats::Client, String),
}

impl Probe {
    async fn call(&self) -> Result<String, String> {
        match self {
            Probe::Http(addr, path) => match trellis_tests::http::get(*addr, path).await {
                Ok(r) if r.status == 200 => Ok(r.text()),
                Ok(r) => Err(format!("{} {}", r.status, r.text())),
                Err(e) => Err(format!("{e:#}")),
            },
            Probe::Nats(nats, subject) => match tokio::time::timeout(Duration::from_secs(10), nats.request(subject.clone(), "world".into())).await {
                Ok(Ok(m)) => Ok(String::from_utf8_lossy(&m.payload).into_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 10 s".into()),
            },
        }
    }
}

/// A running `wash dev` and what it has written on stderr.
struct Dev {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(wash: &Wash, project: &Path) -> Self {
        let mut cmd = wash.cmd(&["dev", "-p", project.to_str().expect("utf-8 path")]);
        remove_cargo_test_env(&mut cmd);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root");
        cmd.env("CARGO_TARGET_DIR", root.join("target").join("wash-templates"));
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
            cmd.env_remove(var);
        }
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().expect("wash dev starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), child.stdout.take().map(|s| Box::new(s) as _)]
        {
            let lines = lines.clone();
            let mut reader = tokio::io::BufReader::new(stream.expect("piped")).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until a line containing `text` appears (after the first `skip` lines).
    async fn wait_line(&mut self, text: &str, skip: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines.lock().expect("lines").iter().skip(skip).find(|l| l.contains(text)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(200)).await; // the rest of its output
                panic!("wash dev exited ({status}) before `{text}`; it wrote:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "`{text}` did not appear within {within:?}; wash dev wrote:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn seen(&self) -> usize {
        self.lines.lock().expect("lines").len()
    }
}

/// Calls the component in a loop until stopped; every answer, in order.
struct Client {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<Mutex<Vec<Result<String, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(probe: Probe) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let task = tokio::spawn(async move {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let got = probe.call().await;
                a.lock().expect("answers").push(got);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { stop, answers, task }
    }

    fn last(&self) -> Option<Result<String, String>> {
        self.answers.lock().expect("answers").last().cloned()
    }

    async fn finish(self) -> Vec<Result<String, String>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("client");
        Arc::try_unwrap(self.answers).map(|m| m.into_inner().expect("answers")).unwrap_or_default()
    }
}

/// What a template's loop edits: the file, the old text and the new one, and the answers
/// before and after.
struct Edit {
    file: &'static str,
    from: &'static str,
    to: &'static str,
    before: &'static str,
    after: &'static str,
}

/// `wash new` → `wash build` → `wash dev`, an edit while a client calls, a broken edit, Ctrl-C.
async fn develop(template: &str, edit: Edit, nats_subject: Option<&str>) {
    let wash = Wash::new(free_port());
    let work = tempfile::tempdir().expect("temp dir");
    let project: PathBuf = work.path().join("app");
    let out = wash.run_async(&["new", "component", "app", "--template", template, "--path", project.to_str().expect("utf-8")]).await;
    assert!(out.ok().contains("Created"), "{}", out.ok());
    let http_port = free_port();
    let manifest = project.join("wadm.yaml");
    let text = std::fs::read_to_string(&manifest).expect("wadm.yaml");
    std::fs::write(&manifest, text.replace("127.0.0.1:8000", &format!("127.0.0.1:{http_port}"))).expect("write wadm.yaml");

    // `wash build` on its own: builds and signs into the destination of wasmcloud.toml.
    let mut build = wash.cmd(&["build", "-p", project.to_str().expect("utf-8"), "-o", "json"]);
    remove_cargo_test_env(&mut build);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root");
    build.env("CARGO_TARGET_DIR", root.join("target").join("wash-templates"));
    let built = tokio::task::spawn_blocking(move || build.output()).await.expect("joined").expect("wash build runs");
    assert!(built.status.success(), "wash build failed:\n{}\n{}", String::from_utf8_lossy(&built.stdout), String::from_utf8_lossy(&built.stderr));
    let report: serde_json::Value = serde_json::from_slice(&built.stdout).expect("json");
    let artifact = PathBuf::from(report["artifact"].as_str().expect("artifact"));
    assert_eq!(artifact, project.join("build/app_s.wasm"));
    let wasm = std::fs::read(&artifact).expect("the signed component");
    let claims = trellis_lattice::claims::verify_component(&wasm, trellis_lattice::claims::now(), &[]).expect("valid claims").expect("signed");
    assert_eq!(claims.wascap.name.as_deref(), Some("app"));

    let mut dev = Dev::start(&wash, &project);
    dev.wait_line("Watching for changes", 0, FIRST_BUILD).await;
    let probe = match nats_subject {
        None => {
            let line = dev.wait_line("Serving at", 0, FIRST_BUILD).await;
            assert!(line.contains(&format!("http://127.0.0.1:{http_port}/")), "{line}");
            Probe::Http(format!("127.0.0.1:{http_port}").parse().expect("addr"), "/hits")
        }
        Some(subject) => Probe::Nats(async_nats::connect(format!("nats://127.0.0.1:{}", wash.port)).await.expect("connect"), subject.to_string()),
    };
    // Deployed means placed and linked; a listener or subscription may take a moment more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match probe.call().await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "the component does not answer: {e}\n{}", dev.output()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(first.starts_with(edit.before), "{first:?}");

    // An edit while a client calls: the new answer comes, and no call fails meanwhile.
    let client = Client::start(probe.clone());
    let source = project.join(edit.file);
    let code = std::fs::read_to_string(&source).expect("source");
    assert!(code.contains(edit.from), "{} no longer holds {:?}", edit.file, edit.from);
    let skip = dev.seen();
    let edited_at = Instant::now();
    std::fs::write(&source, code.replace(edit.from, edit.to)).expect("edit");
    loop {
        if client.last().is_some_and(|a| a.is_ok_and(|b| b.starts_with(edit.after))) {
            break;
        }
        assert!(edited_at.elapsed() < SWAP, "the edit did not serve within {SWAP:?}; wash dev wrote:\n{}", dev.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = edited_at.elapsed();
    eprintln!("{template}: the edit served {:.1} s after the save", n.as_secs_f64());
    dev.wait_line("serves (", skip, SWAP).await;

    // A broken edit: the build fails, and the last good version keeps answering.
    let skip = dev.seen();
    std::fs::write(&source, format!("{}\nthis is not valid source (\n", code.replace(edit.from, edit.to))).expect("break");
    dev.wait_line("keeps serving", skip, SWAP).await;
    let answers = client.finish().await;
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} calls failed during the swap: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
    for a in answers.iter().flatten() {
        assert!(a.starts_with(edit.before) || a.starts_with(edit.after), "an answer neither old nor new: {a:?}");
    }
    let after = probe.call().await.expect("still answers after the broken build");
    assert!(after.starts_with(edit.after), "{after:?}");
    eprintln!("{template}: {} calls during the swap, none failed", answers.len());

    // Ctrl-C: the app and the lattice wash dev started are gone.
    let pid = dev.child.id().expect("running");
    assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill").success());
    let status = tokio::time::timeout(Duration::from_secs(90), dev.child.wait()).await.expect("wash dev exits after Ctrl-C").expect("wait");
    assert!(status.success(), "wash dev exited with {status}:\n{}", dev.output());
    assert!(dev.output().contains("Stopped: removed app `app` and the local lattice it started"), "{}", dev.output());
    assert!(gone(pid, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening(wash.port) || listening(http_port) {
        assert!(Instant::now() < deadline, "the lattice or the listener outlived wash dev");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!project.join("build/dev").exists(), "wash dev left its build copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_http_edits_serve_in_place() {
    let edit = Edit { file: "src/lib.rs", from: "Hello from app!", to: "Edited app!", before: "Hello from app!", after: "Edited app!" };
    develop("hello-http", edit, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counter_edits_serve_in_place() {
    let edit =
        Edit { file: "src/lib.rs", from: "const PREFIX: &str = \"count: \";", to: "const PREFIX: &str = \"visits: \";", before: "count: ", after: "visits: " };
    develop("kv-counter", edit, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_edits_serve_in_place() {
    let edit = Edit { file: "src/lib.rs", from: "Hello from app: ", to: "Hi from app: ", before: "Hello from app: world", after: "Hi from app: world" };
    develop("messaging", edit, Some("app.hi")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hello_http_edits_serve_in_place() {
    let edit = Edit { file: "app.py", from: "Hello from app!", to: "Edited app!", before: "Hello from app!", after: "Edited app!" };
    develop("hello-http-python", edit, None).await;
}
