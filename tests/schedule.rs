//! Schedules and autonomy against real components: a show that starts by itself at its window,
//! with no control plane configured, and shows that come back after the agent is SIGKILLed.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

fn setup(cam: &RtspCamera, ingest: &RtmpIngest) -> (TestAgent, tempfile::TempDir) {
    let agent = TestAgent::new();
    agent.ok(&["camera", "add", "r", "--url", &cam.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "sched-key"]);
    let dir = tempfile::tempdir().unwrap();
    let tl = json!({"id": "loop", "name": "loop", "duration": 20, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [
            {"id": "a", "start_time": 0, "duration": 20, "action": "show_camera", "params": {"camera_id": "r"}}]}}});
    let path = dir.path().join("loop.json");
    std::fs::write(&path, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", path.to_str().unwrap()]);
    (agent, dir)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// "HH:MM:SS" in UTC of a Unix time.
fn hms(t: f64) -> String {
    let s = t as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Waits for the ingest to hold `n` recordings; returns the Unix time it saw the n-th appear.
fn wait_recordings(ingest: &RtmpIngest, agent: &TestAgent, n: usize, timeout: Duration) -> f64 {
    let start = Instant::now();
    loop {
        if ingest.recordings().len() >= n {
            return unix_now();
        }
        assert!(start.elapsed() < timeout, "no recording #{n} after {timeout:?}\nlog:\n{}", tail(&agent.log(), 40));
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A schedule whose window opens 10 s from now, with no broker or cloud configured: the show is
/// prepared ahead and the ingest is recording within 2 s of the window start (and not before).
#[test]
fn a_schedule_starts_the_show_within_2s_of_its_window_with_no_broker() {
    let cam = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let (mut agent, _dir) = setup(&cam, &ingest);
    let start = (unix_now() + 12.0).floor();
    let (s, e) = (hms(start), hms(start + 300.0));
    agent.ok(&[
        "schedule",
        "add",
        "soon",
        "--timezone",
        "UTC",
        "--start",
        &s,
        "--end",
        &e,
        "--timeline",
        "loop",
        "--destination",
        "d1",
    ]);
    agent.spawn();
    let seen = wait_recordings(&ingest, &agent, 1, Duration::from_secs(40));
    let after = seen - start;
    eprintln!("recording appeared {after:.2} s after the window start (window {start})");
    if after > 2.0 {
        eprintln!("{}", tail(&agent.log(), 60));
    }
    assert!(after >= -0.3, "nothing goes out before the window opens ({after:.2} s)");
    assert!(after <= 2.0, "recording within 2 s of the window start: {after:.2} s");
    let st = agent.show();
    assert_eq!(st["desired"]["origin"], "schedule", "{st:#}");
    assert_eq!(st["desired"]["schedule_id"], "soon");
    // An operator cannot take over a scheduled show.
    let out = agent.cli(&["timeline", "pause"]);
    assert_eq!(out.status.code(), Some(4), "conflict: {}", String::from_utf8_lossy(&out.stderr));
    agent.stop();
}

/// SIGKILL the agent during a scheduled show: the show is back on air (a new publish session at
/// the ingest) within 10 s of the restart, and the old FFmpeg processes are gone.
#[test]
fn a_scheduled_show_is_back_within_10s_after_sigkill() {
    let cam = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let (mut agent, _dir) = setup(&cam, &ingest);
    let now = unix_now();
    let (s, e) = (hms(now - 60.0), hms(now + 900.0));
    agent.ok(&[
        "schedule",
        "add",
        "now",
        "--timezone",
        "UTC",
        "--start",
        &s,
        "--end",
        &e,
        "--timeline",
        "loop",
        "--destination",
        "d1",
    ]);
    agent.spawn();
    wait_recordings(&ingest, &agent, 1, Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    let p = agent.program("show");
    let mut old: Vec<u32> = p["encoder"]["pid"].as_u64().map(|p| p as u32).into_iter().collect();
    for c in p["cameras"].as_array().into_iter().flatten().chain(p["outputs"].as_array().into_iter().flatten()) {
        old.extend(c["ingest"]["pid"].as_u64().or(c["pid"].as_u64()).map(|p| p as u32));
    }
    // The destination is sent by the native publisher, a task of the agent: no pusher process.
    assert!(old.len() >= 2, "encoder and camera pids: {old:?} from {p:#}");
    agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    let restart = unix_now();
    agent.spawn();
    let back = wait_recordings(&ingest, &agent, 2, Duration::from_secs(30)) - restart;
    eprintln!("scheduled show back on air {back:.2} s after the restart");
    assert!(back <= 10.0, "back on air within 10 s of the restart: {back:.2} s");
    for pid in old {
        assert!(!alive(pid), "the old FFmpeg {pid} was reaped");
    }
    agent.stop();
}

/// An operator's show survives a SIGKILL too, and resumes where the wall clock says it is now
/// (not from the top), paused state and pin included.
#[test]
fn an_operator_show_resumes_at_its_wall_clock_position_after_sigkill() {
    let cam = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let (mut agent, _dir) = setup(&cam, &ingest);
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "loop", "--destination", "d1"]);
    wait_recordings(&ingest, &agent, 1, Duration::from_secs(40));
    let pos = |agent: &TestAgent| agent.show()["status"]["engine"]["position_s"].as_f64();
    let s = agent.wait_show(Duration::from_secs(20), "the show 3 s in", |s| {
        s["status"]["engine"]["position_s"].as_f64().unwrap_or(0.0) >= 3.0
    });
    let before = s["status"]["engine"]["position_s"].as_f64().unwrap();
    let killed = Instant::now();
    agent.kill9();
    std::thread::sleep(Duration::from_secs(2));
    agent.spawn();
    wait_recordings(&ingest, &agent, 2, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = None;
    while Instant::now() < deadline {
        if let Some(p) = pos(&agent) {
            if agent.show()["status"]["engine"]["state"] == "playing" {
                after = Some((p, killed.elapsed().as_secs_f64()));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, elapsed) = after.unwrap_or_else(|| {
        panic!("the show was not playing again within 15 s of the new recording: {:#}", agent.show())
    });
    let expected = (before + elapsed) % 20.0;
    eprintln!("position {before:.2} s at the kill, {after:.2} s after the restart (wall clock says {expected:.2} s)");
    let diff = (after - expected).abs().min(20.0 - (after - expected).abs());
    assert!(diff < 1.0, "resumed at the wall-clock position: {after:.2} vs {expected:.2}");
    // kill-all stops it for good: it must not come back after another restart. "No show" counts
    // only as the daemon's own answer (show() panics when nobody answers), and only if it holds
    // for a while after the daemon is up, with no new publish session at the ingest.
    agent.ok(&["kill-all"]);
    agent.stop();
    let sessions = ingest.recordings().len();
    agent.spawn();
    agent.wait_up(Duration::from_secs(20));
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        let s = agent.show();
        assert!(s.is_null(), "a killed show stays stopped, but the restarted daemon runs one: {s:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(ingest.recordings().len(), sessions, "nothing was published after the restart");
    agent.stop();
}
