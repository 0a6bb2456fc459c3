//! A native pusher: the fan-out → one ingest of one destination, in a tokio task.
//!
//! It reports like an FFmpeg job (the same [`JobStatus`], the same [`JobEvent`]s with the same
//! [`JobKind`]), so status, the event log and the cloud see a destination the same way whichever
//! publisher serves it; what differs is that each failure is the server's own answer
//! (`publish refused by the ingest: NetStream.Publish.BadName`, a TLS alert, a stage that timed
//! out) rather than FFmpeg's "Input/output error". Each session runs in a task of its own, so even
//! a panic in the protocol code is one failed attempt, retried, never a dead destination.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::client::{PublishError, PublishTarget, Session};
use super::{connect, IngestAddr};
use crate::ffmpeg::backoff::{Backoff, BackoffPolicy};
use crate::ffmpeg::job::{JobEvent, JobKind, JobStatus, Phase, ProgressSummary};
use crate::media::destination::{Ingest, OutputTarget};
use crate::media::fanout::{Fanout, SubStats};
use crate::media::flv::{FlvReader, Item, TagKind};
use crate::media::pusher::PusherStatus;
use crate::media::MediaEnv;

/// Lines of the session log kept for status and diagnostics (what FFmpeg's stderr is for the other
/// publisher).
const LOG_LINES: usize = 40;
/// The same refusal-by-closing this many times in a row is reported as a refused key.
const CLOSES_FOR_PERMANENT: u32 = 3;

pub struct NativePusher {
    target: OutputTarget,
    cmd: mpsc::Sender<oneshot::Sender<()>>,
    status: watch::Receiver<JobStatus>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    name: String,
    kind: JobKind,
    target: OutputTarget,
    fanout: Fanout,
    events: mpsc::Sender<JobEvent>,
    status: watch::Sender<JobStatus>,
    stats: Mutex<SubStats>,
    log: Mutex<VecDeque<String>>,
    /// Deadline of each stage of a connection (TCP, TLS, handshake, each command's answer).
    stage_timeout: Duration,
    /// The ingest stopped reading for this long: the session is given up.
    stall: Duration,
}

impl Shared {
    fn event(&self, e: JobEvent) {
        let _ = self.events.try_send(e);
    }

    fn note(&self, line: String) {
        let line = mask(&line, &self.target);
        let mut log = self.log.lock().expect("log lock");
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// The key never leaves in a message, whatever the server echoed back.
fn mask(s: &str, target: &OutputTarget) -> String {
    let key = target.key.expose();
    if key.is_empty() {
        s.to_string()
    } else {
        s.replace(key, "***")
    }
}

impl NativePusher {
    pub fn start(job_prefix: &str, fanout: &Fanout, target: OutputTarget, env: &MediaEnv) -> NativePusher {
        let kind = JobKind::Pusher {
            owner: job_prefix.into(),
            destination: target.destination_id.clone(),
            backup: target.ingest == Ingest::Backup,
        };
        let (status_tx, status_rx) = watch::channel(JobStatus::starting());
        let shared = Arc::new(Shared {
            name: kind.to_string(),
            kind,
            target: target.clone(),
            fanout: fanout.clone(),
            events: env.events.clone(),
            status: status_tx,
            stats: Mutex::new(SubStats::default()),
            log: Mutex::new(VecDeque::new()),
            stage_timeout: env.first_progress_timeout,
            stall: env.stale,
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(1);
        let task = tokio::spawn(run(shared.clone(), cmd_rx, env.backoff, env.degraded_after));
        NativePusher { target, cmd: cmd_tx, status: status_rx, shared, task }
    }

    pub fn target(&self) -> &OutputTarget {
        &self.target
    }

    pub fn status(&self) -> PusherStatus {
        let log = self.shared.log.lock().expect("log lock").iter().cloned().collect();
        PusherStatus::of(
            &self.target,
            self.status.borrow().clone(),
            *self.shared.stats.lock().expect("stats lock"),
            log,
        )
    }

    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(tx).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

async fn run(
    sh: Arc<Shared>,
    mut cmd: mpsc::Receiver<oneshot::Sender<()>>,
    policy: BackoffPolicy,
    degraded_after: u32,
) {
    let mut backoff = Backoff::new(policy);
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut closes_at_publish = 0u32;
    let reply;
    let addr = IngestAddr::parse(&sh.target.ingest_url);
    'run: loop {
        sh.status.send_modify(|s| {
            s.phase = Phase::Starting;
            s.retry_in_ms = None;
            s.starts += 1;
        });
        let started = Instant::now();
        let attempt = match &addr {
            Ok(a) => tokio::spawn(session(sh.clone(), a.clone())),
            Err(e) => {
                let e = PublishError::Protocol(e.to_string());
                tokio::spawn(async move { Err(e) })
            }
        };
        let attempt_abort = attempt.abort_handle();
        let outcome = tokio::select! {
            biased;
            c = cmd.recv() => { attempt_abort.abort(); reply = c; break 'run; }
            r = attempt => r,
        };
        let err = match outcome {
            // The stream ended (its program or relay is stopping): wait for the stop.
            Ok(Ok(())) => {
                reply = cmd.recv().await;
                break 'run;
            }
            Ok(Err(e)) => e,
            Err(join) => PublishError::Protocol(format!("the publishing task failed: {join}")),
        };
        let ran = started.elapsed();
        closes_at_publish = if err == (PublishError::Closed { stage: "publish" }) { closes_at_publish + 1 } else { 0 };
        let mut permanent = err.is_permanent();
        let mut reason = match err.hint() {
            Some(h) => format!("{err} ({h})"),
            None => err.to_string(),
        };
        if closes_at_publish >= CLOSES_FOR_PERMANENT && !permanent {
            permanent = true;
            reason = format!("the ingest closed the connection when asked to publish, {closes_at_publish} times in a row (it refuses the stream key)");
        }
        let reason = mask(&reason, &sh.target);
        let mut delay = backoff.on_failure(ran, &mut rng);
        if permanent {
            delay = policy.max();
        }
        let failures = backoff.failures();
        let was_degraded = sh.status.borrow().degraded;
        let degraded = failures >= degraded_after;
        tracing::warn!(job = %sh.name, %reason, permanent, failures, retry_in_ms = delay.as_millis() as u64, "rtmp publish failed");
        sh.note(format!("failed: {reason}; retry in {:.1} s", delay.as_secs_f64()));
        sh.status.send_modify(|s| {
            s.phase = Phase::Backoff;
            s.consecutive_failures = failures;
            s.degraded = degraded;
            s.last_error = Some(reason.clone());
            s.permanent_error = permanent.then(|| reason.clone());
            s.retry_in_ms = Some(delay.as_millis() as u64);
        });
        sh.event(JobEvent::Failed {
            job: sh.name.clone(),
            kind: sh.kind.clone(),
            reason,
            permanent,
            retry_in: delay,
            failures,
        });
        if degraded && !was_degraded {
            sh.event(JobEvent::Degraded { job: sh.name.clone(), kind: sh.kind.clone(), failures });
        }
        tokio::select! {
            biased;
            c = cmd.recv() => { reply = c; break 'run; }
            _ = tokio::time::sleep(delay) => {}
        }
    }
    sh.status.send_modify(|s| {
        s.phase = Phase::Stopped;
        s.retry_in_ms = None;
    });
    sh.event(JobEvent::Stopped { job: sh.name.clone(), kind: sh.kind.clone() });
    if let Some(r) = reply {
        let _ = r.send(());
    }
}

/// One connection: publish, then send the fan-out's tags until something fails. `Ok` only when
/// the fan-out itself has ended.
async fn session(sh: Arc<Shared>, addr: IngestAddr) -> Result<(), PublishError> {
    sh.note(format!("connecting to {}:{} ({})", addr.host, addr.port, if addr.tls { "rtmps" } else { "rtmp" }));
    let io = connect(&addr, sh.target.tls.as_ref(), sh.stage_timeout).await?;
    let target = PublishTarget { app: &addr.app, tc_url: &addr.tc_url, key: sh.target.key.expose() };
    let mut s = Session::publish(io, &target, sh.stage_timeout).await?;
    sh.note(format!("publishing on {}", sh.target.shown));
    // No process of its own: pid 0 says so to the event log.
    let pid = 0;
    sh.event(JobEvent::Started { job: sh.name.clone(), kind: sh.kind.clone(), pid, start: sh.status.borrow().starts });
    let was_degraded = sh.status.borrow().degraded;
    sh.status.send_modify(|st| {
        st.phase = Phase::Running;
        st.permanent_error = None;
        st.degraded = false;
        st.consecutive_failures = 0;
    });
    sh.event(JobEvent::Healthy { job: sh.name.clone(), kind: sh.kind.clone(), pid });
    if was_degraded {
        sh.event(JobEvent::Recovered { job: sh.name.clone(), kind: sh.kind.clone() });
    }

    let sub = sh.fanout.subscribe(Arc::new(AtomicU64::new(0)));
    let mut reader = FlvReader::new();
    let mut batch = Vec::new();
    let mut frames = 0u64;
    let mut last_ts = 0u32;
    let mut window = (Instant::now(), 0u64);
    enum Step {
        Incoming(Result<(), PublishError>),
        Batch(Option<()>),
    }
    loop {
        let step = tokio::select! {
            biased;
            r = s.serve_incoming() => Step::Incoming(r),
            m = sub.next_batch(&mut batch) => Step::Batch(m),
        };
        match step {
            Step::Incoming(r) => r?,
            Step::Batch(None) => return Ok(()),
            Step::Batch(Some(())) => {
                for b in batch.drain(..) {
                    reader.push(&b);
                }
                while let Some(item) =
                    reader.next_item().map_err(|e| PublishError::Protocol(format!("program stream: {e}")))?
                {
                    if let Item::Tag(tag) = item {
                        if tag.kind == TagKind::Video {
                            frames += 1;
                        }
                        last_ts = tag.timestamp;
                        s.queue_tag(&tag)?;
                    }
                }
                s.flush_within(sh.stall).await?;
                *sh.stats.lock().expect("stats lock") = sub.stats();
                let now = Instant::now();
                let secs = (now - window.0).as_secs_f64();
                if secs >= 1.0 {
                    let kbps = (s.bytes_out - window.1) as f64 * 8.0 / secs / 1000.0;
                    window = (now, s.bytes_out);
                    sh.status.send_modify(|st| {
                        st.progress = Some(ProgressSummary {
                            out_time_us: Some(i64::from(last_ts) * 1000),
                            frame: Some(frames),
                            speed: None,
                            bitrate_kbps: Some(kbps),
                            drop_frames: Some(sub.stats().dropped_tags),
                        })
                    });
                }
            }
        }
    }
}
