//! What the benchmarks share: knobs from the environment, /proc clock ticks, the PASS/MISS
//! verdict, and a 1280x720@30 RTSP camera (tests' `RtspCamera` is fixed at 320x180@25).
//! Included by each bench with `#[path = "support/mod.rs"] mod support;`, after `mod common;`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

pub const CAM_W: u32 = 1280;
pub const CAM_H: u32 = 720;
pub const CAM_FPS: u32 = 30;

/// The environment `deploy/systemd/vistter-agent.service` and `deploy/balena/Dockerfile` set:
/// a benchmark runs the agent as deployed (with `TestAgent::spawn_at("info", DEPLOYED_ENV)`).
pub const DEPLOYED_ENV: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "2")];

/// A whole number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Clock ticks per second for /proc/PID/stat times. (nix's `sysconf` needs its "feature" feature,
/// which this crate does not enable, so ask getconf.)
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The cores this process may use.
pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// A 200x100 RGBA badge with a gradient and a solid border, for overlay load.
pub fn write_logo(path: &Path) {
    let (w, h) = (200u32, 100u32);
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let edge = x < 6 || y < 6 || x >= w - 6 || y >= h - 6;
            let a = if edge { 255 } else { 160 + (x * 95 / w) as u8 };
            rgba.extend_from_slice(&[255, (x * 255 / w) as u8, (y * 255 / h) as u8, a]);
        }
    }
    let file = File::create(path).expect("logo png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().expect("png header");
    wr.write_image_data(&rgba).expect("png data");
}

// ---------------------------------------------------------------------------------------------
// Cameras: tests/support/rtsp_camera.py at 1280x720@30.

pub struct SimCamera {
    pattern: &'static str,
    /// H.264 kbit/s and pixels per frame the picture scrolls (0: still).
    bitrate: u32,
    motion: u32,
    port: u16,
    proc: Option<ProcGuard>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl SimCamera {
    /// A still picture at the simulator's own 300 kbit/s.
    pub fn start(pattern: &'static str) -> SimCamera {
        SimCamera::start_with(pattern, 300, 0)
    }

    /// A picture scrolling `motion` pixels a frame, at `bitrate` kbit/s: decoding and encoding
    /// it costs what a camera filming a scene costs, not what a still colour costs.
    pub fn start_with(pattern: &'static str, bitrate: u32, motion: u32) -> SimCamera {
        require_bin("ffprobe");
        let dir = tempfile::Builder::new().prefix("bench-cam-").tempdir().expect("tempdir");
        let mut cam = SimCamera { pattern, bitrate, motion, port: 0, proc: None, dir, starts: 0 };
        cam.port = free_port();
        for attempt in 1..=5 {
            match cam.spawn() {
                Ok(()) => return cam,
                Err(e) if attempt < 5 => {
                    eprintln!("bench camera on port {}: {e}; retrying", cam.port);
                    if e.starts_with("port busy") {
                        cam.port = free_port();
                    }
                }
                Err(e) => panic!("camera simulator did not start: {e}"),
            }
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(ProcGuard::pid)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("camera-{}.log", self.starts))).unwrap_or_default()
    }

    /// Starts the simulator again if it died (GStreamer's RTSP server sometimes aborts on an
    /// assertion when clients come and go quickly); true if it had to. Trials measure the agent
    /// with cameras that serve, so each starts with this.
    pub fn ensure_running(&mut self) -> bool {
        if self.proc.as_mut().is_some_and(ProcGuard::is_running) {
            return false;
        }
        eprintln!("bench camera {} on port {} had died: started again", self.pattern, self.port);
        self.restart();
        true
    }

    /// SIGKILL (connections drop at once).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts again on the same port; returns once it serves.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bench camera restart on port {}: {e}; retrying", self.port);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("camera restart on port {} failed: {e}", self.port),
            }
        }
    }

    /// Err("port busy: …") when the port could not be bound, Err("not serving: …") when the
    /// simulator started but served no video within 20 s (it is killed); panics on anything else.
    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py");
        let log_path = self.dir.path().join(format!("camera-{}.log", self.starts));
        let mut cmd = Command::new(CAMERA_PYTHON);
        cmd.arg(script)
            .args(["--port", &self.port.to_string(), "--pattern", self.pattern])
            .args(["--bitrate", &self.bitrate.to_string(), "--motion", &self.motion.to_string()])
            .args(["--width", &CAM_W.to_string(), "--height", &CAM_H.to_string(), "--fps", &CAM_FPS.to_string()])
            // GStreamer's own avenc_aac would load FFmpeg's libraries into the simulator, which
            // would then take a share of their pages from every FFmpeg measured (PSS divides a
            // shared page among all who map it), a larger share from a side with fewer FFmpeg
            // processes. Real cameras share no memory with the box.
            .args(["--aac-encoder", "voaacenc"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log_path).expect("camera log"));
        let mut proc = ProcGuard::spawn("rtsp_camera.py (bench)", &mut cmd);
        let stdout = proc.child_mut().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(15)).is_err() {
            let st = proc.wait_timeout(Duration::from_secs(5));
            let text = self.log();
            if text.contains("cannot listen") {
                return Err(format!("port busy: {}", text.trim()));
            }
            panic!("camera simulator printed no READY ({st:?}); stderr:\n{text}");
        }
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut probe = Command::new("ffprobe");
            probe.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", "5000000"]);
            probe.args(["-analyzeduration", "500000", "-show_streams", &url]);
            let out = run_with_timeout(&mut probe, Duration::from_secs(10));
            let ok = out
                .as_ref()
                .is_some_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("codec_type=video"));
            if ok {
                self.proc = Some(proc);
                return Ok(());
            }
            assert!(proc.is_running(), "camera died; stderr:\n{}", self.log());
            if Instant::now() >= deadline {
                let why = out.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string());
                proc.kill();
                return Err(format!(
                    "not serving {url} within 20 s (last ffprobe: {}); simulator stderr: {}",
                    why.unwrap_or_else(|| "timed out".into()),
                    self.log().trim()
                ));
            }
            thread::sleep(Duration::from_millis(300));
        }
    }
}

/// One MQTT client (the bench's cloud side) whose incoming publishes, as (topic, payload), go to
/// the receiver; returned once its subscription to `sub` is acknowledged. At most `inflight`
/// messages unacknowledged. Its event loop ends when the receiver is dropped.
pub async fn mqtt_client(
    port: u16,
    id: &str,
    sub: &str,
    inflight: u16,
) -> (rumqttc::AsyncClient, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(inflight);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut ev) = AsyncClient::new(o, 8192);
    ev.set_network_options(vistter_agent::control::mqtt::nodelay(ev.network_options()));
    c.subscribe(sub, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) if tx.is_closed() => return,
                Err(e) => {
                    eprintln!("bench client {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready).await.expect("subscribed").unwrap();
    (c, rx)
}
