//! Child-process guard: every process a test starts is owned by one of these and is killed
//! by pid (SIGCONT, then SIGKILL, then reaped) when the guard is dropped.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Owns a spawned child. Drop = SIGCONT + SIGKILL by pid + wait.
pub struct ProcGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl ProcGuard {
    /// Spawns `cmd` (stdin is set to null unless the caller configured it). Panics with the
    /// program name if it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> ProcGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        ProcGuard { name: name.to_string(), child, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` to the child if it has not been reaped yet (a reaped pid may be reused,
    /// so it is never signalled).
    pub fn signal(&mut self, sig: Signal) {
        if self.try_wait().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
        }
    }

    /// Non-blocking: the exit status if the child has exited (and reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGCONT (in case it is stopped), SIGKILL, and reap. Idempotent.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            return st;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
        let st = self.child.wait().unwrap_or_else(|e| panic!("waiting for {} (pid {}): {e}", self.name, pid));
        self.status = Some(st);
        st
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_timeout(grace) {
            Some(st) => st,
            None => self.kill(),
        }
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion with captured stdout/stderr, killing it (by pid) if it takes longer
/// than `timeout`. Returns None on timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let mut guard = ProcGuard::spawn(&prog, cmd);
    let mut out = guard.child_mut().stdout.take().unwrap();
    let mut err = guard.child_mut().stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = guard.wait_timeout(timeout);
    if status.is_none() {
        guard.kill();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    status.map(|status| Output { status, stdout, stderr })
}

/// `ffmpeg -nostdin -hide_banner -loglevel error` — add the rest of the arguments.
pub fn ffmpeg_cmd() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-hide_banner", "-loglevel", "error"]).stdin(Stdio::null());
    c
}

/// `-rtsp_transport tcp` for rtsp:// inputs, nothing otherwise.
pub(crate) fn input_opts(input: &OsStr) -> Vec<&'static str> {
    if input.to_string_lossy().starts_with("rtsp://") {
        vec!["-rtsp_transport", "tcp", "-timeout", "5000000"]
    } else {
        vec![]
    }
}
