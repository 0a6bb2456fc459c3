//! A real mosquitto on loopback (TESTBED "MQTT broker"): a plain listener for the test's own
//! clients, and optionally an mTLS listener (dev PKI from `certs/make-dev-ca.sh`) for the agent.
//! `Sub` collects messages with `mosquitto_sub`; `publish` sends one with `mosquitto_pub`;
//! `Proxy` is a TCP forwarder the test can cut, to take the cloud away from the agent.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::proc::ProcGuard;
use super::{find_bin, free_port, require_bin};

/// The dev PKI made by the project's own script, in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(device_id: &str) -> Pki {
        require_bin("openssl");
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/make-dev-ca.sh");
        let out = Command::new(&script).arg(dir.path()).arg(device_id).output().expect("run certs/make-dev-ca.sh");
        assert!(out.status.success(), "make-dev-ca.sh: {}", String::from_utf8_lossy(&out.stderr));
        // mosquitto may drop to its own user before reading its key: let it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[control.mqtt]`/`[control.ws]` lines for the device's files.
    pub fn config_lines(&self) -> String {
        format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.path("ca.pem").display(),
            self.path("device.pem").display(),
            self.path("device.key").display()
        )
    }
}

pub struct Broker {
    pub port: u16,
    /// The mTLS listener (client certificate required), when started with a PKI.
    pub tls_port: Option<u16>,
    proc: Option<ProcGuard>,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(pki: Option<&Pki>) -> Broker {
        Broker::start_with(pki, false)
    }

    /// With `persistence`, the broker keeps its sessions and queued messages in
    /// `persistence_file()` (saved every second and on exit).
    pub fn start_with(pki: Option<&Pki>, persistence: bool) -> Broker {
        require_bin("mosquitto");
        require_bin("mosquitto_sub");
        require_bin("mosquitto_pub");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_port = pki.map(|_| free_port());
        let conf = dir.path().join("mosquitto.conf");
        if persistence {
            // mosquitto may run as its own user: it writes its file here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let persist = if persistence {
            format!("persistence true\npersistence_location {}/\nautosave_interval 1\n", dir.path().display())
        } else {
            "persistence false\n".to_string()
        };
        // TCP_NODELAY: without it a small reply waits for the client's delayed ACK (~40 ms).
        let mut c = format!(
            "per_listener_settings true\nset_tcp_nodelay true\n{persist}listener {port} 127.0.0.1\nallow_anonymous true\n"
        );
        if let (Some(pki), Some(tp)) = (pki, tls_port) {
            c += &format!(
                "listener {tp} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
                pki.path("ca.pem").display(),
                pki.path("server.pem").display(),
                pki.path("server.key").display()
            );
        }
        std::fs::write(&conf, c).unwrap();
        let mut b = Broker { port, tls_port, proc: None, conf, _dir: dir };
        b.restart();
        b
    }

    pub fn persistence_file(&self) -> PathBuf {
        self._dir.path().join("mosquitto.db")
    }

    /// Stops it with SIGTERM (mosquitto saves its persistence file on the way out).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// Starts it (again) on the same ports, with no memory of earlier sessions.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        let proc = ProcGuard::spawn(
            "mosquitto",
            Command::new(find_bin("mosquitto").unwrap())
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        for p in std::iter::once(self.port).chain(self.tls_port) {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {p}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.proc = Some(proc);
    }
}

/// `mosquitto_sub` on `topic` (wildcards allowed), collecting messages as they come.
pub struct Sub {
    proc: ProcGuard,
    pub rx: std::sync::mpsc::Receiver<String>,
}

impl Sub {
    pub fn new(port: u16, topic: &str) -> Sub {
        Sub::spawn(port, topic, &[])
    }

    /// A subscriber with a persistent session (`client_id`, clean session off): after a broker
    /// restart with persistence it reconnects and gets what was queued for it meanwhile.
    pub fn persistent(port: u16, topic: &str, client_id: &str) -> Sub {
        Sub::spawn(port, topic, &["-c", "-i", client_id])
    }

    fn spawn(port: u16, topic: &str, extra: &[&str]) -> Sub {
        let mut proc = ProcGuard::spawn(
            "mosquitto_sub",
            Command::new(find_bin("mosquitto_sub").unwrap())
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = proc.child_mut().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Subscribed before anything is published (mosquitto_sub has no "ready" signal).
        std::thread::sleep(Duration::from_millis(300));
        Sub { proc, rx }
    }

    pub fn next(&self, within: Duration) -> Value {
        let line = self.rx.recv_timeout(within).unwrap_or_else(|_| panic!("no message within {within:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The next message that satisfies `pred` (others are skipped).
    pub fn next_where(&self, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let left = within.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("no {what} within {within:?}"));
            let v = self.next(left);
            if pred(&v) {
                return v;
            }
        }
    }

    /// Every message up to and including the first that satisfies `pred`.
    pub fn until(&self, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        let mut v = Vec::new();
        loop {
            let left = within.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("no {what} within {within:?}"));
            let m = self.next(left);
            let done = pred(&m);
            v.push(m);
            if done {
                return v;
            }
        }
    }

    /// Everything that arrives within `for_`.
    pub fn drain(&self, for_: Duration) -> Vec<Value> {
        let mut v = Vec::new();
        let t0 = Instant::now();
        while let Some(left) = for_.checked_sub(t0.elapsed()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => v.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))),
                Err(_) => break,
            }
        }
        v
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

pub fn publish(port: u16, topic: &str, msg: &[u8], retain: bool) {
    let mut cmd = Command::new(find_bin("mosquitto_pub").unwrap());
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-s"]);
    if retain {
        cmd.arg("-r");
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), msg).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "mosquitto_pub");
}

/// A TCP forwarder on 127.0.0.1 to `target`. `cut()` closes every connection through it and
/// refuses new ones until `restore()`: for the agent, the cloud is gone.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, c) = (open.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !o.load(Ordering::SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let mut guard = c.lock().unwrap();
                        guard.push(client.try_clone().unwrap());
                        guard.push(server.try_clone().unwrap());
                        for (mut a, mut b) in
                            [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut a, &mut b);
                                let _ = b.shutdown(Shutdown::Both);
                                let _ = a.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy { port, open, conns, stop }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// `studio serve-ws`: device messages from its stdout, commands to its stdin.
pub struct WsServer {
    proc: ProcGuard,
    pub rx: std::sync::mpsc::Receiver<Value>,
    pub port: u16,
}

impl WsServer {
    pub fn start(pki: &Pki, key: &Path) -> WsServer {
        let port = free_port();
        let mut proc = ProcGuard::spawn(
            "studio serve-ws",
            Command::new(super::AGENT_BIN)
                .args(["studio", "serve-ws", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--ca")
                .arg(pki.path("ca.pem"))
                .arg("--cert")
                .arg(pki.path("server.pem"))
                .arg("--tls-key")
                .arg(pki.path("server.key"))
                .arg("--key")
                .arg(key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = proc.child_mut().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve-ws printed {line}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "serve-ws did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        WsServer { proc, rx, port }
    }

    pub fn send(&mut self, line: Value) {
        let stdin = self.proc.child_mut().stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next device message (checked: signed by the device) that satisfies `pred`.
    pub fn next_where(&self, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let left = within.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("no {what} within {within:?}"));
            let v = self.rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {what} within {within:?}"));
            assert_eq!(v["verified"], true, "a device message that does not verify: {v}");
            if pred(&v["message"]) {
                return v["message"].clone();
            }
        }
    }

    pub fn replies_to(&self, id: &str, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.next_where(Duration::from_secs(15), "a reply", |m| m["correlation_id"] == id)).collect()
    }
}
