//! RTMPS destinations (Facebook's ingest is RTMPS): the certificate is verified, against a given CA
//! file for a private ingest. Real stunnel in front of a real nginx-rtmp.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn rtmps_ingest_with_a_trusted_ca_receives_and_an_untrusted_one_is_refused() {
    let cam = RtspCamera::start("smpte");
    let good_ingest = RtmpIngest::start();
    let bad_ingest = RtmpIngest::start();
    let good = TlsFront::start(good_ingest.port());
    let bad = TlsFront::start(bad_ingest.port());
    let mut agent = TestAgent::new();
    agent.ok(&["camera", "add", "cam1", "--url", &cam.url()]);
    let url = |p: u16| format!("rtmps://127.0.0.1:{p}/live");
    let good_ca = good.ca();
    let bad_ca = bad.other_ca();
    agent.ok(&[
        "destination",
        "add",
        "good",
        "--platform",
        "custom",
        "--url",
        &url(good.port()),
        "--key",
        "tls-key-1111",
        "--ca-file",
        good_ca.to_str().unwrap(),
    ]);
    agent.ok(&[
        "destination",
        "add",
        "wrongca",
        "--platform",
        "custom",
        "--url",
        &url(bad.port()),
        "--key",
        "tls-key-2222",
        "--ca-file",
        bad_ca.to_str().unwrap(),
    ]);
    agent.ok(&["stream", "start", "r1", "--camera", "cam1", "--destination", "good", "--destination", "wrongca"]);
    agent.spawn();
    good_ingest.wait_for_recordings(1, Duration::from_secs(30));
    agent.wait_for("r1", Duration::from_secs(30), "the untrusted ingest to fail", |s| {
        s["status"]["outputs"].as_array().is_some_and(|o| {
            o.iter().any(|o| o["destination"] == "wrongca" && o["consecutive_failures"].as_u64().unwrap_or(0) >= 1)
        })
    });
    let st = agent.status("r1");
    let wrong =
        st["status"]["outputs"].as_array().unwrap().iter().find(|o| o["destination"] == "wrongca").unwrap().clone();
    eprintln!("untrusted ingest: {}", wrong["last_error"]);
    let why = wrong["permanent_error"].as_str().unwrap_or("");
    assert!(why.contains("TLS certificate is not trusted"), "reported as a configuration problem: {wrong:#}");
    assert!(bad_ingest.recordings().is_empty(), "nothing was published through an unverified TLS connection");
    // The recording exists once publishing starts; the pusher reports running at its first progress.
    agent.wait_for("r1", Duration::from_secs(10), "the trusted destination running", |s| {
        s["status"]["outputs"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["destination"] == "good" && o["phase"] == "running"))
    });
    agent.stop();
}
