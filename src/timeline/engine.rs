//! The timeline engine (DESIGN §5): pure, no I/O, no clock reads.
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

/// What the engine asks the program to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A video cue starts: put its source on air (with its crossfade, zero for a hard cut).
    Cut { cue_id: String, source: VideoSource, fade: Us },
    /// An overlay cue starts.
    ShowOverlay { cue_id: String, layer: i32 },
    /// An overlay cue's fade-out starts (it ends at the cue's end).
    HideOverlay { cue_id: String },
    /// A cue (video or overlay) reached its end.
    CueEnded { cue_id: String },
    /// Get a camera (or media source) ready for the cue starting at the effect's program time +
    /// lead: start decoding it and move it to its preset while it is off air.
    Preroll { cue_id: String, source: VideoSource, cue_at: Us },
    /// The pinned camera changed (None: unpinned; the current cue's source goes back on air).
    Pin { camera: Option<String> },
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
    pub video: Option<String>,
    pub overlays: BTreeSet<String>,
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
#[derive(Debug, Clone, PartialEq)]
pub enum SeekTarget {
    /// The start of a cue, in the current loop.
    Cue(String),
    /// Seconds into the timeline, in the current loop.
    Seconds(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no cue {0:?} in this timeline")]
    UnknownCue(String),
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
    pub video_cue: Option<String>,
    pub overlays: Vec<String>,
    pub pinned: Option<String>,
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
    pinned: Option<String>,
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
    pub fn pin(&mut self, camera: Option<String>) -> Effect {
        self.pinned = camera.clone();
        Effect::Pin { camera }
    }

    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// Jumps to a target at program time `now`, returning the effects that make the program show
    /// what the target position shows (due at `now`). Paused stays paused; idle starts playing.
    pub fn seek(&mut self, now: Us, target: SeekTarget) -> Result<Vec<Scheduled>, EngineError> {
        let cur = self.position(now);
        let d = self.tl.duration;
        let base = if self.tl.looping { (cur / d) * d } else { 0 };
        let local = match &target {
            SeekTarget::Cue(id) => self.tl.cue_start(id).ok_or_else(|| EngineError::UnknownCue(id.clone()))?,
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
            let layer = self.layer_of(id);
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
        self.tl.overlays.iter().find(|t| t.cues.iter().any(|c| c.id == cue_id)).map(|t| t.layer).unwrap_or(0)
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
mod tests {
    use super::*;
    use crate::timeline::model::{parse, Inventory};
    use proptest::prelude::*;
    use serde_json::json;

    const CAMS: [&str; 3] = ["cam-a", "cam-b", "cam-c"];

    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        for c in CAMS {
            inv.cameras.insert(c.into(), ["p1".to_string()].into_iter().collect());
        }
        inv
    }

    /// A random valid timeline: back-to-back or gapped video cues, up to two overlay tracks.
    fn arb_timeline() -> impl Strategy<Value = Timeline> {
        let video = prop::collection::vec((0u32..3, 1u32..4000, 0u32..4, 0u32..1500), 1..8);
        let overlay = prop::collection::vec((0u32..2000, 200u32..3000, 0u32..100, 0u32..100), 0..5);
        (video, prop::collection::vec(overlay, 0..3), any::<bool>(), 0u32..3000).prop_map(
            |(video, overlays, looping, tail)| {
                let mut t = 0u32;
                let mut vcues = Vec::new();
                for (i, (gap, dur, src, fade)) in video.into_iter().enumerate() {
                    t += if i == 0 { gap % 2 * 300 } else { gap * 250 };
                    let (action, params) = match src {
                        3 => ("show_slate", json!({})),
                        c => (
                            "show_camera",
                            json!({"camera_id": CAMS[c as usize], "transition": if fade > 700 { "fade" } else { "cut" },
                                   "transition_duration": (fade.min(dur) as f64) / 1000.0 / 2.0}),
                        ),
                    };
                    vcues.push(json!({"id": format!("v{i}"), "start_time": t as f64 / 1000.0,
                                      "duration": dur as f64 / 1000.0, "action": action, "params": params}));
                    t += dur;
                }
                let mut tracks = Vec::new();
                let mut end = t;
                for (l, cues) in overlays.into_iter().enumerate() {
                    let mut t = 0u32;
                    let mut ocues = Vec::new();
                    for (i, (gap, dur, fi, fo)) in cues.into_iter().enumerate() {
                        t += gap;
                        let (fi, fo) = (dur * fi / 300, dur * fo / 300);
                        ocues.push(json!({"id": format!("o{l}-{i}"), "start_time": t as f64 / 1000.0,
                            "duration": dur as f64 / 1000.0, "action": "show_overlay",
                            "params": {"type": "text", "text": "x", "position": "top_left", "opacity": 1.0,
                                       "fade_in": fi as f64 / 1000.0, "fade_out": fo as f64 / 1000.0}}));
                        t += dur;
                    }
                    end = end.max(t);
                    tracks.push(json!({"layer": l, "cues": ocues}));
                }
                let doc = json!({"id": "t", "name": "t", "duration": (end + tail) as f64 / 1000.0, "fps": 25,
                    "resolution": "320x180", "loop": looping,
                    "tracks": {"video": {"cues": vcues}, "overlays": tracks}});
                parse(&doc.to_string(), &inventory()).expect("generated timelines are valid")
            },
        )
    }

    /// Polls in uneven steps from program time `from` to `to`, collecting everything.
    fn run(e: &mut Engine, from: Us, to: Us, steps: &[u32]) -> Vec<Scheduled> {
        let mut out = Vec::new();
        let mut now = from;
        let mut i = 0;
        while now < to {
            now = (now + 1 + steps[i % steps.len()] as Us * 1000).min(to);
            out.extend(e.poll(now));
            i += 1;
        }
        out
    }

    fn fold(state: &mut ShowState, effects: &[Scheduled]) {
        for s in effects {
            state.apply(&s.effect);
        }
    }

    fn track_of(tl: &Timeline, id: &str) -> i64 {
        if tl.video.iter().any(|c| c.id == id) {
            return -1;
        }
        tl.overlays.iter().find(|t| t.cues.iter().any(|c| c.id == id)).map(|t| t.layer as i64).unwrap()
    }

    fn cue_of(e: &Effect) -> Option<&str> {
        match e {
            Effect::Cut { cue_id, .. }
            | Effect::ShowOverlay { cue_id, .. }
            | Effect::HideOverlay { cue_id }
            | Effect::CueEnded { cue_id } => Some(cue_id),
            _ => None,
        }
    }

    fn without_prerolls(v: &[Scheduled]) -> Vec<Scheduled> {
        v.iter().filter(|s| !matches!(s.effect, Effect::Preroll { .. })).cloned().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn effects_come_in_order_and_match_the_pure_state(
            tl in arb_timeline(), steps in prop::collection::vec(1u32..700, 1..6), t0 in 0i64..10_000_000,
        ) {
            let tl = Arc::new(tl);
            let mut e = Engine::new(tl.clone(), 1_000_000);
            e.play(t0);
            let span = tl.duration * if tl.looping { 3 } else { 1 } + 500_000;
            let mut state = ShowState::default();
            let mut last_at = i64::MIN;
            let mut last_pos_per_track: std::collections::HashMap<i64, Us> = Default::default();
            let mut playing_video: BTreeSet<String> = BTreeSet::new();
            let mut now = t0;
            let mut i = 0;
            while now < t0 + span {
                now = (now + steps[i % steps.len()] as Us * 1000).min(t0 + span);
                i += 1;
                let batch = e.poll(now);
                for s in &batch {
                    prop_assert!(s.at <= now, "nothing is emitted beyond the horizon");
                    if !matches!(s.effect, Effect::Preroll { .. }) {
                        prop_assert!(s.at >= last_at, "effects come in time order");
                        last_at = s.at;
                    }
                    if let Some(id) = cue_of(&s.effect) {
                        let track = track_of(&tl, id);
                        let prev = last_pos_per_track.insert(track, s.pos).unwrap_or(i64::MIN);
                        prop_assert!(s.pos >= prev, "effects of one track come in order");
                    }
                    match &s.effect {
                        Effect::Cut { cue_id, .. } => { playing_video.insert(cue_id.clone()); }
                        Effect::CueEnded { cue_id } => { playing_video.remove(cue_id); }
                        _ => {}
                    }
                    prop_assert!(playing_video.len() <= 1, "never two video cues at once: {:?}", playing_video);
                }
                fold(&mut state, &batch);
                if e.state() == PlayState::Playing {
                    prop_assert_eq!(&state, &state_at(&tl, e.position(now)), "incremental state = pure state");
                }
            }
            if !tl.looping {
                prop_assert_eq!(e.state(), PlayState::Ended);
            }
        }

        #[test]
        fn seek_then_play_reaches_the_state_of_playing_from_zero(
            tl in arb_timeline(), frac in 0.0f64..1.0, steps in prop::collection::vec(1u32..500, 1..4),
        ) {
            let tl = Arc::new(tl);
            let d = tl.duration;
            let t = ((d as f64 * frac) as Us).min(d - 1);
            // A plays from 0 to t.
            let mut a = Engine::new(tl.clone(), 1_000_000);
            a.play(0);
            let mut sa = ShowState::default();
            fold(&mut sa, &run(&mut a, 0, t, &steps));
            // B starts by seeking to t.
            let mut b = Engine::new(tl.clone(), 1_000_000);
            let mut sb = ShowState::default();
            fold(&mut sb, &b.seek(0, SeekTarget::Seconds(t as f64 / 1e6)).unwrap());
            prop_assert_eq!(&sb, &sa, "seek({}) = play 0..{}", t, t);
            prop_assert_eq!(b.position(0), a.position(t));
            // And from there on both emit the same effects, B's shifted by t.
            let after_a = without_prerolls(&run(&mut a, t, t + 2 * d, &steps));
            let after_b: Vec<Scheduled> = without_prerolls(&run(&mut b, 0, 2 * d, &steps))
                .into_iter().map(|s| Scheduled { at: s.at + t, ..s }).collect();
            prop_assert_eq!(after_a, after_b);
        }

        #[test]
        fn pause_and_resume_shift_later_cues_by_exactly_the_pause(
            tl in arb_timeline(), p_frac in 0.0f64..1.0, pause in 1i64..5_000_000, steps in prop::collection::vec(1u32..500, 1..4),
        ) {
            let tl = Arc::new(tl);
            let d = tl.duration;
            let p = ((d as f64 * p_frac) as Us).min(d - 1);
            let mut a = Engine::new(tl.clone(), 1_000_000);
            let mut b = Engine::new(tl.clone(), 1_000_000);
            a.play(0);
            b.play(0);
            let _ = run(&mut a, 0, p, &steps);
            let _ = run(&mut b, 0, p, &steps);
            a.pause(p);
            prop_assert!(a.poll(p + pause).is_empty(), "nothing happens while paused");
            prop_assert_eq!(a.position(p + pause), p);
            a.resume(p + pause);
            let after_a = without_prerolls(&run(&mut a, p + pause, p + pause + 2 * d, &steps));
            let after_b: Vec<Scheduled> = without_prerolls(&run(&mut b, p, p + 2 * d, &steps))
                .into_iter().map(|s| Scheduled { at: s.at + pause, ..s }).collect();
            prop_assert_eq!(after_a, after_b);
        }
    }

    fn two_cue_timeline(looping: bool) -> Arc<Timeline> {
        let doc = json!({"id": "t", "name": "t", "duration": 10, "fps": 25, "resolution": "320x180", "loop": looping,
            "tracks": {"video": {"cues": [
                {"id": "a", "start_time": 0, "duration": 4, "action": "show_camera", "params": {"camera_id": "cam-a"}},
                {"id": "b", "start_time": 4, "duration": 6, "action": "show_camera",
                 "params": {"camera_id": "cam-b", "preset_id": "p1"}}]},
              "overlays": [{"layer": 1, "cues": [{"id": "logo", "start_time": 2, "duration": 6, "action": "show_overlay",
                 "params": {"type": "text", "text": "hi", "position": "top_left", "opacity": 1, "fade_out": 1}}]}]}});
        Arc::new(parse(&doc.to_string(), &inventory()).unwrap())
    }

    #[test]
    fn prerolls_come_lead_before_their_cue_and_at_once_when_closer() {
        let mut e = Engine::new(two_cue_timeline(false), 1_500_000);
        e.play(100);
        let first = e.poll(100);
        let pre: Vec<_> = first.iter().filter(|s| matches!(s.effect, Effect::Preroll { .. })).collect();
        assert_eq!(pre.len(), 1, "only cue a is within the lead: {first:?}");
        assert_eq!(pre[0].at, 100, "cue a starts now: pre-rolled at once");
        let more = e.poll(100 + 2_500_000);
        let b = more.iter().find(|s| matches!(&s.effect, Effect::Preroll { cue_id, .. } if cue_id == "b")).unwrap();
        assert_eq!(b.at, 100 + 4_000_000 - 1_500_000, "cue b's pre-roll comes 1.5 s ahead");
    }

    #[test]
    fn overlays_hide_early_enough_for_the_fade_out_to_end_with_the_cue() {
        let mut e = Engine::new(two_cue_timeline(false), 0);
        e.play(0);
        let all = e.poll(20_000_000);
        let at = |want: &Effect| all.iter().find(|s| &s.effect == want).map(|s| s.at);
        assert_eq!(at(&Effect::ShowOverlay { cue_id: "logo".into(), layer: 1 }), Some(2_000_000));
        assert_eq!(at(&Effect::HideOverlay { cue_id: "logo".into() }), Some(7_000_000));
        assert_eq!(at(&Effect::CueEnded { cue_id: "logo".into() }), Some(8_000_000));
        assert_eq!(all.last().unwrap().effect, Effect::Ended);
        assert_eq!(e.state(), PlayState::Ended);
    }

    #[test]
    fn the_next_loop_boundary_comes_after_what_was_handed_out_and_only_while_looping() {
        let mut e = Engine::new(two_cue_timeline(true), 0);
        assert_eq!(e.next_boundary(0), None, "idle");
        e.play(500);
        let _ = e.poll(3_000_500);
        assert_eq!(e.next_boundary(3_000_500), Some((10_000_000, 10_000_500)));
        // Effects already handed out up to 10.2 s (a look-ahead past the boundary): the next one.
        let _ = e.poll(10_200_500);
        assert_eq!(e.next_boundary(9_900_500), Some((20_000_000, 20_000_500)));
        e.pause(10_300_500);
        assert_eq!(e.next_boundary(10_300_500), None, "paused");
        let mut once = Engine::new(two_cue_timeline(false), 0);
        once.play(0);
        assert_eq!(once.next_boundary(0), None, "not looping");
    }

    #[test]
    fn a_new_version_takes_over_at_the_boundary_hiding_what_it_does_not_show() {
        // v1: cam-a, logo (2-8 s, fading out from 7 s) and a tag for the whole loop.
        let v1 = json!({"id": "t", "name": "t", "duration": 10, "fps": 25, "resolution": "320x180", "loop": true,
            "tracks": {"video": {"cues": [
                {"id": "a", "start_time": 0, "duration": 10, "action": "show_camera", "params": {"camera_id": "cam-a"}}]},
              "overlays": [{"layer": 1, "cues": [{"id": "tag", "start_time": 0, "duration": 10, "action": "show_overlay",
                 "params": {"type": "text", "text": "v1", "position": "top_left", "opacity": 1}}]},
                {"layer": 2, "cues": [{"id": "old", "start_time": 5, "duration": 5, "action": "show_overlay",
                 "params": {"type": "text", "text": "old", "position": "top_right", "opacity": 1}}]}]}});
        // v2: cam-b, the same `tag` cue (a new look), no `old`; 6 s long.
        let v2 = json!({"id": "t", "name": "t", "duration": 6, "fps": 25, "resolution": "320x180", "loop": true,
            "tracks": {"video": {"cues": [
                {"id": "b", "start_time": 0, "duration": 6, "action": "show_camera", "params": {"camera_id": "cam-b"}}]},
              "overlays": [{"layer": 1, "cues": [{"id": "tag", "start_time": 0, "duration": 6, "action": "show_overlay",
                 "params": {"type": "text", "text": "v2", "position": "top_left", "opacity": 1}}]}]}});
        let v1 = Arc::new(parse(&v1.to_string(), &inventory()).unwrap());
        let v2 = Arc::new(parse(&v2.to_string(), &inventory()).unwrap());
        let mut e = Engine::new(v1, 1_000_000);
        e.play(100);
        let _ = e.pin(Some("cam-c".into()));
        let _ = e.poll(13_000_100);
        let b = e.next_boundary(13_000_100).unwrap();
        assert_eq!(b, (20_000_000, 20_000_100));
        let before = e.poll(b.1 - 1);
        assert!(before.iter().all(|s| s.at < b.1), "nothing of v1 at or after the boundary: {before:?}");
        let (mut n, first) = e.hand_over(v2.clone(), b);
        let at = |want: &Effect| first.iter().find(|s| &s.effect == want).map(|s| s.at);
        assert_eq!(at(&Effect::HideOverlay { cue_id: "old".into() }), Some(b.1), "{first:?}");
        assert_eq!(at(&Effect::HideOverlay { cue_id: "tag".into() }), None, "replaced, not hidden: {first:?}");
        assert_eq!(at(&Effect::ShowOverlay { cue_id: "tag".into(), layer: 1 }), Some(b.1), "{first:?}");
        assert!(first.iter().any(|s| s.at == b.1 && matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "b")));
        assert_eq!(n.pinned(), Some("cam-c"), "the pin stays");
        assert_eq!(n.position(b.1 + 2_000_000), 2_000_000, "v2's position 0 is the boundary");
        assert_eq!(n.status(b.1 + 7_000_000).loop_index, 1, "and it loops on its own duration");
        assert_eq!(n.next_boundary(b.1 + 1_000_000), Some((6_000_000, b.1 + 6_000_000)));
        let mut st = ShowState { video: Some("a".into()), overlays: ["tag", "old"].map(String::from).into() };
        fold(&mut st, &first);
        assert_eq!(st, state_at(&v2, 0));
        assert!(n.poll(b.1 + 5_000_000).iter().all(|s| s.at > b.1), "nothing emitted twice");
    }

    #[test]
    fn skip_goes_to_the_next_video_cue_and_wraps_when_looping() {
        let mut e = Engine::new(two_cue_timeline(true), 0);
        e.play(0);
        let _ = e.poll(1_000_000);
        let jump = e.skip(1_000_000).unwrap();
        assert!(jump.iter().any(|s| matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "b")));
        assert_eq!(e.position(1_000_000), 4_000_000);
        let jump = e.skip(2_000_000).unwrap();
        assert!(jump.iter().any(|s| matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "a")));
        assert!(jump.iter().any(|s| s.effect == Effect::HideOverlay { cue_id: "logo".into() }));
        assert_eq!(e.position(2_000_000), 10_000_000, "wrapped into loop 1");
        assert_eq!(e.status(2_000_000).loop_index, 1);
    }

    #[test]
    fn seeking_to_an_unknown_cue_or_outside_the_timeline_changes_nothing() {
        let mut e = Engine::new(two_cue_timeline(false), 0);
        e.play(0);
        let _ = e.poll(3_000_000);
        assert_eq!(e.seek(3_000_000, SeekTarget::Cue("nope".into())), Err(EngineError::UnknownCue("nope".into())));
        assert!(e.seek(3_000_000, SeekTarget::Seconds(11.0)).is_err());
        assert!(e.seek(3_000_000, SeekTarget::Seconds(-1.0)).is_err());
        assert_eq!(e.position(3_000_000), 3_000_000);
        assert_eq!(e.state(), PlayState::Playing);
    }

    #[test]
    fn seeking_while_paused_shows_the_target_and_stays_paused() {
        let mut e = Engine::new(two_cue_timeline(false), 0);
        e.play(0);
        let _ = e.poll(1_000_000);
        e.pause(1_000_000);
        let jump = e.seek(5_000_000, SeekTarget::Cue("b".into())).unwrap();
        assert_eq!(jump.len(), 2, "cut to b and show the logo: {jump:?}");
        assert_eq!(e.state(), PlayState::Paused);
        assert!(e.poll(9_000_000).is_empty());
        e.resume(9_000_000);
        let next = e.poll(9_000_000 + 3_000_000);
        let hide = Scheduled { at: 12_000_000, pos: 7_000_000, effect: Effect::HideOverlay { cue_id: "logo".into() } };
        assert_eq!(next[0], hide, "the logo's hide (at 7 s) comes 3 s after the resume at 4 s");
    }
}
