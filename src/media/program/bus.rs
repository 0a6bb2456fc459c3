//! The bus task of a program: frames on absolute deadlines, the switcher's decision drawn with
//! overlays and the matching audio, commands applied between frames, degraded-mode steps.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::cmd::{Applied, BusError, OverlayOp, ProgramCmd, TimedAction};
use super::slate::{make_slate, slate_card};
use super::spec::{CameraStatus, ProgramCamera, ProgramSpec, ProgramStatus};
use crate::ffmpeg::job::JobEvent;
use crate::media::compositor::Compositor;
use crate::media::degrade::{Action, DegradeController, Sample};
use crate::media::encoder::{Encoder, EncoderSettings};
use crate::media::fanout::Fanout;
use crate::media::frame::{Frame, OutFrame};
use crate::media::ingest::{DecodeIngest, ProgramFormat, SourceStore};
use crate::media::pusher::Outputs;
use crate::media::switcher::{SwitchEvent, Switcher, Visual};
use crate::media::thumbnail::{self, Thumbnails};
use crate::media::MediaEnv;
use crate::values::{DestinationId, ProgramId, SourceId};

/// A destination with more than this queued counts as falling behind.
const BEHIND_BYTES: usize = 2 * 1024 * 1024;
/// Timed actions due this close after a frame's deadline go out with that frame.
const TIMED_SLACK: Duration = Duration::from_micros(500);
/// How far ahead of a cut its camera's source goes back to full rate (it must have fresh frames
/// by the cut's frame; an off-air source holds a picture up to `ingest::OFF_AIR_REFRESH` old).
const FULL_RATE_LEAD: Duration = Duration::from_millis(500);
/// How long a new program waits for its first camera before starting on the slate (the camera is
/// cut in once it delivers). A camera started from its last probe delivers well within this; one
/// that is down must not hold a show off air (the go-live budget is 3 s).
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(2);
/// If the bus falls further behind its clock than this, it skips ahead instead of bursting.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// When frame `k` of a segment is due, relative to the segment's start (never before k/fps).
fn frame_offset(k: u64, fps: u32) -> Duration {
    let nanos = (k as u128 * 1_000_000_000).div_ceil(fps as u128);
    Duration::from_nanos(nanos as u64)
}

pub(super) struct Bus {
    fallbacks: u64,
    /// Announces timed actions as they go on air.
    applied: broadcast::Sender<Applied>,
    /// Timed actions waiting for their frame, in time order.
    timed: Vec<(Instant, u64, TimedAction)>,
    /// The program clock's origin, once running.
    t0: Option<Instant>,
    /// Degraded mode: what the box can sustain now, and the settings to rebuild with.
    degrade: DegradeController,
    encoder_settings: EncoderSettings,
    cameras: Vec<ProgramCamera>,
    slate_png: Option<PathBuf>,
    env: MediaEnv,
    overlays_enabled: bool,
    /// Encoder output time at the last degrade sample, for its real speed.
    last_out: Option<(Instant, i64)>,
    /// Queue overflows per destination at the last degrade sample.
    last_overflows: HashMap<DestinationId, u64>,
    thumbs: Thumbnails,
    /// A thumbnail job is running (at most one at a time; a slow box skips a refresh).
    thumbs_busy: Arc<AtomicBool>,
    compositor: Option<Compositor>,
    /// Draws "We'll be right back" and the time on the generated slate.
    slate_card: Option<Compositor>,
    id: ProgramId,
    fmt: ProgramFormat,
    encoder_name: String,
    ingests: HashMap<SourceId, DecodeIngest>,
    switcher: Switcher,
    encoder: Encoder,
    outputs: Outputs,
    slate: Frame,
    fanout: Fanout,
    events: mpsc::Sender<JobEvent>,
    status: watch::Sender<Option<ProgramStatus>>,
    first: Option<SourceId>,
    backups: HashMap<SourceId, Option<SourceId>>,
}

impl Bus {
    /// Starts the show's ingests, encoder and destinations; [`Bus::run`] then drives them.
    pub(super) async fn new(
        spec: ProgramSpec,
        env: &MediaEnv,
        status_tx: watch::Sender<Option<ProgramStatus>>,
        applied: broadcast::Sender<Applied>,
        thumbs: Thumbnails,
    ) -> Bus {
        let prefix = format!("program:{}", spec.id);
        let fmt = spec.encoder.format;
        let mut ingests = HashMap::new();
        let mut switcher = Switcher::new(spec.switcher);
        for c in &spec.cameras {
            let id = c.source.camera_id.clone();
            switcher.set_backup(&id, c.backup.as_ref());
            ingests.insert(id, DecodeIngest::start(&prefix, c.source.clone(), fmt, env, spec.switcher.stall));
        }
        let fanout = Fanout::new(env.queue_bytes);
        let encoder = Encoder::start(&prefix, &spec.encoder, &fanout, env);
        let mut outputs = Outputs::new(&prefix, &fanout, env);
        outputs.set(spec.outputs.clone()).await;
        let slate = make_slate(fmt, spec.slate_png.as_deref());
        let compositor = Compositor::new(fmt.width, fmt.height, None).ok();
        if compositor.is_none() {
            tracing::error!(program = %spec.id, "overlay compositor unavailable (program size)");
        }
        let slate_card = if spec.slate_png.is_none() { slate_card(fmt) } else { None };
        Bus {
            applied,
            fallbacks: 0,
            timed: Vec::new(),
            t0: None,
            degrade: DegradeController::new(env.degrade, fmt, spec.encoder.bitrate_kbps),
            encoder_settings: spec.encoder.clone(),
            cameras: spec.cameras.clone(),
            slate_png: spec.slate_png.clone(),
            env: env.clone(),
            overlays_enabled: true,
            last_out: None,
            last_overflows: HashMap::new(),
            thumbs,
            thumbs_busy: Arc::new(AtomicBool::new(false)),
            compositor,
            slate_card,
            id: spec.id.clone(),
            fmt,
            encoder_name: spec.encoder.encoder.clone(),
            ingests,
            switcher,
            encoder,
            outputs,
            slate,
            fanout,
            events: env.events.clone(),
            status: status_tx,
            first: spec.first.clone(),
            backups: spec.cameras.iter().map(|c| (c.source.camera_id.clone(), c.backup.clone())).collect(),
        }
    }

    fn note(&self, event_type: &str, detail: String, warning: bool) {
        tracing::info!(program = %self.id, event_type, "{detail}");
        let _ = self.events.try_send(JobEvent::Note {
            job: format!("program:{}", self.id),
            event_type: event_type.to_string(),
            detail,
            warning,
        });
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<ProgramCmd>,
        mut stop: oneshot::Receiver<oneshot::Sender<()>>,
    ) {
        // Go live on a picture: wait (bounded) for the first camera's first frame.
        if let Some(store) = self.first.as_ref().and_then(|c| self.ingests.get(c)).map(|i| i.store()) {
            let give_up = Instant::now() + FIRST_FRAME_WAIT;
            while store.latest().is_none() && Instant::now() < give_up {
                tokio::select! {
                    biased;
                    d = &mut stop => {
                        if let Ok(d) = d { let _ = d.send(()); }
                        return;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
        // Program time counts from `t0`; frames are clocked from the start of the current segment
        // (a degraded-mode step changes the frame rate and starts a new one).
        let t0 = Instant::now();
        self.t0 = Some(t0);
        if let Some(first) = self.first.clone() {
            self.switcher.cut(&first, t0, Duration::ZERO);
        }
        let mut interval = self.fmt.frame_interval();
        let mut fps = self.fmt.fps;
        let mut seg_start = t0;
        let mut k: u64 = 0;
        let mut frames: u64 = 0;
        let mut audio = Vec::with_capacity(self.fmt.samples_per_frame());
        let mut on_air_source: Option<SourceId> = None;
        let done = loop {
            // Exact integer nanoseconds: with a rounded interval, frame n of a 30 fps program
            // fell a hair before n/30 s and a cut scheduled exactly on a frame waited one more.
            let deadline = seg_start + frame_offset(k, fps);
            tokio::select! {
                biased;
                d = &mut stop => break d.ok(),
                Some(cmd) = rx.recv() => self.command(cmd, t0).await,
                _ = tokio::time::sleep_until(deadline) => {
                    let late = Instant::now().saturating_duration_since(deadline);
                    if late > MAX_CATCH_UP {
                        // The process was starved (suspended VM, overloaded box): skip ahead and keep
                        // the clock's phase rather than flooding the encoder with a burst.
                        let skip = (late.as_secs_f64() / interval.as_secs_f64()) as u64;
                        tracing::warn!(program = %self.id, skipped = skip, "bus fell behind its clock");
                        k += skip;
                        continue;
                    }
                    self.tick(deadline, frames, &mut audio, &mut on_air_source);
                    k += 1;
                    frames += 1;
                    if frames % 5 == 1 {
                        self.publish_status(frames, t0);
                    }
                    if frames.is_multiple_of(self.fmt.fps as u64) {
                        if let Some(action) = self.degrade_sample(deadline) {
                            self.apply(action).await;
                            interval = self.fmt.frame_interval();
                            fps = self.fmt.fps;
                            seg_start = Instant::now();
                            k = 0;
                        }
                    }
                }
            }
        };
        let Bus { encoder, outputs, ingests, fanout, .. } = self;
        let stops = ingests.into_values().map(DecodeIngest::stop);
        tokio::join!(outputs.stop(), encoder.stop(), futures_util::future::join_all(stops));
        fanout.close();
        if let Some(d) = done {
            let _ = d.send(());
        }
    }

    fn tick(&mut self, deadline: Instant, n: u64, audio: &mut Vec<i16>, on_air_source: &mut Option<SourceId>) {
        // A hair of slack: a cue time computed in whole microseconds may sit a microsecond past
        // the frame it belongs to (frame deadlines are exact nanoseconds).
        while self.timed.first().is_some_and(|(at, ..)| *at <= deadline + TIMED_SLACK) {
            let (_, tag, action) = self.timed.remove(0);
            match action {
                TimedAction::Cut { camera, fade } => self.switcher.cut_to(camera.as_ref(), deadline, fade),
                TimedAction::Overlay(op) => {
                    if let Err(e) = self.overlay(op, deadline) {
                        tracing::debug!(program = %self.id, "timed overlay: {e}");
                    }
                }
                TimedAction::Mark => {}
            }
            let at_us = self.t0.map(|t0| deadline.saturating_duration_since(t0).as_micros() as i64).unwrap_or(0);
            let _ = self.applied.send(Applied { tag, at_us });
        }
        let stores: HashMap<&str, SourceStore> = self.ingests.iter().map(|(k, v)| (k.as_str(), v.store())).collect();
        let d = self.switcher.tick(deadline, |cam| stores.get(cam.as_str()).map(|s| s.health()).unwrap_or_default());
        for e in self.switcher.take_events() {
            match e {
                SwitchEvent::Cut { camera } => {
                    let to = camera.as_ref().map_or("slate", SourceId::as_str);
                    self.note("cut", format!("cut to {to}"), false)
                }
                SwitchEvent::FallbackOn { camera, to } => {
                    self.fallbacks += 1;
                    let to = match to {
                        Visual::Camera(c) => format!("backup camera {c}"),
                        Visual::Slate => "the slate".into(),
                    };
                    self.note("fallback_on", format!("camera {camera} stalled: {to} on air"), true)
                }
                SwitchEvent::FallbackOff { camera } => {
                    self.note("fallback_off", format!("camera {camera} is back on air"), false)
                }
            }
        }
        // Sources that are not needed soon are read only now and then (see `SourceStore`).
        let until = deadline + FULL_RATE_LEAD;
        let timed_cuts = self.timed.iter().take_while(|(at, ..)| *at <= until).filter_map(|(_, _, a)| match a {
            TimedAction::Cut { camera, .. } => camera.as_ref().map(SourceId::as_str),
            _ => None,
        });
        let on_air = [Some(&d.main), d.from.as_ref().map(|(v, _)| v)].into_iter().flatten().filter_map(|v| match v {
            Visual::Camera(c) => Some(c.as_str()),
            Visual::Slate => None,
        });
        let needed: HashSet<&str> =
            self.switcher.needed_until(until).map(SourceId::as_str).chain(timed_cuts).chain(on_air).collect();
        for (k, s) in &stores {
            s.set_full_rate(needed.contains(k));
        }
        let picture = |v: &Visual| -> Option<Arc<Frame>> {
            match v {
                Visual::Camera(c) => stores.get(c.as_str()).and_then(|s| s.latest()),
                Visual::Slate => None,
            }
        };
        let wall = self.env.local_now();
        let mut slate = || {
            let mut f = self.slate.pooled_copy();
            if let Some(card) = self.slate_card.as_mut() {
                card.compose(&mut f, deadline, wall);
            }
            f
        };
        let main = picture(&d.main).filter(|f| (f.width, f.height) == (self.fmt.width, self.fmt.height));
        let compositor = self.compositor.as_mut().filter(|_| self.overlays_enabled);
        // A camera on air: its picture as it is, with only the rows under the overlays redrawn.
        let frame = match (main, &d.from) {
            (Some(base), None) => {
                let band = compositor.and_then(|c| c.compose_over(&base, deadline, wall));
                OutFrame::Over { base, band }
            }
            (main, from) => {
                let mut frame = match main {
                    Some(f) => f.pooled_copy(),
                    None => slate(),
                };
                if let Some((from, remaining)) = from {
                    match picture(from) {
                        Some(prev) => frame.mix_from(&prev, *remaining),
                        None => {
                            let prev = slate();
                            frame.mix_from(&prev, *remaining);
                            prev.recycle();
                        }
                    }
                }
                if let Some(c) = compositor {
                    c.compose(&mut frame, deadline, wall);
                }
                OutFrame::Own(frame)
            }
        };
        // Audio follows the picture; a source going on air starts from its newest samples.
        let source = match &d.main {
            Visual::Camera(c) => Some(c.clone()),
            Visual::Slate => None,
        };
        if source != *on_air_source {
            if let Some(s) = source.as_ref().and_then(|c| stores.get(c.as_str())) {
                s.trim_audio(self.fmt.samples_per_frame() * 2);
            }
            *on_air_source = source.clone();
        }
        audio.clear();
        match source.as_ref().and_then(|c| stores.get(c.as_str())) {
            Some(s) => s.take_audio(self.fmt.samples_per_frame(), audio),
            None => audio.resize(self.fmt.samples_per_frame(), 0),
        }
        if n.is_multiple_of(self.fmt.fps as u64) && !self.thumbs_busy.swap(true, Ordering::AcqRel) {
            let program = frame.share();
            let sources: Vec<(String, Arc<Frame>)> =
                stores.iter().filter_map(|(k, s)| s.latest().map(|f| (k.to_string(), f))).collect();
            let (thumbs, busy) = (self.thumbs.clone(), self.thumbs_busy.clone());
            tokio::task::spawn_blocking(move || {
                thumbs.put("program", thumbnail::downscale_out(&program, thumbnail::MAX_WIDTH));
                program.release();
                for (k, f) in sources {
                    thumbs.put(&k, thumbnail::downscale(&f, thumbnail::MAX_WIDTH));
                }
                busy.store(false, Ordering::Release);
            });
        }
        self.encoder.send(frame, audio);
    }

    /// One second of observations for degraded mode.
    fn degrade_sample(&mut self, now: Instant) -> Option<Action> {
        let enc = self.encoder.status();
        let out = enc.progress.as_ref().and_then(|p| p.out_time_us);
        let speed = match (self.last_out, out) {
            (Some((t, prev)), Some(cur)) if now > t => {
                Some((cur - prev) as f64 / 1e6 / now.saturating_duration_since(t).as_secs_f64())
            }
            _ => None,
        };
        self.last_out = out.map(|o| (now, o));
        let outputs = self.outputs.status();
        let mut behind = !outputs.is_empty();
        for o in &outputs {
            let prev = self.last_overflows.insert(o.destination.clone(), o.queue.overflows).unwrap_or(0);
            behind &= o.queue.overflows > prev || o.queue.queued_bytes > BEHIND_BYTES;
        }
        self.degrade.sample(Sample { at: now, speed, dropped_total: self.encoder.dropped(), outputs_behind: behind })
    }

    /// Carries out a degraded-mode step. Reformatting restarts the ingests and the encoder;
    /// a bitrate step restarts the encoder only; the destinations keep their connections.
    async fn apply(&mut self, action: Action) {
        match action {
            Action::Overlays(on) => {
                self.overlays_enabled = on;
                let what = if on { "overlays back on" } else { "overlays off: sustained overload" };
                self.note("degraded", what.into(), !on);
            }
            Action::Bitrate(kbps) => {
                self.note("degraded", format!("destinations falling behind: video bitrate now {kbps} kbit/s"), true);
                self.encoder_settings.bitrate_kbps = kbps;
                self.restart_encoder().await;
            }
            Action::Reformat(fmt) => {
                self.note(
                    "degraded",
                    format!("encoder load: program now {}x{} at {} fps", fmt.width, fmt.height, fmt.fps),
                    true,
                );
                let prefix = format!("program:{}", self.id);
                let old: Vec<DecodeIngest> = self.ingests.drain().map(|(_, v)| v).collect();
                futures_util::future::join_all(old.into_iter().map(DecodeIngest::stop)).await;
                for c in &self.cameras {
                    let ing = DecodeIngest::start(&prefix, c.source.clone(), fmt, &self.env, self.env.switcher.stall);
                    self.ingests.insert(c.source.camera_id.clone(), ing);
                }
                self.fmt = fmt;
                self.slate = make_slate(fmt, self.slate_png.as_deref());
                if self.slate_png.is_none() {
                    self.slate_card = slate_card(fmt);
                }
                self.encoder_settings.format = fmt;
                self.restart_encoder().await;
            }
        }
    }

    async fn restart_encoder(&mut self) {
        let prefix = format!("program:{}", self.id);
        let fresh = Encoder::start(&prefix, &self.encoder_settings, &self.fanout, &self.env);
        let old = std::mem::replace(&mut self.encoder, fresh);
        old.stop().await;
        self.last_out = None;
    }

    async fn command(&mut self, cmd: ProgramCmd, t0: Instant) {
        match cmd {
            ProgramCmd::Cut { camera, at, fade, reply } => {
                if !self.ingests.contains_key(camera.as_str()) {
                    let _ = reply.send(Err(BusError::UnknownCamera { camera: camera.to_string() }));
                    return;
                }
                let now = Instant::now();
                let when = at.map(|s| t0 + Duration::from_secs_f64(s.max(0.0))).unwrap_or(now).max(now);
                self.switcher.cut(&SourceId::from(camera), when, fade);
                let _ = reply.send(Ok((when - t0).as_secs_f64()));
            }
            ProgramCmd::Timed { at_us, tag, action, reply } => {
                if let TimedAction::Cut { camera: Some(c), .. } = &action {
                    if !self.ingests.contains_key(c) {
                        let _ = reply.send(Err(BusError::UnknownCamera { camera: c.to_string() }));
                        return;
                    }
                }
                let at = t0 + Duration::from_micros(at_us.max(0) as u64);
                let i = self.timed.partition_point(|(t, ..)| *t <= at);
                self.timed.insert(i, (at, tag, action));
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::CancelAfter { at_us, reply } => {
                let after = t0 + Duration::from_micros(at_us.max(0) as u64);
                self.timed.retain(|(t, ..)| *t <= after);
                self.switcher.cancel_after(after);
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::Slate { on, reply } => {
                self.switcher.set_emergency_slate(on);
                self.note("emergency_slate", format!("emergency slate {}", if on { "on" } else { "off" }), on);
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::Pin { camera, reply } => {
                if let Some(c) = &camera {
                    if !self.ingests.contains_key(c) {
                        let _ = reply.send(Err(BusError::UnknownCamera { camera: c.to_string() }));
                        return;
                    }
                }
                self.switcher.pin(camera.as_ref());
                self.note("pin", format!("pinned: {}", camera.as_ref().map_or("none", SourceId::as_str)), false);
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::SetOutputs { outputs, reply } => {
                self.outputs.set(outputs).await;
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::Preroll { camera, reply } => {
                let id = camera.source.camera_id.clone();
                if !self.ingests.contains_key(&id) {
                    let prefix = format!("program:{}", self.id);
                    let ing = DecodeIngest::start(
                        &prefix,
                        camera.source.clone(),
                        self.fmt,
                        &self.env,
                        self.env.switcher.stall,
                    );
                    self.ingests.insert(id.clone(), ing);
                    self.switcher.set_backup(&id, camera.backup.as_ref());
                    self.backups.insert(id.clone(), camera.backup.clone());
                    self.cameras.push(camera);
                    self.note("preroll", format!("camera {id} pre-rolled"), false);
                }
                let _ = reply.send(Ok(()));
            }
            ProgramCmd::Overlay { op, reply } => {
                let r = self.overlay(op, Instant::now());
                let _ = reply.send(r);
            }
        }
    }

    fn overlay(&mut self, op: OverlayOp, now: Instant) -> Result<(), BusError> {
        let Some(c) = self.compositor.as_mut() else {
            return Err(BusError::OverlaysUnavailable);
        };
        match op {
            OverlayOp::Show(p) => Ok(c.show_prepared(*p, now)?),
            OverlayOp::Hide(id) => {
                if c.hide(id.as_str(), now) {
                    Ok(())
                } else {
                    Err(BusError::NoSuchOverlay { id: id.to_string() })
                }
            }
            OverlayOp::SetVar(k, v) => {
                c.set_var(&k, &v);
                Ok(())
            }
            OverlayOp::Clear => {
                c.clear();
                Ok(())
            }
        }
    }

    fn publish_status(&self, frames: u64, t0: Instant) {
        let now = Instant::now();
        let cameras = self
            .ingests
            .iter()
            .map(|(id, ing)| {
                let h = ing.store().health();
                CameraStatus {
                    camera: id.clone(),
                    backup: self.backups.get(id).cloned().flatten(),
                    frame_age_ms: h.last_frame.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    frames_in: ing.store().frames_in(),
                    ingest: ing.status(),
                }
            })
            .collect();
        let on_air = self.switcher_on_air();
        let _ = self.status.send(Some(ProgramStatus {
            id: self.id.clone(),
            format: self.fmt,
            encoder_name: self.encoder_name.clone(),
            program_time_s: frames as f64 / self.fmt.fps as f64,
            frames,
            dropped_frames: self.encoder.dropped(),
            on_air: on_air.0,
            wanted_camera: self.switcher.pinned().or(self.switcher.program_camera()).cloned(),
            holding: on_air.1,
            pinned: self.switcher.pinned().cloned(),
            emergency_slate: self.switcher.emergency(),
            fallbacks: self.fallbacks,
            encoder: self.encoder.status(),
            cameras,
            outputs: self.outputs.status(),
            t0: Some(t0),
        }));
    }

    fn switcher_on_air(&self) -> (Visual, bool) {
        self.switcher.last_decision().map(|d| (d.main.clone(), d.holding)).unwrap_or((Visual::Slate, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_deadlines_are_exact() {
        assert_eq!(frame_offset(330, 30), Duration::from_secs(11), "frame 330 of 30 fps is due at exactly 11 s");
        assert_eq!(frame_offset(1, 30), Duration::from_nanos(33_333_334), "never before k/fps");
        assert_eq!(frame_offset(25, 25), Duration::from_secs(1));
        assert!((1..10_000u64)
            .all(|k| frame_offset(k, 30) >= Duration::from_secs_f64(k as f64 / 30.0) - Duration::from_nanos(1)));
    }
}
