//! RTSP camera simulator guard (tests/support/rtsp_camera.py under Debian's /usr/bin/python3).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::proc::{run_with_timeout, ProcGuard};
use super::{free_port, require_bin};

/// Debian's python3 (the one with python3-gi); another python3 may come first on PATH.
pub const CAMERA_PYTHON: &str = "/usr/bin/python3";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const SERVE_TIMEOUT: Duration = Duration::from_secs(20);
const CAMERA_PACKAGES: &str =
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,ugly,bad} gstreamer1.0-libav";

#[derive(Debug, Clone)]
pub struct CameraOpts {
    /// videotestsrc pattern: smpte, red, green, blue, ball, snow, black, white, ...
    pub pattern: String,
    /// Include the AAC audio track (pay1).
    pub audio: bool,
}

impl CameraOpts {
    pub fn new(pattern: &str) -> CameraOpts {
        CameraOpts { pattern: pattern.to_string(), audio: true }
    }
}

impl Default for CameraOpts {
    fn default() -> Self {
        CameraOpts::new("smpte")
    }
}

/// What a camera is started with; the keeper thread restarts it from the same.
#[derive(Clone)]
struct Spec {
    port: u16,
    opts: CameraOpts,
    log_dir: PathBuf,
}

impl Spec {
    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.log_dir.join(format!("camera-{start}.log"))
    }
}

/// The simulator process and what the test wants of it.
struct Inner {
    proc: Option<ProcGuard>,
    /// SIGSTOPped by the test: alive on purpose.
    hung: bool,
    /// Killed by the test: dead on purpose.
    wanted: bool,
    starts: u32,
    /// Times the keeper brought back a simulator that died on its own.
    revivals: u32,
    /// Another picture size than 320x180 (a camera reconfigured while it was down).
    size: Option<(u32, u32)>,
}

/// A live 320x180@25 H.264 (+AAC) RTSP camera at rtsp://127.0.0.1:PORT/cam. Drop kills it by pid.
///
/// The GStreamer RTSP server can abort when clients reconnect quickly. A keeper thread restarts a
/// simulator that died without the test killing it (same port, same URL, logged), so a test fails
/// for the agent's faults, not the simulator's. A test's own `kill`, `hang` and `restart` are left
/// alone.
pub struct RtspCamera {
    spec: Spec,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    keeper: Option<thread::JoinHandle<()>>,
    _log_dir: tempfile::TempDir,
}

enum StartError {
    /// Exited before READY with status 1: the port could not be bound.
    Bind(String),
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py")
}

/// Starts the simulator on `spec.port`, retrying while the port is still held by the last one.
fn respawn(spec: &Spec, inner: &mut Inner, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        inner.starts += 1;
        match spawn_and_wait(spec, inner.starts, inner.size) {
            Ok(p) => {
                inner.proc = Some(p);
                inner.hung = false;
                inner.wanted = true;
                return;
            }
            Err(StartError::Bind(msg)) if Instant::now() < deadline => {
                eprintln!("rtsp_camera restart: port {} busy, retrying: {msg}", spec.port);
                thread::sleep(Duration::from_millis(200));
            }
            Err(StartError::Bind(msg)) => panic!("rtsp_camera restart: port {} stayed busy: {msg}", spec.port),
        }
    }
}

fn keeper(spec: Spec, inner: Arc<Mutex<Inner>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(250));
        let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
        if stop.load(Ordering::Relaxed) || !g.wanted || g.hung {
            continue;
        }
        let Some(status) = g.proc.as_mut().and_then(|p| p.try_wait()) else { continue };
        let log = std::fs::read_to_string(spec.log_path(g.starts)).unwrap_or_default();
        let tail: String =
            log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        eprintln!("rtsp_camera on port {} died on its own ({status}); restarting it. Last stderr:\n{tail}", spec.port);
        g.proc = None;
        g.revivals += 1;
        // A panic here would only end the keeper; the test then sees the camera down.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| respawn(&spec, &mut g, Duration::from_secs(10))));
        if r.is_err() {
            eprintln!("rtsp_camera on port {}: could not be restarted", spec.port);
            g.wanted = false;
        }
    }
}

impl RtspCamera {
    pub fn start(pattern: &str) -> RtspCamera {
        RtspCamera::start_with(CameraOpts::new(pattern))
    }

    pub fn start_with(opts: CameraOpts) -> RtspCamera {
        require_bin("ffprobe");
        if !std::path::Path::new(CAMERA_PYTHON).exists() {
            panic!(
                "{CAMERA_PYTHON} not found: run scripts/setup.sh (installs Debian packages python3 {CAMERA_PACKAGES})"
            );
        }
        let log_dir = tempfile::Builder::new().prefix("rtsp-cam-").tempdir().expect("tempdir");
        let mut spec = Spec { port: 0, opts, log_dir: log_dir.path().to_path_buf() };
        let mut inner = Inner { proc: None, hung: false, wanted: true, starts: 0, revivals: 0, size: None };
        // A port found free can be taken before the camera binds it: retry on a fresh one.
        for attempt in 1..=5 {
            spec.port = free_port();
            inner.starts += 1;
            match spawn_and_wait(&spec, inner.starts, None) {
                Ok(p) => {
                    inner.proc = Some(p);
                    break;
                }
                Err(StartError::Bind(msg)) if attempt < 5 => {
                    eprintln!("rtsp_camera: port {} busy, retrying: {msg}", spec.port)
                }
                Err(StartError::Bind(msg)) => panic!("rtsp_camera could not bind a port: {msg}"),
            }
        }
        let inner = Arc::new(Mutex::new(inner));
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = {
            let (spec, inner, stop) = (spec.clone(), inner.clone(), stop.clone());
            thread::spawn(move || keeper(spec, inner, stop))
        };
        RtspCamera { spec, inner, stop, keeper: Some(keeper), _log_dir: log_dir }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        self.spec.url()
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// Pid of the running simulator (0 if it is not running).
    pub fn pid(&self) -> u32 {
        self.lock().proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.lock().proc.as_mut().map(|p| p.is_running()).unwrap_or(false)
    }

    /// How many times the simulator died on its own and was restarted.
    pub fn revivals(&self) -> u32 {
        self.lock().revivals
    }

    /// SIGSTOP: the camera stops answering and sending, but its sockets stay open
    /// (clients see a stall, not a disconnect).
    pub fn hang(&mut self) {
        let mut g = self.lock();
        if let Some(p) = g.proc.as_mut() {
            p.signal(Signal::SIGSTOP);
            g.hung = true;
        }
    }

    /// SIGCONT after hang().
    pub fn resume(&mut self) {
        let mut g = self.lock();
        if let Some(p) = g.proc.as_mut() {
            p.signal(Signal::SIGCONT);
        }
        g.hung = false;
    }

    /// SIGKILL + wait: connections drop at once (RST/EOF), the port is closed. It stays down
    /// (the keeper leaves it) until `restart`.
    pub fn kill(&mut self) {
        let mut g = self.lock();
        g.wanted = false;
        if let Some(mut p) = g.proc.take() {
            p.kill(); // SIGCONT first, then SIGKILL, then reap
        }
        g.hung = false;
    }

    /// Kills the camera if it is running and starts it again on the same port (same URL);
    /// returns once it serves again.
    pub fn restart(&mut self) {
        self.kill();
        let spec = self.spec.clone();
        let mut g = self.lock();
        respawn(&spec, &mut g, Duration::from_secs(10));
    }

    /// Kills the camera and starts it again on the same URL at another picture size (`None`:
    /// the usual 320x180), as a camera reconfigured by its owner comes back.
    pub fn restart_at(&mut self, size: Option<(u32, u32)>) {
        self.kill();
        let spec = self.spec.clone();
        let mut g = self.lock();
        g.size = size;
        respawn(&spec, &mut g, Duration::from_secs(10));
    }

    /// Stderr of the latest run (GStreamer warnings, Python tracebacks).
    pub fn log(&self) -> String {
        let start = self.lock().starts;
        std::fs::read_to_string(self.spec.log_path(start)).unwrap_or_default()
    }
}

fn spawn_and_wait(spec: &Spec, start: u32, size: Option<(u32, u32)>) -> Result<ProcGuard, StartError> {
    let log_path = spec.log_path(start);
    let log = File::create(&log_path).expect("camera log file");
    let mut cmd = Command::new(CAMERA_PYTHON);
    cmd.arg(script())
        .args(["--port", &spec.port.to_string(), "--pattern", &spec.opts.pattern])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if !spec.opts.audio {
        cmd.arg("--no-audio");
    }
    if let Some((w, h)) = size {
        cmd.args(["--width", &w.to_string(), "--height", &h.to_string()]);
    }
    let mut proc = ProcGuard::spawn("rtsp_camera.py", &mut cmd);
    let stdout = proc.child_mut().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Drain stdout for the life of the process; report READY once.
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l.trim() == "READY" => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // stdout closed before READY: the script exited.
            let st = proc.wait_timeout(Duration::from_secs(5));
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if st.and_then(|s| s.code()) == Some(1) && log.contains("cannot listen") {
                return Err(StartError::Bind(log));
            }
            panic!(
                "rtsp_camera.py exited before READY ({st:?}); if gi/GstRtspServer or an element \
                 is missing, run scripts/setup.sh (installs Debian packages {CAMERA_PACKAGES}).\n\
                 stderr:\n{log}"
            );
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "rtsp_camera.py printed no READY within {READY_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        }
    }
    // READY means attached; make sure it really serves media (ffprobe sees the streams).
    let deadline = Instant::now() + SERVE_TIMEOUT;
    let url = spec.url();
    loop {
        let mut probe = Command::new("ffprobe");
        // A short analyzeduration halves the wait; only "it serves video" matters here.
        probe.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", "5000000"]);
        probe.args(["-analyzeduration", "500000"]);
        probe.args(["-show_streams", &url]);
        let out = run_with_timeout(&mut probe, Duration::from_secs(10));
        let ok =
            out.as_ref().map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("codec_type=video"));
        if ok == Some(true) {
            break;
        }
        if !proc.is_running() {
            panic!(
                "rtsp_camera.py died after READY; stderr:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            let why = out
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_else(|| "ffprobe timed out".into());
            panic!(
                "camera {url} not serving within {SERVE_TIMEOUT:?}: {why}\nstderr:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(proc)
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        {
            let mut g = self.lock();
            if g.hung {
                if let Some(p) = g.proc.as_mut() {
                    p.signal(Signal::SIGCONT);
                }
            }
        }
        self.kill();
    }
}
