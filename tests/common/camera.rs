//! RTSP camera simulator guard (tests/support/rtsp_camera.py under Debian's /usr/bin/python3).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
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

/// A live 320x180@25 H.264 (+AAC) RTSP camera at rtsp://127.0.0.1:PORT/cam.
/// Drop kills it by pid.
pub struct RtspCamera {
    port: u16,
    opts: CameraOpts,
    proc: Option<ProcGuard>,
    hung: bool,
    log_dir: tempfile::TempDir,
    starts: u32,
}

enum StartError {
    /// Exited before READY with status 1: the port could not be bound.
    Bind(String),
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
        let mut cam = RtspCamera { port: 0, opts, proc: None, hung: false, log_dir, starts: 0 };
        // A port found free can be taken before the camera binds it: retry on a fresh one.
        for attempt in 1..=5 {
            cam.port = free_port();
            match cam.spawn_and_wait() {
                Ok(()) => return cam,
                Err(StartError::Bind(msg)) if attempt < 5 => {
                    eprintln!("rtsp_camera: port {} busy, retrying: {msg}", cam.port)
                }
                Err(StartError::Bind(msg)) => panic!("rtsp_camera could not bind a port: {msg}"),
            }
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pid of the running simulator (0 if it is not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().map(|p| p.is_running()).unwrap_or(false)
    }

    /// SIGSTOP: the camera stops answering and sending, but its sockets stay open
    /// (clients see a stall, not a disconnect).
    pub fn hang(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.signal(Signal::SIGSTOP);
            self.hung = true;
        }
    }

    /// SIGCONT after hang().
    pub fn resume(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.signal(Signal::SIGCONT);
        }
        self.hung = false;
    }

    /// SIGKILL + wait: connections drop at once (RST/EOF), the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill(); // SIGCONT first, then SIGKILL, then reap
        }
        self.hung = false;
    }

    /// Kills the camera if it is running and starts it again on the same port (same URL);
    /// returns once it serves again.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::Bind(msg)) if Instant::now() < deadline => {
                    eprintln!("rtsp_camera restart: port {} busy, retrying: {msg}", self.port);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(StartError::Bind(msg)) => {
                    panic!("rtsp_camera restart: port {} stayed busy: {msg}", self.port)
                }
            }
        }
    }

    /// Stderr of the latest run (GStreamer warnings, Python tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join(format!("camera-{}.log", self.starts))
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py")
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.starts += 1;
        let log = File::create(self.log_path()).expect("camera log file");
        let mut cmd = Command::new(CAMERA_PYTHON);
        cmd.arg(Self::script())
            .args(["--port", &self.port.to_string(), "--pattern", &self.opts.pattern])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if !self.opts.audio {
            cmd.arg("--no-audio");
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
                let log = self.log();
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
                panic!("rtsp_camera.py printed no READY within {READY_TIMEOUT:?}; stderr:\n{}", self.log())
            }
        }
        // READY means attached; make sure it really serves media (ffprobe sees the streams).
        let deadline = Instant::now() + SERVE_TIMEOUT;
        let url = self.url();
        loop {
            let mut probe = Command::new("ffprobe");
            // A short analyzeduration halves the wait; only "it serves video" matters here.
            probe.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", "5000000"]);
            probe.args(["-analyzeduration", "500000"]);
            probe.args(["-show_streams", &url]);
            let out = run_with_timeout(&mut probe, Duration::from_secs(10));
            let ok = out
                .as_ref()
                .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("codec_type=video"));
            if ok == Some(true) {
                break;
            }
            if !proc.is_running() {
                panic!("rtsp_camera.py died after READY; stderr:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                let why = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_else(|| "ffprobe timed out".into());
                panic!("camera {url} not serving within {SERVE_TIMEOUT:?}: {why}\nstderr:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
        self.proc = Some(proc);
        self.hung = false;
        Ok(())
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        if self.hung {
            if let Some(p) = self.proc.as_mut() {
                p.signal(Signal::SIGCONT);
            }
        }
        self.kill();
    }
}
