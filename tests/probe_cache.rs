//! What the agent remembers of a camera's last probe, against real components: an RTSP camera
//! simulator, the daemon's show, nginx-rtmp. A camera probed once starts its ingest from that
//! knowledge (no ffprobe in front of the first frame); when the knowledge is wrong, a background
//! probe or the failed start corrects it and the show reaches the ingest all the same.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CACHE_FILE: &str = "camera_probes.json";

fn setup(agent: &TestAgent, cam: &RtspCamera, ingest: &RtmpIngest, dir: &Path) {
    agent.ok(&["camera", "add", "c1", "--url", &cam.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "probe-key"]);
    let tl = json!({"id": "one", "name": "one", "duration": 4.0, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [{"id": "v0", "start_time": 0.0, "duration": 4.0, "action": "show_camera",
        "params": {"camera_id": "c1"}}]}, "overlays": []}});
    let path = dir.join("one.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tl).unwrap()).unwrap();
    agent.ok(&["timeline", "load", path.to_str().unwrap()]);
}

/// Plays the show (once the daemon answers) until a new recording appears at the ingest.
fn play_until_on_air(agent: &TestAgent, ingest: &RtmpIngest) {
    // The native publisher is on air within a second of the restart: same second, same file name.
    ingest.wait_for_a_fresh_file_name();
    let before = ingest.recordings().len();
    agent.ok_when_up(&["program", "status", "--json"]);
    agent.ok(&["timeline", "play", "one", "--destination", "d1"]);
    ingest.wait_for_recordings(before + 1, Duration::from_secs(40));
}

/// The events of the camera's ingest jobs, oldest first: (type, detail).
fn ingest_events(agent: &TestAgent) -> Vec<(String, String)> {
    let out = agent.ok(&["events", "--subject", "program:show/camera:c1", "--limit", "500", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let ev: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event_type"].as_str().unwrap_or("").to_string(), e["detail"].as_str().unwrap_or("").to_string()))
        .collect();
    // The CLI lists the newest last.
    ev
}

/// The detail of the first `kind` event after the first `skip` events of the ingest.
fn wait_event(agent: &TestAgent, kind: &str, skip: usize, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some((_, d)) = ingest_events(agent).into_iter().skip(skip).find(|(t, _)| t == kind) {
            return d;
        }
        assert!(
            start.elapsed() < timeout,
            "no {kind} event within {timeout:?}: {:?}\nagent log:\n{}",
            ingest_events(agent),
            tail(&agent.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cache(agent: &TestAgent) -> Value {
    let text = std::fs::read_to_string(agent.data_dir().join(CACHE_FILE)).expect("the probe was remembered");
    serde_json::from_str(&text).unwrap()
}

/// Rewrites what is remembered of camera c1: its audio codec, and a probe an hour old (so the
/// agent checks it in the background rather than taking it as just confirmed).
fn tamper(agent: &TestAgent, audio: Option<&str>) {
    let mut c = cache(agent);
    let e = &mut c["sources"]["c1"];
    e["probe"]["audio_codec"] = audio.map_or(Value::Null, |a| json!(a));
    e["probed_unix"] = json!(e["probed_unix"].as_u64().unwrap() - 3600);
    std::fs::write(agent.data_dir().join(CACHE_FILE), serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

/// RMS of the recording's audio over its last `secs` seconds (s16le mono 8 kHz).
fn tail_rms(recording: &Path, secs: f64) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(recording)
        .args(["-vn", "-ac", "1", "-ar", "8000", "-f", "s16le", "pipe:1"])
        .stderr(Stdio::null())
        .output()
        .expect("ffmpeg");
    let samples: Vec<f64> = out.stdout.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect();
    let n = ((secs * 8000.0) as usize).min(samples.len());
    assert!(n > 0, "no audio decoded from {}", recording.display());
    let tail = &samples[samples.len() - n..];
    (tail.iter().map(|s| s * s).sum::<f64>() / n as f64).sqrt()
}

/// A camera probed once: the next start of its ingest uses what was remembered without waiting
/// for ffprobe. The memory says "no audio" but the camera sends a tone: the background probe
/// notices, the ingest restarts with audio, and the tone is on air at the ingest.
#[test]
fn a_remembered_probe_starts_the_ingest_at_once_and_a_missed_audio_track_is_corrected() {
    let cam = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    let dir = tempfile::tempdir().unwrap();
    setup(&agent, &cam, &ingest, dir.path());

    agent.spawn();
    play_until_on_air(&agent, &ingest);
    agent.ok(&["timeline", "stop"]);
    agent.stop();
    // Never probed: pre-flight probed it, and the ingest started from that probe (no second one).
    let first = wait_event(&agent, "probe_remembered", 0, Duration::from_secs(1));
    assert!(first.contains("audio aac"), "{first}");
    let c = cache(&agent);
    assert_eq!(c["sources"]["c1"]["probe"]["audio_codec"], "aac", "{c}");
    let text = std::fs::read_to_string(agent.data_dir().join(CACHE_FILE)).unwrap();
    assert!(!text.contains(&cam.port().to_string()) && !text.contains("rtsp"), "no URL in the file: {text}");

    tamper(&agent, None);
    let seen = ingest_events(&agent).len();
    agent.spawn();
    play_until_on_air(&agent, &ingest);
    let remembered = wait_event(&agent, "probe_remembered", seen, Duration::from_secs(5));
    assert!(remembered.contains("audio none"), "started from what was remembered: {remembered}");
    let corrected = wait_event(&agent, "probe_corrected", seen, Duration::from_secs(15));
    assert!(corrected.contains("audio aac"), "{corrected}");
    assert!(!corrected.contains("rtsp://"), "no URL in events: {corrected}");
    assert_eq!(cache(&agent)["sources"]["c1"]["probe"]["audio_codec"], "aac", "the memory was corrected");
    // The corrected ingest delivers the camera's tone to the program.
    std::thread::sleep(Duration::from_secs(5));
    agent.ok(&["timeline", "stop"]);
    agent.stop();
    let recs = ingest.recordings();
    let last = recs.last().expect("a recording");
    let rms = tail_rms(last, 1.5);
    assert!(rms > 300.0, "the camera's tone is on air after the correction (rms {rms:.0})");
}

/// The memory claims audio on a camera that has none: the ingest's start fails, the restart asks
/// the camera, and the show reaches the ingest with the memory corrected.
#[test]
fn a_remembered_audio_track_the_camera_no_longer_has_does_not_keep_the_show_off_air() {
    let cam = RtspCamera::start_with(CameraOpts { audio: false, ..CameraOpts::new("green") });
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::new();
    let dir = tempfile::tempdir().unwrap();
    setup(&agent, &cam, &ingest, dir.path());

    agent.spawn();
    play_until_on_air(&agent, &ingest);
    agent.ok(&["timeline", "stop"]);
    agent.stop();
    assert_eq!(cache(&agent)["sources"]["c1"]["probe"]["audio_codec"], Value::Null);

    tamper(&agent, Some("aac"));
    let seen = ingest_events(&agent).len();
    agent.spawn();
    play_until_on_air(&agent, &ingest);
    let remembered = wait_event(&agent, "probe_remembered", seen, Duration::from_secs(5));
    assert!(remembered.contains("audio aac"), "{remembered}");
    let start = Instant::now();
    while cache(&agent)["sources"]["c1"]["probe"]["audio_codec"] != Value::Null {
        assert!(start.elapsed() < Duration::from_secs(15), "the memory was not corrected: {}", cache(&agent));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once corrected, the camera's own picture (green) reaches the ingest, not the slate.
    std::thread::sleep(Duration::from_secs(4));
    agent.ok(&["timeline", "stop"]);
    agent.stop();
    let recs = ingest.recordings();
    let cls = classes(&decode_rgb(recs.last().expect("a recording"), 16, 9), 16, 2, 1);
    let tail: String = cls.iter().rev().take(25).collect();
    assert!(tail.chars().all(|c| c == 'G'), "the last second at the ingest is the camera: {tail}");
}
