//! Relay mode against real components: the GStreamer RTSP camera simulator, nginx-rtmp ingests and
//! the real `vistter-agent` binary. Assertions are on what the ingests recorded.

mod common;

use std::time::{Duration, Instant};

use common::*;

const KEYS: [&str; 3] = ["sk-live-7f3a9c2e1b", "sk-live-0d4e8b6a2f", "sk-live-93c1f5e7aa"];

fn setup(stream: &str, cam: &RtspCamera, ingests: &[&RtmpIngest]) -> TestAgent {
    let agent = TestAgent::new();
    let pairs: Vec<(String, String)> = ingests.iter().zip(KEYS).map(|(i, k)| (i.url(), k.to_string())).collect();
    agent.relay_setup(stream, &cam.url(), &pairs);
    agent
}

fn assert_h264_aac(path: &std::path::Path) {
    let streams = probe_streams(path);
    assert_eq!(codecs_of(&streams, "video"), vec!["h264"], "{path:?}: {streams:?}");
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"], "{path:?}: {streams:?}");
}

/// Relay one camera to 3 ingests for 20 s: each recording is H.264 + AAC, at least 18 s long, one
/// file per ingest. The daemon's debug log of the whole run never contains a stream key.
#[test]
fn relays_one_camera_to_three_ingests_without_leaking_keys() {
    let cam = RtspCamera::start("smpte");
    let ingests = [RtmpIngest::start(), RtmpIngest::start(), RtmpIngest::start()];
    let mut agent = setup("r1", &cam, &ingests.iter().collect::<Vec<_>>());
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(20));
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stream stopped", |s| s["stream"]["state"] == "stopped");
    for (n, ingest) in ingests.iter().enumerate() {
        let recs = ingest.recordings();
        assert_eq!(recs.len(), 1, "ingest {n}: one publish session, got {recs:?}");
        assert_h264_aac(&recs[0]);
        let d = probe_duration(&recs[0]);
        assert!(d >= 18.0, "ingest {n}: recording is {d:.1} s, want >= 18 s");
    }
    // Everything the agent printed, at debug level (FFmpeg stderr included), and its CLI output.
    let mut text = agent.log();
    text.push_str(&agent.ok(&["destination", "list", "--json"]));
    text.push_str(&agent.ok(&["stream", "status", "--json"]));
    assert!(text.contains("relay:r1/push:d1"), "the log covers the pushers");
    for k in KEYS {
        assert!(
            !text.contains(k),
            "stream key {k} leaked:\n{}",
            text.lines().filter(|l| l.contains(k)).collect::<Vec<_>>().join("\n")
        );
    }
    agent.stop();
}

/// Stop ingest 2 at 5 s and restart it at 12 s: ingests 1 and 3 keep exactly one recording with no
/// timestamp gap over 0.5 s; ingest 2 gets a second recording within backoff + 3 s of its return.
#[test]
fn a_dead_destination_does_not_disturb_the_others() {
    let cam = RtspCamera::start("ball");
    let mut ingests = [RtmpIngest::start(), RtmpIngest::start(), RtmpIngest::start()];
    let mut agent = setup("r1", &cam, &ingests.iter().collect::<Vec<_>>());
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    ingests[1].stop();
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    // The pending retry of d2 fires at most one backoff cap after its last failure.
    let failures_of_d2 =
        || agent.status("r1")["status"]["outputs"][1]["consecutive_failures"].as_u64().unwrap_or(0) as u32;
    let failures = failures_of_d2();
    assert!(failures >= 1, "the agent noticed ingest 2 going away");
    ingests[1].restart();
    let back = Instant::now();
    // A retry may have failed between that reading and the restart: the pending one waits the backoff of
    // the count after it.
    let failures = failures.max(failures_of_d2());
    let cap = Duration::from_secs((2u64 << failures.saturating_sub(1).min(5)).min(60));
    let deadline = cap + Duration::from_secs(3);
    loop {
        if ingests[1].recordings().len() >= 2 {
            break;
        }
        assert!(
            back.elapsed() < deadline,
            "ingest 2 not re-published within {deadline:?} (failures {failures})\n{}",
            tail(&agent.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reconnect = back.elapsed();
    eprintln!("ingest 2 re-published {:.1} s after its return (backoff cap {cap:?})", reconnect.as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));
    // Live from before t0 until the stop: the recordings of the others cover all of it.
    let live_for = t0.elapsed().as_secs_f64();
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stream stopped", |s| s["stream"]["state"] == "stopped");
    for n in [0, 2] {
        let recs = ingests[n].recordings();
        assert_eq!(recs.len(), 1, "ingest {} must not see a reconnect: {recs:?}", n + 1);
        let gap = max_gap(&packet_times(&recs[0], "v"));
        assert!(gap <= 0.5, "ingest {}: timestamp gap of {gap:.2} s", n + 1);
        let d = probe_duration(&recs[0]);
        assert!(d >= live_for - 1.0, "ingest {}: {d:.1} s recorded of the {live_for:.1} s it was live", n + 1);
    }
    let recs = ingests[1].recordings();
    assert_eq!(recs.len(), 2, "ingest 2: first session and the one after its return");
    assert_h264_aac(&recs[1]);
    let events = agent.status("r1")["events"].to_string();
    assert!(events.contains("destination_down"), "the outage is an event: {events}");
    agent.stop();
}

/// Hang the camera (SIGSTOP): detected within 10 s and reported; resumed, the relay comes back by
/// itself, and the destinations keep their connections through the camera restart.
#[test]
fn a_hung_camera_is_detected_and_recovers() {
    let mut cam = RtspCamera::start("smpte");
    let ingest = RtmpIngest::start();
    let mut agent = setup("r1", &cam, &[&ingest]);
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    cam.hang();
    let detected = agent.wait_for("r1", Duration::from_secs(10), "hang detected", |s| s["stream"]["state"] != "live");
    let s = agent.status("r1");
    let err = s["status"]["ingest"]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("no progress") || err.contains("exited"), "reported cause: {s:#}");
    eprintln!("hang detected after {:.1} s: {err}", detected.as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));
    cam.resume();
    let back = agent.wait_for("r1", Duration::from_secs(90), "relay live again", |s| s["stream"]["state"] == "live");
    eprintln!("live again {:.1} s after resume", back.as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));
    let events = agent.status("r1")["events"].to_string();
    assert!(events.contains("camera_down") && events.contains("camera_up"), "{events}");
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stream stopped", |s| s["stream"]["state"] == "stopped");
    let log = agent.log();
    let pusher: Vec<&str> =
        log.lines().filter(|l| l.contains("push:d1") && !l.contains("\"message\":\"started\"")).collect();
    assert_eq!(
        ingest.recordings().len(),
        1,
        "the destination kept its session through the camera restart:\n{}",
        pusher.join("\n")
    );
    agent.stop();
}

/// A camera without audio: the output still has an AAC track (silence).
#[test]
fn a_camera_without_audio_gets_silent_aac() {
    let cam = RtspCamera::start_with(CameraOpts { pattern: "red".into(), audio: false });
    assert!(codecs_of(&probe_streams(cam.url()), "audio").is_empty(), "the simulator really has no audio");
    let ingest = RtmpIngest::start();
    let mut agent = setup("r1", &cam, &[&ingest]);
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(8));
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stream stopped", |s| s["stream"]["state"] == "stopped");
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1);
    assert_h264_aac(&recs[0]);
    let audio = packet_times(&recs[0], "a");
    assert!(audio.len() > 200, "audio packets all along: {}", audio.len());
    agent.stop();
}

/// SIGKILL the agent while relaying: the restarted agent reaps its own leftovers (never another
/// FFmpeg) and the relay is live again.
#[test]
fn after_a_crash_the_agent_reaps_its_own_ffmpeg_and_resumes() {
    let cam = RtspCamera::start("smpte");
    let ingest = RtmpIngest::start();
    // The FFmpeg publisher, so there is a pusher process to reap too.
    let mut agent = TestAgent::new();
    agent.ok(&["camera", "add", "cam1", "--url", &cam.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", KEYS[0]]);
    agent.ok(&["destination", "update", "d1", "--publisher", "ffmpeg"]);
    agent.ok(&["stream", "start", "r1", "--camera", "cam1", "--destination", "d1"]);
    // An FFmpeg that is not the agent's: it must survive everything below.
    let mut decoy = ProcGuard::spawn(
        "decoy ffmpeg",
        ffmpeg_cmd().args(["-re", "-f", "lavfi", "-i", "anullsrc", "-f", "null", "-"]),
    );
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    let old = agent.ffmpeg_pids("r1");
    assert_eq!(old.len(), 2);
    agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    agent.spawn();
    let t = agent.wait_for("r1", Duration::from_secs(30), "live with new processes", |s| {
        s["stream"]["state"] == "live"
            && s["status"]["outputs"][0]["phase"] == "running"
            && s["status"]["ingest"]["pid"].as_u64().is_some_and(|p| !old.contains(&(p as u32)))
    });
    eprintln!("live again {:.1} s after restart", t.as_secs_f64());
    let new = agent.ffmpeg_pids("r1");
    assert!(new.iter().all(|p| !old.contains(p)), "new processes: {old:?} → {new:?}");
    for p in &old {
        assert!(!alive(*p), "old FFmpeg {p} is still running");
    }
    assert!(decoy.is_running(), "an FFmpeg the agent did not start was touched");
    agent.wait_for("r1", Duration::from_secs(10), "a second recording", |_| ingest.recordings().len() == 2);
    agent.stop();
}

/// Destinations are added and removed while live: the newcomer receives within a few seconds and
/// the others get no new recording; a removed one ends while the others carry on.
#[test]
fn destinations_attach_and_detach_while_live() {
    let cam = RtspCamera::start("smpte");
    let ingests = [RtmpIngest::start(), RtmpIngest::start(), RtmpIngest::start()];
    let mut agent = setup("r1", &cam, &[&ingests[0], &ingests[1]]);
    agent.ok(&["destination", "add", "d3", "--platform", "custom", "--url", &ingests[2].url(), "--key", KEYS[2]]);
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    let pids_before = agent.ffmpeg_pids("r1");
    let t = std::time::Instant::now();
    agent.ok(&["stream", "attach", "r1", "d3"]);
    ingests[2].wait_for_recordings(1, Duration::from_secs(5));
    eprintln!("attached destination receiving after {:.1} s", t.elapsed().as_secs_f64());
    agent.wait_live("r1", Duration::from_secs(10));
    agent.ok(&["stream", "detach", "r1", "d2"]);
    agent.wait_for("r1", Duration::from_secs(10), "d2 removed", |s| {
        s["status"]["outputs"].as_array().is_some_and(|o| o.len() == 2 && o.iter().all(|o| o["destination"] != "d2"))
    });
    let pids_after = agent.ffmpeg_pids("r1");
    assert_eq!(pids_before, pids_after, "the ingest was not restarted (the pushers are native: no processes)");
    let outputs = agent.status("r1")["status"]["outputs"].clone();
    let d1 = outputs.as_array().unwrap().iter().find(|o| o["destination"] == "d1").unwrap();
    assert_eq!(d1["starts"], 1, "d1's publisher was not restarted: {d1:#}");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let d2_len = size(&ingests[1].recordings()[0]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(size(&ingests[1].recordings()[0]), d2_len, "d2 no longer receives");
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stopped", |s| s["stream"]["state"] == "stopped");
    for (n, i) in ingests.iter().enumerate() {
        assert_eq!(i.recordings().len(), 1, "ingest {}: one session", n + 1);
    }
    agent.stop();
}

/// An ingest that refuses the stream key is reported as such (a permanent error, retried only at
/// the slowest pace) and the other destinations are not affected.
#[test]
fn a_refused_stream_key_is_reported_not_hammered() {
    let cam = RtspCamera::start("smpte");
    let ingest = RtmpIngest::start();
    let good = RtmpIngest::start();
    let mut agent = TestAgent::new();
    agent.ok(&["camera", "add", "cam1", "--url", &cam.url()]);
    agent.ok(&[
        "destination",
        "add",
        "locked",
        "--platform",
        "custom",
        "--url",
        &ingest.refusing_url(),
        "--key",
        "wrong-key-123",
    ]);
    agent.ok(&["destination", "add", "ok", "--platform", "custom", "--url", &good.url(), "--key", KEYS[0]]);
    agent.ok(&["stream", "start", "r1", "--camera", "cam1", "--destination", "locked", "--destination", "ok"]);
    agent.spawn();
    agent.wait_for("r1", Duration::from_secs(60), "the refusal reported as permanent", |s| {
        s["status"]["outputs"].as_array().is_some_and(|o| o.iter().any(|o| o["permanent_error"].is_string()))
    });
    let s = agent.status("r1");
    let locked =
        s["status"]["outputs"].as_array().unwrap().iter().find(|o| o["destination"] == "locked").unwrap().clone();
    eprintln!("refusal: {}", locked["permanent_error"]);
    assert!(locked["permanent_error"].as_str().unwrap().contains("refuses the stream key"), "{locked:#}");
    assert_eq!(locked["retry_in_ms"], 60_000, "retried only at the slowest pace");
    // The native publisher can learn of the refusal before the camera is live: the stream itself
    // goes live all the same.
    agent.wait_for("r1", Duration::from_secs(30), "the stream live", |s| s["stream"]["state"] == "live");
    // The native publisher learns of the refusal within seconds, before the camera's first frames
    // may have reached the other ingest.
    good.wait_for_recordings(1, Duration::from_secs(20));
    assert_eq!(good.recordings().len(), 1, "the other destination is unaffected");
    assert!(ingest.recordings().is_empty());
    let events = s["events"].to_string();
    assert!(events.contains("\"severity\":\"error\""), "an error event: {events}");
    agent.stop();
}

/// `kill-all` while live: every stream is set to stopped, every FFmpeg of the agent is gone, and a
/// restarted agent does not bring them back.
#[test]
fn kill_all_stops_everything_and_it_stays_stopped() {
    let cam = RtspCamera::start("smpte");
    let ingest = RtmpIngest::start();
    let mut agent = setup("r1", &cam, &[&ingest]);
    agent.spawn();
    agent.wait_live("r1", Duration::from_secs(30));
    let pids = agent.ffmpeg_pids("r1");
    let out = agent.ok(&["kill-all"]);
    assert!(out.contains("1 stream(s) set to stopped"), "{out}");
    for p in &pids {
        assert!(!alive(*p), "FFmpeg {p} survived kill-all");
    }
    agent.wait_for("r1", Duration::from_secs(10), "stopped", |s| s["stream"]["state"] == "stopped");
    agent.stop();
    agent.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let s = agent.status("r1");
    assert_eq!(s["stream"]["desired"], "stopped");
    assert_eq!(s["stream"]["state"], "stopped", "{s:#}");
    assert_eq!(ingest.recordings().len(), 1, "nothing was published again");
    agent.stop();
}
