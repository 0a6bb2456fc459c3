//! Headless Chromium driven over the DevTools protocol (a WebSocket on 127.0.0.1): load a page,
//! run JavaScript in it, set the viewport, take screenshots. Started with the flags TESTBED.md
//! gives, so it never reaches for the network; killed by pid when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::proc::ProcGuard;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    ws: Ws,
    session: String,
    next_id: u64,
    rt: tokio::runtime::Runtime,
    _proc: ProcGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a `width`×`height` window and one blank page.
    pub fn start(width: u32, height: u32) -> Browser {
        super::require_bin("chromium");
        let profile = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(super::find_bin("chromium").unwrap());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut proc = ProcGuard::spawn("chromium", &mut cmd);
        let stderr = proc.child_mut().stderr.take().expect("chromium stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("chromium printed its DevTools address within 30 s");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ws, _) = rt.block_on(tokio_tungstenite::connect_async(url.as_str())).expect("connect to DevTools");
        let mut b = Browser { ws, session: String::new(), next_id: 0, rt, _proc: proc, _profile: profile };
        let target = b.call_on(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call_on(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        b.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    fn call_on(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let ws = &mut self.ws;
        self.rt.block_on(async {
            ws.send(Message::Text(msg.to_string().into())).await.expect("send to DevTools");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let m = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 60 s"))
                    .expect("the DevTools connection closed")
                    .expect("DevTools message");
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).expect("DevTools JSON");
                if v["id"] == id {
                    if let Some(e) = v.get("error") {
                        panic!("DevTools {method} failed: {e}");
                    }
                    return v["result"].clone();
                }
            }
        })
    }

    /// One DevTools command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call_on(Some(&s), method, params)
    }

    /// Runs `expr` in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("page script {expr:?} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Loads `url` and waits until the document is complete.
    pub fn goto(&mut self, url: &str) {
        // The old document is marked, so that it is not taken for the new one.
        self.eval("window.__previous_document = true");
        self.call("Page.navigate", json!({"url": url}));
        self.wait(
            Duration::from_secs(30),
            "the page loaded",
            "!window.__previous_document && document.readyState === 'complete' && location.href !== 'about:blank'",
        );
    }

    /// Polls `expr` until it is truthy; returns how long that took.
    pub fn wait(&mut self, timeout: Duration, what: &str, expr: &str) -> Duration {
        let start = Instant::now();
        loop {
            let v =
                self.eval(&format!("(function(){{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()"));
            if v == json!(true) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!("waited {timeout:?} for {what} ({expr}); the page says:\n{}", text.as_str().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The viewport as a phone or a desktop would have it.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// A full-page PNG screenshot written to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png =
            base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().expect("screenshot data")).unwrap();
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `target/test-artifacts/`.
pub fn artifact_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}
