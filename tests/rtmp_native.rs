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

#[test]
fn each_ingest_failure_is_reported_in_its_own_words_and_the_healthy_ingests_play_on() {
    let cam = RtspCamera::start("ball");
    let nginx = RtmpIngest::start();
    let refused = FakeIngest::start(FakeMode::Refuse("NetStream.Publish.BadName"));
    let silent = FakeIngest::start(FakeMode::Silent);
    let closer = FakeIngest::start(FakeMode::CloseAfter(150));
    let ff_port = free_port();
    let ff_out = tempfile::Builder::new().prefix("ffmpeg-listen-").tempdir().unwrap();
    let ff_file = ff_out.path().join("received.flv");
    let mut ff = ProcGuard::spawn(
        "ffmpeg -listen 1",
        ffmpeg_cmd()
            .args(["-listen", "1", "-i", &format!("rtmp://127.0.0.1:{ff_port}/live/{}", KEYS[1])])
            .args(["-c", "copy", "-f", "flv"])
            .arg(&ff_file),
    );
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
