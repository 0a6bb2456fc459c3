//! The program bus's commands: what another task may ask of a running show, and the
//! [`ProgramHandle`] it asks through.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::spec::{ProgramCamera, ProgramStatus};
use crate::media::compositor::{OverlayError, Prepared};
use crate::media::destination::OutputTarget;
use crate::values::{CameraId, OverlayId, SourceId};

/// Why the bus refused a command (the reply of a [`ProgramCmd`]).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A cut, pin or timed cut to a camera the program does not decode: preroll it first.
    #[error("camera {camera:?} is not part of this program")]
    UnknownCamera { camera: String },
    /// The program's size left it without a compositor, so it cannot show overlays.
    #[error("overlays are unavailable for this program")]
    OverlaysUnavailable,
    /// The overlay could not be shown (its image, font or size).
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// Hiding an overlay that is not on the picture.
    #[error("no overlay {id:?} is shown")]
    NoSuchOverlay { id: String },
}

/// Operator commands; each answers on its `reply`.
#[derive(Debug)]
pub enum ProgramCmd {
    /// Cut at a program time (seconds since start), or now.
    Cut {
        camera: CameraId,
        at: Option<f64>,
        fade: Duration,
        reply: oneshot::Sender<Result<f64, BusError>>,
    },
    Slate {
        on: bool,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    Pin {
        camera: Option<SourceId>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    SetOutputs {
        outputs: Vec<OutputTarget>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    Overlay {
        op: OverlayOp,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Do something at a program time (µs); announced on [`Program::applied`] with `tag` when done.
    Timed {
        at_us: i64,
        tag: u64,
        action: TimedAction,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Withdraw every timed action and cut scheduled for after a program time (µs).
    CancelAfter {
        at_us: i64,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Start decoding a camera (and its backup) ahead of a cut to it.
    Preroll {
        camera: ProgramCamera,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
}

/// Something the bus does at the first frame due at or after a program time (a timeline's cues).
#[derive(Debug)]
pub enum TimedAction {
    /// To a camera (or media source) already in the program, or (None) to the slate.
    Cut {
        camera: Option<SourceId>,
        fade: Duration,
    },
    Overlay(OverlayOp),
    /// Nothing: only the announcement (a cue's end, for its lateness report).
    Mark,
}

/// A timed action went on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub tag: u64,
    /// Program time of the frame it went out with, µs.
    pub at_us: i64,
}

/// Overlay changes. Images are decoded before they reach the bus (`Prepared::load` off the frame
/// path), so applying any of these costs a frame nothing noticeable.
#[derive(Debug)]
pub enum OverlayOp {
    Show(Box<Prepared>),
    Hide(OverlayId),
    SetVar(String, String),
    Clear,
}

/// What another task needs to drive a program: its command queue, its status, and the
/// announcements of timed actions going on air.
#[derive(Clone)]
pub struct ProgramHandle {
    pub tx: mpsc::Sender<ProgramCmd>,
    pub status: watch::Receiver<Option<ProgramStatus>>,
    pub applied: broadcast::Sender<Applied>,
}

impl ProgramHandle {
    /// Program time now, µs (None before the bus's clock has started).
    pub fn now_us(&self) -> Option<i64> {
        let t0 = self.status.borrow().as_ref()?.t0?;
        Some(Instant::now().saturating_duration_since(t0).as_micros() as i64)
    }

    pub fn fps(&self) -> Option<u32> {
        self.status.borrow().as_ref().map(|s| s.format.fps)
    }
}
