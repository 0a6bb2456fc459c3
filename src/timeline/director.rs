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
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::actor::{self, media_id, Control, Origin, PtzTarget, ShowHandle, ShowSpec, ShowStatus};
use super::model::{self, Inventory, Timeline, Us};
use super::preflight::{preflight, Preflight};
use super::schedule::{self, ValidSchedule};
use crate::config::Config;
use crate::media::destination::OutputTarget;
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::{CameraSource, SourceKind};
use crate::media::program::{Program, ProgramCamera, ProgramSpec};
use crate::media::MediaEnv;
use crate::ptz::OnvifEndpoint;
use crate::store::{Severity, Store, StoreError};

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
    #[error("{0}")]
    Failed(String),
}

/// A running show.
struct Current {
    desired: DesiredShow,
    show: ShowHandle,
    timeline: Arc<Timeline>,
}

/// What the daemon lends the director for a call.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub env: &'a MediaEnv,
}

#[derive(Default)]
pub struct Director {
    current: Option<Current>,
    /// The show's program (the daemon lists it with the others).
    program: Option<Program>,
    /// Schedules as last loaded (reloaded when the table changes).
    schedules: Vec<ValidSchedule>,
    schedules_sig: String,
    /// A scheduled show's program started ahead of its window (timeline id).
    prepared: Option<String>,
    /// A scheduled start that failed is retried from this time (timeline id, when).
    retry_at: Option<(String, Timestamp)>,
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
    let row = store.timeline(id).await?;
    let root = PathBuf::from(row.asset_root.clone().unwrap_or_else(|| ".".into()));
    let inv = Inventory { cameras: store.camera_inventory().await?, asset_root: Some(root.clone()) };
    let tl = model::parse(&row.json, &inv).map_err(|e| DirectorError::Invalid(e.to_string()))?;
    Ok((Arc::new(tl), root))
}

impl Director {
    pub fn program(&self) -> Option<&Program> {
        self.program.as_ref()
    }

    pub fn desired(&self) -> Option<&DesiredShow> {
        self.current.as_ref().map(|c| &c.desired)
    }

    pub fn status(&self) -> Option<(DesiredShow, Option<ShowStatus>)> {
        self.current.as_ref().map(|c| (c.desired.clone(), c.show.status()))
    }

    fn ended(&self) -> bool {
        self.current
            .as_ref()
            .and_then(|c| c.show.status())
            .is_some_and(|s| s.engine.state == super::engine::PlayState::Ended)
    }

    /// Starts (or replaces) the show. `origin` must not be below the current show's.
    /// `start_at`: the position to start from (an operator's fresh start); None: where the wall
    /// clock says the show is (a schedule, or a show resumed after a restart).
    pub async fn start(
        &mut self,
        ctx: &Ctx<'_>,
        desired: DesiredShow,
        start_at: Option<Us>,
        check: bool,
    ) -> Result<Preflight, DirectorError> {
        if let Some(c) = &self.current {
            if desired.origin < c.desired.origin {
                return Err(DirectorError::Conflict(format!(
                    "the show was started by the {} and outranks the {}: stop it there first",
                    c.desired.origin.as_str(),
                    desired.origin.as_str()
                )));
            }
        }
        let report = if check {
            preflight(ctx, &desired.timeline_id, &desired.destinations).await
        } else {
            Preflight::default()
        };
        if !report.blockers.is_empty() {
            let _ = ctx
                .store
                .add_event(
                    Severity::Error,
                    "preflight_failed",
                    &format!("timeline:{}", desired.timeline_id),
                    &report.blockers.join("; "),
                )
                .await;
            return Err(DirectorError::Blocked(report));
        }
        for w in &report.warnings {
            let _ = ctx
                .store
                .add_event(Severity::Warning, "preflight_warning", &format!("timeline:{}", desired.timeline_id), w)
                .await;
        }
        let (tl, root) = load_timeline(ctx.store, &desired.timeline_id).await?;
        let outputs = ctx.store.outputs_for(&desired.destinations).await?;
        let fmt = ProgramFormat { width: tl.width, height: tl.height, fps: tl.fps };
        // Same picture format: the running program is kept, so the destinations stay connected
        // from one timeline to the next (a schedule's rotation).
        let reuse = self.program.as_ref().and_then(|p| p.status()).is_some_and(|s| s.format == fmt);
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
        if reuse {
            let p = self.program.as_ref().expect("checked");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = p.sender().send(crate::media::program::ProgramCmd::SetOutputs { outputs, reply: tx }).await;
            let _ = rx.await;
        } else {
            let kbps = desired.bitrate_kbps.unwrap_or_else(|| bitrate_for(fmt, ctx.cfg));
            let kbps = ctx.store.capped_bitrate(SHOW_PROGRAM, &desired.destinations, kbps).await;
            self.start_program(ctx, &tl, &root, &sources, first.clone(), outputs, kbps).await?;
        }
        let program = self.program.as_ref().expect("started").handle();
        let ptz = self.ptz_targets(ctx, &tl).await?;
        let execution_id =
            ctx.store.start_execution(&tl.id, desired.origin.as_str(), desired.schedule_id.as_deref()).await.ok();
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
        self.current = Some(Current { desired, show, timeline: tl });
        self.prepared = None;
        Ok(report)
    }

    /// Starts the show's program (replacing any): the first shot's camera and its backups, or
    /// every camera with hot inputs, encoding to `outputs` (none while a show is only prepared).
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
    ) -> Result<(), DirectorError> {
        if let Some(p) = self.program.take() {
            p.stop().await;
        }
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
        self.program = Some(Program::start(spec, ctx.env).await);
        Ok(())
    }

    /// Gets a scheduled show ready before its window opens: its program runs with its cameras
    /// decoding and its encoder warm, but no destination, so going live at the window start is
    /// only connecting the destinations (well under the 2 s a cold start would take).
    async fn prepare(&mut self, ctx: &Ctx<'_>, desired: &DesiredShow) -> Result<(), DirectorError> {
        let timeline_id = desired.timeline_id.as_str();
        // Pre-flight now, while nothing decodes the cameras yet; the start then skips it.
        let report = preflight(ctx, timeline_id, &desired.destinations).await;
        if !report.blockers.is_empty() {
            return Err(DirectorError::Blocked(report));
        }
        for w in &report.warnings {
            let _ = ctx
                .store
                .add_event(Severity::Warning, "preflight_warning", &format!("timeline:{timeline_id}"), w)
                .await;
        }
        let (tl, root) = load_timeline(ctx.store, timeline_id).await?;
        let sources = self.sources(ctx, &tl, &root).await?;
        let first = super::engine::state_at(&tl, 0)
            .video
            .and_then(|id| tl.video.iter().find(|c| c.id == id).map(|c| c.source.clone()))
            .and_then(|s| actor::bus_id(&s));
        let fmt = ProgramFormat { width: tl.width, height: tl.height, fps: tl.fps };
        self.start_program(ctx, &tl, &root, &sources, first, Vec::new(), bitrate_for(fmt, ctx.cfg)).await?;
        self.prepared = Some(timeline_id.to_string());
        tracing::info!(timeline = %timeline_id, "scheduled show prepared (no destination yet)");
        Ok(())
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
            let c = ctx.store.camera(&id).await?;
            let backup =
                c.backup_camera_id.clone().or_else(|| tl.fallback.backup_camera_id.clone().filter(|b| *b != id));
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
            let c = ctx.store.camera(&id).await?;
            let Some(host) = c.onvif_host.clone() else { continue };
            let (profile, settle) = ctx.store.camera_ptz(&id).await?;
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
                    presets: presets.get(&id).cloned().unwrap_or_default(),
                    settle: Duration::from_millis(settle.unwrap_or(ctx.cfg.timeline.ptz_settle_ms)),
                },
            );
        }
        Ok(out)
    }

    /// Stops the show and its program. `origin` None: an emergency (kill-all) or shutdown, never refused.
    pub async fn stop(&mut self, ctx: &Ctx<'_>, origin: Option<Origin>) -> Result<(), DirectorError> {
        let Some(c) = &self.current else {
            if let Some(p) = self.program.take() {
                p.stop().await;
            }
            return Err(DirectorError::NoShow);
        };
        if let Some(o) = origin {
            if o < c.desired.origin {
                return Err(DirectorError::Conflict(format!(
                    "the show was started by the {} and outranks the {}",
                    c.desired.origin.as_str(),
                    o.as_str()
                )));
            }
        }
        let c = self.current.take().expect("checked");
        c.show.stop().await;
        if let Some(p) = self.program.take() {
            p.stop().await;
        }
        ctx.store.set_desired_show(None).await?;
        let _ = ctx.store.add_event(Severity::Info, "show_stopped", &format!("timeline:{}", c.timeline.id), "").await;
        Ok(())
    }

    /// Stops for shutdown: the desired show stays recorded, so the next start resumes it.
    pub async fn shutdown(&mut self) {
        if let Some(c) = self.current.take() {
            c.show.stop().await;
        }
        if let Some(p) = self.program.take() {
            p.stop().await;
        }
    }

    /// A playback control. Emergency slate and clearing overlays are never refused; the rest need
    /// an origin at least the show's.
    pub async fn control(&mut self, ctx: &Ctx<'_>, origin: Origin, control: Control) -> Result<(), DirectorError> {
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
    pub async fn resume_persisted(&mut self, ctx: &Ctx<'_>) -> Result<Option<DesiredShow>, DirectorError> {
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
        self.start(ctx, desired.clone(), None, false).await?;
        Ok(Some(desired))
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

    /// Reloads schedules if they changed, then applies the plan. Returns when to look again.
    pub async fn schedule_tick(&mut self, ctx: &Ctx<'_>, now: Timestamp) -> Duration {
        self.sync_anchor(ctx, now).await;
        if let Err(e) = self.reload_schedules(ctx).await {
            tracing::error!("schedules: {e}");
        }
        let scheduled_show = self.current.as_ref().is_some_and(|c| c.desired.origin == Origin::Schedule);
        if self.schedules.is_empty() && self.prepared.is_none() && !scheduled_show {
            // Nothing to schedule: no database reads every second.
            return Duration::from_secs(1);
        }
        let durations = match ctx.store.timeline_durations().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("schedules: {e}");
                return Duration::from_secs(1);
            }
        };
        let ended = self.ended();
        let p = plan(&self.schedules, &durations, now, self.current.as_ref().map(|c| (&c.desired, ended)));
        if !matches!(p, Plan::Start(_)) && self.current.is_none() {
            self.prepare_next(ctx, &durations, now).await;
        }
        match p {
            Plan::Keep => {}
            Plan::Stop => {
                tracing::info!("schedule window over: stopping the show");
                let _ = self.stop(ctx, Some(Origin::Schedule)).await;
            }
            Plan::Start(d) if self.retry_at.as_ref().is_some_and(|(k, t)| *k == d.timeline_id && now < *t) => {}
            Plan::Start(d) => {
                tracing::info!(timeline = %d.timeline_id, schedule = ?d.schedule_id, "schedule: starting the show");
                let checked = self.prepared.as_deref() == Some(d.timeline_id.as_str()) && self.program.is_some();
                if let Err(e) = self.start(ctx, d.clone(), None, !checked).await {
                    // Not every second: a misconfigured schedule must not flood the log or the disk.
                    self.retry_at = Some((d.timeline_id.clone(), now + jiff::SignedDuration::from_secs(30)));
                    tracing::error!(timeline = %d.timeline_id, "schedule could not start the show (retry in 30 s): {e}");
                    let _ = ctx
                        .store
                        .add_event(
                            Severity::Error,
                            "schedule_failed",
                            &format!("schedule:{}", d.schedule_id.unwrap_or_default()),
                            &e.to_string(),
                        )
                        .await;
                }
            }
        }
        let next = schedule::next_change(&self.schedules, now)
            .map(|t| t.duration_since(now).unsigned_abs())
            .unwrap_or(Duration::from_secs(60));
        next.clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Prepares the show of a window opening within `timeline.prepare_lead_ms`, or drops a preparation
    /// nobody needs any more.
    async fn prepare_next(&mut self, ctx: &Ctx<'_>, durations: &HashMap<String, f64>, now: Timestamp) {
        let next = schedule::next_change(&self.schedules, now)
            .filter(|t| t.duration_since(now).unsigned_abs() <= Duration::from_millis(ctx.cfg.timeline.prepare_lead_ms))
            .and_then(|t| match plan(&self.schedules, durations, t, None) {
                Plan::Start(d) => Some(d),
                _ => None,
            });
        match (next, self.prepared.clone()) {
            (Some(d), Some(p)) if d.timeline_id == p => {}
            (Some(d), _) => {
                if let Err(e) = self.prepare(ctx, &d).await {
                    tracing::warn!(timeline = %d.timeline_id, "cannot prepare the scheduled show: {e}");
                    self.prepared = Some(d.timeline_id.clone());
                }
            }
            (None, Some(_)) => {
                self.prepared = None;
                if let Some(p) = self.program.take() {
                    p.stop().await;
                }
            }
            (None, None) => {}
        }
    }

    async fn reload_schedules(&mut self, ctx: &Ctx<'_>) -> Result<(), DirectorError> {
        let rows = ctx.store.schedules().await?;
        let sig: String = rows.iter().map(|(id, j)| format!("{id}={j};")).collect();
        if sig == self.schedules_sig {
            return Ok(());
        }
        self.schedules_sig = sig;
        self.schedules.clear();
        for (id, json) in rows {
            match serde_json::from_str::<schedule::Schedule>(&json)
                .map_err(|e| e.to_string())
                .and_then(|s| schedule::validate(&s).map_err(|e| e.to_string()))
            {
                Ok(v) => self.schedules.push(v),
                Err(e) => tracing::error!(schedule = %id, "ignored: {e}"),
            }
        }
        Ok(())
    }
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
