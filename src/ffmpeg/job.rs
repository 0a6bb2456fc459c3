//! The FFmpeg supervisor: one job = one handle + one task that owns the child.
//!
//! The task is the only authority over its process's life (nothing else spawns, signals or reaps it): it prepares the arguments
//! (which may probe a camera), spawns FFmpeg in its own process group, registers the pid on disk,
//! drains stderr into a bounded ring, reads `-progress` from fd 3, and decides health from progress,
//! never from "the process exists" (a hung FFmpeg still exists). Any exit of a live job is a failure, exit 0 included
//! (a live stream never ends on its own). Failures are retried after a full-jitter backoff; after `degraded_after` consecutive
//! failures the job reports `degraded` and keeps retrying; permanent failures are reported and retried
//! only at the slowest pace. Stopping escalates SIGINT → grace → SIGTERM → SIGKILL (SIGINT lets FFmpeg close its outputs cleanly), and
//! a guard kills the whole group if the task itself is dropped.
//!
//! Pipes to the child's stdin/stdout are handed to the job's owner on every (re)start through the
//! `io` channel, tagged with a generation number.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use futures_util::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rand::SeedableRng;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::argv::Argv;
use super::backoff::{Backoff, BackoffPolicy};
use super::classify::{classify, FailureKind};
pub use super::kind::JobKind;
use super::progress::{Progress, ProgressParser};
use super::registry::Registry;
use super::ring::StderrRing;

/// Builds the argument list for each start. May do I/O (probe a camera) and may fail.
pub trait ArgSource: Send + Sync + 'static {
    fn prepare(&self) -> BoxFuture<'static, Result<Argv, PrepareError>>;
}

impl ArgSource for Argv {
    fn prepare(&self) -> BoxFuture<'static, Result<Argv, PrepareError>> {
        let a = self.clone();
        Box::pin(async move { Ok(a) })
    }
}

#[derive(Debug, Clone)]
pub struct PrepareError {
    pub message: String,
    pub permanent: bool,
}

/// Everything the supervisor needs to run one job.
pub struct JobSpec {
    /// Shown in logs and status and recorded in the pid registry: `relay:r1/ingest`. Media jobs
    /// take it from `kind` (`MediaEnv::job`).
    pub name: String,
    /// What the job is for; its events carry it, and the event log is built from it.
    pub kind: JobKind,
    pub program: PathBuf,
    pub args: Arc<dyn ArgSource>,
    pub pipe_stdin: bool,
    pub pipe_stdout: bool,
    /// No `out_time` advance for this long (once running) = stalled → restart.
    pub stale_after: Duration,
    /// Allowance for the first progress after a start (slow cameras, TLS handshakes).
    pub first_progress_timeout: Duration,
    /// For jobs fed by the agent (pushers): bytes offered to the job. While nothing is offered, a
    /// silent progress is not a stall (the source is down, not this process).
    pub input_activity: Option<Arc<AtomicU64>>,
    pub backoff: BackoffPolicy,
    pub degraded_after: u32,
    pub stop_grace: Duration,
    pub stderr_lines: usize,
    pub io: Option<mpsc::Sender<ChildIo>>,
    pub events: Option<mpsc::Sender<JobEvent>>,
    pub registry: Option<Registry>,
    /// Extra pipes beyond stdin/stdout/stderr and the progress fd 3 (e.g. PCM audio on fd 4).
    pub extra_fds: Vec<ExtraFd>,
    /// Environment variables for the child, unless the agent's own environment sets them.
    pub env: Vec<(&'static str, &'static str)>,
}

/// An extra pipe: which fd the child sees, and which way data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraFd {
    pub child_fd: i32,
    /// true: the child writes (`pipe:N` as an output); false: the child reads (`pipe:N` as an input).
    pub child_writes: bool,
}

/// The parent's end of an extra pipe.
#[derive(Debug)]
pub enum ExtraPipe {
    /// Read what the child writes.
    Reader(tokio::net::unix::pipe::Receiver),
    /// Write what the child reads.
    Writer(tokio::net::unix::pipe::Sender),
}

/// Big pipes for raw video: a 720p frame is 1.4 MB; the default 64 KiB pipe means ~20 wake-ups per
/// frame. Best effort (the kernel caps it at /proc/sys/fs/pipe-max-size).
///
/// Without `CAP_SYS_RESOURCE` (a service user, most containers) a pipe cannot grow past
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default) and asking for more fails outright, which
/// left the pipe at 64 KiB: a raw 720p frame then crossed it in about 22 reads and 22 wake-ups.
/// So the request falls back to the largest size allowed. Returns the pipe's size.
pub fn enlarge_pipe(fd: std::os::fd::BorrowedFd<'_>, bytes: i32) -> Option<usize> {
    use nix::fcntl::{fcntl, FcntlArg};
    if let Ok(n) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(bytes)) {
        return usize::try_from(n).ok();
    }
    let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok()?.trim().parse().ok()?;
    let n = fcntl(fd, FcntlArg::F_SETPIPE_SZ(bytes.min(max))).ok()?;
    usize::try_from(n).ok()
}

/// The pipes of one generation of the child, handed to the job's owner.
#[derive(Debug)]
pub struct ChildIo {
    pub generation: u64,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    /// In the order of `JobSpec::extra_fds`.
    pub extra: Vec<ExtraPipe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Preparing or spawned, no progress yet.
    Starting,
    /// Progress is advancing.
    Running,
    /// Waiting before the next start after a failure.
    Backoff,
    Stopped,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct JobStatus {
    pub phase: Phase,
    pub pid: Option<u32>,
    /// How many times a process was started.
    pub starts: u64,
    pub consecutive_failures: u32,
    pub degraded: bool,
    /// Set while the last failure needs a human (bad key, bad password, bad URL).
    pub permanent_error: Option<String>,
    pub last_error: Option<String>,
    /// While in backoff: the delay chosen before the next start.
    pub retry_in_ms: Option<u64>,
    pub progress: Option<ProgressSummary>,
}

impl JobStatus {
    /// A job (or a native publisher) that has not started yet.
    pub fn starting() -> JobStatus {
        JobStatus {
            phase: Phase::Starting,
            pid: None,
            starts: 0,
            consecutive_failures: 0,
            degraded: false,
            permanent_error: None,
            last_error: None,
            retry_in_ms: None,
            progress: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ProgressSummary {
    pub out_time_us: Option<i64>,
    pub frame: Option<u64>,
    pub speed: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub drop_frames: Option<u64>,
}

impl From<&Progress> for ProgressSummary {
    fn from(p: &Progress) -> Self {
        ProgressSummary {
            out_time_us: p.out_time_us,
            frame: p.frame,
            speed: p.speed,
            bitrate_kbps: p.bitrate_kbps,
            drop_frames: p.drop_frames,
        }
    }
}

/// What a job reports. `job` is its name (for logs); `kind` says what it is about, and is what the
/// event log is built from.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Started {
        job: String,
        kind: JobKind,
        pid: u32,
        start: u64,
    },
    /// The first progress of a start: the process really works.
    Healthy {
        job: String,
        kind: JobKind,
        pid: u32,
    },
    Failed {
        job: String,
        kind: JobKind,
        reason: String,
        permanent: bool,
        retry_in: Duration,
        failures: u32,
    },
    Degraded {
        job: String,
        kind: JobKind,
        failures: u32,
    },
    Recovered {
        job: String,
        kind: JobKind,
    },
    Stopped {
        job: String,
        kind: JobKind,
    },
    /// Something a job's owner reports (a cut, a fallback) through the same event path; `job` is
    /// the subject as the owner names it (`program:show`, `timeline:t1`).
    Note {
        job: String,
        event_type: String,
        detail: String,
        warning: bool,
    },
}

/// Input silence longer than this is a pause of the source, not a hiccup.
const INPUT_PAUSE: Duration = Duration::from_millis(1500);

enum Cmd {
    Stop(oneshot::Sender<()>),
}

/// The handle of a running job. Dropping it stops the job (the task sees its command channel close).
pub struct Job {
    name: String,
    cmd: mpsc::Sender<Cmd>,
    status: watch::Receiver<JobStatus>,
    ring: Arc<Mutex<StderrRing>>,
    task: tokio::task::JoinHandle<()>,
}

impl Job {
    pub fn spawn(spec: JobSpec) -> Job {
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (status_tx, status_rx) = watch::channel(JobStatus::starting());
        let ring = Arc::new(Mutex::new(StderrRing::new(spec.stderr_lines, Default::default())));
        super::ring::register(&spec.name, &ring);
        let name = spec.name.clone();
        // Everything logged on the job's behalf names it (see `crate::logging`).
        let span = tracing::error_span!("ffmpeg", job = %name);
        let task = tokio::spawn(tracing::Instrument::instrument(
            Runner { spec, cmd: cmd_rx, status: status_tx, ring: ring.clone() }.run(),
            span,
        ));
        Job { name, cmd: cmd_tx, status: status_rx, ring, task }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<JobStatus> {
        self.status.clone()
    }

    /// The last stderr lines (redacted), oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.ring.lock().expect("ring lock").lines()
    }

    /// Stops the process (SIGINT → grace → SIGTERM → SIGKILL) and waits for the task to finish.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

enum Outcome {
    Stopped,
    /// `refused`: the process never made progress and ended on an I/O error after connecting.
    Failed {
        reason: String,
        permanent: bool,
        refused: bool,
    },
}

/// An ingest that refuses a stream key usually just closes the connection: FFmpeg reports only an
/// I/O error, like a network drop. The same thing three times in a row, before any progress, is
/// reported as a refusal.
const REFUSALS_FOR_PERMANENT: u32 = 3;

struct Runner {
    spec: JobSpec,
    cmd: mpsc::Receiver<Cmd>,
    status: watch::Sender<JobStatus>,
    ring: Arc<Mutex<StderrRing>>,
}

/// Kills the child's whole process group if dropped while armed (task aborted, runtime shut down).
struct GroupGuard {
    pgid: Option<Pid>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pg) = self.pgid.take() {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

impl Runner {
    fn event(&self, e: JobEvent) {
        if let Some(tx) = &self.spec.events {
            // Never block the supervisor on a slow event consumer.
            let _ = tx.try_send(e);
        }
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(self.spec.backoff);
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut stop_reply: Option<oneshot::Sender<()>> = None;
        let mut refusals = 0u32;
        loop {
            self.status.send_modify(|s| {
                s.phase = Phase::Starting;
                s.retry_in_ms = None;
            });
            let started = Instant::now();
            let prepared = tokio::select! {
                biased;
                cmd = self.cmd.recv() => { stop_reply = take_stop(cmd); break; }
                p = self.spec.args.prepare() => p,
            };
            let outcome = match prepared {
                Err(e) => Outcome::Failed { reason: e.message, permanent: e.permanent, refused: false },
                Ok(argv) => self.run_once(argv, &mut backoff, &mut stop_reply).await,
            };
            let (mut reason, mut permanent) = match outcome {
                Outcome::Stopped => break,
                Outcome::Failed { reason, permanent, refused } => {
                    refusals = if refused { refusals + 1 } else { 0 };
                    (reason, permanent)
                }
            };
            if refusals >= REFUSALS_FOR_PERMANENT && !permanent {
                permanent = true;
                reason = format!(
                    "the peer accepted the connection but closed it at once, {refusals} times in a row \
                     (an ingest does this when it refuses the stream key): {reason}"
                );
            }
            let ran = started.elapsed();
            let mut delay = backoff.on_failure(ran, &mut rng);
            if permanent {
                // A human must fix this; retry only at the slowest pace so a fix is picked up.
                delay = self.spec.backoff.max();
            }
            let failures = backoff.failures();
            let was_degraded = self.status.borrow().degraded;
            let degraded = failures >= self.spec.degraded_after;
            tracing::warn!(job = %self.spec.name, %reason, permanent, failures,
                retry_in_ms = delay.as_millis() as u64, "ffmpeg job failed");
            self.status.send_modify(|s| {
                s.phase = Phase::Backoff;
                s.pid = None;
                s.consecutive_failures = failures;
                s.degraded = degraded;
                s.last_error = Some(reason.clone());
                s.permanent_error = permanent.then(|| reason.clone());
                s.retry_in_ms = Some(delay.as_millis() as u64);
            });
            self.event(JobEvent::Failed {
                job: self.spec.name.clone(),
                kind: self.spec.kind.clone(),
                reason,
                permanent,
                retry_in: delay,
                failures,
            });
            if degraded && !was_degraded {
                self.event(JobEvent::Degraded { job: self.spec.name.clone(), kind: self.spec.kind.clone(), failures });
            }
            tokio::select! {
                biased;
                cmd = self.cmd.recv() => { stop_reply = take_stop(cmd); break; }
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.status.send_modify(|s| {
            s.phase = Phase::Stopped;
            s.pid = None;
            s.retry_in_ms = None;
        });
        self.event(JobEvent::Stopped { job: self.spec.name.clone(), kind: self.spec.kind.clone() });
        super::ring::retire(&self.spec.name, &self.ring);
        if let Some(r) = stop_reply {
            let _ = r.send(());
        }
    }

    /// Runs one process until it fails or a stop is requested.
    async fn run_once(
        &mut self,
        argv: Argv,
        backoff: &mut Backoff,
        stop_reply: &mut Option<oneshot::Sender<()>>,
    ) -> Outcome {
        let name = self.spec.name.clone();
        let redactor = argv.redactor();
        {
            let mut ring = self.ring.lock().expect("ring lock");
            *ring = StderrRing::new(self.spec.stderr_lines, redactor);
        }
        let (prog_read, prog_write) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("cannot create a pipe: {e}"),
                    permanent: false,
                    refused: false,
                }
            }
        };
        let mut cmd = Command::new(&self.spec.program);
        // The agent's own environment wins over the job's defaults.
        for (k, v) in &self.spec.env {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        cmd.args(argv.expose())
            .stdin(if self.spec.pipe_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if self.spec.pipe_stdout { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut mappings = vec![FdMapping { parent_fd: OwnedFd::from(prog_write), child_fd: 3 }];
        let mut parent_ends: Vec<(bool, OwnedFd)> = Vec::new();
        for x in &self.spec.extra_fds {
            let (r, w) = match std::io::pipe() {
                Ok(p) => p,
                Err(e) => {
                    return Outcome::Failed {
                        reason: format!("cannot create a pipe: {e}"),
                        permanent: false,
                        refused: false,
                    }
                }
            };
            let (child_end, parent_end) = if x.child_writes {
                (OwnedFd::from(w), OwnedFd::from(r))
            } else {
                (OwnedFd::from(r), OwnedFd::from(w))
            };
            mappings.push(FdMapping { parent_fd: child_end, child_fd: x.child_fd });
            parent_ends.push((x.child_writes, parent_end));
        }
        if let Err(e) = cmd.fd_mappings(mappings) {
            return Outcome::Failed { reason: format!("fd mapping: {e}"), permanent: true, refused: false };
        }
        tracing::debug!(job = %name, argv = %argv, "starting ffmpeg");
        let spawned = cmd.spawn();
        // Our copy of the progress pipe's write end must close, or we would never see EOF.
        drop(cmd);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let permanent = e.kind() == std::io::ErrorKind::NotFound;
                return Outcome::Failed {
                    reason: format!("cannot start {}: {e}", self.spec.program.display()),
                    permanent,
                    refused: false,
                };
            }
        };
        let pid = child.id().expect("a just-spawned child has a pid");
        let mut guard = GroupGuard { pgid: Some(Pid::from_raw(pid as i32)) };
        if let Some(reg) = &self.spec.registry {
            if let Err(e) = reg.register(pid, &name) {
                tracing::warn!(job = %name, "cannot record pid {pid} in the registry: {e}");
            }
        }
        let starts = self.status.borrow().starts + 1;
        self.status.send_modify(|s| {
            s.pid = Some(pid);
            s.starts = starts;
            s.progress = None;
        });
        self.event(JobEvent::Started { job: name.clone(), kind: self.spec.kind.clone(), pid, start: starts });

        // stderr → bounded ring, continuously.
        let stderr = child.stderr.take().expect("stderr piped");
        let ring = self.ring.clone();
        let job_name = name.clone();
        let mut stderr_task = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut stderr = stderr;
            let mut buf = vec![0u8; 4096];
            loop {
                match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let lines = ring.lock().expect("ring lock").feed(&buf[..n]);
                        for l in lines {
                            tracing::debug!(job = %job_name, "ffmpeg: {l}");
                        }
                    }
                }
            }
        }));
        // progress (fd 3) → channel.
        let (prog_tx, mut prog_rx) = mpsc::channel::<Progress>(16);
        let progress_task = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(prog_read)) {
            Ok(mut rx) => Some(tokio::spawn(async move {
                let mut parser = ProgressParser::new();
                let mut buf = vec![0u8; 2048];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            for p in parser.feed(&buf[..n]) {
                                if prog_tx.send(p).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            })),
            Err(e) => {
                tracing::warn!(job = %name, "cannot read progress: {e}");
                None
            }
        };
        // Hand the data pipes to the owner.
        if let Some(io) = &self.spec.io {
            let mut extra = Vec::new();
            for (child_writes, fd) in parent_ends {
                use std::os::fd::AsFd;
                enlarge_pipe(fd.as_fd(), 1 << 20);
                let pipe = if child_writes {
                    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map(ExtraPipe::Reader)
                } else {
                    tokio::net::unix::pipe::Sender::from_owned_fd(fd).map(ExtraPipe::Writer)
                };
                match pipe {
                    Ok(p) => extra.push(p),
                    Err(e) => tracing::warn!(job = %name, "extra pipe: {e}"),
                }
            }
            let child_io =
                ChildIo { generation: starts, stdin: child.stdin.take(), stdout: child.stdout.take(), extra };
            if io.try_send(child_io).is_err() {
                tracing::warn!(job = %name, "job owner is not taking pipes; the process will fail");
            }
        }

        let started = Instant::now();
        let mut last_out: Option<i64> = None;
        let mut last_advance = started;
        let mut got_progress = false;
        let mut healthy_reset_done = false;
        let mut last_activity = self.spec.input_activity.as_ref().map(|a| a.load(Ordering::Relaxed));
        let mut activity_at = started;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let outcome = loop {
            tokio::select! {
                biased;
                cmd = self.cmd.recv() => {
                    *stop_reply = take_stop(cmd);
                    let st = stop_child(&mut child, pid, self.spec.stop_grace).await;
                    tracing::info!(job = %name, pid, status = %st, "ffmpeg stopped");
                    break Outcome::Stopped;
                }
                st = child.wait() => {
                    let st = match st { Ok(s) => s.to_string(), Err(e) => e.to_string() };
                    // Let stderr drain so classification sees FFmpeg's last words.
                    let _ = tokio::time::timeout(Duration::from_millis(500), &mut stderr_task).await;
                    let tail = self.ring.lock().expect("ring lock").lines();
                    let last = super::classify::telling_line(&tail);
                    let (kind, reason) = match classify(&tail) {
                        FailureKind::Permanent { reason, line } => (true, format!("{reason} (ffmpeg {st}: {line})")),
                        FailureKind::Transient => (false, format!("ffmpeg exited ({st}){}", if last.is_empty() { String::new() } else { format!(": {last}") })),
                    };
                    let refused = !got_progress && last.contains("Input/output error");
                    break Outcome::Failed { reason, permanent: kind, refused };
                }
                Some(p) = prog_rx.recv() => {
                    if p.out_time_us.is_some() && p.out_time_us != last_out {
                        last_out = p.out_time_us;
                        last_advance = Instant::now();
                        if !got_progress {
                            got_progress = true;
                            self.status.send_modify(|s| { s.phase = Phase::Running; s.permanent_error = None; });
                            self.event(JobEvent::Healthy { job: name.clone(), kind: self.spec.kind.clone(), pid });
                        }
                    }
                    let summary = ProgressSummary::from(&p);
                    self.status.send_modify(|s| s.progress = Some(summary));
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    // Jobs fed by the agent: silence in, silence out is not a stall. A stall is input
                    // still arriving well after the output stopped advancing.
                    let mut input_after_output = true;
                    if let (Some(a), Some(last)) = (&self.spec.input_activity, last_activity.as_mut()) {
                        let v = a.load(Ordering::Relaxed);
                        if v != *last {
                            if now - activity_at > INPUT_PAUSE {
                                // Input resumes after a pause (source restarted): a fresh window.
                                last_advance = last_advance.max(now);
                            }
                            *last = v;
                            activity_at = now;
                        }
                        input_after_output = activity_at > last_advance + INPUT_PAUSE;
                    }
                    let limit = if got_progress { self.spec.stale_after } else { self.spec.first_progress_timeout };
                    if now - last_advance > limit && input_after_output {
                        let secs = (now - last_advance).as_secs();
                        tracing::warn!(job = %name, pid, "no progress for {secs} s: restarting");
                        stop_child(&mut child, pid, Duration::from_secs(1)).await;
                        let what = if got_progress { "stalled" } else { "no output after start" };
                        break Outcome::Failed {
                            reason: format!("{what}: no progress for {secs} s"),
                            permanent: false,
                            refused: false,
                        };
                    }
                    if got_progress && !healthy_reset_done && now - started >= self.spec.backoff.reset_after() {
                        healthy_reset_done = true;
                        backoff.on_healthy(now - started);
                        let was = self.status.borrow().degraded;
                        self.status.send_modify(|s| { s.consecutive_failures = 0; s.degraded = false; s.last_error = None; });
                        if was { self.event(JobEvent::Recovered { job: name.clone(), kind: self.spec.kind.clone() }); }
                    }
                }
            }
        };
        // The child has been reaped (wait or stop_child): its pid is no longer ours to signal.
        guard.pgid = None;
        if let Some(reg) = &self.spec.registry {
            reg.unregister(pid);
        }
        stderr_task.abort();
        if let Some(t) = progress_task {
            t.abort();
        }
        outcome
    }
}

fn take_stop(cmd: Option<Cmd>) -> Option<oneshot::Sender<()>> {
    cmd.map(|Cmd::Stop(tx)| tx)
}

/// SIGINT (FFmpeg's graceful stop), then SIGTERM, then SIGKILL, to the whole process group.
async fn stop_child(child: &mut Child, pid: u32, grace: Duration) -> ExitStatus {
    let pg = Pid::from_raw(pid as i32);
    for (sig, wait) in [(Signal::SIGINT, grace), (Signal::SIGTERM, Duration::from_secs(2))] {
        let _ = killpg(pg, sig);
        if let Ok(Ok(st)) = tokio::time::timeout(wait, child.wait()).await {
            return st;
        }
    }
    let _ = killpg(pg, Signal::SIGKILL);
    child.wait().await.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9))
}

#[cfg(test)]
mod tests {
    use super::enlarge_pipe;
    use std::os::fd::AsFd;

    #[test]
    fn a_pipe_grows_to_the_largest_size_allowed_when_the_request_is_over_the_limit() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap().trim().parse().unwrap();
        let got = enlarge_pipe(r.as_fd(), 64 << 20).expect("the pipe was enlarged");
        assert!(got >= max.min(64 << 20), "pipe of {got} bytes, the limit is {max}");
    }
}
