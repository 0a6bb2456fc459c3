//! A program: one continuous show.
//!
//! Decode ingests (pre-rolled) fill source stores; the bus ticks on absolute deadlines
//! (frame n at t0 + n/fps, never "sleep a frame"), asks the [`Switcher`] what is on air, builds the
//! picture (crossfades mixed here), composites overlays, takes the matching 48000/fps samples of
//! audio (silence for the slate or a camera without audio), and hands both to the encoder, whose FLV
//! feeds the fan-out and the destinations. A cut, a dead camera or a new destination changes what
//! the bus draws or which pushers run; the encoder and the healthy destinations are never
//! restarted (a restart would drop every destination's connection).
//!
//! - `spec`: what a program is started with and the status it publishes.
//! - `cmd`: the commands the bus takes, their replies and refusals, and the [`ProgramHandle`]
//!   other tasks drive a program with.
//! - `bus`: the task that ticks the frames. `slate`: the picture shown when no camera is.

mod bus;
mod cmd;
mod slate;
mod spec;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::ingest::ProgramFormat;
use super::thumbnail::Thumbnails;
use super::MediaEnv;
use bus::Bus;

pub use cmd::{Applied, BusError, OverlayOp, ProgramCmd, ProgramHandle, TimedAction};
pub use spec::{CameraStatus, ProgramCamera, ProgramSpec, ProgramStatus};

pub struct Program {
    format: ProgramFormat,
    thumbs: Thumbnails,
    applied: broadcast::Sender<Applied>,
    tx: mpsc::Sender<ProgramCmd>,
    status: watch::Receiver<Option<ProgramStatus>>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Program {
    pub async fn start(spec: ProgramSpec, env: &MediaEnv) -> Program {
        let (tx, rx) = mpsc::channel(32);
        let (status_tx, status_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let thumbs = Thumbnails::default();
        let (applied, _) = broadcast::channel(256);
        let format = spec.encoder.format;
        let bus = Bus::new(spec, env, status_tx, applied.clone(), thumbs.clone()).await;
        let task = tokio::spawn(bus.run(rx, stop_rx));
        Program { format, thumbs, applied, tx, status: status_rx, stop: Some(stop_tx), task }
    }

    /// The picture format it was started with (known before its first frame, unlike its status).
    pub fn format(&self) -> ProgramFormat {
        self.format
    }

    pub fn handle(&self) -> ProgramHandle {
        ProgramHandle { tx: self.tx.clone(), status: self.status.clone(), applied: self.applied.clone() }
    }

    /// The latest JPEG of the program (`program`) or of a camera (its id), refreshed every second.
    pub fn thumbnail(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        self.thumbs.get(name)
    }

    /// The program's thumbnails, for tasks that hold only its handle.
    pub fn thumbnails(&self) -> Thumbnails {
        self.thumbs.clone()
    }

    pub fn sender(&self) -> mpsc::Sender<ProgramCmd> {
        self.tx.clone()
    }

    /// The last published status, with the program time brought up to now.
    pub fn status(&self) -> Option<ProgramStatus> {
        let mut s = self.status.borrow().clone()?;
        if let Some(t0) = s.t0 {
            s.program_time_s = Instant::now().saturating_duration_since(t0).as_secs_f64();
        }
        Some(s)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        let _ = self.task.await;
    }
}
