//! What the show actor offers the director: the playback controls, the show's spec and status,
//! and the handle that reaches a running show.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::media::program::ProgramCamera;
use crate::ptz::OnvifEndpoint;
use crate::timeline::engine::{EngineError, EngineStatus};
use crate::timeline::model::{Timeline, Us, VideoSource};
use crate::values::{CameraId, CueId, PresetId, SourceId, TimelineId};

pub use crate::values::Origin;

/// Playback controls: the one internal API the CLI (and later the control plane) calls.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    Pause,
    Resume,
    /// To a cue id or to seconds into the current loop.
    Seek {
        cue: Option<CueId>,
        seconds: Option<f64>,
    },
    Skip,
    Pin {
        camera: CameraId,
    },
    Unpin,
    EmergencySlate {
        on: bool,
    },
    ClearOverlays,
}

/// As derived, with ids as plain strings (`Pin { camera: "cam-a" }`): the form the override
/// events show.
impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Pause => f.write_str("Pause"),
            Control::Resume => f.write_str("Resume"),
            Control::Seek { cue, seconds } => {
                f.debug_struct("Seek").field("cue", &cue.as_ref().map(CueId::as_str)).field("seconds", seconds).finish()
            }
            Control::Skip => f.write_str("Skip"),
            Control::Pin { camera } => f.debug_struct("Pin").field("camera", &camera.as_str()).finish(),
            Control::Unpin => f.write_str("Unpin"),
            Control::EmergencySlate { on } => f.debug_struct("EmergencySlate").field("on", on).finish(),
            Control::ClearOverlays => f.write_str("ClearOverlays"),
        }
    }
}

/// How a PTZ camera is reached and moved.
#[derive(Debug, Clone)]
pub struct PtzTarget {
    pub endpoint: OnvifEndpoint,
    /// Timeline preset id → ONVIF PresetToken.
    pub presets: HashMap<PresetId, String>,
    pub settle: Duration,
}

/// Everything the actor needs, resolved by the daemon (which owns the store and the cameras).
pub struct ShowSpec {
    pub timeline: Arc<Timeline>,
    pub asset_root: PathBuf,
    /// Every source the show may pre-roll (cameras, their backups, media), by bus id.
    pub sources: HashMap<SourceId, ProgramCamera>,
    pub ptz: HashMap<CameraId, PtzTarget>,
    pub preroll_lead: Duration,
    /// Start every source at once (see `TimelineConfig::hot_inputs`).
    pub hot_inputs: bool,
    /// Absolute timeline position to start from (an operator's fresh start).
    pub start_pos: Us,
    /// Instead of `start_pos`: the wall-clock time of position 0 (µs since the epoch), for a
    /// scheduled or resumed show; the position is taken when the clock starts, after the warm-up,
    /// so the show lands exactly where the wall clock says.
    pub wall_anchor_us: Option<i64>,
    pub paused: bool,
    pub pinned: Option<CameraId>,
    pub emergency_slate: bool,
    pub execution_id: Option<i64>,
}

/// The bus id of a video source (None: the slate).
pub fn bus_id(source: &VideoSource) -> Option<SourceId> {
    match source {
        VideoSource::Camera { camera_id, .. } => Some(camera_id.into()),
        VideoSource::Media { asset } => Some(SourceId::media(asset)),
        VideoSource::Slate => None,
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Lateness {
    pub cues: u64,
    /// Cues that went out more than one frame after their time.
    pub late_over_1_frame: u64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Cuts held back for a PTZ move.
    pub held_for_ptz: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ShowStatus {
    pub timeline_id: TimelineId,
    pub engine: EngineStatus,
    pub emergency_slate: bool,
    pub lateness: Lateness,
    pub ptz_moving: Vec<CameraId>,
    pub execution_id: Option<i64>,
}

pub enum ShowMsg {
    Control {
        control: Control,
        reply: oneshot::Sender<Result<(), ActorError>>,
    },
    /// A new version of the timeline, to take over at the next loop boundary (see
    /// [`ShowHandle::replace`]).
    Replace {
        next: NextVersion,
        reply: oneshot::Sender<Result<Handover, ActorError>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// Why the show refused a control, or did not switch to a new version of its timeline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActorError {
    #[error("the show has stopped")]
    ShowStopped,
    #[error("the program has stopped")]
    ProgramStopped,
    /// The program bus refused a command (its message).
    #[error("{0}")]
    Bus(String),
    #[error("the timeline is not playing")]
    NotPlaying,
    #[error("the timeline is not paused")]
    NotPaused,
    #[error("seek takes a cue id or seconds")]
    SeekTarget,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("camera {:?} is not part of this show", .0.as_str())]
    NotInShow(CameraId),
    #[error("the timeline does not loop")]
    NotLooping,
    #[error("the show is paused")]
    Paused,
    #[error("the timeline has ended")]
    Ended,
    #[error("the show has not started yet")]
    NotStarted,
    #[error("no loop boundary ahead")]
    NoBoundary,
    #[error("superseded by a newer version")]
    Superseded,
    #[error("the show was paused")]
    PausedMeanwhile,
    #[error("the show stopped looping")]
    StoppedLooping,
}

/// A new version of the playing timeline (same id, same picture format), resolved by the
/// director like a [`ShowSpec`].
pub struct NextVersion {
    pub timeline: Arc<Timeline>,
    pub asset_root: PathBuf,
    pub sources: HashMap<SourceId, ProgramCamera>,
    pub ptz: HashMap<CameraId, PtzTarget>,
}

/// Where a new version took over.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    /// Program time of the loop boundary, s.
    pub at_s: f64,
    /// The loop of the old version that did not play (counted from the show's start).
    pub loop_index: u64,
}

/// A new version waiting for its loop boundary.
pub(super) struct Pending {
    pub(super) next: NextVersion,
    /// (absolute position, program time) of the boundary.
    pub(super) boundary: (Us, Us),
    pub(super) reply: oneshot::Sender<Result<Handover, ActorError>>,
}

/// A running show.
pub struct ShowHandle {
    pub tx: mpsc::Sender<ShowMsg>,
    pub status: watch::Receiver<Option<ShowStatus>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl ShowHandle {
    pub async fn control(&self, control: Control) -> Result<(), ActorError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ShowMsg::Control { control, reply }).await.map_err(|_| ActorError::ShowStopped)?;
        rx.await.map_err(|_| ActorError::ShowStopped)?
    }

    /// Hands the show a new version of its timeline, which takes over at the next loop boundary:
    /// the answer comes then (or at once if the show cannot take it: paused, ended, not looping).
    /// The receiver may be polled rather than awaited; a later version replaces a waiting one.
    pub async fn replace(&self, next: NextVersion) -> oneshot::Receiver<Result<Handover, ActorError>> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(ShowMsg::Replace { reply, .. })) =
            self.tx.send(ShowMsg::Replace { next, reply }).await
        {
            let _ = reply.send(Err(ActorError::ShowStopped));
        }
        rx
    }

    pub async fn stop(self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ShowMsg::Stop { reply }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    pub fn status(&self) -> Option<ShowStatus> {
        self.status.borrow().clone()
    }
}
