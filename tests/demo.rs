//! `vistter-agent demo` on a machine with nothing configured: a show on built-in sources, recorded
//! to a local file.

mod common;

use common::*;

#[test]
fn demo_records_a_show_with_nothing_configured() {
    require_bin("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.flv");
    let res = std::process::Command::new(AGENT_BIN)
        .args(["--data-dir", dir.path().join("data").to_str().unwrap(), "demo", "--out", out.to_str().unwrap()])
        .args(["--seconds", "8", "--size", "320x180", "--fps", "25", "--cut-every", "3"])
        .env_remove("VISTTER_CONFIG")
        .output()
        .expect("run demo");
    assert!(res.status.success(), "demo failed: {}", String::from_utf8_lossy(&res.stderr));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("watch it with: ffplay"), "tells where to watch: {stdout}");
    let streams = probe_streams(&out);
    assert_eq!(codecs_of(&streams, "video"), vec!["h264"]);
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"]);
    let d = probe_duration(&out);
    assert!(d >= 6.0, "recording is {d:.1} s");
    // Two different sources were on air: frames from the first and the second cut differ a lot.
    let frames = decode_rgb(&out, 16, 9);
    let at = |s: f64| &frames[((s * 25.0) as usize).min(frames.len() - 1)];
    let diff: i64 = at(1.5).iter().zip(at(4.5)).map(|(a, b)| (*a as i64 - *b as i64).abs()).sum();
    assert!(diff > 2000, "the cut changed the picture (diff {diff})");
}
