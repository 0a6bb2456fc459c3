//! `TestAgent`: the real `vistter-agent` binary with a private data dir, its CLI, and its daemon
//! (`run`) as a guarded child. The daemon logs at debug level into a file the test can read
//! (the secrets test searches it).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::proc::ProcGuard;

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_vistter-agent");

pub struct TestAgent {
    dir: tempfile::TempDir,
    daemon: Option<ProcGuard>,
}

impl TestAgent {
    /// A fresh data dir and config (fast reconcile), no daemon yet.
    pub fn new() -> TestAgent {
        Self::with_config("")
    }

    /// Like `new`, with extra TOML appended to the config file.
    pub fn with_config(extra: &str) -> TestAgent {
        super::require_bin("ffmpeg");
        super::require_bin("ffprobe");
        let dir = tempfile::tempdir().expect("tempdir");
        // The status server binds a free port of its own (never the default 8787).
        let status = if extra.contains("[status]") {
            String::new()
        } else {
            format!("[status]\nlisten = \"127.0.0.1:{}\"\n", super::free_port())
        };
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "data_dir = \"{}\"\nreconcile_interval_ms = 200\n{extra}\n{status}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        TestAgent { dir, daemon: None }
    }

    /// The config file every command of this agent is given (`--config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Replaces the harness config (fast reconcile) with the production defaults plus `extra`
    /// TOML, keeping a free status port and adding a log file whose lines carry timestamps
    /// ([`TestAgent::timed_log`]); benchmarks measure the agent as deployed.
    pub fn use_production_config(&self, extra: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            format!(
                "data_dir = \"{}\"\n{extra}\n[status]\nlisten = \"127.0.0.1:{}\"\n[log]\nfile = \"{}\"\n",
                self.data_dir().display(),
                super::free_port(),
                self.timed_log_path().display()
            ),
        )
        .expect("write config.toml");
    }

    pub fn timed_log_path(&self) -> PathBuf {
        self.dir.path().join("agent-timed.log")
    }

    /// The log file of [`TestAgent::use_production_config`]: JSON lines with a `ts` field.
    pub fn timed_log(&self) -> String {
        std::fs::read_to_string(self.timed_log_path()).unwrap_or_default()
    }

    fn base(&self) -> Command {
        let mut c = Command::new(AGENT_BIN);
        c.arg("--config").arg(self.dir.path().join("config.toml"));
        c.env_remove("VISTTER_CONFIG");
        c
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = self.base().args(args).stdin(Stdio::null()).output().expect("run vistter-agent");
        out
    }

    /// Runs a CLI command whose standard output is a pipe that is closed before the command writes
    /// (a reader such as `head` that has gone away).
    pub fn cli_closed_stdout(&self, args: &[&str]) -> Output {
        let mut child = self
            .base()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vistter-agent");
        drop(child.stdout.take());
        child.wait_with_output().expect("wait for vistter-agent")
    }

    /// Runs a CLI command with `input` on its standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .base()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vistter-agent");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().expect("vistter-agent output")
    }

    /// Starts a CLI command without waiting for it (stdout and stderr piped).
    pub fn spawn_cli(&self, args: &[&str]) -> std::process::Child {
        self.base()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vistter-agent")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "vistter-agent {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Starts the daemon (`run`); its stderr is appended to the log file.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// `spawn` with extra environment variables for the daemon (test hooks).
    pub fn spawn_with_env(&mut self, vars: &[(&str, &str)]) {
        self.spawn_at("vistter_agent=debug", vars);
    }

    /// `spawn` at log level `level` (benchmarks run at the deployed default, `info`).
    pub fn spawn_at(&mut self, level: &str, vars: &[(&str, &str)]) {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = self.base();
        cmd.envs(vars.iter().copied());
        cmd.args(["--log-level", level, "run"]).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        self.daemon = Some(ProcGuard::spawn("vistter-agent run", &mut cmd));
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(ProcGuard::pid)
    }

    /// SIGKILL the daemon (its FFmpeg children are left behind, as after a crash).
    pub fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERM the daemon and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.signal(Signal::SIGTERM);
            assert!(d.wait_timeout(Duration::from_secs(20)).is_some(), "agent did not stop on SIGTERM");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `stream status ID --json`: `{stream, status, events}`.
    pub fn status(&self, id: &str) -> Value {
        let out = self.ok(&["stream", "status", id, "--json"]);
        let v: Value = serde_json::from_str(&out).expect("status json");
        v[0].clone()
    }

    pub fn state(&self, id: &str) -> String {
        self.status(id)["stream"]["state"].as_str().unwrap_or("").to_string()
    }

    /// Polls until `pred(status)` holds; returns the elapsed time, or panics with the last status.
    pub fn wait_for(&self, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.status(id);
            if pred(&s) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; status: {s:#}\nlog tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the stream is live with every output running.
    pub fn wait_live(&self, id: &str, timeout: Duration) -> Duration {
        self.wait_for(id, timeout, "stream live with all outputs running", |s| {
            s["stream"]["state"] == "live"
                && s["status"]["outputs"]
                    .as_array()
                    .is_some_and(|o| !o.is_empty() && o.iter().all(|o| o["phase"] == "running"))
        })
    }

    /// Pids of the FFmpeg processes the daemon reports for a stream (ingest first).
    pub fn ffmpeg_pids(&self, id: &str) -> Vec<u32> {
        let s = self.status(id);
        let mut v: Vec<u32> = s["status"]["ingest"]["pid"].as_u64().map(|p| p as u32).into_iter().collect();
        for o in s["status"]["outputs"].as_array().into_iter().flatten() {
            if let Some(p) = o["pid"].as_u64() {
                v.push(p as u32);
            }
        }
        v
    }

    /// Adds a camera, destinations (custom RTMP, one per ingest URL, key `key_i`), and a stream.
    pub fn relay_setup(&self, stream: &str, camera_url: &str, ingests: &[(String, String)]) {
        self.ok(&["camera", "add", "cam1", "--url", camera_url]);
        let mut args = vec!["stream".to_string(), "start".into(), stream.into(), "--camera".into(), "cam1".into()];
        for (i, (url, key)) in ingests.iter().enumerate() {
            let id = format!("d{}", i + 1);
            self.ok(&["destination", "add", &id, "--platform", "custom", "--url", url, "--key", key]);
            args.push("--destination".into());
            args.push(id);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }
}

impl TestAgent {
    /// `program status --json` of one program (Null while it is not running or not yet publishing).
    pub fn program(&self, id: &str) -> Value {
        let out = self.cli(&["program", "status", "--json", "--program", id]);
        if !out.status.success() {
            return Value::Null;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0].clone()
    }

    /// Starts a small test program (320x180, 25 fps) once the daemon's socket answers, and waits
    /// until the encoder and every destination run.
    pub fn start_program(&self, cameras: &[&str], destinations: &[&str]) {
        self.start_program_fps(cameras, destinations, 25)
    }

    /// `start_program` at another frame rate.
    pub fn start_program_fps(&self, cameras: &[&str], destinations: &[&str], fps: u32) {
        let fps = fps.to_string();
        let mut args = vec!["program", "start", "--size", "320x180", "--fps", &fps, "--bitrate", "400"];
        for c in cameras {
            args.extend(["--camera", c]);
        }
        for d in destinations {
            args.extend(["--destination", d]);
        }
        let start = Instant::now();
        loop {
            let out = self.cli(&args);
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "program start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_program(Duration::from_secs(30), "program live", |p| {
            p["encoder"]["phase"] == "running"
                && p["outputs"].as_array().is_some_and(|o| o.iter().all(|o| o["phase"] == "running"))
        });
    }

    pub fn wait_program(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let p = self.program("main");
            if !p.is_null() && pred(&p) {
                return p;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; program: {p:#}\nlog tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl TestAgent {
    /// `timeline status --json`: `Ok(None)` when the daemon answers that no show runs (exit 3, not
    /// found); `Err` when there was no such answer (daemon not up, socket gone, any other failure).
    pub fn try_show(&self) -> Result<Option<Value>, String> {
        let out = self.cli(&["timeline", "status", "--json"]);
        match out.status.code() {
            Some(0) => serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
                format!("unreadable `timeline status --json` ({e}): {}", String::from_utf8_lossy(&out.stdout))
            }),
            Some(3) => Ok(None),
            code => Err(format!(
                "`timeline status` got no answer from the daemon (exit {code:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// `timeline status --json`, Null when the daemon answers that no show runs. Panics when the
    /// daemon cannot be asked: a check on "no show" must not pass because nobody answered.
    pub fn show(&self) -> Value {
        match self.try_show() {
            Ok(v) => v.unwrap_or(Value::Null),
            Err(e) => panic!("{e}\nlog:\n{}", tail(&self.log(), 40)),
        }
    }

    /// Polls until a show runs and `pred` holds. A daemon that does not answer (yet) is retried;
    /// at the deadline the panic says what was last seen or why nothing answered.
    pub fn wait_show(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let last = match self.try_show() {
                Ok(Some(s)) if pred(&s) => return s,
                Ok(Some(s)) => format!("{s:#}"),
                Ok(None) => "no show is running".to_string(),
                Err(e) => e,
            };
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last: {last}\nlog:\n{}",
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until the daemon answers on its socket; panics with the log if it does not.
    pub fn wait_up(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.try_show() {
                Ok(_) => return,
                Err(e) => assert!(
                    start.elapsed() < timeout,
                    "the daemon did not answer within {timeout:?}: {e}\nlog:\n{}",
                    tail(&self.log(), 40)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The event table (`events --json`), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let out = self.ok(&["events", "--json", "--limit", "100000"]);
        match serde_json::from_str::<Value>(&out) {
            Ok(Value::Array(v)) => v,
            other => panic!("`events --json` is not a list: {other:?}"),
        }
    }

    /// Polls the event table until an event matches `pred`; returns it, or panics with the table.
    pub fn wait_event(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let events = self.events();
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "no event {what} within {timeout:?}; events:\n{}\nlog:\n{}",
                event_lines(&events),
                tail(&self.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a CLI command, retried until the daemon's socket answers (20 s).
    pub fn ok_when_up(&self, args: &[&str]) {
        let start = Instant::now();
        loop {
            let out = self.cli(args);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{args:?} failed: {}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Events as readable lines (type, subject, scope, detail) for assertion messages.
pub fn event_lines(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["event_type"].as_str().unwrap_or("?"),
                e["subject"].as_str().unwrap_or("-"),
                e["scope"].as_str().unwrap_or("-"),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // A failed test shows what the daemon was doing (and whether it was still alive): a
        // failure seen once under load is otherwise lost with the temporary directory.
        if std::thread::panicking() {
            let alive = self.daemon.as_mut().map(|d| match d.try_wait() {
                None => "running".to_string(),
                Some(status) => format!("exited: {status}"),
            });
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(80);
            eprintln!(
                "--- the test failed; daemon {}; its log, last {} lines ---",
                alive.as_deref().unwrap_or("not started"),
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
            eprintln!("--- end of the daemon's log ---");
        }
        if let Some(mut d) = self.daemon.take() {
            d.signal(Signal::SIGTERM);
            if d.wait_timeout(Duration::from_secs(15)).is_none() {
                d.kill();
            }
        }
        // Whatever a killed daemon left behind: its registry names the pids (and start times).
        reap_registry(&self.data_dir().join("run").join("ffmpeg"));
    }
}

fn reap_registry(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let (Some(pid), Some(ticks)) = (v["pid"].as_u64(), v["start_ticks"].as_u64()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let same =
            stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(19)).and_then(|t| t.parse::<u64>().ok())
                == Some(ticks);
        if same {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
