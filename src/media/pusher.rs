//! A pusher: one supervised sender per destination ingest, fed from the fan-out: the native RTMP
//! publisher ([`super::rtmp`]) by default, or an FFmpeg process when the destination asks for it.
//!
//! The FFmpeg pusher:
//! `ffmpeg -f flv -i pipe:0 -c copy -f flv URL`. Each (re)start of the process gets a fresh
//! subscription, so it begins with the FLV header, sequence headers and the last keyframe. The
//! pusher's backoff is its own: a dead destination never delays another.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::destination::{Ingest, OutputTarget, Publisher};
use super::fanout::{Fanout, SubStats};
use super::rtmp::publisher::NativePusher;
use super::MediaEnv;
use crate::ffmpeg::argv::{common_prefix, Argv};
use crate::ffmpeg::job::{ChildIo, Job, JobKind, JobSpec, JobStatus};
use crate::values::DestinationId;

pub struct Pusher {
    target: OutputTarget,
    job: Job,
    writer: tokio::task::JoinHandle<()>,
    stats: Arc<Mutex<SubStats>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PusherStatus {
    pub destination: DestinationId,
    pub ingest: Ingest,
    pub url: String,
    #[serde(flatten)]
    pub job: JobStatus,
    pub queue: SubStats,
    /// FFmpeg's last stderr lines (redacted), for reports.
    pub stderr: Vec<String>,
}

impl PusherStatus {
    /// The report of one sender of `target`, whichever publisher it is; `log` is its last lines.
    pub fn of(target: &OutputTarget, job: JobStatus, queue: SubStats, log: Vec<String>) -> PusherStatus {
        PusherStatus {
            destination: target.destination_id.clone(),
            ingest: target.ingest,
            url: target.shown.clone(),
            job,
            queue,
            stderr: last_lines(log),
        }
    }
}

/// How many of the kept stderr lines go into each status report.
pub const STATUS_STDERR_LINES: usize = 10;

pub fn last_lines(mut v: Vec<String>) -> Vec<String> {
    let n = v.len().saturating_sub(STATUS_STDERR_LINES);
    v.drain(..n);
    v
}

pub fn pusher_args(t: &OutputTarget) -> Argv {
    // The fan-out sends the FLV header and both sequence headers first, so both streams are known
    // within a few hundred bytes. FFmpeg's default probing waited for about 2 s of real-time input
    // before connecting, which was most of a go-live or an attach.
    let mut a = common_prefix()
        .args(["-probesize", "32768", "-analyzeduration", "200000"])
        .args(["-f", "flv", "-i", "pipe:0", "-map", "0", "-c", "copy"]);
    if let Some(tls) = &t.tls {
        a = a.args(["-tls_verify", if tls.verify { "1" } else { "0" }]);
        if let Some(ca) = &tls.ca_file {
            a = a.arg("-ca_file").arg(ca.to_string_lossy());
        }
    }
    a.args(["-f", "flv", "-flvflags", "no_duration_filesize"]).masked(
        t.url.clone(),
        t.shown.clone(),
        std::slice::from_ref(&t.key),
    )
}

impl Pusher {
    pub fn start(job_prefix: &str, fanout: &Fanout, target: OutputTarget, env: &MediaEnv) -> Pusher {
        let offered = Arc::new(AtomicU64::new(0));
        let (io_tx, io_rx) = mpsc::channel(4);
        let job = Job::spawn(JobSpec {
            pipe_stdin: true,
            input_activity: Some(offered.clone()),
            io: Some(io_tx),
            ..env.job(
                JobKind::Pusher {
                    owner: job_prefix.into(),
                    destination: target.destination_id.clone(),
                    backup: target.ingest == Ingest::Backup,
                },
                Arc::new(pusher_args(&target)),
                env.stale,
            )
        });
        let stats = Arc::new(Mutex::new(SubStats::default()));
        let writer = tokio::spawn(feed(fanout.clone(), io_rx, offered, stats.clone()));
        Pusher { target, job, writer, stats }
    }

    pub fn target(&self) -> &OutputTarget {
        &self.target
    }

    pub fn status(&self) -> PusherStatus {
        PusherStatus::of(
            &self.target,
            self.job.status(),
            *self.stats.lock().expect("stats lock"),
            self.job.stderr_tail(),
        )
    }

    pub async fn stop(self) {
        self.writer.abort();
        self.job.stop().await;
    }
}

/// Writes the fan-out into each generation's stdin; a new generation gets a new subscription.
async fn feed(
    fanout: Fanout,
    mut io_rx: mpsc::Receiver<ChildIo>,
    offered: Arc<AtomicU64>,
    stats: Arc<Mutex<SubStats>>,
) {
    let mut next = io_rx.recv().await;
    while let Some(io) = next.take() {
        let Some(mut stdin) = io.stdin else { break };
        let sub = fanout.subscribe(offered.clone());
        let mut batch = Vec::new();
        let mut coalesced = Vec::new();
        'gen: loop {
            tokio::select! {
                biased;
                newer = io_rx.recv() => { next = newer; break 'gen; }
                more = sub.next_batch(&mut batch) => {
                    if more.is_none() { let _ = stdin.shutdown().await; return; }
                    // One write per batch, not per tag: syscalls were most of the agent's CPU.
                    let ok = if batch.len() == 1 {
                        stdin.write_all(&batch[0]).await.is_ok()
                    } else {
                        coalesced.clear();
                        for b in &batch {
                            coalesced.extend_from_slice(b);
                        }
                        stdin.write_all(&coalesced).await.is_ok()
                    };
                    batch.clear();
                    if !ok {
                        // The process died; the supervisor will hand us the next one.
                        next = io_rx.recv().await;
                        break 'gen;
                    }
                    *stats.lock().expect("stats lock") = sub.stats();
                }
            }
        }
    }
}

/// One destination ingest's sender: the agent's own RTMP client or an FFmpeg process.
enum AnyPusher {
    Native(NativePusher),
    Ffmpeg(Pusher),
}

impl AnyPusher {
    fn start(job_prefix: &str, fanout: &Fanout, target: OutputTarget, env: &MediaEnv) -> AnyPusher {
        match target.publisher {
            Publisher::Native => AnyPusher::Native(NativePusher::start(job_prefix, fanout, target, env)),
            Publisher::Ffmpeg => AnyPusher::Ffmpeg(Pusher::start(job_prefix, fanout, target, env)),
        }
    }

    fn target(&self) -> &OutputTarget {
        match self {
            AnyPusher::Native(p) => p.target(),
            AnyPusher::Ffmpeg(p) => p.target(),
        }
    }

    fn status(&self) -> PusherStatus {
        match self {
            AnyPusher::Native(p) => p.status(),
            AnyPusher::Ffmpeg(p) => p.status(),
        }
    }

    async fn stop(self) {
        match self {
            AnyPusher::Native(p) => p.stop().await,
            AnyPusher::Ffmpeg(p) => p.stop().await,
        }
    }
}

/// The pushers of one program or relay, keyed by destination and ingest.
pub struct Outputs {
    job_prefix: String,
    fanout: Fanout,
    env: MediaEnv,
    pushers: BTreeMap<(DestinationId, Ingest), AnyPusher>,
}

impl Outputs {
    pub fn new(job_prefix: &str, fanout: &Fanout, env: &MediaEnv) -> Outputs {
        Outputs {
            job_prefix: job_prefix.to_string(),
            fanout: fanout.clone(),
            env: env.clone(),
            pushers: BTreeMap::new(),
        }
    }

    /// Brings the set of outputs to `outputs` while live: new ones start, removed or changed ones
    /// stop; untouched ones are not disturbed.
    pub async fn set(&mut self, outputs: Vec<OutputTarget>) {
        let wanted: BTreeMap<(DestinationId, Ingest), OutputTarget> =
            outputs.into_iter().map(|t| ((t.destination_id.clone(), t.ingest), t)).collect();
        let stale: Vec<(DestinationId, Ingest)> =
            self.pushers.iter().filter(|(k, p)| wanted.get(*k) != Some(p.target())).map(|(k, _)| k.clone()).collect();
        let mut stopping = Vec::new();
        for k in stale {
            if let Some(p) = self.pushers.remove(&k) {
                tracing::info!(job = %self.job_prefix, destination = %k.0, "removing destination");
                stopping.push(p.stop());
            }
        }
        // Stopping a pusher waits for its FFmpeg (up to the stop grace, longer for one stuck on a
        // hung ingest): never on the caller's task, which is the program bus.
        if !stopping.is_empty() {
            tokio::spawn(join_all(stopping));
        }
        for (k, t) in wanted {
            if !self.pushers.contains_key(&k) {
                tracing::info!(job = %self.job_prefix, destination = %k.0, url = %t.shown, "adding destination");
                let p = AnyPusher::start(&self.job_prefix, &self.fanout, t, &self.env);
                self.pushers.insert(k, p);
            }
        }
    }

    pub fn status(&self) -> Vec<PusherStatus> {
        self.pushers.values().map(AnyPusher::status).collect()
    }

    pub async fn stop(self) {
        join_all(self.pushers.into_values().map(AnyPusher::stop)).await;
    }
}
