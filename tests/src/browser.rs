//! A real headless browser for tests: Debian's `chromium` driven by `chromedriver` over the
//! W3C WebDriver protocol (JSON over HTTP, spoken here with hyper: no WebDriver crate and its
//! second HTTP stack). chromedriver runs on a free port with a fresh profile directory, in a
//! process group of its own; drop ends the session (chromedriver quits chromium) and kills the
//! group.
//!
//! A missing chromium or chromedriver fails the test with the command that installs them
//! (`.ci/bootstrap`); nothing is skipped. `TRELLIS_CHROMIUM` and `TRELLIS_CHROMEDRIVER` may
//! name other binaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The key WebDriver puts an element reference under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags chromium runs with (no sandbox: test machines run as root in containers).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    // Headless windows count as hidden: keep their timers at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

fn find(env: &str, names: &[&str]) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "{env} names {}, which is not a file; point it at the binary or unset it and run .ci/bootstrap", p.display());
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("no {} found (set {env} to one, or run .ci/bootstrap, which installs Debian's chromium and chromium-driver)", names.join(" or "))
}

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: tokio::process::Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        // Ending the session makes chromedriver quit chromium; killing chromedriver alone would
        // leave chromium running.
        if !self.session.is_empty()
            && let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(s, "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.session, self.port);
            let _ = s.read_to_end(&mut Vec::new());
        }
        // Then whatever is left of chromedriver's process group (its own, see `start`).
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
        let _ = self.driver.start_kill();
    }
}

impl Browser {
    /// Starts chromedriver and a headless chromium of `width`×`height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let chromium = find("TRELLIS_CHROMIUM", &["chromium", "chromium-browser"])?;
        let chromedriver = find("TRELLIS_CHROMEDRIVER", &["chromedriver"])?;
        let port = crate::free_port()?;
        let profile = tempfile::Builder::new().prefix("trellis-chromium-").tempdir()?;
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // A group of its own, so drop can end chromium with it.
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let mut me = Self { driver, port, session: String::new(), _profile: profile };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match me.call("GET", "/status", None).await {
                Ok(v) if v["ready"] == true => break,
                _ if tokio::time::Instant::now() > deadline => bail!("chromedriver on port {port} did not become ready within 20 s"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", me._profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let v = me.call("POST", "/session", Some(caps)).await.context("chromedriver cannot start a chromium session")?;
        me.session = v["sessionId"].as_str().context("no sessionId in the new session")?.to_string();
        Ok(me)
    }

    /// One WebDriver command; its `value`, or an error with WebDriver's message.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let work = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, addr.to_string())
                .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(Full::new(Bytes::from(body)))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) =
            tokio::time::timeout(Duration::from_secs(60), work).await.with_context(|| format!("WebDriver {method} {path} took over 60 s"))??;
        let v: Value = serde_json::from_slice(&bytes).with_context(|| format!("WebDriver {method} {path} answered {status} with no JSON"))?;
        if !status.is_success() {
            bail!("WebDriver {method} {path}: {status}: {} {}", v["value"]["error"], v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", &self.at("/url"), Some(json!({"url": url}))).await.map(|_| ())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns what it returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.call("POST", &self.at("/execute/sync"), Some(json!({"script": script, "args": args}))).await
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), for at
    /// most `within`; `what` names it in the error, with the last value seen.
    pub async fn wait_for(&self, what: &str, script: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.eval(script, vec![]).await;
            match &v {
                Ok(v) if !matches!(v, Value::Null | Value::Bool(false)) && v != &json!(0) && v != &json!("") => return Ok(v.clone()),
                _ if tokio::time::Instant::now() > deadline => bail!("the page did not show {what} within {within:?} (last: {v:?})"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The element `css` selects (the first).
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .call("POST", &self.at("/element"), Some(json!({"using": "css selector", "value": css})))
            .await
            .with_context(|| format!("no element `{css}`"))?;
        Ok(v[ELEMENT].as_str().with_context(|| format!("no element reference in {v}"))?.to_string())
    }

    /// Clicks the element `css` selects, as a user would (it must be visible and not covered).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call("POST", &self.at(&format!("/element/{id}/click")), Some(json!({}))).await.with_context(|| format!("cannot click `{css}`")).map(|_| ())
    }

    /// Types `text` into the element `css` selects (WebDriver key codes allowed, e.g. `\u{E007}` Enter).
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call("POST", &self.at(&format!("/element/{id}/value")), Some(json!({"text": text})))
            .await
            .with_context(|| format!("cannot type into `{css}`"))
            .map(|_| ())
    }

    /// Clears the input or textarea `css` selects.
    pub async fn clear(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call("POST", &self.at(&format!("/element/{id}/clear")), Some(json!({}))).await.map(|_| ())
    }

    /// Sends keys to whatever has focus (WebDriver's key actions), e.g. `"\u{E004}"` for Tab.
    pub async fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let mut actions = Vec::new();
        for c in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.call("POST", &self.at("/actions"), Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}))).await?;
        self.call("DELETE", &self.at("/actions"), None).await.map(|_| ())
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call("POST", &self.at("/window/rect"), Some(json!({"width": width, "height": height}))).await.map(|_| ())
    }

    /// A Chrome DevTools Protocol command through chromedriver (e.g. emulating dark mode).
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.call("POST", &self.at("/goog/cdp/execute"), Some(json!({"cmd": cmd, "params": params}))).await
    }

    /// Writes a PNG of the whole page (not only the window) to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        // From the top, so sticky headers are where a reader expects them.
        self.eval("window.scrollTo(0, 0); return true", vec![]).await?;
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await?;
        let size = &metrics["cssContentSize"];
        let (w, h) = (size["width"].as_f64().unwrap_or(1280.0), size["height"].as_f64().unwrap_or(800.0).min(6000.0));
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true, "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `target/ui-screenshots/` of the workspace (not committed; `target/` is ignored).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("ui-screenshots")
}
