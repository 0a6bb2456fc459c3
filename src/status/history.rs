//! The last hour of each destination's bitrate, frame rate and dropped frames, sampled every
//! [`SAMPLE_EVERY`] from the programs' status, and drawn as small inline SVG graphs.
//!
//! Bounded: at most [`POINTS`] samples per destination and [`MAX_SERIES`] destinations (the ones
//! not seen for an hour are forgotten first).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::command::ProgramInfo;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
pub const WINDOW: Duration = Duration::from_secs(3600);
const POINTS: usize = (3600 / 5) + 1;
const MAX_SERIES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the history began.
    pub t: f64,
    pub bitrate_kbps: Option<f64>,
    pub fps: Option<f64>,
    /// Frames dropped since the previous sample.
    pub dropped: Option<f64>,
}

#[derive(Default)]
struct Series {
    points: VecDeque<Point>,
    /// The pusher's frame counter and drop counter at the previous sample, and when.
    last: Option<(f64, Option<u64>, Option<u64>, u64)>,
    /// When the current process was first seen running.
    up_since: Option<f64>,
}

/// One destination's graphs' key: (program, destination).
pub type Key = (String, String);

pub struct History {
    began: Instant,
    series: Mutex<HashMap<Key, Series>>,
}

impl Default for History {
    fn default() -> Self {
        History { began: Instant::now(), series: Mutex::new(HashMap::new()) }
    }
}

impl History {
    /// Records one sample of every destination of `programs`.
    pub fn sample(&self, programs: &[ProgramInfo]) {
        let t = self.began.elapsed().as_secs_f64();
        let mut all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for info in programs {
            for o in &info.status.outputs {
                let key = (info.status.id.to_string(), o.destination.to_string());
                if !all.contains_key(&key) && all.len() >= MAX_SERIES {
                    let oldest = all
                        .iter()
                        .min_by(|a, b| {
                            let ta = a.1.points.back().map_or(0.0, |p| p.t);
                            let tb = b.1.points.back().map_or(0.0, |p| p.t);
                            ta.total_cmp(&tb)
                        })
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        all.remove(&k);
                    }
                }
                let s = all.entry(key).or_default();
                let prog = o.job.progress.as_ref();
                let running = o.job.phase == crate::ffmpeg::job::Phase::Running;
                let frame = prog.and_then(|p| p.frame);
                let drops = prog.and_then(|p| p.drop_frames);
                let starts = o.job.starts;
                let (fps, dropped) = match s.last {
                    // The same process as at the last sample: rates from the counters' change.
                    Some((t0, f0, d0, s0)) if s0 == starts && t > t0 => {
                        let fps = match (f0, frame) {
                            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / (t - t0)),
                            _ => None,
                        };
                        let dropped = match (d0, drops) {
                            (Some(a), Some(b)) if b >= a => Some((b - a) as f64),
                            _ => None,
                        };
                        (fps, dropped)
                    }
                    _ => (None, None),
                };
                let restarted = s.last.is_some_and(|l| l.3 != starts);
                s.up_since = match (running, s.up_since) {
                    (false, _) => None,
                    (true, Some(since)) if !restarted => Some(since),
                    (true, _) => Some(t),
                };
                s.last = Some((t, frame, drops, starts));
                let bitrate = if running { prog.and_then(|p| p.bitrate_kbps) } else { Some(0.0) };
                let fps = if running { fps } else { Some(0.0) };
                s.points.push_back(Point { t, bitrate_kbps: bitrate, fps, dropped });
                while s.points.len() > POINTS || s.points.front().is_some_and(|p| t - p.t > WINDOW.as_secs_f64()) {
                    s.points.pop_front();
                }
            }
        }
        let window = WINDOW.as_secs_f64();
        all.retain(|_, s| s.points.back().is_some_and(|p| t - p.t <= window));
    }

    /// Every destination's points, oldest first, sorted by key.
    pub fn snapshot(&self) -> Vec<(Key, Vec<Point>)> {
        let all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(Key, Vec<Point>)> =
            all.iter().map(|(k, s)| (k.clone(), s.points.iter().copied().collect())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// How long a destination's push has been running without a restart, as far as the samples
    /// saw (`None`: not running at the last sample).
    pub fn uptime(&self, key: &Key) -> Option<f64> {
        let all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let since = all.get(key)?.up_since?;
        Some(self.began.elapsed().as_secs_f64() - since)
    }

    pub fn now(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }
}

/// A small line graph of `values` (x: time, ending at `now`, over the samples' span: a minute to
/// an hour) as inline SVG,
/// with its latest value in the caption. `data-points` says how many points it has.
pub fn svg(label: &str, unit: &str, now: f64, values: &[(f64, f64)]) -> String {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    // The x axis spans the samples there are (at least a minute), up to the last hour.
    let first = values.first().map_or(now, |v| v.0);
    let window = (now - first).clamp(60.0, WINDOW.as_secs_f64());
    let max = values.iter().map(|v| v.1).fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let mut pts = String::new();
    for (t, v) in values {
        let x = W - ((now - t).clamp(0.0, window) / window) * W;
        let y = H - (v.max(0.0) / top) * H;
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let latest = values.last().map_or("–".to_string(), |v| format!("{:.1} {unit}", v.1));
    let label = super::page::esc(label);
    format!(
        "<figure class=\"graph\"><svg viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{label}\" data-points=\"{n}\"><polyline fill=\"none\" stroke=\"currentColor\" \
         stroke-width=\"1.5\" vector-effect=\"non-scaling-stroke\" points=\"{pts}\"/></svg>\
         <figcaption>{label}: {latest} <small>(max {max:.1})</small></figcaption></figure>",
        n = values.len(),
        pts = pts.trim_end(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_has_its_points_scaled_into_the_box() {
        let s = svg("bitrate <a>", "kbit/s", 100.0, &[(90.0, 1000.0), (95.0, 2000.0), (100.0, 0.0)]);
        assert!(s.contains("data-points=\"3\""), "{s}");
        assert!(s.contains("bitrate &lt;a&gt;"), "escaped: {s}");
        assert!(s.contains("240.0,48.0"), "the newest point at the right, zero at the bottom: {s}");
        let empty = svg("fps", "fps", 0.0, &[]);
        assert!(empty.contains("data-points=\"0\""));
    }
}
