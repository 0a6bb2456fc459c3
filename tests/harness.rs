//! Smoke test of the integration-test harness itself (tests/common): camera → ffmpeg → ingest,
//! ingest restart, camera hang/resume/kill/restart, and an audio-less camera.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn publish(src: &str, dst: &str, secs: u32) -> ProcGuard {
    let mut cmd = ffmpeg_cmd();
    cmd.args(["-rtsp_transport", "tcp", "-timeout", "5000000", "-i", src]).args([
        "-t",
        &secs.to_string(),
        "-c",
        "copy",
        "-f",
        "flv",
        dst,
    ]);
    ProcGuard::spawn("ffmpeg", &mut cmd)
}

fn finish(mut p: ProcGuard, within: Duration) {
    let st = p.wait_timeout(within).unwrap_or_else(|| panic!("ffmpeg did not finish within {within:?}"));
    assert!(st.success(), "ffmpeg failed: {st}");
}

fn probe_ok(url: &str, timeout_us: u32) -> bool {
    let mut c = Command::new("ffprobe");
    c.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", &timeout_us.to_string()]).args(["-show_streams", url]);
    run_with_timeout(&mut c, Duration::from_secs(15))
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("codec_type=video"))
        .unwrap_or(false)
}

#[test]
fn camera_to_ingest_records_and_survives_ingest_restart() {
    require_bin("ffmpeg");
    let t = Instant::now();
    let cam = RtspCamera::start("red");
    eprintln!("camera ready in {:?}", t.elapsed());
    let t = Instant::now();
    let mut ingest = RtmpIngest::start();
    eprintln!("ingest ready in {:?}", t.elapsed());
    assert!(cam.url().starts_with("rtsp://127.0.0.1:") && cam.url().ends_with("/cam"));
    assert!(ingest.url().starts_with("rtmp://127.0.0.1:") && ingest.url().ends_with("/live"));

    let port = ingest.port();
    finish(publish(&cam.url(), &format!("{}/key1", ingest.url()), 5), Duration::from_secs(30));
    let recs = ingest.wait_for_recordings(1, Duration::from_secs(5));
    assert_eq!(recs.len(), 1, "{recs:?}");

    let streams = probe_streams(&recs[0]);
    assert_eq!(codecs_of(&streams, "video"), vec!["h264"], "{streams:?}");
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"], "{streams:?}");
    let v = streams.iter().find(|s| s.codec_type == "video").unwrap();
    assert_eq!((v.width, v.height), (Some(320), Some(180)));
    let d = probe_duration(&recs[0]);
    assert!((4.0..=6.0).contains(&d), "duration {d}");
    let vt = packet_times(&recs[0], "v");
    assert!(vt.len() >= 100, "only {} video packets", vt.len());
    assert!(max_gap(&vt) < 0.2, "video gap {}", max_gap(&vt));
    let at = packet_times(&recs[0], "a");
    assert!(!at.is_empty() && max_gap(&at) < 0.2, "audio gap {}", max_gap(&at));

    let t = Instant::now();
    ingest.stop();
    assert!(!ingest.is_running());
    ingest.restart();
    eprintln!("ingest stop+restart in {:?}", t.elapsed());
    assert_eq!(ingest.port(), port);
    // record_unique names files KEY-<unix seconds>: a new key avoids same-second collisions.
    finish(publish(&cam.url(), &format!("{}/key2", ingest.url()), 2), Duration::from_secs(30));
    let recs = ingest.wait_for_recordings(2, Duration::from_secs(5));
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs[1].file_name().unwrap().to_string_lossy().starts_with("key2-"), "{recs:?}");
    let d2 = probe_duration(&recs[1]);
    assert!((1.0..=3.0).contains(&d2), "duration {d2}");
}

#[test]
fn ingest_stop_closes_a_live_recording() {
    require_bin("ffmpeg");
    let cam = RtspCamera::start("green");
    let mut ingest = RtmpIngest::start();
    let mut ff = publish(&cam.url(), &format!("{}/live1", ingest.url()), 60);
    ingest.wait_for_recordings(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    ingest.stop();
    // The publisher sees the ingest go away.
    assert!(ff.wait_timeout(Duration::from_secs(10)).is_some(), "ffmpeg kept running after ingest stop");
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1);
    let d = probe_duration(&recs[0]);
    assert!(d > 1.5, "duration {d}");
    assert_eq!(probe_streams(&recs[0]).len(), 2);
}

#[test]
fn camera_hang_resume_kill_restart() {
    let mut cam = RtspCamera::start("ball");
    let url = cam.url();
    let pid = cam.pid();
    assert!(pid > 0);

    cam.hang();
    assert!(!probe_ok(&url, 2_000_000), "a hung camera must not answer");
    cam.resume();
    assert!(probe_ok(&url, 5_000_000), "camera must answer again after resume");

    cam.kill();
    assert!(!cam.is_running());
    assert!(!probe_ok(&url, 2_000_000), "a killed camera must not answer");
    let t = Instant::now();
    cam.restart();
    eprintln!("camera restart in {:?}", t.elapsed());
    assert_eq!(cam.url(), url);
    assert_ne!(cam.pid(), pid);
    assert!(probe_ok(&url, 5_000_000));
}

#[test]
fn camera_without_audio_has_only_video() {
    let cam = RtspCamera::start_with(CameraOpts { pattern: "blue".into(), audio: false });
    let streams = probe_streams(cam.url());
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].codec_type, "video");
    assert_eq!(streams[0].codec_name, "h264");
    assert_eq!((streams[0].width, streams[0].height), (Some(320), Some(180)));
}

#[test]
fn free_ports_are_distinct() {
    let ports: std::collections::HashSet<u16> = (0..20).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 20);
    assert!(!ports.contains(&0));
}

#[test]
#[should_panic(expected = "not found: run scripts/setup.sh")]
fn require_bin_explains_a_missing_tool() {
    require_bin("definitely-not-a-real-binary-xyz");
}

/// A simulator that dies on its own (here: SIGKILL from outside the guard, as when GStreamer
/// aborts) is restarted by its guard on the same URL; one the test kills stays down.
#[test]
fn a_camera_simulator_that_dies_on_its_own_is_restarted_and_a_killed_one_is_not() {
    let mut cam = RtspCamera::start("green");
    let first = cam.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while cam.revivals() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cam.revivals(), 1, "the keeper restarted it");
    while (cam.pid() == 0 || cam.pid() == first) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cam.pid() != 0 && cam.pid() != first, "a new simulator runs");
    assert!(probe_ok(&cam.url(), 5_000_000), "it serves on the same URL");

    cam.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!cam.is_running() && cam.revivals() == 1, "a camera the test killed stays down");
}
