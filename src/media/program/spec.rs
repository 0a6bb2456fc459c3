//! What a program is started with ([`ProgramSpec`]) and the status it publishes ([`ProgramStatus`],
//! serialized as JSON for the status page and telemetry).

use std::path::PathBuf;

use serde::Serialize;
use tokio::time::Instant;

use crate::ffmpeg::job::JobStatus;
use crate::media::destination::OutputTarget;
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::CameraSource;
use crate::media::pusher::PusherStatus;
use crate::media::switcher::{SwitcherConfig, Visual};
use crate::values::{ProgramId, SourceId};

#[derive(Debug, Clone)]
pub struct ProgramCamera {
    pub source: CameraSource,
    pub backup: Option<SourceId>,
}

#[derive(Debug, Clone)]
pub struct ProgramSpec {
    pub id: ProgramId,
    /// Every camera the show may cut to; all are pre-rolled (backups included).
    pub cameras: Vec<ProgramCamera>,
    /// On air at start.
    pub first: Option<SourceId>,
    pub outputs: Vec<OutputTarget>,
    pub encoder: EncoderSettings,
    pub slate_png: Option<PathBuf>,
    pub switcher: SwitcherConfig,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CameraStatus {
    pub camera: SourceId,
    pub backup: Option<SourceId>,
    /// Age of its newest frame, ms (None: no frame yet).
    pub frame_age_ms: Option<u64>,
    pub frames_in: u64,
    pub ingest: JobStatus,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProgramStatus {
    pub id: ProgramId,
    pub format: ProgramFormat,
    pub encoder_name: String,
    /// Seconds of program time so far (frames / fps).
    pub program_time_s: f64,
    pub frames: u64,
    /// Frames the encoder could not take in time.
    pub dropped_frames: u64,
    pub on_air: Visual,
    pub wanted_camera: Option<SourceId>,
    pub holding: bool,
    pub pinned: Option<SourceId>,
    pub emergency_slate: bool,
    /// Times a stalled camera was replaced by its backup or the slate.
    pub fallbacks: u64,
    pub encoder: JobStatus,
    pub cameras: Vec<CameraStatus>,
    pub outputs: Vec<PusherStatus>,
    /// The program clock's origin (program time = now - t0).
    #[serde(skip)]
    pub t0: Option<Instant>,
}
