//! RTMP ingest guard: nginx + libnginx-mod-rtmp in a private temp prefix, recording every
//! publish session to its own FLV file.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::proc::ProcGuard;
use super::{free_port, require_bin};

pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// nginx-rtmp at rtmp://127.0.0.1:PORT/live (`live on; record all; record_unique on`).
/// Publishing to `url()/KEY` records to `KEY-<unix seconds>.flv` in `record_dir()`.
/// Drop stops it.
pub struct RtmpIngest {
    port: u16,
    /// nginx's HTTP port, serving the `on_publish` refusal for the `locked` application.
    http_port: u16,
    dir: tempfile::TempDir,
    proc: Option<ProcGuard>,
    /// The `live` application refuses every stream key (`on_publish` answers 403).
    refusing: bool,
}

enum StartError {
    Bind(String),
}

impl RtmpIngest {
    pub fn start() -> RtmpIngest {
        require_bin("nginx");
        if !Path::new(RTMP_MODULE).exists() {
            panic!("{RTMP_MODULE} not found: run scripts/setup.sh (installs Debian package libnginx-mod-rtmp)");
        }
        let dir = tempfile::Builder::new().prefix("rtmp-ingest-").tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("rec")).expect("record dir");
        // nginx runs as a single process (master_process off) as the current user, so no
        // worker-user permission games are needed; keep the dirs open anyway in case.
        set_mode(dir.path(), 0o755);
        set_mode(&dir.path().join("rec"), 0o777);
        let mut ingest = RtmpIngest { port: 0, http_port: 0, dir, proc: None, refusing: false };
        for attempt in 1..=5 {
            ingest.port = free_port();
            ingest.http_port = free_port();
            match ingest.spawn_and_wait() {
                Ok(()) => return ingest,
                Err(StartError::Bind(msg)) if attempt < 5 => {
                    eprintln!("rtmp ingest: port {} busy, retrying: {msg}", ingest.port)
                }
                Err(StartError::Bind(msg)) => panic!("rtmp ingest could not bind a port: {msg}"),
            }
        }
        unreachable!()
    }

    /// rtmp://127.0.0.1:PORT/live — append "/STREAM_KEY" to publish.
    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }

    /// rtmp://127.0.0.1:PORT/locked: an application whose `on_publish` check refuses every stream
    /// key, as a platform does with a wrong key.
    pub fn refusing_url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/locked", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().map(|p| p.is_running()).unwrap_or(false)
    }

    pub fn record_dir(&self) -> PathBuf {
        self.dir.path().join("rec")
    }

    /// nginx's error.log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Stops nginx: SIGTERM (exits at once, publishers are cut, recordings closed), SIGKILL to
    /// its process group after 3 s. Returns once the port refuses connections. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
            if p.wait_timeout(Duration::from_secs(3)).is_none() {
                // Not reaped yet, so its pid (= process group id) cannot have been reused.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(p.pid() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                p.kill();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.accepts() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (if running) and starts again on the same port with the same record dir.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::Bind(msg)) if Instant::now() < deadline => {
                    eprintln!("rtmp ingest restart: port {} busy, retrying: {msg}", self.port);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(StartError::Bind(msg)) => {
                    panic!("rtmp ingest restart: port {} stayed busy: {msg}", self.port)
                }
            }
        }
    }

    /// Restarts it with the `live` application refusing every stream key (`refuse`) or accepting
    /// them again: a platform that stops accepting the key, then takes it back.
    pub fn restart_refusing(&mut self, refuse: bool) {
        self.refusing = refuse;
        self.restart();
    }

    /// Recorded FLV files, oldest first (one per publish session). A file appears as soon as a
    /// publish starts and grows while it lasts; after stop() every file is closed.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<(Option<SystemTime>, u64, PathBuf)> = std::fs::read_dir(self.record_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().map(|x| x == "flv").unwrap_or(false))
                    .map(|p| {
                        let created = std::fs::metadata(&p).and_then(|m| m.created()).ok();
                        (created, unique_suffix(&p), p)
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Birth time when the filesystem has it, else the record_unique timestamp, then name.
        files.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        files.into_iter().map(|f| f.2).collect()
    }

    /// Waits until the wall clock is past the second of the newest recording's name: nginx names
    /// a recording KEY-<unix seconds>, so a publish of the same key within that second would
    /// truncate the newest file instead of making a new one.
    pub fn wait_for_a_fresh_file_name(&self) {
        let newest = self.recordings().iter().map(|p| unique_suffix(p)).max().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        while unix_now() <= newest && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` recordings exist; panics (with the listing and nginx's log)
    /// after `timeout`.
    pub fn wait_for_recordings(&self, n: usize, timeout: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.recordings();
            if r.len() >= n {
                return r;
            }
            if Instant::now() >= deadline {
                panic!("expected {n} recordings within {timeout:?}, have {r:?}\nnginx error.log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn accepts(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path().display();
        let conf = format!(
            "load_module {RTMP_MODULE};\n\
             daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{http_port}; location /refuse {{ return 403; }} }} }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size 4096;\n\
             \x20   application locked {{ live on; on_publish http://127.0.0.1:{http_port}/refuse; }}\n\
             \x20   application live {{\n      live on;\n      record all;\n      record_path {d}/rec;\n\
             \x20     record_unique on;\n{refuse}    }}\n  }}\n}}\n",
            port = self.port,
            http_port = self.http_port,
            refuse = if self.refusing {
                format!("      on_publish http://127.0.0.1:{}/refuse;\n", self.http_port)
            } else {
                String::new()
            }
        );
        let path = self.dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        path
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let conf = self.write_config();
        let log_len = self.log().len();
        let d = self.dir.path();
        let pid_file = d.join("nginx.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = Command::new("nginx");
        // -e: never touch /var/log/nginx; -p/-c: private prefix. Own process group so stop()
        // can reach anything it forks.
        cmd.arg("-e")
            .arg(d.join("error.log"))
            .arg("-p")
            .arg(format!("{}/", d.display()))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut proc = ProcGuard::spawn("nginx", &mut cmd);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = proc.try_wait() {
                let log = self.log();
                let new = log.get(log_len..).unwrap_or(&log).to_string();
                if new.contains("Address already in use") {
                    return Err(StartError::Bind(new));
                }
                panic!("nginx exited at start ({st}); error.log:\n{new}");
            }
            // nginx writes its pid file only after binding every listen socket, so this cannot
            // be fooled by someone else listening on the port.
            let pid_written =
                std::fs::read_to_string(&pid_file).map(|s| s.trim() == proc.pid().to_string()).unwrap_or(false);
            if pid_written && self.accepts() {
                self.proc = Some(proc);
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!("nginx not accepting on {} within {READY_TIMEOUT:?}; error.log:\n{}", self.port, self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RtmpIngest {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// The number record_unique appends ("key-1716912345.flv" → 1716912345), 0 if none.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unique_suffix(p: &Path) -> u64 {
    p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.rsplit('-').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}
