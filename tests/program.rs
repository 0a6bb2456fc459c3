//! Program mode against real components: solid-colour RTSP cameras, the agent's bus and encoder,
//! nginx-rtmp recording. Which source was on air is read back from the recording, frame by frame.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FPS: f64 = 25.0;
// Decode the recording at 16x9 and sample near a corner (the slate's text is in the middle).
const W: u32 = 16;
const H: u32 = 9;

fn setup(cams: &[(&str, &RtspCamera)], ingests: &[&RtmpIngest]) -> TestAgent {
    let mut agent = TestAgent::new();
    for (id, cam) in cams {
        agent.ok(&["camera", "add", id, "--url", &cam.url()]);
    }
    for (i, ing) in ingests.iter().enumerate() {
        agent.ok(&["destination", "add", &format!("d{}", i + 1), "--platform", "custom", "--url", &ing.url(), "--key", &format!("prog-key-{i}")]);
    }
    agent.spawn();
    agent
}

fn program_time(agent: &TestAgent) -> f64 {
    agent.program("main")["program_time_s"].as_f64().expect("program time")
}

fn stop_and_recording(agent: &mut TestAgent, ingest: &RtmpIngest) -> Vec<char> {
    agent.ok(&["program", "stop"]);
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "one publish session for the whole program (no reconnect): {recs:?}");
    classes(&decode_rgb(&recs[0], W, H), W, 2, 1)
}

/// Ten scheduled cuts A→B→A…: each lands within one frame of its scheduled program time, with one
/// recording and one encoder process for the whole run.
#[test]
fn scheduled_cuts_are_frame_accurate_without_reconnect() {
    let a = RtspCamera::start("red");
    let b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program(&["a", "b"], &["d1"]);
    let encoder_pid = agent.program("main")["encoder"]["pid"].as_u64();
    let base = program_time(&agent).ceil() + 2.0;
    let cuts: Vec<(f64, &str, char)> =
        (0..10).map(|k| (base + k as f64 * 1.3, if k % 2 == 0 { "b" } else { "a" }, if k % 2 == 0 { 'B' } else { 'R' })).collect();
    for (at, cam, _) in &cuts {
        agent.ok(&["program", "cut", cam, "--at", &format!("{at:.3}")]);
    }
    let end = cuts.last().unwrap().0 + 2.0;
    agent.wait_program(Duration::from_secs(60), "the cuts to play out", |p| p["program_time_s"].as_f64().unwrap_or(0.0) > end);
    assert_eq!(agent.program("main")["encoder"]["pid"].as_u64(), encoder_pid, "the encoder was never restarted");
    let cls = stop_and_recording(&mut agent, &ingest);
    let mut errors = Vec::new();
    for (at, cam, want) in &cuts {
        let expected = (at * FPS).ceil() as usize;
        let actual = first_from(&cls, expected.saturating_sub(10), *want).unwrap_or(usize::MAX);
        errors.push(actual as i64 - expected as i64);
        assert!(actual.abs_diff(expected) <= 1, "cut to {cam} at {at:.3} s: frame {actual}, expected {expected}");
    }
    eprintln!("cut errors in frames: {errors:?}");
    agent.stop();
}

/// Kill the camera on air: the slate is on air within 1 s, without a reconnect, with an event;
/// restarted, the camera is back on air within 5 s of its first frames.
#[test]
fn a_dead_camera_goes_to_slate_and_comes_back() {
    let a = RtspCamera::start("red");
    let mut b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program(&["b", "a"], &["d1"]);
    std::thread::sleep(Duration::from_secs(2));
    let t_kill = program_time(&agent);
    b.kill();
    agent.wait_program(Duration::from_secs(5), "slate", |p| p["on_air"]["kind"] == "slate");
    std::thread::sleep(Duration::from_secs(2));
    b.restart();
    let p = agent.wait_program(Duration::from_secs(40), "camera b delivering again", |p| {
        p["cameras"].as_array().unwrap().iter().any(|c| c["camera"] == "b" && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200) && c["ingest"]["phase"] == "running")
    });
    let t_first = p["program_time_s"].as_f64().unwrap();
    agent.wait_program(Duration::from_secs(10), "b back on air", |p| p["on_air"]["camera"] == "b");
    std::thread::sleep(Duration::from_secs(1));
    let events = agent.ok(&["stream", "status", "--json"]);
    let _ = events;
    let cls = stop_and_recording(&mut agent, &ingest);
    let kill_frame = (t_kill * FPS) as usize;
    let slate = first_from(&cls, kill_frame, 'S').expect("slate on air");
    let to_slate = (slate - kill_frame) as f64 / FPS;
    let back = first_from(&cls, slate, 'B').expect("b back on air");
    let to_back = back as f64 / FPS - t_first;
    eprintln!("camera death → slate: {to_slate:.2} s; first frames → on air: {to_back:.2} s");
    assert!(to_slate <= 1.0 + 0.1, "slate after {to_slate:.2} s");
    assert!(to_back <= 5.0, "camera back after {to_back:.2} s");
    let log = agent.log();
    assert!(log.contains("fallback_on") && log.contains("fallback_off"), "events recorded");
    agent.stop();
}

/// Hang a camera that has a backup: the backup is on air within 1 s.
#[test]
fn a_hung_camera_is_replaced_by_its_backup() {
    let mut a = RtspCamera::start("red");
    let c = RtspCamera::start("green");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("c", &c)], &[&ingest]);
    agent.ok(&["camera", "add", "a", "--url", &a.url(), "--backup", "c"]);
    agent.start_program(&["a"], &["d1"]);
    agent.wait_program(Duration::from_secs(20), "backup pre-rolled", |p| {
        p["cameras"].as_array().unwrap().iter().any(|c| c["camera"] == "c" && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200))
    });
    std::thread::sleep(Duration::from_secs(1));
    let t_hang = program_time(&agent);
    a.hang();
    agent.wait_program(Duration::from_secs(5), "backup on air", |p| p["on_air"]["camera"] == "c");
    std::thread::sleep(Duration::from_secs(1));
    a.resume();
    let cls = stop_and_recording(&mut agent, &ingest);
    let hang_frame = (t_hang * FPS) as usize;
    let green = first_from(&cls, hang_frame, 'G').expect("backup on air");
    let took = (green - hang_frame) as f64 / FPS;
    eprintln!("camera hang → backup: {took:.2} s");
    assert!(took <= 1.0 + 0.1, "backup after {took:.2} s");
    assert!(!cls[hang_frame..green].contains(&'S'), "no slate while the backup was healthy");
    agent.stop();
}
