//! One door for every change: the CLI's configuration commands go through the running daemon's
//! dispatcher, with the rules the cloud's commands follow, and without a daemon they check the
//! stored show the same way. Real components: RTSP camera simulators, nginx-rtmp, the agent's
//! show and a relay stream.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::json;

const EXIT_CONFLICT: i32 = 4;

fn refused(out: &Output, what: &str, names: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFLICT), "{what}: exit code; stderr: {err}");
    for n in names {
        assert!(err.contains(n), "{what}: the refusal names {n:?}; stderr: {err}");
    }
}

fn frames(agent: &TestAgent) -> u64 {
    agent.program("show")["frames"].as_u64().unwrap_or(0)
}

fn frames_past(agent: &TestAgent, target: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = frames(agent);
        if n > target || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn removing_what_is_on_air_is_refused_through_the_daemon_and_without_it() {
    let (r, g) = (RtspCamera::start("red"), RtspCamera::start("green"));
    let (show_ingest, relay_ingest) = (RtmpIngest::start(), RtmpIngest::start());
    let mut agent = TestAgent::new();
    agent.ok(&["camera", "add", "r", "--url", &r.url()]);
    agent.ok(&["camera", "add", "g", "--url", &g.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &show_ingest.url(), "--key", "show-k"]);
    agent.ok(&["destination", "add", "d2", "--platform", "custom", "--url", &relay_ingest.url(), "--key", "relay-k"]);
    let dir = tempfile::tempdir().unwrap();
    let tl = json!({"id": "t", "name": "t", "duration": 4.0, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [{"id": "c0", "start_time": 0.0, "duration": 4.0, "action": "show_camera",
        "params": {"camera_id": "r"}}]}, "overlays": []}});
    let path = dir.path().join("t.json");
    std::fs::write(&path, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", &path.display().to_string()]);

    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "t", "--destination", "d1"]);
    agent.ok(&["stream", "start", "s1", "--camera", "g", "--destination", "d2"]);
    agent.wait_live("s1", Duration::from_secs(30));
    let before = frames_past(&agent, 25);
    assert!(before > 25, "the show is on air");

    // Through the running daemon: each removal is refused, naming what uses the thing.
    refused(&agent.cli(&["camera", "remove", "r"]), "camera r", &["camera r is on air", "the show (timeline t)"]);
    refused(&agent.cli(&["destination", "remove", "d1"]), "destination d1", &["destination d1", "the show"]);
    refused(&agent.cli(&["camera", "remove", "g"]), "camera g", &["stream s1"]);
    refused(&agent.cli(&["destination", "remove", "d2"]), "destination d2", &["stream s1"]);
    refused(&agent.cli(&["stream", "remove", "s1"]), "stream s1", &["stream s1 is live", "stream stop s1"]);
    let log = agent.log();
    assert!(
        log.contains("CONFIGURE") && log.contains("stream s1 is live"),
        "the refusals came from the daemon's dispatcher:\n{}",
        tail(&log, 20)
    );
    // What nothing uses goes, through the same door.
    agent.ok(&["camera", "add", "spare", "--url", &r.url()]);
    agent.ok(&["camera", "remove", "spare"]);

    // The show never noticed.
    let after = frames_past(&agent, before + 25);
    assert!(after > before + 25, "the show stays on air: {before} → {after} frames");
    assert_eq!(agent.state("s1"), "live", "the relay stream stays live");
    let cams = agent.ok(&["camera", "list"]);
    assert!(cams.contains("r ") && cams.contains("g ") && !cams.contains("spare"), "{cams}");

    // Without a daemon, the stored show and the live stream (what the next start resumes) hold
    // their cameras and destinations the same way.
    agent.stop();
    refused(&agent.cli(&["camera", "remove", "r"]), "camera r, no daemon", &["the show (timeline t)"]);
    refused(&agent.cli(&["destination", "remove", "d1"]), "destination d1, no daemon", &["the show"]);
    refused(&agent.cli(&["camera", "remove", "g"]), "camera g, no daemon", &["stream s1"]);
    refused(&agent.cli(&["stream", "remove", "s1"]), "stream s1, no daemon", &["stream s1 is live"]);
    // Stopped, the stream lets its camera go.
    agent.ok(&["stream", "stop", "s1"]);
    agent.ok(&["stream", "remove", "s1"]);
    agent.ok(&["camera", "remove", "g"]);
    agent.ok(&["destination", "remove", "d2"]);
}

/// `control_plane_only = true` (the fleet mode): the door is the same, but what needs media is
/// refused by name, nothing starts FFmpeg, and the rest (PING, configuration) still works.
#[test]
fn a_control_plane_only_agent_refuses_media_and_starts_no_ffmpeg() {
    let cam = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config("control_plane_only = true\n");
    agent.ok(&["camera", "add", "a", "--url", &cam.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "k"]);
    agent.spawn();
    agent.wait_up(Duration::from_secs(30));
    let out = agent.cli(&["program", "start", "--size", "320x180", "--camera", "a", "--destination", "d1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "program start must be refused: {err}");
    assert!(err.contains("control-plane-only"), "the refusal says why: {err}");
    // Configuration still goes through the daemon.
    agent.ok(&["destination", "add", "d2", "--platform", "custom", "--url", &ingest.url(), "--key", "k2"]);
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.pid().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(children.trim().is_empty(), "no child process (FFmpeg) was started: {children:?}");
    assert!(ingest.recordings().is_empty(), "nothing was published");
    assert!(agent.log().contains("control-plane-only"), "the log says media is off");
}
