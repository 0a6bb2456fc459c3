//! PTZ presets in a show: a fake ONVIF camera (real HTTP on loopback, digest auth checked, a move
//! that takes 2 s) behind a real RTSP camera. The cut to the camera waits for the move to settle,
//! or goes ahead at its time with a warning when the move times out.

mod common;

use std::time::Duration;

use common::onvif::{FakeOnvif, FakeOnvifOptions};
use common::*;
use serde_json::{json, Value};

const FPS: f64 = 25.0;

struct Rig {
    _rt: tokio::runtime::Runtime,
    onvif: FakeOnvif,
    agent: TestAgent,
    ingest: RtmpIngest,
    _cams: (RtspCamera, RtspCamera),
    _dir: tempfile::TempDir,
}

/// Camera `a` (red, no PTZ) 0–4 s, then camera `b` (blue) at preset `dock` 4–9 s; pre-roll 1 s
/// ahead, so the 2 s move runs from 3 s to 5 s.
fn rig(settle_ms: Option<u64>) -> Rig {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let onvif = rt.block_on(FakeOnvif::start(FakeOnvifOptions {
        username: "admin".into(),
        password: "s3cret-ptz".into(),
        move_duration: Duration::from_secs(2),
        presets: vec!["tok-dock".into()],
        profile_token: "prof1".into(),
        ..Default::default()
    }));
    let (a, b) = (RtspCamera::start("red"), RtspCamera::start("blue"));
    let ingest = RtmpIngest::start();
    let agent = TestAgent::with_config("[timeline]\npreroll_lead_ms = 1000\n");
    agent.ok(&["camera", "add", "a", "--url", &a.url()]);
    let port = onvif.port().to_string();
    agent.ok(&[
        "camera",
        "add",
        "b",
        "--url",
        &b.url(),
        "--username",
        "admin",
        "--password",
        "s3cret-ptz",
        "--onvif-host",
        "127.0.0.1",
        "--onvif-port",
        &port,
    ]);
    agent.ok(&["camera", "preset", "set", "b", "dock", "--token", "tok-dock"]);
    if let Some(ms) = settle_ms {
        agent.ok(&["camera", "ptz", "b", "--settle-ms", &ms.to_string()]);
    }
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "ptz-key"]);
    let dir = tempfile::tempdir().unwrap();
    let tl = json!({"id": "ptz", "name": "ptz", "duration": 10, "fps": 25, "resolution": "320x180",
        "tracks": {"video": {"cues": [
            {"id": "wide", "start_time": 0, "duration": 4, "action": "show_camera", "params": {"camera_id": "a"}},
            {"id": "dock", "start_time": 4, "duration": 5, "action": "show_camera",
             "params": {"camera_id": "b", "preset_id": "dock"}}]}}});
    let path = dir.path().join("ptz.json");
    std::fs::write(&path, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", path.to_str().unwrap()]);
    Rig { _rt: rt, onvif, agent, ingest, _cams: (a, b), _dir: dir }
}

fn run_show(agent: &mut TestAgent) -> Value {
    agent.spawn();
    agent.ok_when_up(&["timeline", "play", "ptz", "--destination", "d1"]);
    agent.wait_show(Duration::from_secs(40), "the show to end", |s| s["status"]["engine"]["state"] == "ended");
    let out = agent.ok(&["events", "--subject", "timeline:", "--limit", "200", "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn event<'a>(events: &'a Value, kind: &str) -> Vec<&'a Value> {
    events.as_array().unwrap().iter().filter(|e| e["event_type"] == kind).collect()
}

fn dock_cut(events: &Value) -> (f64, f64) {
    let e = event(events, "cue_started")
        .into_iter()
        .map(|e| serde_json::from_str::<Value>(e["detail"].as_str().unwrap()).unwrap())
        .find(|d| d["cue"] == "dock")
        .expect("cue dock started");
    (e["scheduled_s"].as_f64().unwrap(), e["actual_s"].as_f64().unwrap())
}

fn first_blue_frame(rig: &mut Rig) -> usize {
    rig.agent.ok(&["timeline", "stop"]);
    let recs = rig.ingest.recordings();
    assert_eq!(recs.len(), 1, "one publish session: {recs:?}");
    let cls = classes(&decode_rgb(&recs[0], 16, 9), 16, 2, 1);
    first_from(&cls, 0, 'B').expect("camera b went on air")
}

#[test]
fn the_cut_waits_for_the_preset_move_to_settle() {
    let mut rig = rig(None);
    let events = run_show(&mut rig.agent);
    let (scheduled, actual) = dock_cut(&events);
    let moved = event(&events, "ptz_moved");
    assert_eq!(moved.len(), 1, "one preset move: {events:#}");
    let reqs = rig.onvif.requests();
    // The camera's clock is read first, unsigned (ONVIF lets anyone ask it); everything else is signed.
    let (clock, signed): (Vec<_>, Vec<_>) = reqs.iter().partition(|r| r.action == "GetSystemDateAndTime");
    assert!(clock.len() == 1 && !clock[0].has_security, "{clock:?}");
    assert!(signed.iter().all(|r| r.auth_ok && r.has_security), "every request carried a valid digest");
    let gotos: Vec<_> = reqs.iter().filter(|r| r.action == "GotoPreset").collect();
    assert_eq!(gotos.len(), 1);
    assert_eq!(gotos[0].preset_token.as_deref(), Some("tok-dock"));
    assert_eq!(gotos[0].profile_token.as_deref(), Some("prof1"));
    assert!(reqs.iter().any(|r| r.action == "GetStatus"), "the move was polled until idle");
    let waited = actual - scheduled;
    eprintln!("dock cut scheduled {scheduled:.2} s, on air {actual:.2} s (waited {waited:.2} s for the move)");
    // The move started 1 s before the cue and takes 2 s: the cut waits about 1 s.
    assert!((0.7..=1.8).contains(&waited), "the cut waited for the move: {waited:.2} s");
    let blue = first_blue_frame(&mut rig);
    assert!(
        (blue as f64 - actual * FPS).abs() <= 1.0,
        "blue first on air at frame {blue}, when the cue says it went out ({:.0})",
        actual * FPS
    );
    assert!(blue as f64 >= scheduled * FPS + 15.0, "not before the move settled (frame {blue})");
    assert!(!rig.agent.log().contains("s3cret-ptz"), "the camera password is never logged");
    rig.agent.stop();
}

#[test]
fn a_move_that_times_out_is_a_warning_and_the_cut_goes_ahead_on_time() {
    let mut rig = rig(Some(500));
    let events = run_show(&mut rig.agent);
    let (scheduled, actual) = dock_cut(&events);
    let failed = event(&events, "ptz_failed");
    assert_eq!(failed.len(), 1, "one warning: {events:#}");
    assert_eq!(failed[0]["severity"], "warning");
    let detail = failed[0]["detail"].as_str().unwrap();
    assert!(detail.contains("the show goes on"), "{detail}");
    eprintln!("timeout warning: {detail}");
    assert!((actual - scheduled).abs() <= 0.041, "the cut went out on time: {scheduled:.3} vs {actual:.3}");
    let blue = first_blue_frame(&mut rig);
    assert!((blue as f64 - scheduled * FPS).abs() <= 1.0, "blue on air at its cue time (frame {blue})");
    rig.agent.stop();
}
