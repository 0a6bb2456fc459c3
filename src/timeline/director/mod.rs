//! The director: which show runs, for whom, and from where.
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

mod handle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use super::ctx::Ctx;
pub use super::load::load_timeline;
use handle::Msg;
pub use handle::{DirectorHandle, DirectorView, ProgramRef, Retired};

use super::actor::{self, ActorError, Control, Handover, NextVersion, Origin, PtzTarget, ShowHandle, ShowSpec};
use super::load::{load_timeline_row, LoadError};
use super::model::{self, Timeline, Us};
use super::preflight::Preflight;
use crate::config::Config;
use crate::media::destination::OutputTarget;
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::{CameraSource, SourceKind};
use crate::media::program::{Program, ProgramCamera, ProgramSpec};
use crate::media::MediaEnv;
use crate::ptz::OnvifEndpoint;
use crate::store::{Severity, Store, StoreError};
use crate::values::{CameraId, DestinationId, ScheduleId, SourceId, TimelineId};

/// The program a show runs on.
pub const SHOW_PROGRAM: &str = "show";

/// What must be playing, persisted so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredShow {
    pub timeline_id: TimelineId,
    pub origin: Origin,
    pub schedule_id: Option<ScheduleId>,
    pub destinations: Vec<DestinationId>,
    /// Wall-clock time of absolute timeline position 0 while playing (µs since the Unix epoch).
    pub anchor_unix_us: i64,
    /// The position it is paused at, µs.
    pub paused_pos_us: Option<i64>,
    pub pinned: Option<CameraId>,
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
    /// The show belongs to a higher origin than the request's.
    #[error("the show was started by the {} and outranks the {}", show.as_str(), by.as_str())]
    Outranked { show: Origin, by: Origin },
    #[error("no show is running")]
    NoShow,
    #[error("withdrawn by a kill-all before it went live")]
    Canceled,
    #[error("{0}")]
    Failed(String),
}

impl From<LoadError> for DirectorError {
    fn from(e: LoadError) -> DirectorError {
        match e {
            LoadError::Store(e) => DirectorError::Store(e),
            LoadError::Invalid(e) => DirectorError::Invalid(e.to_string()),
        }
    }
}

/// The one outranking rule: a request from `by` may change a show started by `show` (None: no
/// show) unless `show` is higher (cloud > schedule > operator).
pub fn check_origin(show: Option<Origin>, by: Origin) -> Result<(), DirectorError> {
    match show {
        Some(show) if by < show => Err(DirectorError::Outranked { show, by }),
        _ => Ok(()),
    }
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
    Handover { timeline: Arc<Timeline>, root: PathBuf, rx: oneshot::Receiver<Result<Handover, ActorError>> },
    /// Another picture format: the show starts again (new program) at the boundary, µs since the
    /// Unix epoch.
    Restart { at_unix_us: i64, root: PathBuf },
}

#[derive(Default)]
pub struct Director {
    current: Option<Current>,
    /// The show's program.
    program: Option<Program>,
    /// A scheduled show's program started ahead of its window (timeline id).
    prepared: Option<TimelineId>,
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
            let resumed = if cfg.control_plane_only { Ok(None) } else { d.resume_persisted(&ctx).await };
            match resumed {
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

    /// [`check_origin`] against the running show; `origin` None: an emergency, never refused.
    fn outranks(&self, origin: Option<Origin>) -> Result<(), DirectorError> {
        match origin {
            Some(by) => check_origin(self.current.as_ref().map(|c| c.desired.origin), by),
            None => Ok(()),
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
        let (tl, root, stamp) = load_timeline_row(ctx.store, desired.timeline_id.as_str()).await?;
        let destinations = desired.destinations.clone();
        let outputs = ctx.store.outputs_for(&destinations).await?;
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
            let kbps = ctx.store.capped_bitrate(SHOW_PROGRAM, &destinations, kbps).await;
            retired = self.start_program(ctx, &tl, &root, &sources, first.clone(), outputs, kbps).await?;
        }
        let program = self.program.as_ref().expect("started").handle();
        let ptz = self.ptz_targets(ctx, &tl).await?;
        let execution_id =
            ctx.store.start_execution(&tl.id, desired.origin.as_str(), desired.schedule_id.as_ref()).await.ok();
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
        sources: &HashMap<SourceId, ProgramCamera>,
        first: Option<SourceId>,
        outputs: Vec<OutputTarget>,
        kbps: u32,
    ) -> Result<Retired, DirectorError> {
        // Chosen by pre-flight (or an earlier start) and cached: a file read here.
        let encoder =
            crate::media::hwaccel::cached(&ctx.cfg.ffmpeg.path, &ctx.cfg.data_dir.join("hwaccel.json"), false)
                .await
                .map_err(|e| DirectorError::Failed(e.to_string()))?
                .chosen;
        let mut want: Vec<SourceId> = first.iter().cloned().collect();
        if ctx.cfg.timeline.hot_inputs {
            want.extend(tl.cameras().iter().map(SourceId::from));
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
            id: crate::values::ProgramId::new(SHOW_PROGRAM).expect("a valid id"),
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
        self.prepared = Some(desired.timeline_id.clone());
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
    ) -> Result<HashMap<SourceId, ProgramCamera>, DirectorError> {
        let fallback = tl.fallback.backup_camera_id.as_ref();
        let mut out: HashMap<SourceId, ProgramCamera> = HashMap::new();
        for pc in super::sources::with_backups_or(ctx.store, &tl.cameras(), fallback).await? {
            out.insert(pc.source.camera_id.clone(), pc);
        }
        for asset in tl.media() {
            let path = root.join(model::safe_rel_path(&asset).map_err(|e| DirectorError::Invalid(e.to_string()))?);
            let id = SourceId::media(&asset);
            let source = CameraSource { camera_id: id.clone(), kind: SourceKind::Media(path), shown: asset.clone() };
            out.insert(id, ProgramCamera { source, backup: None });
        }
        Ok(out)
    }

    async fn ptz_targets(&self, ctx: &Ctx<'_>, tl: &Timeline) -> Result<HashMap<CameraId, PtzTarget>, DirectorError> {
        let presets = ctx.store.presets().await?;
        let mut out = HashMap::new();
        for id in tl.cameras() {
            let c = ctx.store.camera(&id).await?;
            let Some(host) = c.onvif_host.clone() else { continue };
            let (profile, settle) = ctx.store.camera_ptz(&id).await?;
            // Preset ids the store holds that break the id rule cannot be named by a timeline.
            let presets = presets.get(&id).cloned().unwrap_or_default();
            out.insert(
                id.clone(),
                PtzTarget {
                    endpoint: OnvifEndpoint {
                        host,
                        port: c.onvif_port.unwrap_or(ctx.cfg.timeline.onvif_port),
                        https: crate::ptz::is_https_port(c.onvif_port.unwrap_or(ctx.cfg.timeline.onvif_port)),
                        username: c.username.clone(),
                        password: c.password.clone(),
                        profile_token: profile,
                    },
                    presets,
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
        destinations: Vec<DestinationId>,
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
            .map_err(|e| DirectorError::Failed(e.to_string()))?;
        c.desired.destinations = destinations;
        ctx.store.set_desired_show(Some(&serde_json::to_string(&c.desired).expect("serializes"))).await?;
        Ok(())
    }

    /// A playback control. Emergency slate and clearing overlays are never refused; the rest need
    /// an origin at least the show's.
    async fn control(&mut self, ctx: &Ctx<'_>, origin: Origin, control: Control) -> Result<(), DirectorError> {
        let Some(c) = &mut self.current else { return Err(DirectorError::NoShow) };
        let emergency = matches!(control, Control::EmergencySlate { .. } | Control::ClearOverlays);
        if !emergency {
            check_origin(Some(c.desired.origin), origin)?;
        }
        c.show.control(control.clone()).await.map_err(|e| DirectorError::Invalid(e.to_string()))?;
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
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(ActorError::ShowStopped)),
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
        let stamp = match ctx.store.timeline_loaded_at(&id).await {
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
            let (tl, root, _) = load_timeline_row(ctx.store, id.as_str()).await?;
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
