//! The media pipeline: relay mode (one camera, copied, to many destinations) and program mode
//! (cameras decoded, switched, composited and encoded into one show), both built on the fan-out
//! and the per-destination pushers.
//!
//! - [`flv`]: FLV tag reader. [`fanout`]: cached headers + GOP, one bounded queue per destination.
//! - [`pusher`]: one supervised sender per destination ingest ([`rtmp`]: the native RTMP(S) client). [`relay`]: camera ingest → fan-out.
//! - [`destination`]: platform presets and validation. [`probe`]: ffprobe of cameras;
//!   [`probe_cache`]: what each camera sent at its last probe, so ingests start without one.
//! - [`hwaccel`]: hardware H.264 encoder probing.
//! - Program mode: [`ingest`] (decode), [`switcher`], [`compositor`], [`encoder`], [`program`] (the bus), [`frame`].

pub mod compositor;
pub mod degrade;
pub mod destination;
pub mod encoder;
pub mod fanout;
pub mod flv;
pub mod frame;
pub mod hwaccel;
pub mod ingest;
pub mod probe;
pub mod probe_cache;
pub mod program;
pub mod pusher;
pub mod relay;
pub mod rtmp;
pub mod switcher;
pub mod thumbnail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::ffmpeg::backoff::BackoffPolicy;
use crate::ffmpeg::job::{ArgSource, JobEvent, JobKind, JobSpec};
use crate::ffmpeg::registry::Registry;

/// Frame rates a program can run at: the timeline contract's set, where 48000/fps is
/// a whole number of audio samples. The one rule for every fps the agent accepts (timelines, the
/// demo, `program start`, commands: `values::Fps`).
pub use crate::values::FPS_ALLOWED;

/// What every media job needs from the agent: binaries, supervision settings, where to report.
#[derive(Clone)]
pub struct MediaEnv {
    /// The venue's zone, for clocks drawn on the picture.
    pub tz: jiff::tz::TimeZone,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub backoff: BackoffPolicy,
    pub stale: Duration,
    pub ingest_stale: Duration,
    pub first_progress_timeout: Duration,
    pub rtsp_timeout: Duration,
    pub degraded_after: u32,
    pub stop_grace: Duration,
    pub stderr_lines: usize,
    pub queue_bytes: usize,
    pub registry: Registry,
    pub events: mpsc::Sender<JobEvent>,
    pub switcher: switcher::SwitcherConfig,
    pub degrade: degrade::DegradeConfig,
    /// What each source sent at its last probe (`DATA_DIR/camera_probes.json`), shared by every
    /// ingest and pre-flight so a start need not wait for ffprobe.
    pub probes: probe_cache::ProbeCache,
}

impl MediaEnv {
    /// Wall-clock time now in the venue's zone, for `{{time}}` and `{{date}}`.
    pub fn local_now(&self) -> time::OffsetDateTime {
        let offset = self.tz.to_offset(jiff::Timestamp::now()).seconds();
        let utc = time::OffsetDateTime::now_utc();
        time::UtcOffset::from_whole_seconds(offset).map(|o| utc.to_offset(o)).unwrap_or(utc)
    }

    /// A job with this environment's supervision settings and no pipes; callers add theirs. The
    /// job is named after its kind.
    pub fn job(&self, kind: JobKind, args: Arc<dyn ArgSource>, stale_after: Duration) -> JobSpec {
        JobSpec {
            name: kind.to_string(),
            kind,
            program: self.ffmpeg.clone(),
            args,
            pipe_stdin: false,
            pipe_stdout: false,
            stale_after,
            first_progress_timeout: self.first_progress_timeout,
            input_activity: None,
            backoff: self.backoff,
            degraded_after: self.degraded_after,
            stop_grace: self.stop_grace,
            stderr_lines: self.stderr_lines,
            io: None,
            events: Some(self.events.clone()),
            registry: Some(self.registry.clone()),
            extra_fds: vec![],
            env: vec![],
        }
    }

    pub fn new(cfg: &Config, registry: Registry, events: mpsc::Sender<JobEvent>) -> MediaEnv {
        let f = &cfg.ffmpeg;
        MediaEnv {
            tz: cfg.time_zone().unwrap_or(jiff::tz::TimeZone::UTC),
            ffmpeg: f.path.clone(),
            ffprobe: f.ffprobe.clone(),
            backoff: cfg.backoff().expect("validated with the config"),
            stale: Duration::from_secs(f.stale_s),
            ingest_stale: Duration::from_secs(f.ingest_stale_s),
            first_progress_timeout: Duration::from_secs(f.first_progress_timeout_s),
            rtsp_timeout: Duration::from_secs(f.rtsp_timeout_s),
            degraded_after: f.degraded_after,
            stop_grace: Duration::from_secs(f.stop_grace_s),
            stderr_lines: f.stderr_lines,
            queue_bytes: cfg.relay.queue_bytes,
            registry,
            events,
            switcher: switcher::SwitcherConfig {
                stall: Duration::from_millis(cfg.program.stall_ms),
                fallback: Duration::from_millis(cfg.program.fallback_ms),
                recover: Duration::from_millis(cfg.program.recover_ms),
            },
            degrade: degrade::DegradeConfig {
                slow_speed: cfg.program.degrade_slow_speed,
                window: Duration::from_secs(cfg.program.degrade_window_s),
                min_step_interval: Duration::from_secs(cfg.program.degrade_step_interval_s),
                stable_for: Duration::from_secs(cfg.program.degrade_stable_s),
                ..Default::default()
            },
            probes: probe_cache::ProbeCache::open(cfg.data_dir.join(probe_cache::FILE_NAME)),
        }
    }
}
