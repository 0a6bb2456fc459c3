//! The program switcher: what is on air for each frame.
//!
//! A pure state machine. Each tick it is told the time and how fresh every source is, and it
//! answers with what to draw: a camera (or the slate), possibly mixed with the previous picture
//! during a crossfade. The fallback ladder lives here:
//! - no fresh frame from the wanted camera for `stall` → hold its last frame (the frame store does
//!   that by itself: drawing the camera shows its newest frame, however old);
//! - after `fallback` (900 ms by default) → its backup camera if that is healthy, else the slate;
//! - its ingest ended (the camera closed the connection, the decoder exited: a certain loss, not a
//!   hiccup that may pass) → the backup or the slate on the next frame, without holding;
//! - back to the camera once it has delivered steadily for `recover`.
//!
//! A pinned camera overrides cuts; the emergency slate overrides everything. Cuts are scheduled on
//! the program clock and applied at the first frame due at or after their time, so they are
//! frame-accurate by construction.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::values::SourceId;

#[derive(Debug, Clone, Copy)]
pub struct SwitcherConfig {
    pub stall: Duration,
    pub fallback: Duration,
    pub recover: Duration,
}

impl Default for SwitcherConfig {
    fn default() -> Self {
        SwitcherConfig {
            stall: Duration::from_millis(500),
            // See config::ProgramConfig::fallback_ms for why not 1000.
            fallback: Duration::from_millis(900),
            recover: Duration::from_secs(3),
        }
    }
}

/// What a source looks like right now (from its frame store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// When its newest frame arrived.
    pub last_frame: Option<Instant>,
    /// Since when it has delivered without a gap longer than `stall`.
    pub steady_since: Option<Instant>,
    /// Its ingest ended (connection closed, decoder gone) after the newest frame: nothing more
    /// will come until a new one delivers.
    pub ended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "camera")]
pub enum Visual {
    Camera(SourceId),
    Slate,
}

/// The picture for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub main: Visual,
    /// During a crossfade: the outgoing picture and how much of it remains (1 → 0).
    pub from: Option<(Visual, f32)>,
    /// The wanted camera is stalled and its last frame is being held.
    pub holding: bool,
}

/// Something the switcher did that an operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchEvent {
    /// To a camera, or (None) to the slate.
    Cut {
        camera: Option<SourceId>,
    },
    FallbackOn {
        camera: SourceId,
        to: Visual,
    },
    FallbackOff {
        camera: SourceId,
    },
}

#[derive(Debug, Clone)]
struct Cut {
    at: Instant,
    /// None: the slate (a timeline's `show_slate`).
    camera: Option<SourceId>,
    fade: Duration,
}

#[derive(Debug, Clone)]
struct Transition {
    from: Visual,
    start: Instant,
    duration: Duration,
}

#[derive(Debug)]
pub struct Switcher {
    cfg: SwitcherConfig,
    /// The camera the show wants (last cut).
    program: Option<SourceId>,
    /// When `program` became the wanted camera (a camera that never delivered stalls from here).
    program_since: Option<Instant>,
    pinned: Option<SourceId>,
    emergency: bool,
    cuts: Vec<Cut>,
    backups: HashMap<SourceId, SourceId>,
    /// The fallback picture while the wanted camera is failed.
    fallback: Option<Visual>,
    /// The fallback stands in for a camera that had not delivered a frame yet (a show started
    /// while it was still connecting): its first frames bring it on air at once, since nothing
    /// says it flaps.
    fallback_unseen: bool,
    on_air: Option<Visual>,
    transition: Option<Transition>,
    events: Vec<SwitchEvent>,
    last: Option<Decision>,
}

impl Switcher {
    pub fn new(cfg: SwitcherConfig) -> Switcher {
        Switcher {
            cfg,
            program: None,
            program_since: None,
            pinned: None,
            emergency: false,
            cuts: Vec::new(),
            backups: HashMap::new(),
            fallback: None,
            fallback_unseen: false,
            on_air: None,
            transition: None,
            events: Vec::new(),
            last: None,
        }
    }

    pub fn set_backup(&mut self, camera: &SourceId, backup: Option<&SourceId>) {
        match backup {
            Some(b) => self.backups.insert(camera.clone(), b.clone()),
            None => self.backups.remove(camera),
        };
    }

    /// Schedules a cut at `at` (use the current time for "now"); a zero fade is a hard cut.
    pub fn cut(&mut self, camera: &SourceId, at: Instant, fade: Duration) {
        self.cut_to(Some(camera), at, fade);
    }

    /// As [`cut`](Self::cut), to a camera or (None) to the slate.
    pub fn cut_to(&mut self, camera: Option<&SourceId>, at: Instant, fade: Duration) {
        self.cuts.push(Cut { at, camera: camera.cloned(), fade });
        self.cuts.sort_by_key(|c| c.at);
    }

    /// Withdraws the cuts scheduled for later than `after` (a paused or re-positioned timeline).
    pub fn cancel_after(&mut self, after: Instant) {
        self.cuts.retain(|c| c.at <= after);
    }

    pub fn pin(&mut self, camera: Option<&SourceId>) {
        self.pinned = camera.cloned();
    }

    pub fn set_emergency_slate(&mut self, on: bool) {
        self.emergency = on;
    }

    pub fn pinned(&self) -> Option<&SourceId> {
        self.pinned.as_ref()
    }

    pub fn program_camera(&self) -> Option<&SourceId> {
        self.program.as_ref()
    }

    pub fn emergency(&self) -> bool {
        self.emergency
    }

    /// The cameras that may go on air before `until`: the wanted one, the pinned one, and those
    /// of the cuts scheduled by then (their sources must be at full rate ahead of their frame).
    pub fn needed_until(&self, until: Instant) -> impl Iterator<Item = &SourceId> {
        let cuts = self.cuts.iter().take_while(move |c| c.at <= until).filter_map(|c| c.camera.as_ref());
        self.program.iter().chain(self.pinned.iter()).chain(cuts)
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<SwitchEvent> {
        std::mem::take(&mut self.events)
    }

    /// Decides the picture for the frame due at `now`.
    pub fn tick(&mut self, now: Instant, health: impl Fn(&SourceId) -> Health) -> Decision {
        let mut fade = Duration::ZERO;
        while self.cuts.first().is_some_and(|c| c.at <= now) {
            let c = self.cuts.remove(0);
            if self.program != c.camera {
                self.program = c.camera.clone();
                self.program_since = Some(now);
                self.fallback = None;
                self.events.push(SwitchEvent::Cut { camera: c.camera });
            }
            fade = c.fade;
        }
        let wanted = if self.emergency { None } else { self.pinned.clone().or_else(|| self.program.clone()) };
        let mut holding = false;
        let visual = match wanted {
            None => Visual::Slate,
            Some(cam) => {
                let h = health(&cam);
                // A camera that never delivered is as old as the moment it was asked for.
                let since = h.last_frame.or(self.program_since).unwrap_or(now);
                let age = now.saturating_duration_since(since);
                if let Some(fb) = self.fallback.clone() {
                    let steady = (self.fallback_unseen && h.last_frame.is_some()
                        || h.steady_since.is_some_and(|s| now.saturating_duration_since(s) >= self.cfg.recover))
                        && age <= self.cfg.stall;
                    if steady {
                        self.fallback = None;
                        self.events.push(SwitchEvent::FallbackOff { camera: cam.clone() });
                        Visual::Camera(cam)
                    } else {
                        // The backup itself may fail while standing in: re-evaluate it.
                        let to = self.fallback_for(&cam, now, &health);
                        if to != fb {
                            self.fallback = Some(to.clone());
                        }
                        to
                    }
                } else if h.ended {
                    // A certain loss: holding the last frame would only freeze the picture.
                    let to = self.fallback_for(&cam, now, &health);
                    self.fallback = Some(to.clone());
                    self.fallback_unseen = h.last_frame.is_none();
                    self.events.push(SwitchEvent::FallbackOn { camera: cam.clone(), to: to.clone() });
                    to
                } else if age <= self.cfg.fallback && h.last_frame.is_none() {
                    // Cut to a camera with no picture yet (not pre-rolled): keep the current
                    // picture until it delivers or the fallback time is up.
                    holding = true;
                    self.on_air.clone().filter(|v| *v != Visual::Camera(cam.clone())).unwrap_or(Visual::Slate)
                } else if age <= self.cfg.stall {
                    Visual::Camera(cam)
                } else if age <= self.cfg.fallback {
                    holding = true;
                    Visual::Camera(cam)
                } else {
                    let to = self.fallback_for(&cam, now, &health);
                    self.fallback = Some(to.clone());
                    self.fallback_unseen = h.last_frame.is_none();
                    self.events.push(SwitchEvent::FallbackOn { camera: cam.clone(), to: to.clone() });
                    to
                }
            }
        };
        if self.on_air.as_ref() != Some(&visual) {
            if let (Some(prev), false) = (self.on_air.clone(), fade.is_zero()) {
                self.transition = Some(Transition { from: prev, start: now, duration: fade });
            } else {
                self.transition = None;
            }
            self.on_air = Some(visual.clone());
        }
        let from = match &self.transition {
            Some(t) => {
                let done = now.saturating_duration_since(t.start).as_secs_f32() / t.duration.as_secs_f32();
                if done >= 1.0 {
                    self.transition = None;
                    None
                } else {
                    Some((t.from.clone(), 1.0 - done))
                }
            }
            None => None,
        };
        let d = Decision { main: visual, from, holding };
        self.last = Some(d.clone());
        d
    }

    /// The decision of the latest tick.
    pub fn last_decision(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    fn fallback_for(&self, cam: &SourceId, now: Instant, health: &impl Fn(&SourceId) -> Health) -> Visual {
        if let Some(b) = self.backups.get(cam) {
            let h = health(b);
            if !h.ended && h.last_frame.is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.stall) {
                return Visual::Camera(b.clone());
            }
        }
        Visual::Slate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRAME: Duration = Duration::from_millis(40);

    /// A simulated world: per camera, the intervals in which it delivers frames.
    struct World {
        t0: Instant,
        up: HashMap<&'static str, Vec<(u64, u64)>>,
        /// Cameras whose up-spans end with their connection closing (else they hang).
        closes: Vec<&'static str>,
    }

    impl World {
        fn health(&self, cam: &SourceId, now: Instant) -> Health {
            let ms = now.duration_since(self.t0).as_millis() as u64;
            let Some(spans) = self.up.get(cam.as_str()) else { return Health::default() };
            // The newest frame at or before `now`, on a 40 ms grid, inside an up-span.
            let mut h = Health::default();
            for &(a, b) in spans {
                if a <= ms {
                    let last = ms.min(b);
                    let last = last - last % 40;
                    h.last_frame = Some(self.t0 + Duration::from_millis(last));
                    h.steady_since = Some(self.t0 + Duration::from_millis(a));
                    h.ended = ms > b && self.closes.contains(&cam.as_str());
                }
            }
            h
        }
    }

    fn run(sw: &mut Switcher, w: &World, from_ms: u64, to_ms: u64) -> Vec<(u64, Decision)> {
        (from_ms / 40..to_ms / 40)
            .map(|n| {
                let now = w.t0 + FRAME * n as u32;
                (n * 40, sw.tick(now, |c| w.health(c, now)))
            })
            .collect()
    }

    fn id(c: &str) -> SourceId {
        SourceId::new(c).unwrap()
    }

    fn cam(c: &str) -> Visual {
        Visual::Camera(id(c))
    }

    #[test]
    fn cuts_land_on_the_first_frame_due() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("a", vec![(0, 99_999)]), ("b", vec![(0, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("a"), t0, Duration::ZERO);
        sw.cut(&id("b"), t0 + Duration::from_millis(1000), Duration::ZERO);
        sw.cut(&id("a"), t0 + Duration::from_millis(2010), Duration::ZERO);
        let d = run(&mut sw, &w, 0, 3000);
        let first_b = d.iter().find(|(_, d)| d.main == cam("b")).unwrap().0;
        let back_a = d.iter().find(|(t, d)| *t > 1000 && d.main == cam("a")).unwrap().0;
        assert_eq!(first_b, 1000);
        assert_eq!(back_a, 2040, "the first frame due at or after 2010 ms");
        assert!(d.iter().all(|(_, d)| d.from.is_none()));
    }

    #[test]
    fn dead_camera_holds_then_slate_then_returns_after_steady_delivery() {
        let t0 = Instant::now();
        // b dies at 2000 ms and comes back at 5000 ms.
        let w = World { t0, up: HashMap::from([("b", vec![(0, 2000), (5000, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("b"), t0, Duration::ZERO);
        let d = run(&mut sw, &w, 0, 10_000);
        let at = |ms: u64| d.iter().find(|(t, _)| *t == ms).unwrap().1.clone();
        assert_eq!(at(2400).main, cam("b"));
        assert!(!at(2400).holding);
        assert!(at(2600).holding, "stalled: holding the last frame");
        assert_eq!(at(2880).main, cam("b"), "still holding at 880 ms");
        assert_eq!(at(2920).main, Visual::Slate, "after fallback_ms (900): slate");
        assert_eq!(at(7960).main, Visual::Slate, "not back before 3 s of steady delivery");
        assert_eq!(at(8000).main, cam("b"), "back after 3 s steady");
        let events = sw.take_events();
        assert!(events.contains(&SwitchEvent::FallbackOn { camera: id("b"), to: Visual::Slate }));
        assert!(events.contains(&SwitchEvent::FallbackOff { camera: id("b") }));
    }

    #[test]
    fn backup_camera_stands_in_when_healthy() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("a", vec![(0, 1000)]), ("c", vec![(0, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.set_backup(&id("a"), Some(&id("c")));
        sw.cut(&id("a"), t0, Duration::ZERO);
        let d = run(&mut sw, &w, 0, 3000);
        let first_c = d.iter().find(|(_, d)| d.main == cam("c")).unwrap().0;
        assert!((1900..=1980).contains(&first_c), "backup on air 0.9 s after the last frame: {first_c}");
    }

    #[test]
    fn a_camera_that_never_delivers_falls_back_from_its_cut() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("a", vec![(0, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("a"), t0, Duration::ZERO);
        sw.cut(&id("ghost"), t0 + Duration::from_millis(1000), Duration::ZERO);
        let d = run(&mut sw, &w, 0, 3000);
        let slate = d.iter().find(|(_, d)| d.main == Visual::Slate).unwrap().0;
        assert!((1900..=1980).contains(&slate), "{slate}");
    }

    #[test]
    fn a_camera_that_comes_up_late_is_cut_in_on_its_first_frames() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("late", vec![(3000, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("late"), t0, Duration::ZERO);
        let d = run(&mut sw, &w, 0, 4000);
        assert_eq!(d.iter().find(|(ms, _)| *ms == 2520).unwrap().1.main, Visual::Slate);
        let back = d.iter().find(|(ms, d)| *ms >= 3000 && d.main == cam("late")).unwrap().0;
        assert!(back <= 3080, "on air with its first frames, not after 3 s of them: {back}");
    }

    #[test]
    fn pin_and_emergency_slate_override_cuts() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("a", vec![(0, 99_999)]), ("b", vec![(0, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("a"), t0, Duration::ZERO);
        sw.pin(Some(&id("b")));
        sw.cut(&id("a"), t0 + Duration::from_millis(500), Duration::ZERO);
        assert!(run(&mut sw, &w, 0, 1000).iter().all(|(_, d)| d.main == cam("b")));
        sw.set_emergency_slate(true);
        assert!(run(&mut sw, &w, 1000, 2000).iter().all(|(_, d)| d.main == Visual::Slate));
        sw.set_emergency_slate(false);
        sw.pin(None);
        assert!(run(&mut sw, &w, 2000, 2100).iter().all(|(_, d)| d.main == cam("a")));
    }

    #[test]
    fn crossfade_ramps_down_the_outgoing_picture() {
        let t0 = Instant::now();
        let w = World { t0, up: HashMap::from([("a", vec![(0, 99_999)]), ("b", vec![(0, 99_999)])]), closes: vec![] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.cut(&id("a"), t0, Duration::ZERO);
        sw.cut(&id("b"), t0 + Duration::from_millis(1000), Duration::from_millis(400));
        let d = run(&mut sw, &w, 960, 1600);
        let remaining: Vec<f32> = d.iter().filter_map(|(_, d)| d.from.as_ref().map(|f| f.1)).collect();
        assert_eq!(remaining.len(), 10, "400 ms at 40 ms a frame");
        assert!(remaining.windows(2).all(|w| w[0] > w[1]), "{remaining:?}");
        assert!(d.iter().filter(|(t, _)| *t >= 1000).all(|(_, d)| d.main == cam("b")));
    }

    #[test]
    fn a_closed_camera_is_replaced_on_the_next_frame_and_a_hung_one_is_held() {
        let t0 = Instant::now();
        // a closes at 1000 ms; b hangs at 1000 ms; c is the backup of both.
        let up = HashMap::from([("a", vec![(0, 1000)]), ("b", vec![(0, 1000)]), ("c", vec![(0, 99_999)])]);
        for (camera, closes, want) in [("a", true, 1040), ("b", false, 1920)] {
            let w = World { t0, up: up.clone(), closes: vec!["a"] };
            let mut sw = Switcher::new(SwitcherConfig::default());
            sw.set_backup(&id(camera), Some(&id("c")));
            sw.cut(&id(camera), t0, Duration::ZERO);
            let d = run(&mut sw, &w, 0, 3000);
            let first_c = d.iter().find(|(_, d)| d.main == cam("c")).unwrap().0;
            assert_eq!(first_c, want, "{camera} (closes: {closes}): backup from {first_c} ms");
            assert!(d.iter().all(|(_, d)| d.main != Visual::Slate), "the backup was healthy: never the slate");
        }
        // Without a backup, the slate; a closed backup is no backup.
        let w = World { t0, up, closes: vec!["a", "c"] };
        let mut sw = Switcher::new(SwitcherConfig::default());
        sw.set_backup(&id("a"), Some(&id("c")));
        sw.cut(&id("a"), t0, Duration::ZERO);
        let d = run(&mut sw, &w, 0, 1200);
        assert_eq!(d.iter().find(|(_, d)| d.main != cam("a")).unwrap().1.main, cam("c"));
    }

    proptest! {
        /// Whatever the outages, exactly one picture is chosen per frame and the slate is on air
        /// within fallback + one frame of a camera's last frame.
        #[test]
        fn fallback_is_bounded(down_at in 100u64..3000, down_for in 0u64..4000) {
            let t0 = Instant::now();
            let w = World { t0, up: HashMap::from([("a", vec![(0, down_at), (down_at + down_for, 99_999)])]), closes: vec![] };
            let mut sw = Switcher::new(SwitcherConfig::default());
            sw.cut(&id("a"), t0, Duration::ZERO);
            let d = run(&mut sw, &w, 0, 12_000);
            let last_frame = down_at - down_at % 40;
            if down_for > 1100 {
                let slate = d.iter().find(|(_, d)| d.main == Visual::Slate).map(|x| x.0);
                prop_assert!(slate.is_some_and(|s| s <= last_frame + 900 + 40), "{slate:?}");
            }
            prop_assert_eq!(&d.last().unwrap().1.main, &cam("a"));
        }
    }
}
