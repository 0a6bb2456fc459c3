//! Degraded mode: when the box cannot keep up, step the program down rather than let
//! it stutter; step back up when things are calm again.
//!
//! A pure controller fed one [`Sample`] a second:
//! - **Overload** (the encoder's real speed below 0.95 for 10 s, or frames dropped by the bus
//!   rising) → the next rung of the ladder: first a lower frame rate, then smaller sizes.
//! - **Network** (every destination's pusher falling behind for 10 s) → the video bitrate down 20%.
//! - **Stable** for 60 s → one step back up.
//!
//! A step restarts the encoder, the one deliberate exception to "never restart", so steps are at
//! least 5 minutes apart. Only under overload that persists at the bottom of the ladder are
//! overlays switched off (which needs no restart), and they come back first.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::ingest::ProgramFormat;

#[derive(Debug, Clone, Copy)]
pub struct DegradeConfig {
    pub slow_speed: f64,
    pub window: Duration,
    pub min_step_interval: Duration,
    pub stable_for: Duration,
    pub bitrate_factor: f64,
    pub min_bitrate_kbps: u32,
    /// Frames dropped within `window` that count as "rising".
    pub drops_rising: u64,
    pub overlays_off_after: Duration,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        DegradeConfig {
            slow_speed: 0.95,
            window: Duration::from_secs(10),
            min_step_interval: Duration::from_secs(300),
            stable_for: Duration::from_secs(60),
            bitrate_factor: 0.8,
            min_bitrate_kbps: 300,
            drops_rising: 5,
            overlays_off_after: Duration::from_secs(60),
        }
    }
}

/// One second of observations.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// The encoder's speed over the last second (output time / wall time), if known.
    pub speed: Option<f64>,
    /// Frames the bus dropped because the encoder was behind, since the program started.
    pub dropped_total: u64,
    /// Every destination is falling behind (its queue overflowed or keeps growing).
    pub outputs_behind: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Reformat(ProgramFormat),
    Bitrate(u32),
    Overlays(bool),
}

/// The ladder of formats for a base format: lower frame rate first, then smaller sizes.
pub fn ladder(base: ProgramFormat) -> Vec<ProgramFormat> {
    let low_fps = reduced_fps(base.fps);
    let mut v = vec![base];
    if low_fps < base.fps {
        v.push(ProgramFormat { fps: low_fps, ..base });
    }
    for h in [720, 480, 360] {
        if h < base.height {
            // Keep the aspect ratio of the base, even sizes.
            let w = ((base.width as u64 * h as u64 / base.height as u64) as u32).max(2) & !1;
            v.push(ProgramFormat { width: w, height: h, fps: low_fps });
        }
    }
    v
}

/// The largest frame rate ≤ 2/3 of `fps` that divides 48000 (audio frames stay whole).
fn reduced_fps(fps: u32) -> u32 {
    let target = (fps * 2 / 3).max(1);
    (1..=target).rev().find(|f| 48_000 % f == 0).unwrap_or(fps)
}

#[derive(Debug)]
pub struct DegradeController {
    cfg: DegradeConfig,
    ladder: Vec<ProgramFormat>,
    level: usize,
    base_kbps: u32,
    kbps: u32,
    overlays_on: bool,
    last_step: Option<Instant>,
    overload_since: Option<Instant>,
    network_since: Option<Instant>,
    stable_since: Option<Instant>,
    drops: VecDeque<(Instant, u64)>,
}

impl DegradeController {
    pub fn new(cfg: DegradeConfig, base: ProgramFormat, kbps: u32) -> Self {
        DegradeController {
            cfg,
            ladder: ladder(base),
            level: 0,
            base_kbps: kbps,
            kbps,
            overlays_on: true,
            last_step: None,
            overload_since: None,
            network_since: None,
            stable_since: None,
            drops: VecDeque::new(),
        }
    }

    pub fn format(&self) -> ProgramFormat {
        self.ladder[self.level]
    }

    pub fn bitrate_kbps(&self) -> u32 {
        self.kbps
    }

    pub fn overlays_on(&self) -> bool {
        self.overlays_on
    }

    /// Whether any step is in effect.
    pub fn degraded(&self) -> bool {
        self.level > 0 || self.kbps < self.base_kbps || !self.overlays_on
    }

    pub fn sample(&mut self, s: Sample) -> Option<Action> {
        self.drops.push_back((s.at, s.dropped_total));
        while self.drops.front().is_some_and(|(t, _)| s.at.saturating_duration_since(*t) > self.cfg.window) {
            self.drops.pop_front();
        }
        let dropped_in_window = s.dropped_total - self.drops.front().map_or(s.dropped_total, |d| d.1);
        let overloaded = s.speed.is_some_and(|v| v < self.cfg.slow_speed) || dropped_in_window >= self.cfg.drops_rising;
        let since = |flag: bool, slot: &mut Option<Instant>| {
            if flag {
                *slot.get_or_insert(s.at)
            } else {
                *slot = None;
                s.at
            }
        };
        let overload_for = s.at.saturating_duration_since(since(overloaded, &mut self.overload_since));
        let network_for = s.at.saturating_duration_since(since(s.outputs_behind, &mut self.network_since));
        let calm = !overloaded && !s.outputs_behind;
        let stable_for = s.at.saturating_duration_since(since(calm, &mut self.stable_since));
        let can_step = self.last_step.is_none_or(|t| s.at.saturating_duration_since(t) >= self.cfg.min_step_interval);

        if overloaded && overload_for >= self.cfg.window {
            if self.level + 1 < self.ladder.len() {
                if can_step {
                    self.level += 1;
                    return Some(self.stepped(s.at, Action::Reformat(self.ladder[self.level])));
                }
            } else if self.overlays_on && overload_for >= self.cfg.window + self.cfg.overlays_off_after {
                self.overlays_on = false;
                return Some(Action::Overlays(false));
            }
        }
        if s.outputs_behind && network_for >= self.cfg.window && can_step && self.kbps > self.cfg.min_bitrate_kbps {
            self.kbps = ((self.kbps as f64 * self.cfg.bitrate_factor) as u32).max(self.cfg.min_bitrate_kbps);
            return Some(self.stepped(s.at, Action::Bitrate(self.kbps)));
        }
        if calm && stable_for >= self.cfg.stable_for {
            if !self.overlays_on {
                self.overlays_on = true;
                self.stable_since = Some(s.at);
                return Some(Action::Overlays(true));
            }
            if can_step && self.level > 0 {
                self.level -= 1;
                self.stable_since = Some(s.at);
                return Some(self.stepped(s.at, Action::Reformat(self.ladder[self.level])));
            }
            if can_step && self.kbps < self.base_kbps {
                self.kbps = ((self.kbps as f64 / self.cfg.bitrate_factor).round() as u32).min(self.base_kbps);
                self.stable_since = Some(s.at);
                return Some(self.stepped(s.at, Action::Bitrate(self.kbps)));
            }
        }
        None
    }

    fn stepped(&mut self, at: Instant, a: Action) -> Action {
        self.last_step = Some(at);
        self.overload_since = None;
        self.network_since = None;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: ProgramFormat = ProgramFormat { width: 1280, height: 720, fps: 30 };

    fn run(
        c: &mut DegradeController,
        t0: Instant,
        secs: std::ops::Range<u64>,
        f: impl Fn(u64) -> (Option<f64>, u64, bool),
    ) -> Vec<(u64, Action)> {
        secs.filter_map(|t| {
            let (speed, dropped_total, outputs_behind) = f(t);
            c.sample(Sample { at: t0 + Duration::from_secs(t), speed, dropped_total, outputs_behind }).map(|a| (t, a))
        })
        .collect()
    }

    #[test]
    fn the_ladder_lowers_fps_then_size() {
        let l = ladder(BASE);
        assert_eq!(l[0], BASE);
        assert_eq!(l[1], ProgramFormat { width: 1280, height: 720, fps: 20 });
        assert_eq!(l[2], ProgramFormat { width: 852, height: 480, fps: 20 });
        assert_eq!(l.last().unwrap().height, 360);
        assert!(l.iter().all(|f| 48_000 % f.fps == 0 && f.width % 2 == 0));
        assert_eq!(reduced_fps(25), 16);
    }

    #[test]
    fn sustained_slowness_steps_down_once_per_five_minutes_then_overlays_go() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(DegradeConfig::default(), BASE, 2500);
        let acts = run(&mut c, t0, 0..1500, |_| (Some(0.8), 0, false));
        let steps: Vec<u64> = acts.iter().filter(|(_, a)| matches!(a, Action::Reformat(_))).map(|(t, _)| *t).collect();
        assert_eq!(steps[0], 10, "after 10 s of slowness");
        assert!(steps.windows(2).all(|w| w[1] - w[0] >= 300), "{steps:?}");
        assert_eq!(steps.len(), ladder(BASE).len() - 1, "down to the bottom rung");
        let off = acts.iter().find(|(_, a)| *a == Action::Overlays(false)).expect("overlays off at the bottom").0;
        assert!(off > *steps.last().unwrap(), "overlays are disabled last");
        assert!(c.degraded());
    }

    #[test]
    fn a_short_hiccup_changes_nothing() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(DegradeConfig::default(), BASE, 2500);
        let acts = run(&mut c, t0, 0..120, |t| (Some(if t % 20 < 8 { 0.5 } else { 1.0 }), 0, false));
        assert!(acts.is_empty(), "{acts:?}");
    }

    #[test]
    fn rising_drops_count_as_overload() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(DegradeConfig::default(), BASE, 2500);
        let acts = run(&mut c, t0, 0..30, |t| (Some(1.0), t * 2, false));
        assert!(matches!(acts.first(), Some((_, Action::Reformat(_)))), "{acts:?}");
    }

    #[test]
    fn network_trouble_lowers_bitrate_and_calm_restores_it() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(DegradeConfig::default(), BASE, 2500);
        let acts = run(&mut c, t0, 0..20, |_| (Some(1.0), 0, true));
        assert_eq!(acts, vec![(10, Action::Bitrate(2000))]);
        // Calm: back up after the 5-minute step interval (and 60 s stable).
        let acts = run(&mut c, t0, 20..400, |_| (Some(1.0), 0, false));
        assert_eq!(acts, vec![(310, Action::Bitrate(2500))]);
        assert!(!c.degraded());
    }

    proptest! {
        #[test]
        fn never_two_restarting_steps_within_five_minutes(pattern in proptest::collection::vec((0.5f64..1.2, any::<bool>(), 0u64..3), 50..600)) {
            let t0 = Instant::now();
            let mut c = DegradeController::new(DegradeConfig::default(), BASE, 2500);
            let mut dropped = 0;
            let mut last: Option<u64> = None;
            for (t, (speed, behind, d)) in pattern.into_iter().enumerate() {
                dropped += d;
                let a = c.sample(Sample { at: t0 + Duration::from_secs(t as u64), speed: Some(speed), dropped_total: dropped, outputs_behind: behind });
                if matches!(a, Some(Action::Reformat(_)) | Some(Action::Bitrate(_))) {
                    if let Some(l) = last { prop_assert!(t as u64 - l >= 300); }
                    last = Some(t as u64);
                }
                prop_assert!(c.bitrate_kbps() >= 300 && c.bitrate_kbps() <= 2500);
            }
        }
    }
}
