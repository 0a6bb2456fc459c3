//! Decode-mode camera ingest for the program bus.
//!
//! One supervised FFmpeg per camera decodes the RTSP stream and delivers raw `yuv420p` frames at
//! the program size and rate on stdout and `s16le` 48 kHz stereo PCM on fd 4. Two reader tasks
//! keep the newest frame and a short audio buffer in a [`SourceStore`] that the bus samples at its
//! own pace; the store also tracks freshness for the switcher's fallback ladder. Starting an ingest
//! ahead of its cut is the pre-roll. A camera without audio simply writes no PCM; the bus pads
//! silence.
//!
//! The arguments depend on whether the source has audio. An ingest starts at once from what the
//! [`ProbeCache`] remembers of the source's last probe (no ffprobe in front of the first frame) and
//! checks it with a fresh probe in the background; if the camera changed, the ingest is restarted
//! with the right arguments (event `probe_corrected`). A source never probed is probed first.
//!
//! Our own probe already says which streams to map, so FFmpeg is told not to analyse the camera
//! again (`-probesize 32 -analyzeduration 0`): its analysis of an RTSP camera takes ~2.4 s before
//! the first frame, the quick start ~0.4 s. The decoder learns size and pixel format from the first
//! keyframe. Should a quick start deliver no frame at all, the next start lets FFmpeg analyse
//! (the two alternate while a camera keeps failing).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::frame::Frame;
use super::probe::{CameraProbe, CameraSource, ProbeError, SourceKind};
use super::probe_cache::{ProbeCache, FRESH_FOR, TRUST_FOR};
use super::switcher::Health;
use super::MediaEnv;
use crate::ffmpeg::argv::{common_prefix, Argv};
use crate::ffmpeg::job::{
    enlarge_pipe, ArgSource, ChildIo, ExtraFd, ExtraPipe, Job, JobEvent, JobKind, JobSpec, JobStatus, PrepareError,
};
use crate::values::SourceId;

pub const SAMPLE_RATE: u32 = 48_000;
pub const CHANNELS: usize = 2;
/// Audio kept per source; older samples are dropped (a source not on air must not grow).
const MAX_AUDIO: Duration = Duration::from_millis(500);

/// The program's picture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl ProgramFormat {
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps as f64)
    }

    /// Interleaved stereo samples per frame (48000 / fps per channel).
    pub fn samples_per_frame(&self) -> usize {
        SAMPLE_RATE as usize / self.fps as usize * CHANNELS
    }
}

#[derive(Default)]
struct SourceState {
    latest: Option<Arc<Frame>>,
    /// When `latest` arrived.
    latest_at: Option<Instant>,
    health: Health,
    audio: VecDeque<i16>,
    frames_in: u64,
    /// Set when the source's audio was read since the last frame (it has audio at all).
    has_audio: bool,
}

/// The newest picture and recent audio of one source, shared between its readers and the bus.
///
/// A source the bus does not need at full rate (off air, no cut to it coming up) keeps a picture
/// at most [`OFF_AIR_REFRESH`] old: its reader passes the other frames straight from FFmpeg's pipe
/// to `/dev/null` in the kernel, uncopied. Copying raw frames out of the pipes is most of the
/// bus's cost (a 720p camera is 41 MB/s), and an off-air camera's frames were all thrown away.
/// Health counts every frame, read or passed over.
#[derive(Clone)]
pub struct SourceStore {
    inner: Arc<Mutex<SourceState>>,
    stall: Duration,
    full_rate: Arc<AtomicBool>,
}

impl Default for SourceStore {
    fn default() -> Self {
        SourceStore::new(Duration::default())
    }
}

/// How old the picture of a source not needed at full rate may get (6 frames at 30 fps): the
/// thumbnails, and an unplanned cut or fallback to it, show a picture this recent at worst, for
/// the one frame until its reader is back at full rate.
pub const OFF_AIR_REFRESH: Duration = Duration::from_millis(200);

/// Frames do not arrive exactly on time: a frame due just before the refresh age is read.
const FRAME_SLACK: Duration = Duration::from_millis(10);

impl SourceState {
    fn arrived(&mut self, now: Instant, stall: Duration) {
        let gap = self.health.last_frame.is_none_or(|t| now.saturating_duration_since(t) > stall);
        if gap {
            self.health.steady_since = Some(now);
        }
        self.health.last_frame = Some(now);
        self.health.ended = false;
        self.frames_in += 1;
    }
}

impl SourceStore {
    pub fn new(stall: Duration) -> SourceStore {
        SourceStore { inner: Arc::default(), stall, full_rate: Arc::new(AtomicBool::new(true)) }
    }

    /// Whether every frame is wanted (the bus's call; on until it says otherwise).
    pub fn set_full_rate(&self, on: bool) {
        self.full_rate.store(on, Ordering::Relaxed);
    }

    pub fn full_rate(&self) -> bool {
        self.full_rate.load(Ordering::Relaxed)
    }

    /// Whether the reader should read the next frame (or may pass over it).
    fn wants_frame(&self, now: Instant) -> bool {
        self.full_rate()
            || self.lock().latest_at.is_none_or(|t| now.saturating_duration_since(t) + FRAME_SLACK >= OFF_AIR_REFRESH)
    }

    /// A frame arrived and was passed over: the source is as healthy as if it had been read.
    fn saw_frame(&self, now: Instant) {
        let mut s = self.lock();
        s.arrived(now, self.stall);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.inner.lock().expect("source lock")
    }

    pub fn put_frame(&self, f: Frame, now: Instant) {
        let mut s = self.lock();
        s.arrived(now, self.stall);
        s.latest_at = Some(now);
        let old = s.latest.replace(Arc::new(f));
        drop(s);
        // The frame it replaces is reused unless the bus still holds it.
        if let Some(f) = old.and_then(|f| Arc::try_unwrap(f).ok()) {
            f.recycle();
        }
    }

    /// The ingest's output ended (its process exited or closed the pipe): a certain loss until
    /// the next frame, which the switcher acts on at once (see `switcher`).
    pub fn ended(&self) {
        self.lock().health.ended = true;
    }

    pub fn put_audio(&self, samples: &[i16]) {
        let mut s = self.lock();
        s.has_audio = true;
        s.audio.extend(samples);
        let max = (MAX_AUDIO.as_secs_f64() * SAMPLE_RATE as f64) as usize * CHANNELS;
        if s.audio.len() > max {
            let drop = s.audio.len() - max;
            s.audio.drain(..drop);
        }
    }

    pub fn health(&self) -> Health {
        self.lock().health
    }

    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.lock().latest.clone()
    }

    pub fn frames_in(&self) -> u64 {
        self.lock().frames_in
    }

    /// Takes exactly `n` interleaved samples into `out`, padding with silence when short. Surplus
    /// beyond a small cushion is dropped, so the source's audio never lags the picture.
    pub fn take_audio(&self, n: usize, out: &mut Vec<i16>) {
        let mut s = self.lock();
        let cushion = n * 4;
        if s.audio.len() > n + cushion {
            let drop = s.audio.len() - n - cushion;
            s.audio.drain(..drop);
        }
        let take = n.min(s.audio.len());
        out.extend(s.audio.drain(..take));
        out.resize(out.len() + (n - take), 0);
    }

    /// Forgets buffered audio (a source going on air starts from its newest samples).
    pub fn trim_audio(&self, keep: usize) {
        let mut s = self.lock();
        if s.audio.len() > keep {
            let drop = s.audio.len() - keep;
            s.audio.drain(..drop);
        }
    }
}

/// Arguments of a decode ingest (see the module doc for where they come from).
struct DecodeArgs {
    /// The job's name, the subject of its events.
    job: String,
    ffprobe: PathBuf,
    camera: CameraSource,
    rtsp_timeout: Duration,
    format: ProgramFormat,
    probes: ProbeCache,
    events: mpsc::Sender<JobEvent>,
    /// Asks the ingest for a restart: the arguments it runs with proved wrong.
    correct: mpsc::Sender<()>,
    /// Set by the first start; a later one is a restart after a failure.
    started: AtomicBool,
    /// Where the source's frames land: whether the last start delivered any.
    store: SourceStore,
    /// The last start's analysis and the store's frame count when it began.
    last_start: Mutex<Option<(Analysis, u64)>>,
}

/// How an RTSP ingest starts: with FFmpeg's own stream analysis, or without it (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    Full,
    Skip,
}

pub fn decode_args(
    cam: &CameraSource,
    probe: Option<&CameraProbe>,
    fmt: ProgramFormat,
    rtsp_timeout: Duration,
    analysis: Analysis,
) -> Argv {
    let (w, h, f) = (fmt.width, fmt.height, fmt.fps);
    let has_audio = probe.is_none_or(|p| p.audio_codec.is_some());
    let mut a = match &cam.kind {
        SourceKind::Lavfi { video, audio } => return synthetic_args(video, audio.as_deref(), fmt),
        // A media asset plays like a camera: paced in real time, looped for as long as it is used.
        SourceKind::Media(path) => return media_args(path, probe, fmt),
        SourceKind::Rtsp { url, secrets } => {
            let mut a = common_prefix()
                .args(["-threads", decode_threads(probe), "-filter_threads", "1"])
                .args(["-fflags", "nobuffer", "-rtsp_transport", "tcp", "-timeout"])
                .arg(rtsp_timeout.as_micros().to_string());
            if analysis == Analysis::Skip {
                a = a.args(["-probesize", "32", "-analyzeduration", "0"]);
            }
            a.arg("-i").masked(url.clone(), cam.shown.clone(), secrets)
        }
    };
    let vf = format!(
        "fps={f},scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p"
    );
    a = a.args(["-map", "0:v:0", "-vf"]).arg(vf).args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]);
    if has_audio {
        a = a.args(["-map", "0:a:0", "-f", "s16le", "-ar", "48000", "-ac", "2", "pipe:4"]);
    }
    a
}

/// One malloc arena per decoder: glibc gives each of FFmpeg's threads an arena of its own, and
/// every arena keeps the frame buffers freed into it. A 720p30 camera decoder with one thread,
/// measured: 24 MB private with one arena, 28 MB with two, 30 MB with glibc's default; the same
/// CPU. (The encoder, measured the same way, gained nothing, so it keeps the default.)
const DECODER_ENV: [(&str, &str); 1] = [("MALLOC_ARENA_MAX", "1")];

/// Decoder threads for a camera of the probed size. A live decoder only has to keep up with
/// real time: one thread decodes 720p30 H.264 with room to spare, and each frame thread costs a
/// set of frame buffers (measured on a 720p30 camera: 39 MB of private memory with FFmpeg's
/// automatic count on 2 cores, 30 MB with one thread, at the same CPU). Larger pictures get two;
/// an unknown size gets two as well.
fn decode_threads(probe: Option<&CameraProbe>) -> &'static str {
    match probe.and_then(|p| Some(p.width? as u64 * p.height? as u64)) {
        Some(px) if px <= 1280 * 720 => "1",
        _ => "2",
    }
}

fn media_args(path: &Path, probe: Option<&CameraProbe>, fmt: ProgramFormat) -> Argv {
    let (w, h, f) = (fmt.width, fmt.height, fmt.fps);
    let has_audio = probe.is_none_or(|p| p.audio_codec.is_some());
    let mut a = common_prefix()
        .args(["-threads", decode_threads(probe), "-filter_threads", "1"])
        .args(["-re", "-stream_loop", "-1", "-i"])
        .arg(path.display().to_string())
        .args(["-map", "0:v:0", "-vf"])
        .arg(format!(
            "fps={f},scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p"
        ));
    a = a.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]);
    if has_audio {
        a = a.args(["-map", "0:a:0", "-f", "s16le", "-ar", "48000", "-ac", "2", "pipe:4"]);
    }
    a
}

/// Built-in synthetic sources for the demo: lavfi graphs, paced in real time (silence without an
/// audio graph).
pub fn synthetic_args(video: &str, audio: Option<&str>, fmt: ProgramFormat) -> Argv {
    let audio = audio.unwrap_or("anullsrc=channel_layout=stereo:sample_rate=48000");
    let (w, h, f) = (fmt.width, fmt.height, fmt.fps);
    common_prefix()
        .args(["-re", "-f", "lavfi", "-i", video, "-re", "-f", "lavfi", "-i", audio])
        .args(["-map", "0:v:0", "-vf"])
        .arg(format!("fps={f},scale={w}:{h},setsar=1,format=yuv420p"))
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"])
        .args(["-map", "1:a:0", "-f", "s16le", "-ar", "48000", "-ac", "2", "pipe:4"])
}

/// A probe in a few words, for events and logs (never the URL).
fn summary(p: &CameraProbe) -> String {
    format!(
        "video {} {}x{}, audio {}",
        p.video_codec.as_deref().unwrap_or("?"),
        p.width.unwrap_or(0),
        p.height.unwrap_or(0),
        p.audio_codec.as_deref().unwrap_or("none")
    )
}

/// The analysis of the next start, from the last start's (and the frame count when it began).
fn next_analysis(last: Option<(Analysis, u64)>, frames_now: u64) -> Analysis {
    match last {
        Some((Analysis::Skip, at)) if frames_now == at => Analysis::Full,
        _ => Analysis::Skip,
    }
}

impl DecodeArgs {
    /// Skips FFmpeg's analysis unless the last start skipped it and delivered no frame.
    fn analysis(&self) -> Analysis {
        let frames = self.store.frames_in();
        let mut last = self.last_start.lock().expect("ingest start lock");
        let a = next_analysis(*last, frames);
        if a == Analysis::Full {
            tracing::info!(job = %self.job, "the last quick start delivered no frame: FFmpeg analyses the stream this time");
        }
        *last = Some((a, frames));
        a
    }

    fn note(&self, event_type: &str, detail: String, warning: bool) {
        let e = JobEvent::Note { job: self.job.clone(), event_type: event_type.into(), detail, warning };
        // Never block a start on a slow event consumer.
        let _ = self.events.try_send(e);
    }

    /// Probes the source in the background; if it no longer matches what this start assumed,
    /// asks the ingest to restart (the probe has corrected the cache by then).
    fn check_in_background(&self, assumed: &CameraProbe) {
        let (ffprobe, cam, t, probes) =
            (self.ffprobe.clone(), self.camera.clone(), self.rtsp_timeout, self.probes.clone());
        let (job, events, correct) = (self.job.clone(), self.events.clone(), self.correct.clone());
        let had_audio = assumed.audio_codec.is_some();
        let assumed = summary(assumed);
        tokio::spawn(async move {
            match probes.probe(&ffprobe, &cam, t).await {
                Ok(p) if p.audio_codec.is_some() != had_audio => {
                    let detail = format!(
                        "the camera changed: it now sends {} (remembered: {assumed}); restarting its ingest",
                        summary(&p)
                    );
                    tracing::warn!(%job, "{detail}");
                    let _ = events.try_send(JobEvent::Note {
                        job,
                        event_type: "probe_corrected".into(),
                        detail,
                        warning: true,
                    });
                    let _ = correct.try_send(());
                }
                Ok(_) => tracing::debug!(%job, "background probe confirms what was remembered"),
                // The ingest itself reports a camera that does not answer.
                Err(e) => tracing::info!(%job, "background probe failed: {e}"),
            }
        });
    }
}

impl ArgSource for DecodeArgs {
    fn prepare(&self) -> BoxFuture<'static, Result<Argv, PrepareError>> {
        let (ffprobe, cam, t, fmt) = (self.ffprobe.clone(), self.camera.clone(), self.rtsp_timeout, self.format);
        if let SourceKind::Lavfi { .. } = cam.kind {
            let a = decode_args(&cam, None, fmt, t, Analysis::Full);
            return Box::pin(async move { Ok(a) });
        }
        let analysis = self.analysis();
        let restart = self.started.swap(true, Ordering::Relaxed);
        // A restart after a failure trusts only knowledge just confirmed: the failure may be
        // the camera having changed.
        let trust = if restart { FRESH_FOR } else { TRUST_FOR };
        if let Some(k) = self.probes.known(&cam, trust) {
            if k.age > FRESH_FOR {
                self.check_in_background(&k.probe);
            }
            if !restart {
                let detail = format!(
                    "started from the probe of {} s ago ({}), without waiting for a new one",
                    k.age.as_secs(),
                    summary(&k.probe)
                );
                tracing::info!(job = %self.job, "{detail}");
                self.note("probe_remembered", detail, false);
            }
            let a = decode_args(&cam, Some(&k.probe), fmt, t, analysis);
            return Box::pin(async move { Ok(a) });
        }
        let probes = self.probes.clone();
        Box::pin(async move {
            let probe = probes
                .probe(&ffprobe, &cam, t)
                .await
                .map_err(|e| PrepareError { permanent: matches!(e, ProbeError::Tool(_)), message: e.to_string() })?;
            Ok(decode_args(&cam, Some(&probe), fmt, t, analysis))
        })
    }
}

/// A running decode ingest.
pub struct DecodeIngest {
    pub camera_id: SourceId,
    /// The job; replaced (never empty until `stop`) when a background probe corrects its arguments.
    job: Arc<Mutex<Option<Job>>>,
    /// Replaces the job on a correction.
    corrector: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    store: SourceStore,
}

impl DecodeIngest {
    pub fn start(job_prefix: &str, cam: CameraSource, fmt: ProgramFormat, env: &MediaEnv, stall: Duration) -> Self {
        let store = SourceStore::new(stall);
        let (io_tx, io_rx) = mpsc::channel(4);
        let (correct_tx, mut correct_rx) = mpsc::channel(1);
        let camera_id = cam.camera_id.clone();
        let name = format!("{job_prefix}/camera:{camera_id}");
        let env = env.clone();
        let owner = job_prefix.to_string();
        let kind_camera = camera_id.clone();
        let spawn_store = store.clone();
        // Every job of this ingest feeds the same reader: a replacement's output follows the
        // replaced one's.
        let spawn = move || {
            Job::spawn(JobSpec {
                pipe_stdout: true,
                io: Some(io_tx.clone()),
                extra_fds: vec![ExtraFd { child_fd: 4, child_writes: true }],
                env: DECODER_ENV.to_vec(),
                ..env.job(
                    JobKind::Camera { owner: owner.clone(), camera_id: kind_camera.clone() },
                    Arc::new(DecodeArgs {
                        job: name.clone(),
                        ffprobe: env.ffprobe.clone(),
                        camera: cam.clone(),
                        rtsp_timeout: env.rtsp_timeout,
                        format: fmt,
                        probes: env.probes.clone(),
                        events: env.events.clone(),
                        correct: correct_tx.clone(),
                        started: AtomicBool::new(false),
                        store: spawn_store.clone(),
                        last_start: Mutex::new(None),
                    }),
                    env.ingest_stale,
                )
            })
        };
        let job = Arc::new(Mutex::new(Some(spawn())));
        let slot = job.clone();
        let corrector = tokio::spawn(async move {
            while correct_rx.recv().await.is_some() {
                let old = slot.lock().expect("ingest job lock").replace(spawn());
                if let Some(old) = old {
                    old.stop().await;
                }
            }
        });
        let reader = tokio::spawn(read_generations(io_rx, store.clone(), fmt));
        DecodeIngest { camera_id, job, corrector, reader, store }
    }

    pub fn store(&self) -> SourceStore {
        self.store.clone()
    }

    pub fn status(&self) -> JobStatus {
        self.job.lock().expect("ingest job lock").as_ref().expect("a job until stopped").status()
    }

    pub fn pid(&self) -> Option<u32> {
        self.status().pid
    }

    pub async fn stop(self) {
        self.corrector.abort();
        let job = self.job.lock().expect("ingest job lock").take();
        if let Some(job) = job {
            job.stop().await;
        }
        self.reader.abort();
    }
}

async fn read_generations(mut io_rx: mpsc::Receiver<ChildIo>, store: SourceStore, fmt: ProgramFormat) {
    let frame_len = Frame::byte_len(fmt.width, fmt.height);
    while let Some(io) = io_rx.recv().await {
        let Some(stdout) = io.stdout else { continue };
        enlarge_pipe(stdout.as_fd(), 4 << 20);
        let audio = io.extra.into_iter().find_map(|p| match p {
            ExtraPipe::Reader(r) => Some(r),
            ExtraPipe::Writer(_) => None,
        });
        let audio_task = audio.map(|mut r| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut carry: Option<u8> = None;
                let mut samples = Vec::with_capacity(8 * 1024);
                loop {
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    samples.clear();
                    let mut bytes = &buf[..n];
                    if let Some(lo) = carry.take() {
                        samples.push(i16::from_le_bytes([lo, bytes[0]]));
                        bytes = &bytes[1..];
                    }
                    let mut chunks = bytes.chunks_exact(2);
                    samples.extend(chunks.by_ref().map(|c| i16::from_le_bytes([c[0], c[1]])));
                    carry = chunks.remainder().first().copied();
                    store.put_audio(&samples);
                }
            })
        });
        match RawPipe::new(stdout) {
            Ok(mut pipe) => loop {
                if store.wants_frame(Instant::now()) {
                    let mut buf = super::frame::buffer(frame_len);
                    if pipe.read_exact(&mut buf).await.is_err() {
                        super::frame::recycle(buf);
                        break;
                    }
                    let frame = Frame::from_bytes(fmt.width, fmt.height, buf).expect("exact frame length");
                    store.put_frame(frame, Instant::now());
                } else {
                    if pipe.skip(frame_len).await.is_err() {
                        break;
                    }
                    store.saw_frame(Instant::now());
                }
            },
            Err(e) => tracing::error!("a camera's frame pipe could not be read: {e}"),
        }
        store.ended();
        if let Some(t) = audio_task {
            t.abort();
        }
    }
}

/// The read end of a raw-frame pipe: whole frames read into a buffer, or passed over uncopied
/// (spliced to `/dev/null`: the kernel drops the pipe's pages without copying them anywhere).
struct RawPipe {
    rx: tokio::net::unix::pipe::Receiver,
    /// `/dev/null`, while splicing to it works (else passed-over frames are read and dropped).
    null: Option<std::fs::File>,
    scratch: Vec<u8>,
}

impl RawPipe {
    fn new(stdout: tokio::process::ChildStdout) -> std::io::Result<RawPipe> {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into_owned_fd()?)?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").ok();
        Ok(RawPipe { rx, null, scratch: Vec::new() })
    }

    /// Fills `buf`; an error at the end of the stream (the child's generation is over).
    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut at = 0;
        while at < buf.len() {
            self.rx.readable().await?;
            match self.rx.try_read(&mut buf[at..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Passes over the next `len` bytes.
    async fn skip(&mut self, mut len: usize) -> std::io::Result<()> {
        use nix::fcntl::{splice, SpliceFFlags};
        while len > 0 {
            let Some(null) = self.null.as_ref() else {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.resize(len, 0);
                let r = self.read_exact(&mut scratch).await;
                self.scratch = scratch;
                return r;
            };
            self.rx.readable().await?;
            let moved = self.rx.try_io(|| {
                splice(&self.rx, None, null, None, len, SpliceFFlags::SPLICE_F_NONBLOCK).map_err(std::io::Error::from)
            });
            match moved {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => len -= n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A kernel that cannot splice into /dev/null: read and drop from now on.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    tracing::debug!("splice to /dev/null is not supported here: {e}; reading instead");
                    self.null = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_start_that_delivered_nothing_is_followed_by_a_full_analysis() {
        use super::{next_analysis, Analysis::*};
        assert_eq!(next_analysis(None, 0), Skip, "the first start is quick");
        assert_eq!(next_analysis(Some((Skip, 10)), 250), Skip, "a quick start that worked stays quick");
        assert_eq!(next_analysis(Some((Skip, 10)), 10), Full, "no frame from a quick start: analyse");
        assert_eq!(next_analysis(Some((Full, 10)), 10), Skip, "a failing camera alternates");
        assert_eq!(next_analysis(Some((Full, 10)), 99), Skip);
    }

    #[test]
    fn a_camera_decoder_gets_threads_for_its_picture_size() {
        let probe =
            |w, h| CameraProbe { video_codec: Some("h264".into()), width: Some(w), height: Some(h), audio_codec: None };
        assert_eq!(decode_threads(Some(&probe(1280, 720))), "1");
        assert_eq!(decode_threads(Some(&probe(640, 360))), "1");
        assert_eq!(decode_threads(Some(&probe(1920, 1080))), "2");
        assert_eq!(decode_threads(Some(&probe(2560, 1440))), "2");
        assert_eq!(decode_threads(None), "2", "an unknown size");
        let mut no_size = probe(0, 0);
        no_size.width = None;
        assert_eq!(decode_threads(Some(&no_size)), "2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_not_needed_keeps_a_picture_at_most_the_refresh_age_old_and_stays_healthy() {
        let s = SourceStore::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(s.wants_frame(t0), "full rate until the bus says otherwise");
        s.set_full_rate(false);
        assert!(s.wants_frame(t0), "no picture yet: read one");
        s.put_frame(Frame::from_bytes(2, 2, vec![0; 6]).unwrap(), t0);
        assert!(!s.wants_frame(t0 + Duration::from_millis(33)), "passed over");
        s.saw_frame(t0 + Duration::from_millis(33));
        assert_eq!(s.frames_in(), 2, "a frame passed over counts");
        assert_eq!(s.health().last_frame, Some(t0 + Duration::from_millis(33)), "and keeps the source healthy");
        assert!(s.wants_frame(t0 + OFF_AIR_REFRESH - FRAME_SLACK), "refreshed at the refresh age");
        s.set_full_rate(true);
        assert!(s.wants_frame(t0 + Duration::from_millis(34)), "every frame at full rate");
    }

    #[tokio::test]
    async fn frames_passed_over_leave_the_pipe_exactly_where_the_next_frame_starts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("frames");
        // Three "frames" of 300 000 bytes, each its own byte value; written in pieces, as FFmpeg does.
        let data: Vec<u8> = (0..3u8).flat_map(|i| vec![i + 1; 300_000]).collect();
        std::fs::write(&file, &data).unwrap();
        let mut child = tokio::process::Command::new("dd")
            .args([format!("if={}", file.display()), "bs=32768".into(), "status=none".into()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = RawPipe::new(child.stdout.take().unwrap()).unwrap();
        pipe.skip(300_000).await.unwrap();
        let mut buf = vec![0; 300_000];
        pipe.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|b| *b == 2), "the second frame, whole");
        pipe.skip(300_000).await.unwrap();
        assert!(pipe.read_exact(&mut buf[..1]).await.is_err(), "then the end");
        assert!(pipe.null.is_some(), "spliced to /dev/null (not read and dropped)");
        child.wait().await.unwrap();
    }

    #[test]
    fn audio_is_padded_and_surplus_dropped() {
        let s = SourceStore::new(Duration::from_millis(500));
        let mut out = vec![];
        s.take_audio(100, &mut out);
        assert_eq!(out, vec![0; 100], "silence when the source has none");
        s.put_audio(&vec![7; 2_000]);
        out.clear();
        s.take_audio(100, &mut out);
        assert_eq!(out, vec![7; 100]);
        assert!(s.lock().audio.len() <= 400, "surplus beyond the cushion was dropped");
        s.put_audio(&vec![1; 1_000_000]);
        assert!(s.lock().audio.len() <= 48_000, "bounded at 0.5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_tracks_gaps() {
        let s = SourceStore::new(Duration::from_millis(500));
        let t0 = Instant::now();
        s.put_frame(Frame::solid(2, 2, (0, 0, 0)), t0);
        s.put_frame(Frame::solid(2, 2, (0, 0, 0)), t0 + Duration::from_millis(40));
        assert_eq!(s.health().steady_since, Some(t0));
        let later = t0 + Duration::from_secs(2);
        s.put_frame(Frame::solid(2, 2, (0, 0, 0)), later);
        assert_eq!(s.health().steady_since, Some(later), "a gap restarts the steady period");
        assert_eq!(s.frames_in(), 3);
    }
}
