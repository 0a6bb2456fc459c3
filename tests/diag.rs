//! `vistter-agent diag`: the bundle of an agent holding a known stream key, camera password and
//! device keys has its parts, and none of those secrets in any form, in any byte of it. The daemon
//! logs JSON lines to stdout when stdout is not a terminal, and to its bounded log file.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;

const STREAM_KEY: &str = "live-diag-StreamKey-0042";
const CAMERA_PASSWORD: &str = "CamPw-diag-7731x";

/// The bundle's files (path inside the tar → bytes) and the whole decompressed tar.
fn unpack(path: &Path) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let compressed = std::fs::read(path).unwrap();
    let tar_bytes = zstd::decode_all(compressed.as_slice()).expect("the bundle is zstd");
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().expect("a tar") {
        let mut e = entry.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        files.push((name.trim_start_matches("vistter-diag/").to_string(), bytes));
    }
    (files, tar_bytes)
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
    let (_, b) = files.iter().find(|(n, _)| n == name).unwrap_or_else(|| {
        panic!("{name} is not in the bundle: {:?}", files.iter().map(|(n, _)| n).collect::<Vec<_>>())
    });
    std::str::from_utf8(b).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"))
}

/// Every form in which a secret could leak: as is, URL-encoded; keys raw, base64 and hex.
fn needles(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("stream key".into(), STREAM_KEY.as_bytes().to_vec()),
        ("camera password".into(), CAMERA_PASSWORD.as_bytes().to_vec()),
    ];
    let engines = [
        ("base64", base64::engine::general_purpose::STANDARD),
        ("base64 unpadded", base64::engine::general_purpose::STANDARD_NO_PAD),
        ("base64url", base64::engine::general_purpose::URL_SAFE),
        ("base64url unpadded", base64::engine::general_purpose::URL_SAFE_NO_PAD),
    ];
    for f in ["device.key", "device_ed25519.key", "device_x25519.key"] {
        let key = std::fs::read(data_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(key.len(), 32, "{f}");
        v.push((format!("{f} raw"), key.clone()));
        for (what, e) in &engines {
            v.push((format!("{f} {what}"), e.encode(&key).into_bytes()));
        }
        v.push((format!("{f} hex"), hex::encode(&key).into_bytes()));
        v.push((format!("{f} HEX"), hex::encode_upper(&key).into_bytes()));
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_secrets(files: &[(String, Vec<u8>)], tar_bytes: &[u8], needles: &[(String, Vec<u8>)]) {
    for (what, n) in needles {
        for (name, bytes) in files {
            assert!(!contains(bytes, n), "the {what} is in {name}:\n{}", String::from_utf8_lossy(bytes));
        }
        assert!(!contains(tar_bytes, n), "the {what} is in the tar");
    }
}

fn diag(agent: &TestAgent, out: &Path) -> String {
    let stdout = agent.ok(&["diag", "-o", out.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the bundle is private");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left: {leftovers:?}");
    stdout
}

#[test]
fn the_bundle_has_its_parts_and_no_secret() {
    let work = tempfile::tempdir().unwrap();
    let log_file = work.path().join("logs/agent.jsonl");
    let mut agent = TestAgent::with_config(&format!("[log]\nfile = \"{}\"\nmax_bytes = 1048576\n", log_file.display()));
    // Keys, a camera with a password in its URL (nothing answers there), a destination with a key.
    agent.ok(&["device", "show"]);
    let dead = free_port();
    agent.ok(&["camera", "add", "cam1", "--url", &format!("rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:{dead}/stream1")]);
    let ingest = free_port();
    agent.ok(&[
        "destination",
        "add",
        "d1",
        "--platform",
        "custom",
        "--url",
        &format!("rtmp://127.0.0.1:{ingest}/live"),
        "--key",
        STREAM_KEY,
    ]);
    agent.ok(&["stream", "start", "r1", "--camera", "cam1", "--destination", "d1"]);
    agent.spawn();
    agent.wait_up(Duration::from_secs(20));
    // The relay's camera ingest fails (nobody listens): there is FFmpeg output and an event.
    agent.wait_for("r1", Duration::from_secs(40), "the camera ingest to fail", |s| {
        s["status"]["ingest"]["last_error"].is_string()
    });

    let out = work.path().join("bundle.tar.zst");
    let printed = diag(&agent, &out);
    assert!(printed.contains("bundle.tar.zst"), "{printed}");
    let (files, tar_bytes) = unpack(&out);
    for (name, bytes) in &files {
        assert!(!bytes.is_empty(), "{name} is empty");
    }
    let readme = file(&files, "README.txt");
    assert!(readme.contains("daemon was running"), "{readme}");
    let config = file(&files, "config.toml");
    assert!(config.contains("reconcile_interval_ms = 200") && config.contains("agent.jsonl"), "{config}");
    let versions = file(&files, "versions.txt");
    assert!(versions.contains(env!("CARGO_PKG_VERSION")) && versions.contains("ffmpeg version"), "{versions}");
    let hw: Value = serde_json::from_str(file(&files, "hardware.json")).expect("hardware.json is JSON");
    assert!(hw["chosen"].is_string(), "{hw:#}");
    let db: Value = serde_json::from_str(file(&files, "db-summary.json")).expect("db-summary.json is JSON");
    assert!(db["schema_version"].as_i64().is_some_and(|v| v >= 6), "{db:#}");
    assert_eq!(db["rows"]["cameras"], 1, "{db:#}");
    assert_eq!(db["cameras"][0]["id"], "cam1");
    assert_eq!(db["destinations"][0]["url"], format!("rtmp://127.0.0.1:{ingest}/live/***"));
    assert_eq!(db["streams"][0]["id"], "r1");
    for (name, min) in [("events.jsonl", 1), ("logs.jsonl", 5)] {
        let lines: Vec<Value> = file(&files, name)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect();
        assert!(lines.len() >= min, "{name}: {} lines", lines.len());
        if name == "logs.jsonl" {
            assert!(lines.iter().all(|l| l["level"].is_string() && l["ts"].is_string()), "{lines:#?}");
        }
    }
    let ffmpeg: Vec<&String> = files.iter().map(|(n, _)| n).filter(|n| n.starts_with("ffmpeg/")).collect();
    assert!(ffmpeg.iter().any(|n| n.contains("relay_r1")), "the relay's jobs are reported: {ffmpeg:?}");
    assert_no_secrets(&files, &tar_bytes, &needles(&agent.data_dir()));

    // The daemon's own output: one JSON object per line on stdout (not a terminal here).
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "{log}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v.get("ts").is_none(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("\"job\":\"relay:r1/")), "FFmpeg job lines name the job:\n{log}");

    // Without the daemon: the rest is still written, and the logs come from the log file.
    agent.stop();
    let kept = std::fs::read_to_string(&log_file).expect("the log file was written");
    assert!(kept.lines().all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["ts"].is_string())), "{kept}");
    let out2 = work.path().join("offline.tar.zst");
    diag(&agent, &out2);
    let (files, tar_bytes) = unpack(&out2);
    let readme = file(&files, "README.txt");
    assert!(readme.contains("daemon is not running") && readme.contains("log file"), "{readme}");
    assert!(file(&files, "logs.jsonl").lines().count() >= 5);
    assert!(!files.iter().any(|(n, _)| n.starts_with("ffmpeg/")), "no FFmpeg output without the daemon");
    for name in ["config.toml", "versions.txt", "hardware.json", "db-summary.json", "events.jsonl"] {
        assert!(!file(&files, name).is_empty(), "{name}");
    }
    assert_no_secrets(&files, &tar_bytes, &needles(&agent.data_dir()));
}

#[test]
fn a_bundle_that_cannot_be_written_fails_cleanly() {
    let agent = TestAgent::new();
    let out = agent.cli(&["diag", "-o", "/nonexistent-dir/x.tar.zst"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.tar.zst"));
    let out = agent.cli(&["diag", "-o", "x.tar.zst", "--events", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
