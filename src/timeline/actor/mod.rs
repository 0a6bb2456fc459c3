//! The show actor: drives one program bus from the [`Engine`].
//!
//! It polls the engine a little ahead of the program clock and hands each effect to the bus with
//! its exact program time; the bus applies it at the first frame due at or after that time and
//! announces it, which is how cue lateness is measured (scheduled vs the frame it went out with).
//! Operator controls arrive on a channel and take effect on the next frame boundary: a pause or a
//! seek first withdraws whatever was handed to the bus for later.
//!
//! Pre-rolls start each camera's decoder (and its backup) `lead` before its cue and, while the
//! camera is off air, move it to the cue's PTZ preset. A cut waits for that move to settle (or to
//! time out, with a warning): a camera is never put on air mid-swing unless it was already on air.
//!
//! The actor owns no process: the program (encoder, pushers, decoders) belongs to the daemon, so
//! stopping or replacing a show never touches the destinations' connections by accident.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::engine::{Effect, Engine, PlayState, Scheduled, SeekTarget};
use super::model::{to_overlay_request, Timeline, Us, VideoSource};
use crate::ffmpeg::job::JobEvent;
use crate::media::compositor::Prepared;
use crate::media::program::{OverlayOp, ProgramCamera, ProgramCmd, ProgramHandle, TimedAction};
use crate::ptz::PtzClient;
use crate::store::Store;
use crate::values::{CameraId, CueId, OverlayId, PresetId, SourceId};

/// How far ahead of the program clock effects are handed to the bus.
const LOOKAHEAD: Duration = Duration::from_millis(300);
/// How long a starting show waits for the sources of its first cues.
const WARM_UP: Duration = Duration::from_secs(10);
/// How often the engine is polled.
const POLL: Duration = Duration::from_millis(100);

mod handle;

use handle::Pending;
pub use handle::{
    bus_id, ActorError, Control, Handover, Lateness, NextVersion, Origin, PtzTarget, ShowHandle, ShowMsg, ShowSpec,
    ShowStatus,
};

/// Starts the actor on a running program.
pub fn spawn(
    spec: ShowSpec,
    program: ProgramHandle,
    events: mpsc::Sender<JobEvent>,
    store: Option<Store>,
) -> ShowHandle {
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(None);
    let (ptz_tx, ptz_rx) = mpsc::channel(16);
    let fps = spec.timeline.fps;
    let actor = Actor {
        engine: Engine::new(spec.timeline.clone(), spec.preroll_lead.as_micros() as Us),
        tl: spec.timeline,
        asset_root: spec.asset_root,
        sources: spec.sources,
        ptz: spec.ptz.into_iter().map(|(k, v)| (k, (Some(PtzClient::new(v.endpoint.clone())), v))).collect(),
        ptz_moving: HashMap::new(),
        ptz_tx,
        held: Vec::new(),
        prerolled: HashSet::new(),
        moved_for: HashSet::new(),
        program,
        events,
        store,
        status: status_tx,
        tags: HashMap::new(),
        next_tag: 1,
        lateness: Lateness::default(),
        lateness_sum_ms: 0.0,
        fps,
        emergency: spec.emergency_slate,
        execution_id: spec.execution_id,
        start_pos: spec.start_pos,
        wall_anchor_us: spec.wall_anchor_us,
        lead: spec.preroll_lead.as_micros() as Us,
        hot_inputs: spec.hot_inputs,
        start_paused: spec.paused,
        start_pinned: spec.pinned,
        pending: None,
    };
    let task = tokio::spawn(actor.run(rx, ptz_rx));
    ShowHandle { tx, status: status_rx, task }
}

/// What a tag handed to the bus stands for.
struct Tagged {
    cue_id: CueId,
    kind: &'static str,
    scheduled: Us,
}

struct Actor {
    engine: Engine,
    tl: Arc<Timeline>,
    asset_root: PathBuf,
    sources: HashMap<SourceId, ProgramCamera>,
    /// Camera id → its PTZ client (the client caches the camera's service addresses) and settings.
    /// The client is lent to the task moving the camera, and comes back with its result.
    ptz: HashMap<CameraId, (Option<PtzClient>, PtzTarget)>,
    /// Cameras moving to a preset, and the cue each move is for.
    ptz_moving: HashMap<CameraId, CueId>,
    ptz_tx: mpsc::Sender<PtzDone>,
    /// Cuts waiting for a PTZ move.
    held: Vec<Scheduled>,
    prerolled: HashSet<SourceId>,
    /// Cues whose preset move was made during pre-roll.
    moved_for: HashSet<CueId>,
    program: ProgramHandle,
    events: mpsc::Sender<JobEvent>,
    store: Option<Store>,
    status: watch::Sender<Option<ShowStatus>>,
    tags: HashMap<u64, Tagged>,
    next_tag: u64,
    lateness: Lateness,
    lateness_sum_ms: f64,
    fps: u32,
    emergency: bool,
    execution_id: Option<i64>,
    start_pos: Us,
    wall_anchor_us: Option<i64>,
    /// Pre-roll lead, µs.
    lead: Us,
    hot_inputs: bool,
    start_paused: bool,
    start_pinned: Option<CameraId>,
    /// A new version of the timeline waiting for its loop boundary.
    pending: Option<Pending>,
}

struct PtzDone {
    camera: CameraId,
    cue_id: CueId,
    result: Result<Duration, crate::ptz::PtzError>,
    client: PtzClient,
}

impl Actor {
    fn note(&self, event_type: &str, detail: String, warning: bool) {
        self.note_about(None, event_type, detail, warning);
    }

    /// `note`, about a cue: the log line names it in a `cue` field.
    fn note_about(&self, cue: Option<&str>, event_type: &str, detail: String, warning: bool) {
        if warning {
            tracing::warn!(timeline = %self.tl.id, cue, event_type, "{detail}");
        } else {
            tracing::info!(timeline = %self.tl.id, cue, event_type, "{detail}");
        }
        let _ = self.events.try_send(JobEvent::Note {
            job: format!("timeline:{}", self.tl.id),
            event_type: event_type.into(),
            detail,
            warning,
        });
    }

    /// Program time now, rounded up to the next frame boundary (controls land on a frame, and cue
    /// times stay whole frames from it).
    fn now_aligned(&self) -> Us {
        let now = self.program.now_us().unwrap_or(0);
        let fps = self.fps as i64;
        let k = (now * fps + 999_999) / 1_000_000;
        k * 1_000_000 / fps
    }

    async fn run(mut self, mut rx: mpsc::Receiver<ShowMsg>, mut ptz_rx: mpsc::Receiver<PtzDone>) {
        let mut applied = self.program.applied.subscribe();
        // The bus's clock starts with its first frame.
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.program.now_us().is_none() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.warm_up().await;
        if let Some(a) = self.wall_anchor_us {
            let pos = (jiff::Timestamp::now().as_microsecond() - a).max(0);
            let pos = if self.tl.looping { pos } else { pos.min(self.tl.duration) };
            let frame = 1_000_000 / self.fps as i64;
            self.start_pos = pos / frame * frame;
        }
        let now = self.now_aligned();
        let first = if self.start_pos > 0 {
            self.engine.play(now);
            let mut e = self.engine.seek_abs(now, self.start_pos);
            e.extend(self.engine.poll(now));
            e
        } else {
            self.engine.play(now);
            self.engine.poll(now)
        };
        if self.emergency {
            let _ = self.send(|reply| ProgramCmd::Slate { on: true, reply }).await;
        }
        if let Some(p) = self.start_pinned.clone() {
            let e = self.engine.pin(Some(p));
            self.dispatch(vec![Scheduled { at: now, pos: 0, effect: e }]).await;
        }
        self.dispatch(first).await;
        if self.start_paused {
            self.engine.pause(now);
        }
        self.note("timeline_started", format!("{} at {:.3} s", self.tl.id, self.start_pos as f64 / 1e6), false);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ended_reported = false;
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    None => break,
                    Some(ShowMsg::Stop { reply }) => {
                        self.finish("stopped", None).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(ShowMsg::Control { control, reply }) => {
                        let r = self.control(control).await;
                        let _ = reply.send(r);
                    }
                    Some(ShowMsg::Replace { next, reply }) => self.replace(next, reply).await,
                },
                a = applied.recv() => match a {
                    Ok(a) => self.on_applied(a.tag, a.at_us),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(timeline = %self.tl.id, "missed {n} cue confirmations");
                    }
                    Err(_) => break,
                },
                Some(done) = ptz_rx.recv() => self.on_ptz(done).await,
                _ = tick.tick() => {
                    let mut horizon = self.program.now_us().unwrap_or(0) + LOOKAHEAD.as_micros() as Us;
                    if let Some(at) = self.pending.as_ref().map(|p| p.boundary.1) {
                        if horizon >= at {
                            self.take_over().await;
                        } else {
                            // The old version plays up to its boundary, not into its next loop.
                            horizon = horizon.min(at - 1);
                        }
                    }
                    let effects = self.engine.poll(horizon);
                    self.dispatch(effects).await;
                    if self.engine.state() == PlayState::Ended && !ended_reported {
                        ended_reported = true;
                        self.finish("completed", None).await;
                    }
                    self.publish();
                }
            }
        }
        self.finish("stopped", Some("the program went away")).await;
    }

    /// Pre-rolls the sources of the cues due within the lead of the starting position and waits
    /// (bounded) for their first frames, so the first cues of a show land on time too. The
    /// program is already on air meanwhile, on the first shot.
    async fn warm_up(&mut self) {
        let (d, lead) = (self.tl.duration, self.lead);
        let local = if self.tl.looping { self.start_pos % d } else { self.start_pos };
        let hot = self.hot_inputs;
        let soon: Vec<SourceId> = self
            .tl
            .video
            .iter()
            .filter(|c| {
                if hot {
                    return true;
                }
                let ahead = if self.tl.looping { (c.start - local).rem_euclid(d) } else { c.start - local };
                (0..=lead).contains(&ahead)
            })
            .filter_map(|c| bus_id(&c.source))
            .fold(Vec::new(), |mut v, id| {
                if !v.contains(&id) {
                    v.push(id);
                }
                v
            });
        for id in &soon {
            self.preroll(id).await;
        }
        let give_up = Instant::now() + WARM_UP;
        while Instant::now() < give_up {
            let ready = self.program.status.borrow().as_ref().is_some_and(|st| {
                soon.iter().all(|id| st.cameras.iter().any(|c| &c.camera == id && c.frame_age_ms.is_some()))
            });
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.note("preroll_slow", format!("sources not ready after {WARM_UP:?}: starting anyway"), true);
    }

    fn publish(&self) {
        let now = self.program.now_us().unwrap_or(0);
        let _ = self.status.send(Some(ShowStatus {
            timeline_id: self.tl.id.clone(),
            engine: self.engine.status(now),
            emergency_slate: self.emergency,
            lateness: self.lateness.clone(),
            ptz_moving: self.ptz_moving.keys().cloned().collect(),
            execution_id: self.execution_id,
        }));
    }

    fn metrics(&self) -> serde_json::Value {
        let st = self.program.status.borrow().clone();
        serde_json::json!({
            "cue_lateness": self.lateness,
            "fallbacks": st.as_ref().map(|s| s.fallbacks).unwrap_or(0),
            "restarts": st.as_ref().map(|s| s.encoder.starts.saturating_sub(1)
                + s.cameras.iter().map(|c| c.ingest.starts.saturating_sub(1)).sum::<u64>()).unwrap_or(0),
            "dropped_frames": st.as_ref().map(|s| s.dropped_frames).unwrap_or(0),
        })
    }

    async fn finish(&mut self, status: &str, error: Option<&str>) {
        let Some(id) = self.execution_id else { return };
        let metrics = self.metrics();
        if let Some(store) = &self.store {
            if let Err(e) = store.finish_execution(id, status, error, &metrics).await {
                tracing::warn!("cannot record the end of execution {id}: {e}");
            }
        }
        self.note(
            if status == "completed" { "timeline_completed" } else { "timeline_stopped" },
            format!("{} {status}", self.tl.id),
            false,
        );
        // A completed timeline keeps its execution row closed; the show itself holds the last shot.
        self.execution_id = None;
    }

    fn on_applied(&mut self, tag: u64, at_us: i64) {
        let Some(t) = self.tags.remove(&tag) else { return };
        let late_ms = (at_us - t.scheduled) as f64 / 1000.0;
        let frame_ms = 1000.0 / self.fps as f64;
        if t.kind == "cue_started" {
            self.lateness.cues += 1;
            if late_ms > frame_ms + 0.5 {
                self.lateness.late_over_1_frame += 1;
            }
            self.lateness.max_ms = self.lateness.max_ms.max(late_ms.abs());
            self.lateness_sum_ms += late_ms;
            self.lateness.mean_ms = self.lateness_sum_ms / self.lateness.cues as f64;
        }
        let detail = serde_json::json!({
            "cue": t.cue_id, "scheduled_s": t.scheduled as f64 / 1e6, "actual_s": at_us as f64 / 1e6,
            "lateness_ms": late_ms,
        });
        self.note_about(Some(t.cue_id.as_str()), t.kind, detail.to_string(), late_ms > frame_ms * 2.0);
        if self.lateness.cues.is_multiple_of(20) && t.kind == "cue_started" {
            if let (Some(store), Some(id)) = (&self.store, self.execution_id) {
                let (store, m) = (store.clone(), self.metrics());
                tokio::spawn(async move {
                    let _ = store.update_execution_metrics(id, &m).await;
                });
            }
        }
    }

    fn tag(&mut self, cue_id: &CueId, kind: &'static str, scheduled: Us) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        self.tags.insert(t, Tagged { cue_id: cue_id.clone(), kind, scheduled });
        t
    }

    /// The one call site of the program bus: a command and its answer. The bus's own error is
    /// kept as its message ([`ActorError::Bus`]), whatever its type.
    async fn send<E: std::fmt::Display>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), E>>) -> ProgramCmd,
    ) -> Result<(), ActorError> {
        let (reply, rx) = oneshot::channel();
        self.program.tx.send(make(reply)).await.map_err(|_| ActorError::ProgramStopped)?;
        rx.await.map_err(|_| ActorError::ProgramStopped)?.map_err(|e| ActorError::Bus(e.to_string()))
    }

    async fn timed(&self, at_us: Us, tag: u64, action: TimedAction) {
        if let Err(e) = self.send(|reply| ProgramCmd::Timed { at_us, tag, action, reply }).await {
            self.note("cue_failed", e.to_string(), true);
        }
    }

    async fn dispatch(&mut self, effects: Vec<Scheduled>) {
        for s in effects {
            match s.effect.clone() {
                Effect::Cut { cue_id, source, fade } => {
                    if let Some(cam) = bus_id(&source) {
                        if !self.prerolled.contains(&cam) {
                            // A cut the pre-roll did not see coming (a seek, a skip, a restart).
                            self.preroll(&cam).await;
                        }
                        if self.ptz_moving.keys().any(|c| c.as_str() == cam.as_str()) {
                            self.lateness.held_for_ptz += 1;
                            self.held.push(s);
                            continue;
                        }
                        if let VideoSource::Camera { preset_id: Some(p), camera_id } = &source {
                            if !self.moved_for.contains(&cue_id) {
                                // The camera was on air when its cue was pre-rolled: it moves live.
                                self.start_move(camera_id, p, &cue_id);
                            }
                        }
                        self.moved_for.remove(&cue_id);
                        let tag = self.tag(&cue_id, "cue_started", s.at);
                        self.timed(s.at, tag, TimedAction::Cut { camera: Some(cam), fade: us_dur(fade) }).await;
                    } else {
                        let tag = self.tag(&cue_id, "cue_started", s.at);
                        self.timed(s.at, tag, TimedAction::Cut { camera: None, fade: us_dur(fade) }).await;
                    }
                }
                Effect::ShowOverlay { cue_id, layer } => {
                    let Some(cue) = self.tl.overlays.iter().flat_map(|t| t.cues.iter()).find(|c| c.id == cue_id) else {
                        continue;
                    };
                    let req = to_overlay_request(&cue.id, layer, &cue.params, &self.asset_root);
                    let fmt = (self.tl.width, self.tl.height);
                    let prepared = match req.to_spec() {
                        Ok(spec) => tokio::task::spawn_blocking(move || Prepared::load(spec, fmt.0, fmt.1))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string())),
                        Err(e) => Err(e.to_string()),
                    };
                    match prepared {
                        Ok(p) => {
                            let tag = self.tag(&cue_id, "cue_started", s.at);
                            self.timed(s.at, tag, TimedAction::Overlay(OverlayOp::Show(Box::new(p)))).await;
                        }
                        Err(e) => self.note_about(
                            Some(cue_id.as_str()),
                            "cue_failed",
                            format!("overlay cue {:?}: {e}", cue_id.as_str()),
                            true,
                        ),
                    }
                }
                Effect::HideOverlay { cue_id } => {
                    let tag = self.tag(&cue_id, "overlay_hidden", s.at);
                    self.timed(s.at, tag, TimedAction::Overlay(OverlayOp::Hide(OverlayId::from(&cue_id)))).await;
                }
                Effect::CueEnded { cue_id } => {
                    let tag = self.tag(&cue_id, "cue_completed", s.at);
                    self.timed(s.at, tag, TimedAction::Mark).await;
                }
                Effect::Preroll { cue_id, source, .. } => {
                    let Some(cam) = bus_id(&source) else { continue };
                    self.preroll(&cam).await;
                    if let VideoSource::Camera { camera_id, preset_id: Some(p) } = &source {
                        let on_air = self.program.status.borrow().as_ref().and_then(|s| s.wanted_camera.clone());
                        let pinned = self.engine.pinned().map(str::to_string);
                        let off_air = on_air.as_ref().map(SourceId::as_str) != Some(camera_id.as_str())
                            && pinned.as_deref() != Some(camera_id.as_str());
                        if off_air && self.start_move(camera_id, p, &cue_id) {
                            self.moved_for.insert(cue_id.clone());
                        }
                    }
                }
                Effect::Pin { camera } => {
                    let camera2 = camera.as_ref().map(SourceId::from);
                    if let Err(e) = self.send(|reply| ProgramCmd::Pin { camera: camera2, reply }).await {
                        self.note("pin_failed", e.to_string(), true);
                    }
                }
                Effect::Ended => {
                    self.note(
                        "timeline_ended",
                        format!("{} reached its end; holding the last shot", self.tl.id),
                        false,
                    );
                }
            }
        }
    }

    /// Accepts a new version of the timeline for the next loop boundary, and pre-rolls what it
    /// shows first so that its first cut is ready there.
    async fn replace(&mut self, next: NextVersion, reply: oneshot::Sender<Result<Handover, ActorError>>) {
        let now = self.program.now_us().unwrap_or(0);
        let refused = match self.engine.state() {
            PlayState::Playing if self.tl.looping => None,
            PlayState::Playing => Some(ActorError::NotLooping),
            PlayState::Paused => Some(ActorError::Paused),
            PlayState::Ended => Some(ActorError::Ended),
            PlayState::Idle => Some(ActorError::NotStarted),
        };
        let boundary = match (refused, self.engine.next_boundary(now)) {
            (None, Some(b)) => b,
            (why, _) => {
                let _ = reply.send(Err(why.unwrap_or(ActorError::NoBoundary)));
                return;
            }
        };
        if let Some(old) = self.pending.take() {
            let _ = old.reply.send(Err(ActorError::Superseded));
        }
        for (id, pc) in &next.sources {
            self.sources.entry(id.clone()).or_insert_with(|| pc.clone());
        }
        let tl = next.timeline.clone();
        let first: Vec<SourceId> = tl
            .video
            .iter()
            .filter(|c| self.hot_inputs || c.start <= self.lead)
            .filter_map(|c| bus_id(&c.source))
            .collect();
        for id in first {
            self.preroll(&id).await;
        }
        self.note(
            "timeline_update_pending",
            format!(
                "a new version of {} takes over at the loop boundary, program time {:.3} s",
                tl.id,
                boundary.1 as f64 / 1e6
            ),
            false,
        );
        self.pending = Some(Pending { next, boundary, reply });
    }

    /// The waiting version takes over at its boundary: the old one's effects up to just before
    /// it, then the hand-over's (see [`Engine::hand_over`]).
    async fn take_over(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let (pos, at) = p.boundary;
        let last = self.engine.poll(at - 1);
        self.dispatch(last).await;
        let loop_index = (pos / self.tl.duration.max(1)) as u64;
        let (engine, first) = self.engine.hand_over(p.next.timeline.clone(), p.boundary);
        self.engine = engine;
        self.tl = p.next.timeline;
        self.asset_root = p.next.asset_root;
        self.sources.extend(p.next.sources);
        self.ptz = p.next.ptz.into_iter().map(|(k, v)| (k, (Some(PtzClient::new(v.endpoint.clone())), v))).collect();
        // Cuts held for a move and presets moved for belong to the old version's cues.
        self.held.clear();
        self.moved_for.clear();
        self.dispatch(first).await;
        self.note(
            "timeline_updated",
            serde_json::json!({"timeline": self.tl.id, "at_s": at as f64 / 1e6, "replaced_loop": loop_index})
                .to_string(),
            false,
        );
        let _ = p.reply.send(Ok(Handover { at_s: at as f64 / 1e6, loop_index }));
        self.publish();
    }

    async fn preroll(&mut self, cam: &SourceId) {
        let mut wanted = vec![cam.clone()];
        while let Some(c) = wanted.pop() {
            if !self.prerolled.insert(c.clone()) {
                continue;
            }
            let Some(pc) = self.sources.get(&c).cloned() else {
                self.note("preroll_failed", format!("source {c:?} is unknown to this show"), true);
                continue;
            };
            if let Some(b) = pc.backup.clone() {
                wanted.push(b);
            }
            if let Err(e) = self.send(|reply| ProgramCmd::Preroll { camera: pc, reply }).await {
                self.note("preroll_failed", format!("{c}: {e}"), true);
            }
        }
    }

    /// Starts a preset move; false if the camera has no PTZ or is already moving.
    fn start_move(&mut self, camera: &CameraId, preset: &PresetId, cue_id: &CueId) -> bool {
        if self.ptz_moving.contains_key(camera) {
            return false;
        }
        let Some((slot, target)) = self.ptz.get_mut(camera) else {
            self.note("ptz_failed", format!("camera {camera} has no ONVIF address: preset {preset} not applied"), true);
            return false;
        };
        let Some(token) = target.presets.get(preset).cloned() else {
            self.note("ptz_failed", format!("camera {camera} has no preset {preset}"), true);
            return false;
        };
        let Some(mut client) = slot.take() else { return false };
        let settle = target.settle;
        self.ptz_moving.insert(camera.clone(), cue_id.clone());
        let (tx, camera, cue_id) = (self.ptz_tx.clone(), camera.clone(), cue_id.clone());
        tokio::spawn(async move {
            let result = client.goto_preset_and_settle(&token, settle).await;
            let _ = tx.send(PtzDone { camera, cue_id, result, client }).await;
        });
        true
    }

    async fn on_ptz(&mut self, done: PtzDone) {
        self.ptz_moving.remove(&done.camera);
        if let Some((slot, _)) = self.ptz.get_mut(&done.camera) {
            *slot = Some(done.client);
        }
        let cue = Some(done.cue_id.as_str());
        match &done.result {
            Ok(took) => self.note_about(
                cue,
                "ptz_moved",
                format!(
                    "camera {} at its preset for cue {:?} after {:.1} s",
                    done.camera,
                    done.cue_id.as_str(),
                    took.as_secs_f64()
                ),
                false,
            ),
            Err(e) => self.note_about(
                cue,
                "ptz_failed",
                format!(
                    "camera {} (cue {:?}): {e}; the show goes on with the camera where it is",
                    done.camera,
                    done.cue_id.as_str()
                ),
                true,
            ),
        }
        // Release the cuts that waited for this camera, now (they are late by the move's overrun).
        let (ready, still): (Vec<Scheduled>, Vec<Scheduled>) = std::mem::take(&mut self.held).into_iter().partition(
            |s| matches!(&s.effect, Effect::Cut { source, .. } if bus_id(source).is_some_and(|b| b == done.camera.as_str())),
        );
        self.held = still;
        for s in ready {
            // Due in the past: the bus takes it at the next frame, and its lateness shows the wait.
            if let Effect::Cut { cue_id, .. } = &s.effect {
                self.moved_for.insert(cue_id.clone());
            }
            self.dispatch(vec![s]).await;
        }
    }

    async fn control(&mut self, c: Control) -> Result<(), ActorError> {
        let now = self.now_aligned();
        match c {
            Control::Pause => {
                if self.engine.state() != PlayState::Playing {
                    return Err(ActorError::NotPlaying);
                }
                self.engine.pause(now);
                self.withdraw(now).await?;
                if let Some(p) = self.pending.take() {
                    let _ = p.reply.send(Err(ActorError::PausedMeanwhile));
                }
                self.note("timeline_paused", format!("at {:.3} s", self.engine.status(now).position_s), false);
            }
            Control::Resume => {
                if self.engine.state() != PlayState::Paused {
                    return Err(ActorError::NotPaused);
                }
                self.engine.resume(now);
                let e = self.engine.poll(now);
                self.dispatch(e).await;
                self.note("timeline_resumed", format!("at {:.3} s", self.engine.status(now).position_s), false);
            }
            Control::Seek { cue, seconds } => {
                let target = match (cue, seconds) {
                    (Some(c), None) => SeekTarget::Cue(c),
                    (None, Some(s)) => SeekTarget::Seconds(s),
                    _ => return Err(ActorError::SeekTarget),
                };
                let jump = self.engine.seek(now, target.clone())?;
                self.withdraw(now).await?;
                self.dispatch(jump).await;
                let e = self.engine.poll(now);
                self.dispatch(e).await;
                self.note("timeline_seek", format!("{target:?}"), false);
            }
            Control::Skip => {
                let jump = self.engine.skip(now)?;
                self.withdraw(now).await?;
                self.dispatch(jump).await;
                let e = self.engine.poll(now);
                self.dispatch(e).await;
                self.note("timeline_skip", format!("to {:.3} s", self.engine.status(now).position_s), false);
            }
            Control::Pin { camera } => {
                if !self.sources.contains_key(camera.as_str()) {
                    return Err(ActorError::NotInShow(camera));
                }
                self.preroll(&SourceId::from(&camera)).await;
                let e = self.engine.pin(Some(camera));
                self.dispatch(vec![Scheduled { at: now, pos: 0, effect: e }]).await;
            }
            Control::Unpin => {
                let e = self.engine.pin(None);
                self.dispatch(vec![Scheduled { at: now, pos: 0, effect: e }]).await;
            }
            Control::EmergencySlate { on } => {
                self.emergency = on;
                self.send(|reply| ProgramCmd::Slate { on, reply }).await?;
            }
            Control::ClearOverlays => {
                self.send(|reply| ProgramCmd::Overlay { op: OverlayOp::Clear, reply }).await?;
            }
        }
        // A seek or a skip moves the show: a waiting version takes over at the boundary after it.
        if let Some(p) = &mut self.pending {
            match self.engine.next_boundary(now) {
                Some(b) => p.boundary = b,
                None => {
                    let p = self.pending.take().expect("checked");
                    let _ = p.reply.send(Err(ActorError::StoppedLooping));
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// Withdraws what the bus holds for after `now` and forgets those tags and held cuts.
    async fn withdraw(&mut self, now: Us) -> Result<(), ActorError> {
        self.send(|reply| ProgramCmd::CancelAfter { at_us: now, reply }).await?;
        self.tags.retain(|_, t| t.scheduled <= now);
        self.held.clear();
        Ok(())
    }
}

fn us_dur(us: Us) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}
