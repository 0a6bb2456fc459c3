//! The director's handle and what it publishes: the calls other tasks make (each answered by the
//! director's task), the [`DirectorView`] of what must play and what plays, and the programs a
//! change took off the air ([`Retired`]), stopped on the caller's task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::{check_origin, DesiredShow, DirectorError};
use crate::media::destination::OutputTarget;
use crate::media::program::{Program, ProgramHandle, ProgramStatus};
use crate::media::thumbnail::Thumbnails;
use crate::timeline::actor::{Control, Origin, ShowStatus};
use crate::timeline::model::Us;
use crate::values::{DestinationId, TimelineId};

/// A program, as other tasks reach it: its handle and its thumbnails.
#[derive(Clone)]
pub struct ProgramRef {
    pub handle: ProgramHandle,
    pub thumbs: Thumbnails,
}

impl ProgramRef {
    pub fn of(p: &Program) -> ProgramRef {
        ProgramRef { handle: p.handle(), thumbs: p.thumbnails() }
    }

    /// The last published status, with the program time brought up to now.
    pub fn status(&self) -> Option<ProgramStatus> {
        let mut s = self.handle.status.borrow().clone()?;
        if let Some(t0) = s.t0 {
            s.program_time_s = tokio::time::Instant::now().saturating_duration_since(t0).as_secs_f64();
        }
        Some(s)
    }
}

/// What the director publishes: what must play, and how to reach what plays.
#[derive(Clone, Default)]
pub struct DirectorView {
    pub desired: Option<DesiredShow>,
    pub show: Option<watch::Receiver<Option<ShowStatus>>>,
    pub program: Option<ProgramRef>,
    /// A scheduled show's program started ahead of its window (timeline id).
    pub prepared: Option<TimelineId>,
}

impl DirectorView {
    pub fn status(&self) -> Option<ShowStatus> {
        self.show.as_ref().and_then(|s| s.borrow().clone())
    }

    /// Whether a request from `origin` may change the show: not if the show was started by a
    /// higher origin (cloud > schedule > operator). Emergencies do not ask.
    pub fn check_origin(&self, origin: Origin) -> Result<(), DirectorError> {
        check_origin(self.desired.as_ref().map(|d| d.origin), origin)
    }

    /// Whether the show reached the end of a timeline that does not loop.
    pub fn ended(&self) -> bool {
        self.status().is_some_and(|s| s.engine.state == crate::timeline::engine::PlayState::Ended)
    }
}

/// Programs taken off the air: their processes stop (SIGINT, then harder) on whichever task
/// awaits [`Retired::finish`], never on the director's.
#[must_use = "retired programs keep running until finished"]
#[derive(Default)]
pub struct Retired(pub(super) Vec<Program>);

impl Retired {
    pub async fn finish(self) {
        futures_util::future::join_all(self.0.into_iter().map(Program::stop)).await;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Stops them on a task of their own.
    pub fn finish_in_background(self) {
        if !self.0.is_empty() {
            tokio::spawn(self.finish());
        }
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, DirectorError>>;

pub(super) enum Msg {
    Start { desired: DesiredShow, start_at: Option<Us>, epoch: u64, reply: Reply<Retired> },
    Prepare { desired: DesiredShow, reply: Reply<Retired> },
    Unprepare { reply: oneshot::Sender<Retired> },
    Stop { origin: Origin, reply: Reply<Retired> },
    KillAll { reply: oneshot::Sender<Retired> },
    Control { origin: Origin, control: Control, reply: Reply<()> },
    SetDestinations { origin: Origin, destinations: Vec<DestinationId>, outputs: Vec<OutputTarget>, reply: Reply<()> },
}

/// The director's handle: commands in, its [`DirectorView`] out. Cloneable; every call is
/// answered by the director's task, which never waits on anything slow (pre-flight, probes and
/// process stops happen on the caller's task).
#[derive(Clone)]
pub struct DirectorHandle {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) view: watch::Receiver<DirectorView>,
    /// Bumped by every kill-all: a start begun before it is withdrawn.
    pub(super) kill_epoch: Arc<AtomicU64>,
}

impl DirectorHandle {
    pub fn view(&self) -> DirectorView {
        self.view.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<DirectorView> {
        self.view.clone()
    }

    /// The kill-all epoch to pass to [`DirectorHandle::start`].
    pub fn epoch(&self) -> u64 {
        self.kill_epoch.load(Ordering::SeqCst)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, DirectorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| DirectorError::Failed("the agent is shutting down".into()))?;
        rx.await.map_err(|_| DirectorError::Failed("the director stopped".into()))
    }

    /// Starts (or replaces) the show; see the director's `start`. Returns the programs it replaced.
    pub async fn start(
        &self,
        desired: DesiredShow,
        start_at: Option<Us>,
        epoch: u64,
    ) -> Result<Retired, DirectorError> {
        self.ask(|reply| Msg::Start { desired, start_at, epoch, reply }).await?
    }

    pub async fn prepare(&self, desired: DesiredShow) -> Result<Retired, DirectorError> {
        self.ask(|reply| Msg::Prepare { desired, reply }).await?
    }

    pub async fn unprepare(&self) -> Result<Retired, DirectorError> {
        self.ask(|reply| Msg::Unprepare { reply }).await
    }

    pub async fn stop(&self, origin: Origin) -> Result<Retired, DirectorError> {
        self.ask(|reply| Msg::Stop { origin, reply }).await?
    }

    /// Stops the show now, whoever started it; a start in flight is withdrawn.
    pub async fn kill_all(&self) -> Result<Retired, DirectorError> {
        self.kill_epoch.fetch_add(1, Ordering::SeqCst);
        self.ask(|reply| Msg::KillAll { reply }).await
    }

    pub async fn control(&self, origin: Origin, control: Control) -> Result<(), DirectorError> {
        self.ask(|reply| Msg::Control { origin, control, reply }).await?
    }

    /// Changes the show's destinations (`outputs` resolved by the caller from the store).
    pub async fn set_destinations(
        &self,
        origin: Origin,
        destinations: Vec<DestinationId>,
        outputs: Vec<OutputTarget>,
    ) -> Result<(), DirectorError> {
        self.ask(|reply| Msg::SetDestinations { origin, destinations, outputs, reply }).await?
    }
}
