//! The director: which show runs, for whom, and from where (DESIGN §5; issue 4 §3, §4, §7, §8).
//!
//! It lives in the daemon and owns at most one show: a program bus named [`SHOW_PROGRAM`] plus
//! the [`actor`](super::actor) driving it. Everything that decides what plays comes through here:
//! the local operator, the schedules, and later the cloud, each with its [`Origin`]. A request
//! from a lower origin than the show's owner is refused with a conflict (cloud > schedule >
//! operator); emergency slate and kill-all are never refused.
//!
//! **Autonomy.** The desired show is persisted (`desired_show`) whenever it changes: which
//! timeline, for whom, to which destinations, and the wall-clock instant at which the timeline's
//! position 0 was (or the position it is paused at). After a crash or a reboot the daemon starts
//! it again **at the wall-clock position**, not from the top: a show is usually a 24/7 loop whose
//! cues mean something at a time of day (a tide board at the half hour, a sponsor slot), and a
//! scheduled show must stay aligned with its window; restarting from 0 would replay the opening
//! after every crash and drift the show from its schedule. The gap is the restart time, already
//! lost to viewers either way. A paused show comes back paused at its position.
//!
//! **Pre-flight** runs before a show goes live: blockers (unknown or disabled-only destinations,
//! an invalid timeline, no usable encoder) stop it; warnings (a camera that does not answer a
//! probe) are reported and the show goes on, the fallback standing in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::actor::{
    self, media_id, Control, Handover, NextVersion, Origin, PtzTarget, ShowHandle, ShowSpec, ShowStatus,
};
use super::model::{self, Inventory, Timeline, Us};
use super::preflight::Preflight;
use super::schedule::{self, ValidSchedule};
use crate::config::Config;
use crate::media::destination::OutputTarget;
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::{CameraSource, SourceKind};
use crate::media::program::{Program, ProgramCamera, ProgramHandle, ProgramSpec, ProgramStatus};
use crate::media::thumbnail::Thumbnails;
use crate::media::MediaEnv;
use crate::ptz::OnvifEndpoint;
use crate::store::{Severity, Store, StoreError};
use crate::values::{CameraId, DestinationId, ScheduleId, TimelineId};

/// The program a show runs on.
pub const SHOW_PROGRAM: &str = "show";

/// What must be playing, persisted so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredShow {
    pub timeline_id: String,
    pub origin: Origin,
    pub schedule_id: Option<String>,
    pub destinations: Vec<String>,
    /// Wall-clock time of absolute timeline position 0 while playing (µs since the Unix epoch).
    pub anchor_unix_us: i64,
    /// The position it is paused at, µs.
    pub paused_pos_us: Option<i64>,
    pub pinned: Option<String>,
    pub bitrate_kbps: Option<u32>,
    /// An emergency slate survives a restart: whoever put it up takes it down.
    #[serde(default)]
    pub emergency_slate: bool,
}

impl DesiredShow {
    /// Where the timeline is at wall-clock time `now`.
    pub fn position_at(&self, now: Timestamp) -> Us {
        self.paused_pos_us.unwrap_or_else(|| (now.as_microsecond() - self.anchor_unix_us).max(0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("pre-flight failed: {}", .0.blockers.join("; "))]
    Blocked(Preflight),
    #[error("{0}")]
    Conflict(String),
    #[error("no show is running")]
    NoShow,
    #[error("withdrawn by a kill-all before it went live")]
    Canceled,
    #[error("{0}")]
    Failed(String),
}

/// A running show.
struct Current {
    desired: DesiredShow,
    show: ShowHandle,
    timeline: Arc<Timeline>,
    /// The `loaded_at` of the stored timeline last seen: when it changes, a new version was stored.
    stamp: String,
    /// A new version on its way to the air.
    update: Option<Update>,
}

/// A new version of the show's timeline, waiting for the show's next loop boundary.
enum Update {
    /// Handed to the show, which switches to it at the boundary and answers then.
    Handover { timeline: Arc<Timeline>, root: PathBuf, rx: oneshot::Receiver<Result<Handover, String>> },
    /// Another picture format: the show starts again (new program) at the boundary, µs since the
    /// Unix epoch.
    Restart { at_unix_us: i64, root: PathBuf },
}

/// What the daemon lends the director (and pre-flight) for a call.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub env: &'a MediaEnv,
}

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
    pub prepared: Option<String>,
}

impl DirectorView {
    pub fn status(&self) -> Option<ShowStatus> {
        self.show.as_ref().and_then(|s| s.borrow().clone())
    }

    /// Whether the show reached the end of a timeline that does not loop.
    pub fn ended(&self) -> bool {
        self.status().is_some_and(|s| s.engine.state == super::engine::PlayState::Ended)
    }
}

/// Programs taken off the air: their processes stop (SIGINT, then harder) on whichever task
/// awaits [`Retired::finish`], never on the director's.
#[must_use = "retired programs keep running until finished"]
#[derive(Default)]
pub struct Retired(Vec<Program>);

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

type Reply<T> = oneshot::Sender<Result<T, DirectorError>>;

enum Msg {
    Start { desired: DesiredShow, start_at: Option<Us>, epoch: u64, reply: Reply<Retired> },
    Prepare { desired: DesiredShow, reply: Reply<Retired> },
    Unprepare { reply: oneshot::Sender<Retired> },
    Stop { origin: Origin, reply: Reply<Retired> },
    KillAll { reply: oneshot::Sender<Retired> },
    Control { origin: Origin, control: Control, reply: Reply<()> },
    SetDestinations { origin: Origin, destinations: Vec<String>, outputs: Vec<OutputTarget>, reply: Reply<()> },
}

/// The director's handle: commands in, its [`DirectorView`] out. Cloneable; every call is
/// answered by the director's task, which never waits on anything slow (pre-flight, probes and
/// process stops happen on the caller's task).
#[derive(Clone)]
pub struct DirectorHandle {
    tx: mpsc::Sender<Msg>,
    view: watch::Receiver<DirectorView>,
    /// Bumped by every kill-all: a start begun before it is withdrawn.
    kill_epoch: Arc<AtomicU64>,
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

    /// Starts (or replaces) the show; see [`Director::start`]. Returns the programs it replaced.
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
        destinations: Vec<String>,
        outputs: Vec<OutputTarget>,
    ) -> Result<(), DirectorError> {
        self.ask(|reply| Msg::SetDestinations { origin, destinations, outputs, reply }).await?
    }
}

#[derive(Default)]
pub struct Director {
    current: Option<Current>,
    /// The show's program.
    program: Option<Program>,
    /// A scheduled show's program started ahead of its window (timeline id).
    prepared: Option<String>,
}

/// Starts the director's task, which resumes the show recorded by the last run.
pub fn spawn(
    cfg: Config,
    store: Store,
    env: MediaEnv,
    shutdown: CancellationToken,
) -> (DirectorHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Msg>(32);
    let (view_tx, view) = watch::channel(DirectorView::default());
    let kill_epoch = Arc::new(AtomicU64::new(0));
    let epoch = kill_epoch.clone();
    let task = tokio::spawn(async move {
        let mut d = Director::default();
        {
            let ctx = Ctx { cfg: &cfg, store: &store, env: &env };
            match d.resume_persisted(&ctx).await {
                Ok(Some(s)) => tracing::info!(timeline = %s.timeline_id, "resumed the show that was playing"),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("cannot resume the recorded show: {e}");
                    let _ = store.add_event(Severity::Error, "show_resume_failed", "agent", &e.to_string()).await;
                }
            }
        }
        let _ = view_tx.send(d.view());
        let mut anchor_tick = tokio::time::interval(Duration::from_secs(1));
        anchor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wedge_at = crate::notify::wedge_at();
        loop {
            // Liveness for the systemd watchdog: the anchor tick turns this loop every second.
            crate::notify::beat(crate::notify::Loop::Director);
            if wedge_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                tracing::warn!("test hook: the director wedges now ({})", crate::notify::WEDGE_HOOK_ENV);
                std::future::pending::<()>().await;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let ctx = Ctx { cfg: &cfg, store: &store, env: &env };
                    d.handle(&ctx, msg, &epoch).await;
                    let _ = view_tx.send(d.view());
                }
                _ = anchor_tick.tick() => {
                    let ctx = Ctx { cfg: &cfg, store: &store, env: &env };
                    d.sync_anchor(&ctx, Timestamp::now()).await;
                    if d.follow_timeline(&ctx, Timestamp::now()).await {
                        let _ = view_tx.send(d.view());
                    }
                }
            }
        }
        d.shutdown().await;
        let _ = view_tx.send(DirectorView::default());
    });
    (DirectorHandle { tx, view, kill_epoch }, task)
}

impl Director {
    fn view(&self) -> DirectorView {
        DirectorView {
            desired: self.current.as_ref().map(|c| c.desired.clone()),
            show: self.current.as_ref().map(|c| c.show.status.clone()),
            program: self.program.as_ref().map(ProgramRef::of),
            prepared: self.prepared.clone(),
        }
    }

    async fn handle(&mut self, ctx: &Ctx<'_>, msg: Msg, epoch: &AtomicU64) {
        match msg {
            Msg::Start { desired, start_at, epoch: at, reply } => {
                let r = if at != epoch.load(Ordering::SeqCst) {
                    Err(DirectorError::Canceled)
                } else {
                    self.start(ctx, desired, start_at).await
                };
                let _ = reply.send(r);
            }
            Msg::Prepare { desired, reply } => {
                let _ = reply.send(self.prepare(ctx, &desired).await);
            }
            Msg::Unprepare { reply } => {
                let mut retired = Retired::default();
                if self.current.is_none() && self.prepared.take().is_some() {
                    retired.0.extend(self.program.take());
                }
                let _ = reply.send(retired);
            }
            Msg::Stop { origin, reply } => {
                let _ = reply.send(self.stop(ctx, Some(origin)).await);
            }
            Msg::KillAll { reply } => {
                let r =
                    self.stop(ctx, None).await.unwrap_or_else(|_| Retired(self.program.take().into_iter().collect()));
                self.prepared = None;
                let _ = reply.send(r);
            }
            Msg::Control { origin, control, reply } => {
                let _ = reply.send(self.control(ctx, origin, control).await);
            }
            Msg::SetDestinations { origin, destinations, outputs, reply } => {
                let _ = reply.send(self.set_destinations(ctx, origin, destinations, outputs).await);
            }
        }
    }

    fn outranks(&self, origin: Option<Origin>) -> Result<(), DirectorError> {
        match (&self.current, origin) {
            (Some(c), Some(o)) if o < c.desired.origin => Err(DirectorError::Conflict(format!(
                "the show was started by the {} and outranks the {}",
                c.desired.origin.as_str(),
                o.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Starts (or replaces) the show. `origin` must not be below the current show's. Pre-flight
    /// is the caller's (it probes cameras: slow). `start_at`: the position to start from (an
    /// operator's fresh start); None: where the wall clock says the show is (a schedule, or a
    /// show resumed after a restart).
    async fn start(
        &mut self,
        ctx: &Ctx<'_>,
        desired: DesiredShow,
        start_at: Option<Us>,
    ) -> Result<Retired, DirectorError> {
        self.outranks(Some(desired.origin))?;
        let (tl, root, stamp) = load_timeline_row(ctx.store, &desired.timeline_id).await?;
        let destination_ids = desired.destinations.iter().map(DestinationId::new).collect::<Result<Vec<_>, _>>();
        let destination_ids = destination_ids.map_err(|e| DirectorError::Invalid(format!("destination: {e}")))?;
        let outputs = ctx.store.outputs_for(&destination_ids).await?;
        let fmt = ProgramFormat { width: tl.width, height: tl.height, fps: tl.fps };
        // Same picture format: the running program is kept, so the destinations stay connected
        // from one timeline to the next (a schedule's rotation).
        // A prepared program still waiting for its first frame has no status yet: it is kept too.
        let reuse = self.program.as_ref().is_some_and(|p| p.format() == fmt);
        if let Some(c) = self.current.take() {
            c.show.stop().await;
        }
        let now_wall = Timestamp::now();
        let start_pos = start_at.unwrap_or_else(|| desired.position_at(now_wall));
        let start_pos = if tl.looping { start_pos } else { start_pos.min(tl.duration) };
        // Whole frames, so that cues on frame times stay on frame times.
        let frame = 1_000_000 / tl.fps as i64;
        let start_pos = start_pos / frame * frame;
        let sources = self.sources(ctx, &tl, &root).await?;
        let state = super::engine::state_at(&tl, start_pos);
        let first = state
            .video
            .as_ref()
            .and_then(|id| tl.video.iter().find(|c| &c.id == id))
            .and_then(|c| actor::bus_id(&c.source));
        let mut retired = Retired::default();
        if reuse {
            let p = self.program.as_ref().expect("checked");
            let (tx, rx) = oneshot::channel();
            let _ = p.sender().send(crate::media::program::ProgramCmd::SetOutputs { outputs, reply: tx }).await;
            let _ = rx.await;
        } else {
            let kbps = desired.bitrate_kbps.unwrap_or_else(|| bitrate_for(fmt, ctx.cfg));
            let kbps = ctx.store.capped_bitrate(SHOW_PROGRAM, &destination_ids, kbps).await;
            retired = self.start_program(ctx, &tl, &root, &sources, first.clone(), outputs, kbps).await?;
        }
        let program = self.program.as_ref().expect("started").handle();
        let ptz = self.ptz_targets(ctx, &tl).await?;
        let execution_id =
            match (TimelineId::new(tl.id.as_str()), desired.schedule_id.clone().map(ScheduleId::new).transpose()) {
                (Ok(t), Ok(s)) => ctx.store.start_execution(&t, desired.origin.as_str(), s.as_ref()).await.ok(),
                _ => None,
            };
        let spec = ShowSpec {
            timeline: tl.clone(),
            asset_root: root,
            sources,
            ptz,
            preroll_lead: Duration::from_millis(ctx.cfg.timeline.preroll_lead_ms),
            hot_inputs: ctx.cfg.timeline.hot_inputs,
            start_pos,
            wall_anchor_us: if start_at.is_none() && desired.paused_pos_us.is_none() {
                Some(desired.anchor_unix_us)
            } else {
                None
            },
            paused: desired.paused_pos_us.is_some(),
            pinned: desired.pinned.clone(),
            emergency_slate: desired.emergency_slate,
            execution_id,
        };
        let show = actor::spawn(spec, program, ctx.env.events.clone(), Some(ctx.store.clone()));
        ctx.store.set_desired_show(Some(&serde_json::to_string(&desired).expect("serializes"))).await?;
        let _ = ctx
            .store
            .add_event(
                Severity::Info,
                "show_started",
                &format!("timeline:{}", tl.id),
                &format!("by the {} at {:.3} s", desired.origin.as_str(), start_pos as f64 / 1e6),
            )
            .await;
        self.current = Some(Current { desired, show, timeline: tl, stamp, update: None });
        self.prepared = None;
        Ok(retired)
    }

    /// Starts the show's program (replacing any, which is returned to be stopped elsewhere): the
    /// first shot's camera and its backups, or every camera with hot inputs, encoding to
    /// `outputs` (none while a show is only prepared).
    #[allow(clippy::too_many_arguments)]
    async fn start_program(
        &mut self,
        ctx: &Ctx<'_>,
        tl: &Timeline,
        root: &Path,
        sources: &HashMap<String, ProgramCamera>,
        first: Option<String>,
        outputs: Vec<OutputTarget>,
        kbps: u32,
    ) -> Result<Retired, DirectorError> {
        // Chosen by pre-flight (or an earlier start) and cached: a file read here.
        let encoder =
            crate::media::hwaccel::cached(&ctx.cfg.ffmpeg.path, &ctx.cfg.data_dir.join("hwaccel.json"), false)
                .await
                .map_err(|e| DirectorError::Failed(e.to_string()))?
                .chosen;
        let mut want: Vec<String> = first.iter().cloned().collect();
        if ctx.cfg.timeline.hot_inputs {
            want.extend(tl.cameras());
        }
        let mut cams: Vec<ProgramCamera> = Vec::new();
        while let Some(id) = want.pop() {
            if let Some(pc) = sources.get(&id) {
                if !cams.iter().any(|c| c.source.camera_id == id) {
                    want.extend(pc.backup.clone());
                    cams.push(pc.clone());
                }
            }
        }
        let fmt = ProgramFormat { width: tl.width, height: tl.height, fps: tl.fps };
        let spec = ProgramSpec {
            id: SHOW_PROGRAM.into(),
            cameras: cams,
            first,
            outputs,
            encoder: EncoderSettings { format: fmt, bitrate_kbps: kbps, encoder },
            slate_png: tl.fallback.slate.as_ref().map(|s| root.join(s)),
            switcher: ctx.env.switcher,
        };
        let old = self.program.replace(Program::start(spec, ctx.env).await);
        Ok(Retired(old.into_iter().collect()))
    }

    /// Gets a scheduled show ready before its window opens (pre-flight done by the scheduler):
    /// its program runs with its cameras decoding and its encoder warm, but no destination, so
    /// going live at the window start is only connecting the destinations.
    async fn prepare(&mut self, ctx: &Ctx<'_>, desired: &DesiredShow) -> Result<Retired, DirectorError> {
        if self.current.is_some() {
            return Err(DirectorError::Conflict("a show is playing: nothing to prepare".into()));
        }
        let timeline_id = desired.timeline_id.as_str();
        let (tl, root) = load_timeline(ctx.store, timeline_id).await?;
        let sources = self.sources(ctx, &tl, &root).await?;
        let first = super::engine::state_at(&tl, 0)
            .video
            .and_then(|id| tl.video.iter().find(|c| c.id == id).map(|c| c.source.clone()))
            .and_then(|s| actor::bus_id(&s));
        let fmt = ProgramFormat { width: tl.width, height: tl.height, fps: tl.fps };
        let retired =
            self.start_program(ctx, &tl, &root, &sources, first, Vec::new(), bitrate_for(fmt, ctx.cfg)).await?;
        self.prepared = Some(timeline_id.to_string());
        tracing::info!(timeline = %timeline_id, "scheduled show prepared (no destination yet)");
        Ok(retired)
    }

    /// Every source the show may need, by bus id: its cameras with their backups (a camera's own
    /// backup first, else the timeline's fallback camera), and its media.
    async fn sources(
        &self,
        ctx: &Ctx<'_>,
        tl: &Timeline,
        root: &Path,
    ) -> Result<HashMap<String, ProgramCamera>, DirectorError> {
        let mut out = HashMap::new();
        let mut want: Vec<String> = tl.cameras();
        while let Some(id) = want.pop() {
            if out.contains_key(&id) {
                continue;
            }
            let c = ctx
                .store
                .camera(&CameraId::new(id.as_str()).map_err(|e| DirectorError::Invalid(e.to_string()))?)
                .await?;
            let backup = c
                .backup_camera_id
                .clone()
                .map(String::from)
                .or_else(|| tl.fallback.backup_camera_id.clone().filter(|b| *b != id));
            want.extend(backup.clone());
            out.insert(id, ProgramCamera { source: c.source(), backup });
        }
        for asset in tl.media() {
            let path = root.join(model::safe_rel_path(&asset).map_err(DirectorError::Invalid)?);
            let id = media_id(&asset);
            let source = CameraSource { camera_id: id.clone(), kind: SourceKind::Media(path), shown: asset.clone() };
            out.insert(id, ProgramCamera { source, backup: None });
        }
        Ok(out)
    }

    async fn ptz_targets(&self, ctx: &Ctx<'_>, tl: &Timeline) -> Result<HashMap<String, PtzTarget>, DirectorError> {
        let presets = ctx.store.presets().await?;
        let mut out = HashMap::new();
        for id in tl.cameras() {
            let cam = CameraId::new(id.as_str()).map_err(|e| DirectorError::Invalid(e.to_string()))?;
            let c = ctx.store.camera(&cam).await?;
            let Some(host) = c.onvif_host.clone() else { continue };
            let (profile, settle) = ctx.store.camera_ptz(&cam).await?;
            out.insert(
                id.clone(),
                PtzTarget {
                    endpoint: OnvifEndpoint {
                        host,
                        port: c.onvif_port.unwrap_or(ctx.cfg.timeline.onvif_port),
                        username: c.username.clone(),
                        password: c.password.clone(),
                        profile_token: profile,
                    },
                    presets: presets
                        .get(&cam)
                        .map(|m| m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                        .unwrap_or_default(),
                    settle: Duration::from_millis(settle.unwrap_or(ctx.cfg.timeline.ptz_settle_ms)),
                },
            );
        }
        Ok(out)
    }

    /// Stops the show; its program is returned to be stopped elsewhere. `origin` None: an
    /// emergency (kill-all), never refused.
    async fn stop(&mut self, ctx: &Ctx<'_>, origin: Option<Origin>) -> Result<Retired, DirectorError> {
        let Some(_) = &self.current else {
            return Err(DirectorError::NoShow);
        };
        self.outranks(origin)?;
        let c = self.current.take().expect("checked");
        c.show.stop().await;
        let retired = Retired(self.program.take().into_iter().collect());
        ctx.store.set_desired_show(None).await?;
        let _ = ctx.store.add_event(Severity::Info, "show_stopped", &format!("timeline:{}", c.timeline.id), "").await;
        Ok(retired)
    }

    /// Stops for shutdown: the desired show stays recorded, so the next start resumes it.
    async fn shutdown(&mut self) {
        if let Some(c) = self.current.take() {
            c.show.stop().await;
        }
        if let Some(p) = self.program.take() {
            p.stop().await;
        }
    }

    async fn set_destinations(
        &mut self,
        ctx: &Ctx<'_>,
        origin: Origin,
        destinations: Vec<String>,
        outputs: Vec<OutputTarget>,
    ) -> Result<(), DirectorError> {
        self.outranks(Some(origin))?;
        let (Some(c), Some(p)) = (&mut self.current, &self.program) else { return Err(DirectorError::NoShow) };
        let (tx, rx) = oneshot::channel();
        p.sender()
            .send(crate::media::program::ProgramCmd::SetOutputs { outputs, reply: tx })
            .await
            .map_err(|_| DirectorError::Failed("the show's program has stopped".into()))?;
        rx.await
            .map_err(|_| DirectorError::Failed("the show's program has stopped".into()))?
            .map_err(DirectorError::Failed)?;
        c.desired.destinations = destinations;
        ctx.store.set_desired_show(Some(&serde_json::to_string(&c.desired).expect("serializes"))).await?;
        Ok(())
    }

    /// A playback control. Emergency slate and clearing overlays are never refused; the rest need
    /// an origin at least the show's.
    async fn control(&mut self, ctx: &Ctx<'_>, origin: Origin, control: Control) -> Result<(), DirectorError> {
        let Some(c) = &mut self.current else { return Err(DirectorError::NoShow) };
        let emergency = matches!(control, Control::EmergencySlate { .. } | Control::ClearOverlays);
        if !emergency && origin < c.desired.origin {
            return Err(DirectorError::Conflict(format!(
                "the show was started by the {} and outranks the {}",
                c.desired.origin.as_str(),
                origin.as_str()
            )));
        }
        c.show.control(control.clone()).await.map_err(DirectorError::Invalid)?;
        // Persist where the show is now, so a restart resumes it exactly so.
        if let Some(st) = c.show.status() {
            let abs = st.engine.loop_index as i64 * c.timeline.duration + (st.engine.position_s * 1e6) as i64;
            let now = Timestamp::now().as_microsecond();
            match st.engine.state {
                super::engine::PlayState::Paused => c.desired.paused_pos_us = Some(abs),
                _ => {
                    c.desired.paused_pos_us = None;
                    c.desired.anchor_unix_us = now - abs;
                }
            }
            c.desired.pinned = st.engine.pinned.clone();
            c.desired.emergency_slate = st.emergency_slate;
        }
        ctx.store.set_desired_show(Some(&serde_json::to_string(&c.desired).expect("serializes"))).await?;
        let _ = ctx
            .store
            .add_event(
                Severity::Info,
                "operator_override",
                &format!("timeline:{}", c.timeline.id),
                &format!("{control:?} by the {}", origin.as_str()),
            )
            .await;
        Ok(())
    }

    /// At start-up: the show that was playing when the agent stopped, resumed where the wall
    /// clock says it is now.
    async fn resume_persisted(&mut self, ctx: &Ctx<'_>) -> Result<Option<DesiredShow>, DirectorError> {
        let Some(json) = ctx.store.desired_show().await? else { return Ok(None) };
        let desired: DesiredShow = match serde_json::from_str(&json) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("the recorded show cannot be read ({e}); forgetting it");
                ctx.store.set_desired_show(None).await?;
                return Ok(None);
            }
        };
        // Schedules decide for themselves (their window may be over); others resume here.
        if desired.origin == Origin::Schedule {
            return Ok(None);
        }
        self.start(ctx, desired.clone(), None).await?.finish_in_background();
        Ok(Some(desired))
    }

    /// Follows the show's stored timeline (called every second): when a new version of it is
    /// stored (a segment version activated or rolled back, a timeline loaded again; by this
    /// process or by the CLI's), a looping show that is playing switches to it at its next loop
    /// boundary, keeping its program, destinations and desired show; the new version plays from its
    /// position 0 there. A paused, ended or non-looping show keeps what it loaded until it is started
    /// again. A new version that does not check out leaves the show as it is. True when the show
    /// was started again (a new picture format).
    async fn follow_timeline(&mut self, ctx: &Ctx<'_>, now: Timestamp) -> bool {
        let Some(c) = &mut self.current else { return false };
        let id = c.desired.timeline_id.clone();
        let subject = format!("timeline:{id}");
        // A hand-over answered.
        if let Some(Update::Handover { rx, .. }) = &mut c.update {
            let answer = match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err("the show has stopped".to_string())),
                Ok(r) => Some(r),
            };
            if let Some(answer) = answer {
                let Some(Update::Handover { timeline, root, .. }) = c.update.take() else { unreachable!() };
                match answer {
                    Ok(h) => {
                        c.timeline = timeline;
                        let detail = format!(
                            "the show switched to the new version of {id} ({}) at its loop boundary (program time \
                             {:.3} s, instead of loop {}); destinations stayed connected",
                            root.display(),
                            h.at_s,
                            h.loop_index
                        );
                        tracing::info!(timeline = %id, "{detail}");
                        let _ = ctx.store.add_event(Severity::Info, "show_updated", &subject, &detail).await;
                    }
                    Err(why) => {
                        let detail = format!(
                            "the new version of {id} ({}) was not switched to ({why}); it plays from the next start",
                            root.display()
                        );
                        tracing::info!(timeline = %id, "{detail}");
                        let _ = ctx.store.add_event(Severity::Info, "show_update_deferred", &subject, &detail).await;
                    }
                }
            }
        }
        // A restart due (another picture format).
        if let Some(Update::Restart { at_unix_us, .. }) = &c.update {
            if now.as_microsecond() >= *at_unix_us {
                let Some(Update::Restart { at_unix_us, root }) = c.update.take() else { unreachable!() };
                let playing = c.show.status().is_some_and(|s| s.engine.state == super::engine::PlayState::Playing);
                if !playing {
                    let detail = format!(
                        "the new version of {id} ({}) was not switched to (the show is not playing); it plays \
                         from the next start",
                        root.display()
                    );
                    tracing::info!(timeline = %id, "{detail}");
                    let _ = ctx.store.add_event(Severity::Info, "show_update_deferred", &subject, &detail).await;
                    return false;
                }
                let desired = DesiredShow { anchor_unix_us: at_unix_us, ..c.desired.clone() };
                match self.start(ctx, desired, None).await {
                    Ok(retired) => {
                        retired.finish_in_background();
                        let detail = format!(
                            "the show started again on the new version of {id} ({}) at its loop boundary, \
                             with a new program for its picture format",
                            root.display()
                        );
                        tracing::info!(timeline = %id, "{detail}");
                        let _ = ctx.store.add_event(Severity::Info, "show_updated", &subject, &detail).await;
                    }
                    Err(e) => {
                        let detail = format!("the new version of {id} ({}) cannot start: {e}", root.display());
                        tracing::error!(timeline = %id, "{detail}");
                        let _ = ctx.store.add_event(Severity::Error, "show_update_failed", &subject, &detail).await;
                    }
                }
                return true;
            }
        }
        // A new version stored?
        let stored = match TimelineId::new(id.as_str()) {
            Ok(t) => ctx.store.timeline_loaded_at(&t).await,
            Err(e) => Err(StoreError::Invalid(e.to_string())),
        };
        let stamp = match stored {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(timeline = %id, "cannot read the stored timeline: {e}");
                return false;
            }
        };
        if stamp == c.stamp {
            return false;
        }
        c.stamp = stamp;
        let status = c.show.status();
        let playing = status.as_ref().is_some_and(|s| s.engine.state == super::engine::PlayState::Playing);
        if !playing || !c.timeline.looping {
            let why =
                if !c.timeline.looping { "its timeline does not loop" } else { "it is not playing (paused or ended)" };
            tracing::info!(
                timeline = %id,
                "a new version of {id} was stored; the show keeps the version it loaded ({why}) until it is \
                 started again"
            );
            return false;
        }
        let next = async {
            let (tl, root, _) = load_timeline_row(ctx.store, &id).await?;
            let sources = self.sources(ctx, &tl, &root).await?;
            let ptz = self.ptz_targets(ctx, &tl).await?;
            Ok::<_, DirectorError>(NextVersion { timeline: tl, asset_root: root, sources, ptz })
        }
        .await;
        let c = self.current.as_mut().expect("checked");
        let next = match next {
            Ok(n) => n,
            Err(e) => {
                let detail = format!("the new version of {id} cannot play: {e}; the show goes on with the old one");
                tracing::error!(timeline = %id, "{detail}");
                let _ = ctx.store.add_event(Severity::Error, "show_update_failed", &subject, &detail).await;
                return false;
            }
        };
        let fmt = ProgramFormat { width: next.timeline.width, height: next.timeline.height, fps: next.timeline.fps };
        let running = self.program.as_ref().and_then(|p| p.status()).map(|s| s.format);
        if running == Some(fmt) {
            tracing::info!(
                timeline = %id,
                "a new version of {id} was stored ({}): it takes over at the show's next loop boundary",
                next.asset_root.display()
            );
            let (timeline, root) = (next.timeline.clone(), next.asset_root.clone());
            let rx = c.show.replace(next).await;
            c.update = Some(Update::Handover { timeline, root, rx });
        } else {
            // The program's picture cannot change: a new one starts at the boundary.
            let st = status.expect("playing");
            let left = (c.timeline.duration as f64 - st.engine.position_s * 1e6).max(0.0) as i64;
            let at_unix_us = now.as_microsecond() + left;
            tracing::warn!(
                timeline = %id,
                "a new version of {id} was stored ({}) with another picture format ({fmt:?} instead of {running:?}): \
                 the show starts again with a new program at its next loop boundary (in {:.1} s); its destinations \
                 reconnect",
                next.asset_root.display(),
                left as f64 / 1e6
            );
            c.update = Some(Update::Restart { at_unix_us, root: next.asset_root });
        }
        false
    }

    /// Keeps the persisted anchor true to where the show really is (it started after its cameras
    /// did, and operators move it), so a restart resumes at the right place.
    async fn sync_anchor(&mut self, ctx: &Ctx<'_>, now: Timestamp) {
        let Some(c) = &mut self.current else { return };
        let Some(st) = c.show.status() else { return };
        if st.engine.state != super::engine::PlayState::Playing {
            return;
        }
        let abs = st.engine.loop_index as i64 * c.timeline.duration + (st.engine.position_s * 1e6) as i64;
        let anchor = now.as_microsecond() - abs;
        if (anchor - c.desired.anchor_unix_us).abs() > 200_000 && c.desired.origin != Origin::Schedule {
            c.desired.anchor_unix_us = anchor;
            let json = serde_json::to_string(&c.desired).expect("serializes");
            if let Err(e) = ctx.store.set_desired_show(Some(&json)).await {
                tracing::warn!("cannot record the show's position: {e}");
            }
        }
    }
}

/// What the schedules want now, given what plays.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Keep,
    Start(DesiredShow),
    Stop,
}

/// The scheduler's decision, pure: active window → which timeline (round-robin) and where in it.
/// `durations_s` of each timeline id (missing: not loaded, skipped); `current` is what plays and
/// whether it has ended.
pub fn plan(
    schedules: &[ValidSchedule],
    durations_s: &HashMap<String, f64>,
    now: Timestamp,
    current: Option<(&DesiredShow, bool)>,
) -> Plan {
    let Some(w) = schedule::active(schedules, now) else {
        return match current {
            Some((d, _)) if d.origin == Origin::Schedule => Plan::Stop,
            _ => Plan::Keep,
        };
    };
    if let Some((d, _)) = current {
        if d.origin > Origin::Schedule {
            return Plan::Keep;
        }
    }
    let Some(s) = schedules.iter().find(|s| s.id() == w.schedule_id) else { return Plan::Keep };
    let sched = s.schedule();
    let playable: Vec<(&String, f64)> =
        sched.timelines.iter().filter_map(|t| durations_s.get(t).map(|d| (t, *d))).collect();
    if playable.is_empty() {
        return Plan::Keep;
    }
    let since = now.duration_since(w.start).as_secs_f64();
    let durs: Vec<f64> = playable.iter().map(|p| p.1).collect();
    let (i, offset) = schedule::rotation(&durs, since);
    let timeline_id = playable[i].0.clone();
    if let Some((d, ended)) = current {
        let same = d.origin == Origin::Schedule
            && d.schedule_id.as_deref() == Some(&w.schedule_id)
            && d.timeline_id == timeline_id;
        // The same timeline keeps playing; a finished one starts again when its turn comes round.
        if same && !(ended && offset < durs[i] / 2.0) {
            return Plan::Keep;
        }
    }
    Plan::Start(DesiredShow {
        timeline_id,
        origin: Origin::Schedule,
        schedule_id: Some(w.schedule_id.clone()),
        destinations: sched.destinations.clone(),
        anchor_unix_us: now.as_microsecond() - (offset * 1e6) as i64,
        paused_pos_us: None,
        pinned: None,
        bitrate_kbps: None,
        emergency_slate: false,
    })
}

fn bitrate_for(fmt: ProgramFormat, cfg: &Config) -> u32 {
    if cfg.timeline.bitrate_kbps > 0 {
        return cfg.timeline.bitrate_kbps;
    }
    match fmt.height {
        h if h >= 1080 => 4500,
        h if h >= 720 => 2500,
        h if h >= 480 => 1200,
        _ => 600,
    }
}

/// Loads a stored timeline and checks it against what the appliance has now.
pub async fn load_timeline(store: &Store, id: &str) -> Result<(Arc<Timeline>, PathBuf), DirectorError> {
    load_timeline_row(store, id).await.map(|(tl, root, _)| (tl, root))
}

/// [`load_timeline`], with the row's `loaded_at`.
async fn load_timeline_row(store: &Store, id: &str) -> Result<(Arc<Timeline>, PathBuf, String), DirectorError> {
    let row =
        store.timeline(&TimelineId::new(id).map_err(|e| DirectorError::Invalid(format!("timeline: {e}")))?).await?;
    let root = PathBuf::from(row.asset_root.clone().unwrap_or_else(|| ".".into()));
    let inv = Inventory { cameras: store.camera_inventory().await?, asset_root: Some(root.clone()) };
    // Stored rows passed the full check (schema included) when they were loaded; what may have
    // changed since (cameras, presets, assets) is checked again.
    let tl = model::parse_stored(&row.json, &inv).map_err(|e| DirectorError::Invalid(e.to_string()))?;
    Ok((Arc::new(tl), root, row.loaded_at))
}

#[cfg(test)]
mod tests {
    //! The scheduler's decisions under a fake wall clock: every instant is given, none is read.
    use super::*;
    use crate::timeline::schedule::{LocalTime, Schedule, Weekday};

    fn sched(id: &str, tz: &str, start: &str, end: &str, timelines: &[&str]) -> ValidSchedule {
        use Weekday::*;
        schedule::validate(&Schedule {
            id: id.into(),
            name: id.into(),
            enabled: true,
            timezone: tz.into(),
            days_of_week: vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun],
            window_start: start.parse::<LocalTime>().unwrap(),
            window_end: end.parse::<LocalTime>().unwrap(),
            timelines: timelines.iter().map(|s| s.to_string()).collect(),
            destinations: vec!["d1".into()],
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn durations() -> HashMap<String, f64> {
        [("t1".to_string(), 600.0), ("t2".to_string(), 1200.0)].into_iter().collect()
    }

    fn show(timeline: &str, origin: Origin, schedule: Option<&str>) -> DesiredShow {
        DesiredShow {
            timeline_id: timeline.into(),
            origin,
            schedule_id: schedule.map(str::to_string),
            destinations: vec!["d1".into()],
            anchor_unix_us: 0,
            paused_pos_us: None,
            pinned: None,
            bitrate_kbps: None,
            emergency_slate: false,
        }
    }

    /// Runs the scheduler from `from` to `to` the way the daemon does: evaluate, then sleep to the
    /// next change (the fake clock jumps there), applying each plan to the "running" show.
    fn walk(s: &[ValidSchedule], from: &str, to: &str) -> Vec<(Timestamp, String)> {
        let (mut now, end) = (ts(from), ts(to));
        let mut current: Option<DesiredShow> = None;
        let mut log = Vec::new();
        while now < end {
            match plan(s, &durations(), now, current.as_ref().map(|d| (d, false))) {
                Plan::Keep => {}
                Plan::Stop => {
                    current = None;
                    log.push((now, "stop".to_string()));
                }
                Plan::Start(d) => {
                    log.push((now, format!("start {}", d.timeline_id)));
                    current = Some(d);
                }
            }
            // Round-robin turns are not window changes: look at least every minute as well.
            let next = schedule::next_change(s, now).unwrap_or(end);
            now = next.min(now + jiff::SignedDuration::from_secs(60));
        }
        log
    }

    #[test]
    fn an_overnight_window_across_london_spring_forward_starts_and_stops_at_the_right_instants() {
        let s = [sched("night", "Europe/London", "22:00", "06:00", &["t1"])];
        let log = walk(&s, "2026-03-28T20:00:00Z", "2026-03-29T12:00:00Z");
        // 22:00 GMT = 22:00Z; 06:00 BST = 05:00Z: a 7 h night.
        assert_eq!(
            log,
            vec![(ts("2026-03-28T22:00:00Z"), "start t1".into()), (ts("2026-03-29T05:00:00Z"), "stop".into())]
        );
    }

    #[test]
    fn new_york_fall_back_makes_a_nine_hour_night_and_rotates_timelines_in_turn() {
        let s = [sched("night", "America/New_York", "22:00", "06:00", &["t1", "t2"])];
        let log = walk(&s, "2026-11-01T01:00:00Z", "2026-11-01T12:00:00Z");
        // 22:00 EDT = 02:00Z; 06:00 EST = 11:00Z. t1 600 s then t2 1200 s, round and round.
        assert_eq!(log.first().unwrap(), &(ts("2026-11-01T02:00:00Z"), "start t1".to_string()));
        assert_eq!(log[1], (ts("2026-11-01T02:10:00Z"), "start t2".to_string()));
        assert_eq!(log[2], (ts("2026-11-01T02:30:00Z"), "start t1".to_string()));
        assert_eq!(log.last().unwrap(), &(ts("2026-11-01T11:00:00Z"), "stop".to_string()));
        assert_eq!(log.len(), 9 * 2 * 2 + 1, "a t1+t2 pair every 30 min for 9 h, then the stop: {log:?}");
    }

    #[test]
    fn a_daily_window_keeps_its_local_time_across_both_changes() {
        let s = [sched("day", "Europe/London", "09:00", "17:00", &["t1"])];
        for (day, start_utc) in [
            ("2026-03-28", "2026-03-28T09:00:00Z"),
            ("2026-03-29", "2026-03-29T08:00:00Z"),
            ("2026-10-24", "2026-10-24T08:00:00Z"),
            ("2026-10-25", "2026-10-25T09:00:00Z"),
        ] {
            let log = walk(&s, &format!("{day}T00:00:00Z"), &format!("{day}T23:00:00Z"));
            assert_eq!(log[0], (ts(start_utc), "start t1".to_string()), "{day}");
            assert_eq!(log.last().unwrap().0, ts(start_utc) + jiff::SignedDuration::from_hours(8), "{day}");
        }
    }

    #[test]
    fn cloud_outranks_a_schedule_and_a_schedule_outranks_the_operator() {
        let s = [sched("day", "UTC", "09:00", "17:00", &["t1"])];
        let noon = ts("2026-06-01T12:00:00Z");
        let cloud = show("other", Origin::Cloud, None);
        assert_eq!(plan(&s, &durations(), noon, Some((&cloud, false))), Plan::Keep);
        let op = show("other", Origin::Operator, None);
        assert!(matches!(plan(&s, &durations(), noon, Some((&op, false))), Plan::Start(d) if d.timeline_id == "t1"));
        // Outside the window: the operator's show is left alone, a scheduled one stops.
        let evening = ts("2026-06-01T18:00:00Z");
        assert_eq!(plan(&s, &durations(), evening, Some((&op, false))), Plan::Keep);
        let mine = show("t1", Origin::Schedule, Some("day"));
        assert_eq!(plan(&s, &durations(), evening, Some((&mine, false))), Plan::Stop);
        // The same show keeps playing (no restart) while its window lasts.
        assert_eq!(plan(&s, &durations(), noon, Some((&mine, false))), Plan::Keep);
    }

    #[test]
    fn a_scheduled_show_is_anchored_to_its_window_not_to_when_it_was_noticed() {
        let s = [sched("day", "UTC", "09:00", "17:00", &["t1", "t2"])];
        // Noticed 25 min into the window (an agent that just rebooted): t2, 15 min in.
        let Plan::Start(d) = plan(&s, &durations(), ts("2026-06-01T09:25:00Z"), None) else { panic!() };
        assert_eq!(d.timeline_id, "t2");
        assert_eq!(d.position_at(ts("2026-06-01T09:25:00Z")), 900_000_000);
    }
}
