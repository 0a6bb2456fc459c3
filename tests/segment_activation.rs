//! Activating a new segment version while its show plays (DESIGN §4, §5): `segment import` of v2
//! in the CLI process, with the daemon's show looping v1, makes v2 the one that plays from the
//! show's next loop boundary, on the same program and publish session (no reconnect). Checked on
//! a real ingest's recording, frame by frame: v1's red logo (and its blue badge) before the
//! boundary, v2's green logo (and no badge) after it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const FPS: f64 = 25.0;
const W: u32 = 320;
const H: u32 = 180;
/// The loop, s.
const LOOP_S: f64 = 4.0;
const SEGMENT: &str = "activate";

/// A key made with `segment keygen` and trusted for segments; returns the key file.
fn signer(agent: &TestAgent, dir: &Path) -> PathBuf {
    let path = dir.join("signer.key.json");
    agent.ok(&["segment", "keygen", "--key-id", "signer", "-o", &path.display().to_string()]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let public = v["public_key"].as_str().expect("public_key in the key file");
    agent.ok(&["trust", "add", "signer", "--public-key", public, "--role", "segment"]);
    path
}

fn image_cue(id: &str, image: &str, position: &str) -> Value {
    json!({"id": id, "start_time": 0, "duration": LOOP_S, "action": "show_overlay",
           "params": {"type": "image", "image": image, "position": position, "opacity": 1,
                      "fade_in": 0, "fade_out": 0}})
}

/// A package folder for timeline `loop4`: a 4 s slate loop with the logo (`rgb`, top right) for
/// the whole loop and, with `badge`, a blue badge bottom left.
fn package_dir(root: &Path, rgb: [u8; 3], badge: bool) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    let mut overlays = vec![json!({"layer": 1, "cues": [image_cue("logo", "assets/logo.png", "top_right")]})];
    if badge {
        overlays.push(json!({"layer": 2, "cues": [image_cue("badge", "assets/badge.png", "bottom_left")]}));
        write_png(&root.join("assets/badge.png"), 64, 32, [0, 0, 255]);
    }
    let doc = json!({"id": "loop4", "name": "loop4", "duration": LOOP_S, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [{"id": "slate", "start_time": 0, "duration": LOOP_S,
        "action": "show_slate", "params": {}}]}, "overlays": overlays}});
    std::fs::write(root.join("timeline.json"), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    write_png(&root.join("assets/logo.png"), 64, 32, rgb);
    root.to_path_buf()
}

fn pack(agent: &TestAgent, dir: &Path, key: &Path, version: u64, out: &Path) {
    let (dir, key, out) = (dir.display().to_string(), key.display().to_string(), out.display().to_string());
    agent.ok(&["segment", "pack", &dir, "--key", &key, "--id", SEGMENT, "--version", &version.to_string(), "-o", &out]);
}

fn import(agent: &TestAgent, file: &Path) -> Value {
    let out = agent.ok(&["segment", "import", &file.display().to_string(), "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`segment import --json` output ({e}): {out}"))
}

/// Program time of the show's bus, s.
fn program_time(agent: &TestAgent) -> f64 {
    agent.program("show")["program_time_s"].as_f64().expect("show program time")
}

/// Pixels of class `want` in a `w`x`h` box at (x0, y0) of a 320x180 frame.
fn count(frame: &[u8], want: char, x0: u32, y0: u32, w: u32, h: u32) -> usize {
    (y0..y0 + h)
        .flat_map(|y| (x0..x0 + w).map(move |x| (x, y)))
        .filter(|&(x, y)| classify(pixel(frame, W, x, y)) == want)
        .count()
}

/// What each frame shows: the logo's colour (top right) and whether the blue badge (bottom left)
/// is there.
fn look(frame: &[u8]) -> (char, bool) {
    let (red, green) = (count(frame, 'R', 220, 0, 100, 70), count(frame, 'G', 220, 0, 100, 70));
    let logo = match (red >= 500, green >= 500) {
        (true, false) => 'R',
        (false, true) => 'G',
        (false, false) => '-',
        _ => '?',
    };
    (logo, count(frame, 'B', 0, 110, 100, 70) >= 500)
}

fn events_of(agent: &TestAgent, ty: &str) -> Vec<Value> {
    agent.events().into_iter().filter(|e| e["event_type"] == ty).collect()
}

#[test]
fn a_version_imported_while_its_show_loops_takes_over_at_the_next_loop_boundary_without_a_reconnect() {
    let t0 = Instant::now();
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config("[control]\ndevice_id = \"vs-activate\"\n");
    let work = tempfile::tempdir().unwrap();
    let key = signer(&agent, work.path());
    let (v1, v2) = (work.path().join("v1.vseg"), work.path().join("v2.vseg"));
    pack(&agent, &package_dir(&work.path().join("v1"), [255, 0, 0], true), &key, 1, &v1);
    pack(&agent, &package_dir(&work.path().join("v2"), [0, 255, 0], false), &key, 2, &v2);
    let installed = import(&agent, &v1);
    assert_eq!((installed["version"].as_u64(), installed["active"].as_bool()), (Some(1), Some(true)), "{installed:#}");
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "act"]);
    agent.spawn();
    agent.wait_up(Duration::from_secs(20));
    agent.ok_when_up(&["segment", "play", SEGMENT, "--destination", "d1"]);
    // Into the second loop, mid-loop: v2 comes in the CLI process, as an operator would bring it.
    agent.wait_show(Duration::from_secs(40), "v1 in its second loop", |s| {
        s["status"]["engine"]["loop_index"].as_u64() >= Some(1)
            && s["status"]["engine"]["position_s"].as_f64().is_some_and(|p| (1.0..2.5).contains(&p))
    });
    let t_import = program_time(&agent);
    let installed = import(&agent, &v2);
    let t_imported = program_time(&agent);
    assert_eq!((installed["version"].as_u64(), installed["active"].as_bool()), (Some(2), Some(true)), "{installed:#}");
    let updated = agent.wait_event(Duration::from_secs(15), "show_updated", |e| e["event_type"] == "show_updated");
    eprintln!("import at program time {t_import:.2}..{t_imported:.2}; {}", updated["detail"]);
    let handover = events_of(&agent, "timeline_updated");
    assert_eq!(handover.len(), 1, "one hand-over: {}", event_lines(&handover));
    let d: Value = serde_json::from_str(handover[0]["detail"].as_str().unwrap()).unwrap();
    let at = d["at_s"].as_f64().expect("the hand-over's program time");
    // Let v2 play a while, then stop and read the recording back.
    while program_time(&agent) < at + 3.0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Where v1's loops began: the logo cue's starts (scheduled program times).
    let starts: Vec<f64> = agent
        .events()
        .iter()
        .filter(|e| e["event_type"] == "cue_started")
        .filter_map(|e| serde_json::from_str::<Value>(e["detail"].as_str()?).ok())
        .filter(|d| d["cue"] == "logo")
        .map(|d| d["scheduled_s"].as_f64().unwrap())
        .collect();
    let shows = events_of(&agent, "show_started");
    agent.ok(&["timeline", "stop"]);
    let recs = ingest.wait_for_recordings(1, Duration::from_secs(10));
    let mut last = u64::MAX;
    for _ in 0..50 {
        let n = std::fs::metadata(&recs[0]).map(|m| m.len()).unwrap_or(0);
        if n == last {
            break;
        }
        last = n;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ingest.recordings().len(), 1, "one publish session, no reconnect: {:?}", ingest.recordings());
    assert_eq!(shows.len(), 1, "the show was not started again: {}", event_lines(&shows));

    // The hand-over is at a loop boundary of v1, the first one after the import was noticed (the
    // director looks every second; effects go to the bus 0.3 s ahead).
    let first = starts.first().copied().expect("the logo cue started");
    let loops = (at - first) / LOOP_S;
    assert!((loops - loops.round()).abs() < 0.02, "hand-over at {at:.3} s, v1 began at {first:.3} s: not a boundary");
    assert!(at > t_import, "the hand-over ({at:.3} s) comes after the import ({t_import:.3} s)");
    assert!(
        at <= t_imported + LOOP_S + 1.5,
        "the hand-over ({at:.3} s) is the next boundary after the import ({t_imported:.3} s)"
    );
    // v1's logo cue started once per loop up to the boundary, v2's at it (same cue id).
    assert!(starts.iter().any(|s| (s - at).abs() < 0.001), "v2's logo cue starts at the boundary: {starts:?}");

    let frames = decode_rgb(&recs[0], W, H);
    let looks: Vec<(char, bool)> = frames.iter().map(|f| look(f)).collect();
    let frame = |t: f64| (t * FPS).round() as usize;
    let b = frame(at);
    assert!(looks.len() > b + 60, "the recording reaches 2.4 s past the hand-over: {} frames", looks.len());
    let shown = |from: usize, to: usize| {
        looks[from..to].iter().map(|l| format!("{}{}", l.0, if l.1 { "b" } else { "" })).collect::<Vec<_>>().join(" ")
    };
    // Red with the badge from the show's first second to the frame before the boundary.
    let before = (frame(first) + 5)..(b - 1);
    assert!(
        looks[before.clone()].iter().all(|l| *l == ('R', true)),
        "v1 (red logo, blue badge) until the boundary (frame {b}): {}",
        shown(before.start, b + 3)
    );
    // The first green frame is the boundary's (within a frame), and green without the badge after.
    let g = looks.iter().position(|l| l.0 == 'G').expect("the green logo");
    assert!(
        (b as i64 - 1..=b as i64 + 2).contains(&(g as i64)),
        "green from frame {g}, the boundary is frame {b}: {}",
        shown(b - 5, b + 5)
    );
    let after = (b + 2)..looks.len().min(b + 60);
    assert!(
        looks[after.clone()].iter().all(|l| *l == ('G', false)),
        "v2 (green logo, no badge) after the boundary: {}",
        shown(after.start, after.end)
    );
    eprintln!("hand-over at frame {b}, first green frame {g}; test took {:?}", t0.elapsed());
    agent.stop();
}
