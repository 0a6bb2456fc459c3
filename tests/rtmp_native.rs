//! The native RTMP publisher against three server implementations (nginx-rtmp, FFmpeg's
//! `-listen 1` server, and an `rml_rtmp` server written in the test) and the ways an ingest fails:
//! a refused key with its exact status code, a server that accepts TCP and says nothing, and one
//! that closes in the middle of the stream. Each failure is reported in its own words and none of
//! them disturbs the healthy destinations.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_rtmp::{FakeIngest, FakeMode};
use common::*;
use serde_json::Value;

const KEYS: [&str; 5] =
    ["nat-key-good-1", "nat-key-ffmpeg-2", "nat-key-refused-3", "nat-key-silent-4", "nat-key-closer-5"];

fn output(s: &Value, id: &str) -> Value {
    s["status"]["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["destination"] == id).cloned())
        .unwrap_or(Value::Null)
}

/// FFmpeg's own RTMP server (`-listen 1`) on a free port, taking stream `key` of app `live` and
/// writing what it receives to `received.flv` in the returned folder; it ends with the stream.
fn ffmpeg_listen(key: &str) -> (u16, tempfile::TempDir, ProcGuard) {
    let port = free_port();
    let out = tempfile::Builder::new().prefix("ffmpeg-listen-").tempdir().unwrap();
    let ff = ProcGuard::spawn(
        "ffmpeg -listen 1",
        ffmpeg_cmd()
            .args(["-listen", "1", "-i", &format!("rtmp://127.0.0.1:{port}/live/{key}")])
            .args(["-c", "copy", "-f", "flv"])
            .arg(out.path().join("received.flv")),
    );
    (port, out, ff)
}

#[test]
fn each_ingest_failure_is_reported_in_its_own_words_and_the_healthy_ingests_play_on() {
    let cam = RtspCamera::start("ball");
    let nginx = RtmpIngest::start();
    let refused = FakeIngest::start(FakeMode::Refuse("NetStream.Publish.BadName"));
    let silent = FakeIngest::start(FakeMode::Silent);
    let closer = FakeIngest::start(FakeMode::CloseAfter(150));
    let (ff_port, ff_out, mut ff) = ffmpeg_listen(KEYS[1]);
    let ff_file = ff_out.path().join("received.flv");
    let mut agent = TestAgent::with_config("[ffmpeg]\nfirst_progress_timeout_s = 4\n");
    agent.ok(&["camera", "add", "cam1", "--url", &cam.url()]);
    let urls = [nginx.url(), format!("rtmp://127.0.0.1:{ff_port}/live"), refused.url(), silent.url(), closer.url()];
    let ids = ["good", "ffmpeg", "refused", "silent", "closer"];
    let mut start = vec!["stream", "start", "r1", "--camera", "cam1"];
    for ((id, url), key) in ids.iter().zip(&urls).zip(KEYS) {
        agent.ok(&["destination", "add", id, "--platform", "custom", "--url", url, "--key", key]);
        start.extend(["--destination", id]);
    }
    agent.ok(&start);
    agent.spawn();
    let t0 = Instant::now();
    nginx.wait_for_recordings(1, Duration::from_secs(30));

    let s = agent.wait_for("r1", Duration::from_secs(40), "every failure reported", |s| {
        output(s, "refused")["permanent_error"].is_string()
            && output(s, "silent")["last_error"].is_string()
            && output(s, "closer")["last_error"].is_string()
    });
    eprintln!("failures reported {:.1} s after the start", s.as_secs_f64());
    let st = agent.status("r1");
    let why = |id: &str| output(&st, id)["last_error"].as_str().unwrap_or_default().to_string();
    eprintln!("refused: {}\nsilent: {}\ncloser: {}", why("refused"), why("silent"), why("closer"));
    let r = output(&st, "refused");
    assert!(
        r["permanent_error"].as_str().unwrap().contains("publish refused by the ingest: NetStream.Publish.BadName"),
        "the server's own code: {r:#}"
    );
    assert_eq!(r["retry_in_ms"], 60_000, "a refused key is retried only at the slowest pace");
    assert_eq!(refused.publishes.load(Ordering::Relaxed), 0);
    assert_eq!(refused.keys.lock().unwrap()[0], KEYS[2], "the key is sent as the stream name");
    assert!(
        why("silent").contains("no answer from the ingest") && why("silent").contains("handshake"),
        "{}",
        why("silent")
    );
    assert!(output(&st, "silent")["permanent_error"].is_null(), "silence is retried with backoff");
    assert!(why("closer").contains("closed the connection"), "{}", why("closer"));

    // The closer is published to again after each drop.
    agent.wait_for("r1", Duration::from_secs(30), "the closing ingest published to again", |_| {
        closer.publishes.load(Ordering::Relaxed) >= 2
    });
    std::thread::sleep(Duration::from_secs(15).saturating_sub(t0.elapsed()));
    let live_for = t0.elapsed().as_secs_f64();
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(20), "stream stopped", |s| s["stream"]["state"] == "stopped");

    let recs = nginx.recordings();
    assert_eq!(recs.len(), 1, "nginx: one session through all the others' failures: {recs:?}");
    let gap = max_gap(&packet_times(&recs[0], "v"));
    assert!(gap <= 0.5, "nginx: timestamp gap of {gap:.2} s");
    assert_eq!(codecs_of(&probe_streams(&recs[0]), "video"), vec!["h264"]);
    assert_eq!(codecs_of(&probe_streams(&recs[0]), "audio"), vec!["aac"]);
    let d = probe_duration(&recs[0]);
    assert!(d >= live_for - 4.0, "nginx: {d:.1} s recorded of {live_for:.1} s");

    // FFmpeg's server ends when the publisher leaves; what it received plays.
    assert!(ff.wait_timeout(Duration::from_secs(10)).is_some(), "ffmpeg -listen ended with the stream");
    let streams = probe_streams(&ff_file);
    assert_eq!(codecs_of(&streams, "video"), vec!["h264"], "{streams:?}");
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"], "{streams:?}");
    let d = probe_duration(&ff_file);
    assert!(d >= live_for - 5.0, "ffmpeg -listen: {d:.1} s received of {live_for:.1} s");
    assert!(max_gap(&packet_times(&ff_file, "v")) <= 0.5);

    let mut text = agent.log();
    text.push_str(&agent.ok(&["stream", "status", "r1", "--json"]));
    text.push_str(&agent.ok(&["events", "--json"]));
    assert!(text.contains("NetStream.Publish.BadName"), "the code reaches the event log");
    for k in KEYS {
        assert!(!text.contains(k), "stream key {k} leaked");
    }
    agent.stop();
}

/// The positions where the on-air colour changes between `a` and `b` (a run of either, frame by frame).
fn transitions(cls: &[char], a: char, b: char) -> Vec<usize> {
    let mut last = None;
    let mut at = Vec::new();
    for (i, c) in cls.iter().enumerate().filter(|(_, c)| **c == a || **c == b) {
        if last.is_some_and(|l| l != *c) {
            at.push(i);
        }
        last = Some(*c);
    }
    at
}

/// A show (a program with scheduled cuts between two cameras with audio) published natively to
/// nginx-rtmp, to RTMPS through a TLS terminator with a private CA, and to FFmpeg's own RTMP server
/// at once: each receives one session with every cut 39 frames after the last (1.3 s at 30 fps),
/// and audio locked to video.
#[test]
fn a_show_with_cuts_reaches_nginx_rtmps_and_ffmpeg_intact_with_audio_locked() {
    const FPS: f64 = 30.0;
    const CUTS: usize = 8;
    let red = RtspCamera::start("red");
    let blue = RtspCamera::start("blue");
    let nginx = RtmpIngest::start();
    let behind_tls = RtmpIngest::start();
    let tls = TlsFront::start(behind_tls.port());
    let (ff_port, ff_out, mut ff) = ffmpeg_listen("show-ff");
    let ff_file = ff_out.path().join("received.flv");
    let mut agent = TestAgent::new();
    agent.ok(&["camera", "add", "a", "--url", &red.url()]);
    agent.ok(&["camera", "add", "b", "--url", &blue.url()]);
    agent.ok(&["destination", "add", "plain", "--platform", "custom", "--url", &nginx.url(), "--key", "show-plain"]);
    let ca = tls.ca();
    let rtmps = format!("rtmps://127.0.0.1:{}/live", tls.port());
    agent.ok(&[
        "destination",
        "add",
        "tls",
        "--platform",
        "custom",
        "--url",
        &rtmps,
        "--key",
        "show-tls",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    let ff_url = format!("rtmp://127.0.0.1:{ff_port}/live");
    agent.ok(&["destination", "add", "ffmpeg", "--platform", "custom", "--url", &ff_url, "--key", "show-ff"]);
    agent.spawn();
    agent.start_program_fps(&["a", "b"], &["plain", "tls", "ffmpeg"], 30);
    let base = agent.program("main")["program_time_s"].as_f64().unwrap().ceil() + 2.0;
    for k in 0..CUTS {
        let cam = if k % 2 == 0 { "b" } else { "a" };
        agent.ok(&["program", "cut", cam, "--at", &format!("{:.3}", base + k as f64 * 1.3)]);
    }
    let end = base + (CUTS - 1) as f64 * 1.3 + 2.0;
    agent.wait_program(Duration::from_secs(60), "the cuts to play out", |p| {
        p["program_time_s"].as_f64().unwrap_or(0.0) > end
    });
    agent.ok(&["program", "stop"]);
    assert!(ff.wait_timeout(Duration::from_secs(10)).is_some(), "ffmpeg -listen ended with the stream");
    agent.stop();

    let plain = nginx.recordings();
    let behind = behind_tls.recordings();
    assert_eq!(plain.len(), 1, "nginx: one session: {plain:?}");
    assert_eq!(behind.len(), 1, "RTMPS: one session: {behind:?}");
    for (name, file) in [("nginx", &plain[0]), ("RTMPS", &behind[0]), ("ffmpeg -listen", &ff_file)] {
        let cls = classes(&decode_rgb(file, 16, 9), 16, 2, 1);
        let at = transitions(&cls, 'R', 'B');
        let spacing: Vec<i64> = at.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect();
        eprintln!("{name}: {} frames, cuts at {at:?}", cls.len());
        assert_eq!(at.len(), CUTS, "{name}: every cut, and nothing else: {at:?}");
        assert!(spacing.iter().all(|s| (s - 39).abs() <= 1), "{name}: cuts 39 frames apart: {spacing:?}");
        let (v, a) = (packet_times(file, "v"), packet_times(file, "a"));
        assert!(!v.is_empty() && !a.is_empty(), "{name}: video and audio");
        let first = |t: &[f64]| t.iter().cloned().fold(f64::INFINITY, f64::min);
        let last = |t: &[f64]| t.iter().cloned().fold(0.0, f64::max);
        let (vs, as_) = (first(&v), first(&a));
        let (ve, ae) = (last(&v) + 1.0 / FPS, last(&a) + 1024.0 / 48000.0);
        eprintln!("{name}: video {vs:.3}..{ve:.3} s, audio {as_:.3}..{ae:.3} s");
        assert!((vs - as_).abs() < 0.1 && (ve - ae).abs() < 0.1, "{name}: audio locked to video");
        assert!(max_gap(&a) < 0.1 && max_gap(&v) < 0.1, "{name}: no gaps");
    }
}
