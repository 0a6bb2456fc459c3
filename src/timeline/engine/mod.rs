//! The timeline engine: pure, no I/O, no clock reads.
//!
//! In: a checked [`Timeline`], the program time (µs on the program bus's clock) passed into every
//! call, and the operator's overrides (pause, seek, skip, pin). Out: [`Scheduled`] effects, each
//! with the program time it must take effect at: cut to a source, show or hide an overlay,
//! pre-roll a camera (and its PTZ preset) ahead of its cue, cue ended, timeline ended.
//!
//! Positions are absolute microseconds since the timeline started playing, counting loops (loop k
//! covers `[k·D, (k+1)·D)`), so a looping show is just a longer line and "which loop" is a
//! division. The clock maps positions to program time: while playing, `program = anchor_prog +
//! (pos - anchor_pos)`; a pause freezes the position, a resume re-anchors it at the resume time,
//! so every later cue moves by exactly the pause. A seek re-anchors at the target and emits the
//! difference between what is on air and what the target position shows (see [`state_at`]).
//!
//! The caller polls with a horizon slightly ahead of now and hands effects to the bus with their
//! program time, which the bus applies at the first frame due at or after it. If it then pauses or
//! seeks, it must withdraw whatever it sent for later than `now`; the engine re-emits those when
//! their time comes again.
//!
//! A gap in the video track changes nothing: the last shot stays on air. At the end of a
//! non-looping timeline the last shot stays too (the stream never drops); the caller decides
//! what follows.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::model::{Timeline, Us, VideoSource};
use crate::values::{CameraId, CueId};

/// What the engine asks the program to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A video cue starts: put its source on air (with its crossfade, zero for a hard cut).
    Cut { cue_id: CueId, source: VideoSource, fade: Us },
    /// An overlay cue starts.
    ShowOverlay { cue_id: CueId, layer: i32 },
    /// An overlay cue's fade-out starts (it ends at the cue's end).
    HideOverlay { cue_id: CueId },
    /// A cue (video or overlay) reached its end.
    CueEnded { cue_id: CueId },
    /// Get a camera (or media source) ready for the cue starting at the effect's program time +
    /// lead: start decoding it and move it to its preset while it is off air.
    Preroll { cue_id: CueId, source: VideoSource, cue_at: Us },
    /// The pinned camera changed (None: unpinned; the current cue's source goes back on air).
    Pin { camera: Option<CameraId> },
    /// A non-looping timeline reached its end.
    Ended,
}

/// An effect and when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// Program time, µs.
    pub at: Us,
    /// Absolute timeline position it belongs to, µs (for lateness reports).
    pub pos: Us,
    pub effect: Effect,
}

/// What the timeline shows at a position: the current video cue and the overlay cues on screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShowState {
    /// The most recently started video cue (its source stays on air through a gap).
    pub video: Option<CueId>,
    pub overlays: BTreeSet<CueId>,
}

impl ShowState {
    /// Folds an effect in, as the program would.
    pub fn apply(&mut self, e: &Effect) {
        match e {
            Effect::Cut { cue_id, .. } => self.video = Some(cue_id.clone()),
            Effect::ShowOverlay { cue_id, .. } => {
                self.overlays.insert(cue_id.clone());
            }
            Effect::HideOverlay { cue_id } => {
                self.overlays.remove(cue_id);
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayState {
    Idle,
    Playing,
    Paused,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    Idle,
    Playing { anchor_prog: Us, anchor_pos: Us },
    Paused { pos: Us },
    Ended { pos: Us },
}

/// Where to seek.
#[derive(Clone, PartialEq)]
pub enum SeekTarget {
    /// The start of a cue, in the current loop.
    Cue(CueId),
    /// Seconds into the timeline, in the current loop.
    Seconds(f64),
}

/// As derived, with the cue id as a plain string (`Cue("c1")`): the form the seek events show.
impl std::fmt::Debug for SeekTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeekTarget::Cue(c) => f.debug_tuple("Cue").field(&c.as_str()).finish(),
            SeekTarget::Seconds(s) => f.debug_tuple("Seconds").field(s).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no cue {:?} in this timeline", .0.as_str())]
    UnknownCue(CueId),
    #[error("position {0} s is outside the timeline")]
    OutOfRange(String),
    #[error("the timeline is not playing")]
    NotPlaying,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EngineStatus {
    pub state: PlayState,
    /// Seconds into the current loop.
    pub position_s: f64,
    pub loop_index: u64,
    pub video_cue: Option<CueId>,
    pub overlays: Vec<CueId>,
    pub pinned: Option<CameraId>,
}

/// One timeline event at an absolute position, before it is mapped to program time.
#[derive(Debug, Clone)]
struct Ev {
    pos: Us,
    /// Orders events at one position: ends, then hides, then starts.
    rank: u8,
    effect: Effect,
}

pub struct Engine {
    tl: Arc<Timeline>,
    lead: Us,
    clock: Clock,
    /// Every event at a position ≤ this has been emitted.
    emitted: Us,
    /// Every video cue starting at a position ≤ this has had its pre-roll emitted.
    prerolled: Us,
    pinned: Option<CameraId>,
}

impl Engine {
    /// `preroll_lead`: how long before its cue a camera is made ready.
    pub fn new(tl: Arc<Timeline>, preroll_lead: Us) -> Engine {
        Engine { tl, lead: preroll_lead.max(0), clock: Clock::Idle, emitted: -1, prerolled: -1, pinned: None }
    }

    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.tl
    }

    pub fn state(&self) -> PlayState {
        match self.clock {
            Clock::Idle => PlayState::Idle,
            Clock::Playing { .. } => PlayState::Playing,
            Clock::Paused { .. } => PlayState::Paused,
            Clock::Ended { .. } => PlayState::Ended,
        }
    }

    /// The absolute position at program time `now`.
    pub fn position(&self, now: Us) -> Us {
        match self.clock {
            Clock::Idle => 0,
            Clock::Playing { anchor_prog, anchor_pos } => self.clamp_end(anchor_pos + (now - anchor_prog).max(0)),
            Clock::Paused { pos } | Clock::Ended { pos } => pos,
        }
    }

    fn clamp_end(&self, pos: Us) -> Us {
        if self.tl.looping {
            pos
        } else {
            pos.min(self.tl.duration)
        }
    }

    /// Program time of an absolute position (meaningful while playing).
    fn prog_of(&self, pos: Us) -> Us {
        match self.clock {
            Clock::Playing { anchor_prog, anchor_pos } => anchor_prog + (pos - anchor_pos),
            _ => 0,
        }
    }

    /// Where a new version of this (looping, playing) timeline can take over: the first loop
    /// boundary after both `now` and everything emitted so far, as (absolute position, program
    /// time). None when paused, stopped, ended or not looping.
    pub fn next_boundary(&self, now: Us) -> Option<(Us, Us)> {
        let Clock::Playing { .. } = self.clock else { return None };
        if !self.tl.looping {
            return None;
        }
        let d = self.tl.duration;
        let past = self.position(now).max(self.emitted).max(0);
        let pos = (past / d + 1) * d;
        Some((pos, self.prog_of(pos)))
    }

    /// A new version of this timeline taking over at `boundary` (from [`Engine::next_boundary`];
    /// this engine must not have been polled up to it). Returns the new engine, playing from its
    /// position 0 at the boundary's program time with the pin carried over, and the effects that
    /// make the program show it there: this version's overlays that the new one does not show at
    /// 0 are hidden (one with the same cue id is simply shown again, the new look replacing the
    /// old), then the new version's first cues and pre-rolls.
    pub fn hand_over(&self, tl: Arc<Timeline>, boundary: (Us, Us)) -> (Engine, Vec<Scheduled>) {
        let (pos, at) = boundary;
        let before = state_at(&self.tl, pos - 1);
        let mut next = Engine::new(tl, self.lead);
        next.pinned = self.pinned.clone();
        next.play(at);
        let shown = state_at(&next.tl, 0).overlays;
        let mut out: Vec<Scheduled> = before
            .overlays
            .difference(&shown)
            .map(|id| Scheduled { at, pos: 0, effect: Effect::HideOverlay { cue_id: id.clone() } })
            .collect();
        out.extend(next.poll(at));
        (next, out)
    }

    /// Starts from the beginning (or resumes a paused timeline) at program time `now`.
    pub fn play(&mut self, now: Us) {
        match self.clock {
            Clock::Paused { .. } => self.resume(now),
            Clock::Playing { .. } => {}
            Clock::Idle | Clock::Ended { .. } => {
                self.clock = Clock::Playing { anchor_prog: now, anchor_pos: 0 };
                self.emitted = -1;
                self.prerolled = -1;
            }
        }
    }

    /// Freezes the position at `now`. Effects emitted for later than `now` must be withdrawn by
    /// the caller; they come again after the resume.
    pub fn pause(&mut self, now: Us) {
        if let Clock::Playing { .. } = self.clock {
            let pos = self.position(now);
            self.clock = Clock::Paused { pos };
            // Pre-rolls already done stay done: the cameras stay ready through the pause.
            self.emitted = self.emitted.min(pos);
        }
    }

    pub fn resume(&mut self, now: Us) {
        if let Clock::Paused { pos } = self.clock {
            self.clock = Clock::Playing { anchor_prog: now, anchor_pos: pos };
        }
    }

    /// Stops; a later `play` starts from the beginning.
    pub fn stop(&mut self) {
        self.clock = Clock::Idle;
        self.emitted = -1;
        self.prerolled = -1;
    }

    /// Pins a camera (video cues keep their place but the pinned camera stays on air) or unpins.
    pub fn pin(&mut self, camera: Option<CameraId>) -> Effect {
        self.pinned = camera.clone();
        Effect::Pin { camera }
    }

    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_ref().map(CameraId::as_str)
    }

    /// Jumps to a target at program time `now`, returning the effects that make the program show
    /// what the target position shows (due at `now`). Paused stays paused; idle starts playing.
    pub fn seek(&mut self, now: Us, target: SeekTarget) -> Result<Vec<Scheduled>, EngineError> {
        let cur = self.position(now);
        let d = self.tl.duration;
        let base = if self.tl.looping { (cur / d) * d } else { 0 };
        let local = match &target {
            SeekTarget::Cue(id) => self.tl.cue_start(id.as_str()).ok_or_else(|| EngineError::UnknownCue(id.clone()))?,
            SeekTarget::Seconds(s) => {
                let t = (s * 1e6).round() as Us;
                let inside = (0..d).contains(&t) || (t == d && !self.tl.looping);
                if !inside {
                    return Err(EngineError::OutOfRange(format!("{s}")));
                }
                t
            }
        };
        Ok(self.jump(now, cur, base + local))
    }

    /// Jumps to an absolute position (loops counted), as a resumed show does.
    pub fn seek_abs(&mut self, now: Us, pos: Us) -> Vec<Scheduled> {
        let cur = self.position(now);
        let pos = if self.tl.looping { pos.max(0) } else { pos.clamp(0, self.tl.duration) };
        self.jump(now, cur, pos)
    }

    /// Seeks to the start of the next video cue (wrapping on a looping timeline; to the end on a
    /// non-looping one with no cue left).
    pub fn skip(&mut self, now: Us) -> Result<Vec<Scheduled>, EngineError> {
        let cur = self.position(now);
        if self.state() == PlayState::Idle {
            return Err(EngineError::NotPlaying);
        }
        let d = self.tl.duration;
        let k = if self.tl.looping { cur / d } else { 0 };
        let next = self
            .tl
            .video
            .iter()
            .map(|c| k * d + c.start)
            .find(|&p| p > cur)
            .or_else(|| if self.tl.looping { self.tl.video.first().map(|c| (k + 1) * d + c.start) } else { None })
            .unwrap_or(d);
        Ok(self.jump(now, cur, next))
    }

    fn jump(&mut self, now: Us, cur: Us, target: Us) -> Vec<Scheduled> {
        let was_idle = self.state() == PlayState::Idle;
        let from = if was_idle { ShowState::default() } else { state_at(&self.tl, cur) };
        let to = state_at(&self.tl, target);
        let mut out = Vec::new();
        for id in from.overlays.difference(&to.overlays) {
            out.push(Scheduled { at: now, pos: target, effect: Effect::HideOverlay { cue_id: id.clone() } });
        }
        if to.video != from.video {
            if let Some(c) = to.video.as_ref().and_then(|id| self.tl.video.iter().find(|c| &c.id == id)) {
                let effect = Effect::Cut { cue_id: c.id.clone(), source: c.source.clone(), fade: 0 };
                out.push(Scheduled { at: now, pos: target, effect });
            }
        }
        for id in to.overlays.difference(&from.overlays) {
            let layer = self.layer_of(id.as_str());
            out.push(Scheduled { at: now, pos: target, effect: Effect::ShowOverlay { cue_id: id.clone(), layer } });
        }
        self.emitted = target;
        self.prerolled = target;
        self.clock = match self.clock {
            Clock::Paused { .. } => Clock::Paused { pos: target },
            _ if !self.tl.looping && target >= self.tl.duration => {
                out.push(Scheduled { at: now, pos: target, effect: Effect::Ended });
                Clock::Ended { pos: target }
            }
            _ => Clock::Playing { anchor_prog: now, anchor_pos: target },
        };
        out
    }

    fn layer_of(&self, cue_id: &str) -> i32 {
        self.tl.overlays.iter().find(|t| t.cues.iter().any(|c| c.id.as_str() == cue_id)).map(|t| t.layer).unwrap_or(0)
    }

    /// Every effect due at or before program time `horizon` not emitted yet, in order. Pre-rolls
    /// come `lead` ahead of their cue (at once for a cue closer than that).
    pub fn poll(&mut self, horizon: Us) -> Vec<Scheduled> {
        let Clock::Playing { .. } = self.clock else {
            return Vec::new();
        };
        let hi = self.position(horizon);
        let mut evs = Vec::new();
        if hi > self.emitted {
            self.events(self.emitted, hi, &mut evs);
            self.emitted = hi;
        }
        let pre_hi = self.clamp_end(hi + self.lead);
        if pre_hi > self.prerolled {
            self.prerolls(self.prerolled, pre_hi, &mut evs);
            self.prerolled = pre_hi;
        }
        evs.sort_by_key(|e| (e.pos, e.rank));
        let mut out: Vec<Scheduled> = Vec::with_capacity(evs.len());
        for e in evs {
            let at = self.prog_of(e.pos);
            if e.effect == Effect::Ended {
                self.clock = Clock::Ended { pos: self.tl.duration };
                out.push(Scheduled { at, pos: e.pos, effect: e.effect });
                break;
            }
            out.push(Scheduled { at, pos: e.pos, effect: e.effect });
        }
        out
    }

    /// Loops whose span meets (lo, hi].
    fn loops(&self, lo: Us, hi: Us) -> std::ops::RangeInclusive<i64> {
        let d = self.tl.duration;
        if self.tl.looping {
            (lo.max(0) / d)..=(hi / d)
        } else {
            0..=0
        }
    }

    /// Timeline events in (lo, hi]. Cues are sorted and never overlap within a track, so their
    /// starts, hides and ends are each sorted too: a poll finds its few cues by binary search
    /// instead of walking the whole timeline (a 10 000-cue timeline costs what a 10-cue one does).
    fn events(&self, lo: Us, hi: Us, out: &mut Vec<Ev>) {
        let d = self.tl.duration;
        for k in self.loops(lo, hi) {
            let (lo, hi) = (lo - k * d, hi - k * d);
            let at = |local: Us| local + k * d;
            let v = &self.tl.video;
            for c in within(v, |c| c.start, lo, hi) {
                let effect = Effect::Cut { cue_id: c.id.clone(), source: c.source.clone(), fade: c.fade };
                out.push(Ev { pos: at(c.start), rank: 3, effect });
            }
            for c in within(v, |c| c.end(), lo, hi) {
                out.push(Ev { pos: at(c.end()), rank: 0, effect: Effect::CueEnded { cue_id: c.id.clone() } });
            }
            for t in &self.tl.overlays {
                for c in within(&t.cues, |c| c.start, lo, hi) {
                    let effect = Effect::ShowOverlay { cue_id: c.id.clone(), layer: t.layer };
                    out.push(Ev { pos: at(c.start), rank: 2, effect });
                }
                for c in within(&t.cues, |c| c.hide_at(), lo, hi) {
                    let effect = Effect::HideOverlay { cue_id: c.id.clone() };
                    out.push(Ev { pos: at(c.hide_at()), rank: 1, effect });
                }
                for c in within(&t.cues, |c| c.end(), lo, hi) {
                    out.push(Ev { pos: at(c.end()), rank: 0, effect: Effect::CueEnded { cue_id: c.id.clone() } });
                }
            }
        }
        if !self.tl.looping && d > lo && d <= hi {
            out.push(Ev { pos: d, rank: 4, effect: Effect::Ended });
        }
    }

    /// Pre-rolls for video cues starting in (lo, hi], placed `lead` before the cue (never before
    /// the pre-roll window opened).
    fn prerolls(&self, lo: Us, hi: Us, out: &mut Vec<Ev>) {
        let d = self.tl.duration;
        for k in self.loops(lo, hi) {
            for c in within(&self.tl.video, |c| c.start, lo - k * d, hi - k * d) {
                if matches!(c.source, VideoSource::Slate) {
                    continue;
                }
                let start = k * d + c.start;
                let pos = (start - self.lead).max(self.emitted_floor());
                let effect = Effect::Preroll { cue_id: c.id.clone(), source: c.source.clone(), cue_at: start };
                out.push(Ev { pos, rank: 1, effect });
            }
        }
    }

    /// Pre-rolls are never placed before the current position (they would be "late" by design).
    fn emitted_floor(&self) -> Us {
        match self.clock {
            Clock::Playing { anchor_pos, .. } => anchor_pos,
            _ => 0,
        }
    }

    pub fn status(&self, now: Us) -> EngineStatus {
        let pos = self.position(now);
        let d = self.tl.duration;
        let (k, local) = if self.tl.looping { (pos / d, pos % d) } else { (0, pos) };
        let st = if self.state() == PlayState::Idle { ShowState::default() } else { state_at(&self.tl, pos) };
        EngineStatus {
            state: self.state(),
            position_s: local as f64 / 1e6,
            loop_index: k.max(0) as u64,
            video_cue: st.video,
            overlays: st.overlays.into_iter().collect(),
            pinned: self.pinned.clone(),
        }
    }
}

/// The items whose `key` is in (lo, hi], for a slice sorted by `key`.
fn within<T>(items: &[T], key: impl Fn(&T) -> Us, lo: Us, hi: Us) -> &[T] {
    let a = items.partition_point(|c| key(c) <= lo);
    let b = items.partition_point(|c| key(c) <= hi);
    &items[a..b.max(a)]
}

/// What the timeline shows at an absolute position, as a pure function of the position: the
/// video cue started most recently at or before it (looking back into earlier loops through a
/// gap), and the overlay cues between their start and their hide.
pub fn state_at(tl: &Timeline, pos: Us) -> ShowState {
    let d = tl.duration;
    let (k, local) = if tl.looping { (pos / d, pos % d) } else { (0, pos.min(d)) };
    let mut video = tl.video.iter().rev().find(|c| c.start <= local).map(|c| c.id.clone());
    if video.is_none() && k > 0 {
        video = tl.video.last().map(|c| c.id.clone());
    }
    let overlays = if !tl.looping && pos >= d {
        BTreeSet::new()
    } else {
        tl.overlays
            .iter()
            .flat_map(|t| t.cues.iter())
            .filter(|c| c.start <= local && local < c.hide_at())
            .map(|c| c.id.clone())
            .collect()
    };
    ShowState { video, overlays }
}

#[cfg(test)]
mod tests;
