//! Timelines against real components: solid-colour RTSP cameras, the agent's show (engine,
//! actor, program bus, encoder), nginx-rtmp recording. What was on air is read back from the
//! recording frame by frame and compared with the cue events' scheduled program times.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const FPS: f64 = 25.0;
const W: u32 = 16;
const H: u32 = 9;

pub fn setup(agent: &mut TestAgent, cams: &[(&str, &RtspCamera)], ingest: &RtmpIngest) {
    for (id, cam) in cams {
        agent.ok(&["camera", "add", id, "--url", &cam.url()]);
    }
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "show-key"]);
}

/// A camera cue.
fn cam(id: &str, start: f64, dur: f64, camera: &str) -> Value {
    json!({"id": id, "start_time": start, "duration": dur, "action": "show_camera", "params": {"camera_id": camera}})
}

fn timeline(id: &str, duration: f64, looping: bool, video: Vec<Value>, overlays: Vec<Value>) -> Value {
    json!({"id": id, "name": id, "duration": duration, "fps": 25, "resolution": "320x180", "loop": looping,
           "tracks": {"video": {"cues": video}, "overlays": overlays}})
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

/// Program time of the show's bus.
fn program_time(agent: &TestAgent) -> f64 {
    agent.program("show")["program_time_s"].as_f64().expect("show program time")
}

/// Cue events (`cue_started`, ...) as (cue id, scheduled program time, actual program time).
fn cue_events(agent: &TestAgent, kind: &str) -> Vec<(String, f64, f64)> {
    let out = agent.ok(&["events", "--subject", "timeline:", "--limit", "2000", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == kind)
        .map(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            (
                d["cue"].as_str().unwrap().to_string(),
                d["scheduled_s"].as_f64().unwrap(),
                d["actual_s"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn stop_and_classes(agent: &mut TestAgent, ingest: &RtmpIngest, x: u32, y: u32) -> Vec<char> {
    agent.ok(&["timeline", "stop"]);
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "one publish session for the whole show (no reconnect): {recs:?}");
    classes(&decode_rgb(&recs[0], W, H), W, x, y)
}

/// A 10-cue timeline (8 camera cuts, 2 overlays) looped twice: every cut lands within one frame
/// of its scheduled program time in the recording, cue events report the lateness, one publish
/// session for the whole run, and the overlay is on the picture while its cue runs.
#[test]
fn a_ten_cue_timeline_loops_twice_with_frame_accurate_cuts() {
    let (r, g, b) = (RtspCamera::start("red"), RtspCamera::start("green"), RtspCamera::start("blue"));
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    setup(&mut agent, &[("r", &r), ("g", &g), ("b", &b)], &ingest);
    let dir = tempfile::tempdir().unwrap();
    // A white box for the bottom-right corner.
    let logo = dir.path().join("logo.png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(std::fs::File::create(&logo).unwrap()), 80, 40);
    enc.set_color(png::ColorType::Rgb);
    enc.write_header().unwrap().write_image_data(&[255u8; 80 * 40 * 3]).unwrap();
    let order = ["r", "b", "g", "b", "r", "g", "r", "b"];
    let video: Vec<Value> =
        order.iter().enumerate().map(|(i, c)| cam(&format!("c{i}"), i as f64 * 1.6, 1.6, c)).collect();
    let overlay = |id: &str, start: f64, dur: f64| {
        json!({"id": id, "start_time": start, "duration": dur, "action": "show_overlay",
               "params": {"type": "logo", "image": "logo.png", "position": "bottom_right", "opacity": 1.0}})
    };
    let tl = timeline(
        "ten",
        12.8,
        true,
        video,
        vec![json!({"layer": 1, "cues": [overlay("logo1", 0.8, 2.4), overlay("logo2", 6.4, 3.2)]})],
    );
    agent.ok(&["timeline", "load", &write(dir.path(), "ten.json", &tl)]);
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "ten", "--destination", "d1"]);
    let encoder_pid = {
        agent.wait_show(Duration::from_secs(30), "the show playing", |s| s["status"]["engine"]["state"] == "playing");
        agent.program("show")["encoder"]["pid"].as_u64()
    };
    agent.wait_show(Duration::from_secs(60), "two loops", |s| {
        s["status"]["engine"]["loop_index"].as_u64() >= Some(2)
            && s["status"]["engine"]["position_s"].as_f64() > Some(1.0)
    });
    assert_eq!(agent.program("show")["encoder"]["pid"].as_u64(), encoder_pid, "the encoder was never restarted");
    let started = cue_events(&agent, "cue_started");
    let cls = stop_and_classes(&mut agent, &ingest, 2, 1);
    let want = |cue: &str| -> Option<char> {
        let i: usize = cue.strip_prefix('c')?.parse().ok()?;
        Some(match order[i] {
            "r" => 'R',
            "g" => 'G',
            _ => 'B',
        })
    };
    let mut errors = Vec::new();
    for (cue, scheduled, actual) in &started {
        let Some(colour) = want(cue) else { continue };
        let expected = (scheduled * FPS).round() as usize;
        if expected < 5 || expected + 5 >= cls.len() {
            continue;
        }
        if cls[expected - 5] == colour {
            continue; // the show's first shot: no cut into it to measure
        }
        // The previous cue's colour differs, so the first frame of this colour near the schedule is the cut.
        let got = first_from(&cls, expected - 5, colour).unwrap_or(usize::MAX);
        errors.push(got as i64 - expected as i64);
        assert!((actual - scheduled).abs() <= 0.041, "cue {cue} reported {:.0} ms late", (actual - scheduled) * 1e3);
    }
    eprintln!("cut errors in frames over {} cuts: {errors:?}", errors.len());
    eprintln!("classes: {}", cls.iter().collect::<String>());
    eprintln!("started: {started:?}");
    assert!(errors.len() >= 15, "two loops of 8 cuts were seen: {errors:?}");
    assert!(errors.iter().all(|e| e.abs() <= 1), "every cut within ±1 frame: {errors:?}");
    // The overlay: white at the bottom-right corner while logo1/logo2 run, camera colour otherwise.
    let frames = decode_rgb(&ingest.recordings()[0], W, H);
    let shown = cue_events(&agent, "cue_started").into_iter().filter(|c| c.0 == "logo1").collect::<Vec<_>>();
    assert!(!shown.is_empty(), "the overlay cue started");
    let f = (shown[0].1 * FPS) as usize + 10;
    let (pr, pg, pb) = pixel(&frames[f], W, W - 2, H - 2);
    assert!(pr > 200 && pg > 200 && pb > 200, "the logo is on the picture at frame {f}: {:?}", (pr, pg, pb));
    let before = (shown[0].1 * FPS) as usize - 5;
    assert_ne!(classify(pixel(&frames[before], W, W - 2, H - 2)), '?', "no logo before its cue");
    let history = agent.ok(&["timeline", "history", "--json"]);
    let h: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h[0]["status"], "stopped");
    assert!(h[0]["metrics"]["cue_lateness"]["cues"].as_u64().unwrap() >= 16, "metrics recorded: {h:#}");
    agent.stop();
}

/// Pause holds the shot and delays later cues by the pause; resume, seek, skip and pin each show
/// up in the recording right after the command.
#[test]
fn pause_resume_seek_skip_and_pin_are_visible_in_the_recording() {
    let (r, g, b) = (RtspCamera::start("red"), RtspCamera::start("green"), RtspCamera::start("blue"));
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    setup(&mut agent, &[("r", &r), ("g", &g), ("b", &b)], &ingest);
    let dir = tempfile::tempdir().unwrap();
    let tl = timeline(
        "ctl",
        40.0,
        false,
        vec![cam("a", 0.0, 6.0, "r"), cam("bb", 6.0, 6.0, "b"), cam("cc", 12.0, 14.0, "g"), cam("dd", 26.0, 14.0, "r")],
        vec![],
    );
    agent.ok(&["timeline", "load", &write(dir.path(), "ctl.json", &tl)]);
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "ctl", "--destination", "d1"]);
    agent.wait_show(Duration::from_secs(30), "playing", |s| s["status"]["engine"]["position_s"].as_f64() > Some(2.0));
    // Pause at ~2 s for 5 s: red stays on air past the 6 s mark.
    let t_pause = program_time(&agent);
    agent.ok(&["timeline", "pause"]);
    std::thread::sleep(Duration::from_secs(5));
    let t_resume = program_time(&agent);
    agent.ok(&["timeline", "resume"]);
    // Blue comes 6 s of timeline after the start, i.e. later by the pause.
    agent.wait_show(Duration::from_secs(15), "cue bb", |s| s["status"]["engine"]["video_cue"] == "bb");
    std::thread::sleep(Duration::from_secs(1));
    let t_seek = program_time(&agent);
    agent.ok(&["timeline", "seek", "--cue", "cc"]);
    let t_seek_done = program_time(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let t_skip = program_time(&agent);
    agent.ok(&["timeline", "skip"]);
    let t_skip_done = program_time(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let t_pin = program_time(&agent);
    agent.ok(&["timeline", "pin", "b"]);
    let t_pin_done = program_time(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let t_unpin = program_time(&agent);
    agent.ok(&["timeline", "unpin"]);
    let t_unpin_done = program_time(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let started = cue_events(&agent, "cue_started");
    let cls = stop_and_classes(&mut agent, &ingest, 2, 1);
    let frame = |t: f64| (t * FPS) as usize;
    let paused = t_resume - t_pause;
    eprintln!(
        "pause {t_pause:.2}..{t_resume:.2}, seek {t_seek:.2}, skip {t_skip:.2}, pin {t_pin:.2}, unpin {t_unpin:.2}"
    );
    // Pause: red throughout, including where blue was due without the pause.
    let red_until = first_from(&cls, frame(t_pause), 'B').expect("blue eventually");
    let bb = started.iter().find(|c| c.0 == "bb").expect("cue bb started");
    let (a_start, _) = started.iter().find(|c| c.0 == "a").map(|c| (c.1, c.2)).unwrap();
    let delay = bb.1 - (a_start + 6.0);
    eprintln!("pause lasted {paused:.3} s; cue bb moved by {delay:.3} s");
    // `paused` is measured between two CLI calls, each of which takes a process start to act, so
    // it is only close to the real pause; the exact shift is the engine property tests' job.
    assert!((delay - paused).abs() < 0.35, "cue bb moved by the pause ({paused:.2} s): moved {delay:.2} s");
    assert!(
        (red_until as i64 - frame(bb.1) as i64).abs() <= 1,
        "blue came at its shifted time: frame {red_until} vs {}",
        frame(bb.1)
    );
    assert!(red_until > frame(a_start + 6.0) + 50, "red held through the pause");
    // Seek to cc (green), skip to dd (red), pin b (blue), unpin (red again).
    let check = |what: &str, from: f64, to: f64, colour: char| {
        let got = first_from(&cls, frame(from), colour).unwrap_or(usize::MAX);
        eprintln!("{what}: on air {} frame(s) after the command was sent", got as i64 - frame(from) as i64);
        assert!(
            got <= frame(to) + 3,
            "{what}: {colour} on air by frame {} (command {from:.2}..{to:.2}), got frame {got}",
            frame(to) + 3
        );
    };
    check("seek", t_seek, t_seek_done, 'G');
    check("skip", t_skip, t_skip_done, 'R');
    check("pin", t_pin, t_pin_done, 'B');
    check("unpin", t_unpin, t_unpin_done, 'R');
    agent.stop();
}

/// Bad timelines (schema and semantic errors) are refused with messages naming the cue, and the
/// stored timeline stays as it was.
#[test]
fn bad_timelines_are_rejected_naming_the_cue_and_nothing_changes() {
    let agent = TestAgent::new();
    agent.ok(&["camera", "add", "r", "--url", "rtsp://127.0.0.1:9/cam"]);
    let dir = tempfile::tempdir().unwrap();
    let good = timeline("t1", 10.0, true, vec![cam("a", 0.0, 5.0, "r"), cam("b", 5.0, 5.0, "r")], vec![]);
    agent.ok(&["timeline", "load", &write(dir.path(), "good.json", &good)]);
    let stored = agent.ok(&["timeline", "show", "t1"]);
    let cases: Vec<(Value, &str)> = vec![
        (
            timeline("t1", 10.0, true, vec![cam("a", 0.0, 5.0, "r"), cam("b", 4.0, 5.0, "r")], vec![]),
            "video cue \"b\": overlaps cue \"a\"",
        ),
        (
            timeline("t1", 10.0, true, vec![cam("a", 0.0, 5.0, "r"), cam("b", 5.0, 6.0, "r")], vec![]),
            "video cue \"b\": ends at 11.000 s",
        ),
        (
            timeline("t1", 10.0, true, vec![cam("a", 0.0, 5.0, "nope")], vec![]),
            "video cue \"a\": camera \"nope\" is not configured",
        ),
        (timeline("t1", 10.0, true, vec![cam("a", 0.0, 0.0, "r")], vec![]), "video cue \"a\""),
        (
            timeline(
                "t1",
                10.0,
                true,
                vec![json!({"id": "x", "start_time": 0, "duration": 1, "action": "show_camera", "params": {}})],
                vec![],
            ),
            "video cue \"x\"",
        ),
        (
            timeline(
                "t1",
                10.0,
                true,
                vec![cam("a", 0.0, 5.0, "r")],
                vec![json!({"layer": 1, "cues": [
                {"id": "o", "start_time": 0, "duration": 2, "action": "show_overlay",
                 "params": {"type": "logo", "image": "../../etc/passwd", "position": "center", "opacity": 1}}]})],
            ),
            "overlay layer 1 cue \"o\"",
        ),
    ];
    for (i, (bad, needle)) in cases.iter().enumerate() {
        let out = agent.cli(&["timeline", "load", &write(dir.path(), &format!("bad{i}.json"), bad)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i} refused as invalid input: {err}");
        assert!(err.contains(needle), "case {i}: the error names the cue ({needle}): {err}");
        assert_eq!(agent.ok(&["timeline", "show", "t1"]), stored, "case {i}: the stored timeline is unchanged");
    }
    let out = agent.cli(&["timeline", "load", &write(dir.path(), "garbage.json", &json!("not a timeline"))]);
    assert_eq!(out.status.code(), Some(2));
}

/// A 2 s green clip with a tone, 320x180 at 25 fps.
fn green_clip(path: &Path) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0x00ff00:s=320x180:r=25", "-f", "lavfi", "-i"])
        .args(["sine=frequency=440:sample_rate=48000", "-t", "2", "-c:v", "libx264", "-c:a", "aac", "-shortest"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "make the clip: {}", String::from_utf8_lossy(&out.stderr));
}

/// `show_media`: a video file from the timeline's assets plays like a camera, looped and paced in
/// real time, between two camera cues.
#[test]
fn a_media_cue_plays_its_file_between_camera_cues() {
    let r = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    setup(&mut agent, &[("r", &r)], &ingest);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clips")).unwrap();
    green_clip(&dir.path().join("clips/green.mp4"));
    let media = json!({"id": "m", "start_time": 3.0, "duration": 5.0, "action": "show_media",
                       "params": {"asset": "clips/green.mp4"}});
    let tl = timeline("media", 12.0, false, vec![cam("a", 0.0, 3.0, "r"), media, cam("b", 8.0, 4.0, "r")], vec![]);
    agent.ok(&["timeline", "load", &write(dir.path(), "media.json", &tl)]);
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "media", "--destination", "d1"]);
    agent.wait_show(Duration::from_secs(40), "the end", |s| s["status"]["engine"]["state"] == "ended");
    let started = cue_events(&agent, "cue_started");
    let cls = stop_and_classes(&mut agent, &ingest, 2, 1);
    let m = started.iter().find(|c| c.0 == "m").expect("media cue started");
    let b = started.iter().find(|c| c.0 == "b").expect("cue b started");
    let green = first_from(&cls, 0, 'G').unwrap_or_else(|| {
        panic!("the clip went on air: {}\n{}", cls.iter().collect::<String>(), tail(&agent.log(), 40))
    });
    assert!((green as i64 - (m.1 * FPS).round() as i64).abs() <= 1, "green at the media cue: frame {green}");
    // The 2 s clip loops through its 5 s cue: green all along (a few codec frames of slack).
    let span = &cls[green..(b.1 * FPS) as usize];
    let not_green = span.iter().filter(|c| **c != 'G').count();
    assert!(not_green <= 3, "the clip loops for the whole cue: {}", span.iter().collect::<String>());
    let red = first_from(&cls, (b.1 * FPS) as usize - 1, 'R').expect("camera r back on air");
    assert!((red as i64 - (b.1 * FPS).round() as i64).abs() <= 1, "back to the camera at cue b: frame {red}");
}

/// With `hot_inputs = false`, each camera starts only `preroll_lead_ms` before its first cue, and
/// its cut still lands on its frame.
#[test]
fn cold_inputs_are_prerolled_their_lead_before_the_cue_and_cut_on_time() {
    let (r, b) = (RtspCamera::start("red"), RtspCamera::start("blue"));
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config("[timeline]\nhot_inputs = false\npreroll_lead_ms = 5000\n");
    setup(&mut agent, &[("r", &r), ("b", &b)], &ingest);
    let dir = tempfile::tempdir().unwrap();
    let tl = timeline("cold", 16.0, false, vec![cam("a", 0.0, 9.0, "r"), cam("bb", 9.0, 7.0, "b")], vec![]);
    agent.ok(&["timeline", "load", &write(dir.path(), "cold.json", &tl)]);
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "cold", "--destination", "d1"]);
    let has_b = |agent: &TestAgent| {
        agent.program("show")["cameras"].as_array().is_some_and(|c| c.iter().any(|c| c["camera"] == "b"))
    };
    agent.wait_show(Duration::from_secs(30), "playing", |s| s["status"]["engine"]["position_s"].as_f64() > Some(1.0));
    assert!(!has_b(&agent), "camera b is not decoding yet, 8 s before its cue");
    let s = agent.wait_show(Duration::from_secs(15), "b pre-rolled", |_| has_b(&agent));
    let at = s["status"]["engine"]["position_s"].as_f64().unwrap();
    eprintln!("camera b started at timeline position {at:.2} s (cue at 9 s, lead 5 s)");
    assert!((3.5..=5.5).contains(&at), "pre-rolled about 5 s before its cue: at {at:.2} s");
    agent.wait_show(Duration::from_secs(20), "the end", |s| s["status"]["engine"]["state"] == "ended");
    let started = cue_events(&agent, "cue_started");
    let cls = stop_and_classes(&mut agent, &ingest, 2, 1);
    let bb = started.iter().find(|c| c.0 == "bb").expect("cue bb started");
    let blue = first_from(&cls, 0, 'B').expect("camera b on air");
    assert!((blue as i64 - (bb.1 * FPS).round() as i64).abs() <= 1, "cut on its frame: {blue} vs {:.0}", bb.1 * FPS);
}

/// `timeline load` copies the files a timeline uses into the data dir: the show plays its clip
/// and shows its logo after the folder they were loaded from is gone (a home folder the service
/// cannot read, a USB stick pulled out). A timeline naming a missing file is refused at load,
/// naming the file.
#[test]
fn a_timelines_files_play_after_the_folder_they_were_loaded_from_is_gone() {
    let r = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    setup(&mut agent, &[("r", &r)], &ingest);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clips")).unwrap();
    green_clip(&dir.path().join("clips/green.mp4"));
    let logo = dir.path().join("logo.png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(std::fs::File::create(&logo).unwrap()), 80, 40);
    enc.set_color(png::ColorType::Rgb);
    enc.write_header().unwrap().write_image_data(&[255u8; 80 * 40 * 3]).unwrap();
    let media = json!({"id": "m", "start_time": 3.0, "duration": 3.0, "action": "show_media",
                       "params": {"asset": "clips/green.mp4"}});
    let logo_cue = json!({"id": "logo", "start_time": 0.0, "duration": 9.0, "action": "show_overlay",
                          "params": {"type": "logo", "image": "logo.png", "position": "bottom_right", "opacity": 1.0}});
    let tl = timeline(
        "copied",
        9.0,
        false,
        vec![cam("a", 0.0, 3.0, "r"), media, cam("b", 6.0, 3.0, "r")],
        vec![json!({"layer": 1, "cues": [logo_cue]})],
    );
    let file = write(dir.path(), "copied.json", &tl);
    // A missing file is named at load, and nothing is stored.
    let broken = timeline(
        "broken",
        9.0,
        false,
        vec![json!({"id": "m", "start_time": 0.0, "duration": 9.0,
        "action": "show_media", "params": {"asset": "clips/missing.mp4"}})],
        vec![],
    );
    let refused = agent.cli(&["timeline", "load", &write(dir.path(), "broken.json", &broken)]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("clips/missing.mp4"), "{refused:?}");
    agent.ok(&["timeline", "load", &file]);
    // The folder goes before the show is played (and before the daemon even starts).
    drop(dir);
    assert!(!Path::new(&file).exists());
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "copied", "--destination", "d1"]);
    agent.wait_show(Duration::from_secs(40), "the end", |s| s["status"]["engine"]["state"] == "ended");
    agent.ok(&["timeline", "stop"]);
    let recs = ingest.recordings();
    let frames = decode_rgb(&recs[0], W, H);
    let centre: Vec<char> = frames.iter().map(|f| classify(pixel(f, W, 2, 1))).collect();
    let green = centre.iter().filter(|c| **c == 'G').count();
    assert!(
        green >= 50,
        "the copied clip played (~75 frames): {green} green frames: {}",
        centre.iter().collect::<String>()
    );
    let corner =
        frames.iter().filter(|f| pixel(f, W, W - 2, H - 2).0 > 200 && pixel(f, W, W - 2, H - 2).1 > 200).count();
    assert!(corner * 2 > frames.len(), "the copied logo is on the picture: {corner} of {} frames", frames.len());
    agent.stop();
}
