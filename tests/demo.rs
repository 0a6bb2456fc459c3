//! `vistter-agent demo` on a machine with nothing configured: a show on built-in sources, driven by
//! the timeline engine, recorded to a local file. What was on air is read back from the recording
//! frame by frame and compared with the cue times the engine scheduled (from the log).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const FPS: u32 = 25;
const SIZE: &str = "320x180";
/// The recording is read back scaled down to this.
const W: u32 = 16;
const H: u32 = 9;
/// Rows of the W×H decode clear of the overlays (clock and logo above, the lower third below).
const ROWS: std::ops::RangeInclusive<u32> = 2..=4;
/// The demo's crossfade (into demo-a), in frames: 1 s.
const FADE_FRAMES: usize = FPS as usize;

fn demo(dir: &Path, args: &[&str]) -> Output {
    Command::new(AGENT_BIN)
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        // The show actor reports each cue, with its scheduled and actual program time, at info.
        .args(["--log-level", "warn,vistter_agent::timeline=info", "demo"])
        .args(args)
        .env_remove("VISTTER_CONFIG")
        .output()
        .expect("run demo")
}

/// A lavfi source as the demo renders it, decoded as the recording is.
fn lavfi_rgb(graph: &str, frames: u32) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("{graph}=size={SIZE}:rate={FPS}")])
        .args(["-frames:v", &frames.to_string(), "-vf", &format!("scale={W}:{H}:flags=area")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "render {graph}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact((W * H * 3) as usize).map(<[u8]>::to_vec).collect()
}

/// What each source looks like where we sample: the bars (static) and testsrc2's usual colour at
/// each pixel (the per-channel median over 10 s, without its moving band and box).
struct Refs {
    bars: Vec<u8>,
    testsrc: Vec<u8>,
}

impl Refs {
    fn render() -> Refs {
        let bars = lavfi_rgb("smptehdbars", 1).remove(0);
        let ts = lavfi_rgb("testsrc2", 10 * FPS);
        let testsrc = (0..bars.len())
            .map(|i| {
                let mut v: Vec<u8> = ts.iter().map(|f| f[i]).collect();
                v.sort_unstable();
                v[v.len() / 2]
            })
            .collect();
        Refs { bars, testsrc }
    }

    /// How much of the picture is demo-a (testsrc2: 1.0) rather than demo-b (the bars: 0.0): per
    /// sampled pixel, where its colour lies on the line from the bars' colour to testsrc2's; the
    /// median over the pixels, so that testsrc2's moving band (a few pixels at a time) does not
    /// count. A crossfade moves it linearly from one to the other.
    fn share_of_a(&self, frame: &[u8]) -> f64 {
        let mut shares: Vec<f64> = Vec::new();
        for y in ROWS {
            for x in 0..W {
                let i = ((y * W + x) * 3) as usize;
                let v: Vec<f64> = (0..3).map(|c| self.testsrc[i + c] as f64 - self.bars[i + c] as f64).collect();
                let norm: f64 = v.iter().map(|d| d * d).sum();
                if norm < 60.0 * 60.0 {
                    continue; // the two sources look alike here
                }
                let dot: f64 = (0..3).map(|c| (frame[i + c] as f64 - self.bars[i + c] as f64) * v[c]).sum();
                shares.push(dot / norm);
            }
        }
        assert!(shares.len() >= 20, "enough pixels tell the sources apart");
        shares.sort_by(f64::total_cmp);
        shares[shares.len() / 2]
    }
}

/// The actor's cue reports of one kind in the log: (cue id, scheduled program time, actual), s.
fn cue_events(log: &str, kind: &str) -> Vec<(String, f64, f64)> {
    log.lines()
        .filter(|l| l.contains("timeline=vistter-demo") && l.contains(&format!("event_type=\"{kind}\"")))
        .map(|l| {
            let json = &l[l.find('{').expect("detail")..=l.find('}').expect("detail")];
            let d: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                d["cue"].as_str().unwrap().to_string(),
                d["scheduled_s"].as_f64().unwrap(),
                d["actual_s"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The demo's timeline drives the show: each video cue changes the recorded picture to its source
/// on the frame of its scheduled program time (a hard cut into demo-b; a crossfade into demo-a,
/// half-way at the middle of its second), the cues are exactly `--cut-every` apart, and the log
/// and stdout name the timeline.
#[test]
fn demo_records_a_show_with_nothing_configured() {
    require_bin("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.flv");
    let res = demo(
        dir.path(),
        &["--out", out.to_str().unwrap(), "--seconds", "12", "--size", SIZE, "--fps", "25", "--cut-every", "3"],
    );
    let (stdout, log) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    assert!(res.status.success(), "demo failed: {log}");
    assert!(stdout.contains("watch it with: ffplay"), "tells where to watch: {stdout}");
    assert!(stdout.contains("timeline \"vistter-demo\""), "names its timeline: {stdout}");
    assert!(log.contains("timeline=vistter-demo event_type=\"timeline_started\""), "the engine started it: {log}");
    let streams = probe_streams(&out);
    assert_eq!(codecs_of(&streams, "video"), vec!["h264"]);
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"]);
    let d = probe_duration(&out);
    assert!(d >= 10.0, "recording is {d:.1} s");

    let started = cue_events(&log, "cue_started");
    for overlay in ["logo", "clock", "third-a", "third-b"] {
        assert!(started.iter().any(|c| c.0 == overlay), "overlay cue {overlay} went on air: {started:?}");
    }
    let shots: Vec<&(String, f64, f64)> = started.iter().filter(|c| c.0.starts_with("shot-")).collect();
    assert!(shots.len() >= 3, "video cues: {shots:?}");
    for (c, w) in shots.iter().zip(&shots[1..]) {
        assert_ne!(c.0, w.0, "the cues alternate the sources: {shots:?}");
        assert!((w.1 - c.1 - 3.0).abs() < 1e-6, "cues exactly --cut-every apart: {shots:?}");
    }
    for (cue, scheduled, actual) in &started {
        assert!((actual - scheduled).abs() <= 0.041, "cue {cue} went out {:.0} ms late", (actual - scheduled) * 1e3);
    }

    let refs = Refs::render();
    let frames = decode_rgb(&out, W, H);
    let share: Vec<f64> = frames.iter().map(|f| refs.share_of_a(f)).collect();
    let mut errors: Vec<(String, i64)> = Vec::new();
    for (cue, scheduled, _) in &shots {
        let k = (scheduled * FPS as f64).round() as usize;
        let (into_a, fade) = match cue.as_str() {
            "shot-a" => (true, FADE_FRAMES),
            _ => (false, 0),
        };
        if k < 5 || k + fade + 5 >= share.len() {
            continue; // too close to an end of the recording to see the change
        }
        if (share[k - 3] > 0.5) == into_a {
            continue; // the show's first shot: it was on air already
        }
        // The first frame that is mostly the new source: the cue's own frame for a cut; for a
        // crossfade, the first frame more than half-way (the bus mixes j/fade of it on frame k + j).
        let expected = if fade == 0 { k } else { k + fade / 2 + 1 };
        let got = (k.saturating_sub(5)..share.len()).find(|&i| (share[i] > 0.5) == into_a).unwrap_or(usize::MAX);
        errors.push((cue.clone(), got as i64 - expected as i64));
        if fade > 0 {
            // A crossfade, not a late cut: a quarter of the way in, the picture is a mix.
            let q = share[k + fade / 4];
            assert!((0.1..0.45).contains(&q), "cue {cue}: a quarter into the fade, demo-a is {q:.2} of the picture");
        }
    }
    let curve: Vec<String> = share.iter().map(|s| format!("{s:.2}")).collect();
    eprintln!("cut errors in frames: {errors:?}\nshare of demo-a per frame: {}", curve.join(" "));
    assert!(errors.len() >= 2, "at least a cut and a crossfade were measured: {errors:?}\n{shots:?}");
    assert!(errors.iter().any(|e| e.0 == "shot-a") && errors.iter().any(|e| e.0 == "shot-b"), "{errors:?}");
    assert!(errors.iter().all(|e| e.1.abs() <= 1), "every change of source within ±1 frame of its cue: {errors:?}");
}

/// A frame rate no timeline can run at is refused with the list of those that can, before
/// anything starts.
#[test]
fn demo_refuses_a_frame_rate_a_timeline_cannot_run_at() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.flv");
    let res = demo(dir.path(), &["--out", out.to_str().unwrap(), "--seconds", "2", "--fps", "8"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "demo at 8 fps is refused as invalid usage");
    assert!(err.contains("--fps 8") && err.contains("24, 25, 30"), "says which rates work: {err}");
    assert!(!out.exists(), "nothing was recorded");
}

/// Running the demo again replaces its earlier recording (FFmpeg would refuse to write over it,
/// and the second show would record nothing); a path that is not a file is refused before
/// anything starts, and left as it was.
#[test]
fn a_second_demo_replaces_the_earlier_recording() {
    require_bin("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.flv");
    std::fs::write(&out, b"an earlier recording").unwrap();
    let res = demo(dir.path(), &["--out", out.to_str().unwrap(), "--seconds", "4", "--size", SIZE, "--fps", "25"]);
    let (stdout, log) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    assert!(res.status.success(), "demo failed: {log}");
    assert!(stdout.contains("replaces the earlier recording"), "says so: {stdout}");
    assert!(!log.contains("already exists"), "FFmpeg wrote the file: {log}");
    assert_eq!(codecs_of(&probe_streams(&out), "video"), vec!["h264"], "a new recording");
    let d = probe_duration(&out);
    assert!(d >= 2.0, "recording is {d:.1} s");

    // A link at --out is replaced, never followed: what it pointed to stays as it was.
    let elsewhere = dir.path().join("someone-elses-file");
    std::fs::write(&elsewhere, b"not the demo's").unwrap();
    let link = dir.path().join("link.flv");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let res = demo(dir.path(), &["--out", link.to_str().unwrap(), "--seconds", "3", "--size", SIZE, "--fps", "25"]);
    assert!(res.status.success(), "demo failed: {}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not the demo's", "the link's target is untouched");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file(), "the recording replaced the link");
    assert_eq!(codecs_of(&probe_streams(&link), "video"), vec!["h264"]);

    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("keep"), b"x").unwrap();
    let res = demo(dir.path(), &["--out", folder.to_str().unwrap(), "--seconds", "2"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "refused as invalid usage: {err}");
    assert!(err.contains("--out") && err.contains("not a file"), "says why: {err}");
    assert!(folder.join("keep").exists(), "the folder is untouched");
}
