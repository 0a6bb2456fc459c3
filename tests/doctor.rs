//! `vistter-agent doctor`: one line per check with the fix, the documented exit codes (0 ok or
//! warnings, 1 warnings with --strict, 2 a failure), secrets found in files readable by everyone,
//! the daemon seen running or not, cameras that do not answer (their password never printed), a
//! broken configuration reported as a finding, and nothing changed on the box.
//!
//! Every run names the service user (the current one): a machine with a `vistter` user would
//! otherwise be checked against it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().expect("the current user has a name").name
}

fn doctor(agent: &TestAgent, extra: &[&str]) -> (i32, String) {
    let me = me();
    let mut args = vec!["doctor", "--service-user", &me];
    args.extend_from_slice(extra);
    let out: Output = agent.cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.is_empty(), "doctor writes its report to stdout only: {stderr}");
    (out.status.code().unwrap_or(-1), stdout)
}

/// The report's line for `check` (`ok   ffmpeg: …`); panics with the report when there is none.
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(&format!("{check}: "))))
        .unwrap_or_else(|| panic!("no line for {check:?} in:\n{report}"))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Names, sizes and modes of everything under `dir`: what "changes nothing" is checked against.
fn snapshot(dir: &Path) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.push((e.path().display().to_string(), m.len(), m.permissions().mode()));
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_healthy_box_without_its_daemon_passes_with_one_warning_and_nothing_is_changed() {
    let agent = TestAgent::new();
    agent.ok(&["camera", "list"]); // makes the data dir, the database and the device key
    chmod(&agent.data_dir(), 0o700);
    chmod(&agent.config_path(), 0o640);
    let before = snapshot(&agent.data_dir());

    let (code, report) = doctor(&agent, &[]);
    assert_eq!(code, 0, "only a warning, without --strict:\n{report}");
    assert!(line(&report, "config").starts_with("ok "), "{report}");
    assert!(line(&report, "config file").starts_with("ok "), "{report}");
    let ffmpeg = line(&report, "ffmpeg");
    assert!(ffmpeg.starts_with("ok ") && ffmpeg.contains("with libx264, aac"), "{report}");
    assert!(line(&report, "ffprobe").starts_with("ok "), "{report}");
    assert!(line(&report, "hardware encoder").starts_with("ok "), "{report}");
    assert!(line(&report, "fonts").contains("DejaVuSans.ttf"), "{report}");
    assert!(
        line(&report, "data dir").starts_with("ok ") && line(&report, "data dir").contains("mode 0700"),
        "{report}"
    );
    assert!(line(&report, "data dir contents").starts_with("ok "), "{report}");
    assert!(line(&report, "device key").contains("mode 0600"), "{report}");
    let daemon = line(&report, "daemon");
    assert!(daemon.starts_with("warn daemon: not running") && daemon.contains("agent.sock"), "{report}");
    assert!(line(&report, "status page").contains("loopback only"), "{report}");
    assert!(line(&report, "cameras").starts_with("ok   cameras: none configured"), "{report}");
    assert!(line(&report, "cloud link").contains("not configured"), "{report}");
    assert!(line(&report, "clock skew").contains("not measured"), "{report}");
    assert!(!report.lines().any(|l| l.starts_with("fail")), "{report}");

    let (code, _) = doctor(&agent, &["--strict"]);
    assert_eq!(code, 1, "a warning with --strict");
    assert_eq!(snapshot(&agent.data_dir()), before, "doctor changed nothing in the data dir");
}

#[test]
fn secrets_readable_by_every_user_fail_with_the_chmod_that_fixes_them() {
    let tls = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(tls.path().join(f), "-----BEGIN SOMETHING-----\n").unwrap();
        chmod(&tls.path().join(f), 0o644);
    }
    let p = |f: &str| tls.path().join(f).display().to_string();
    let mqtt = |url: &str| {
        format!(
            "[control.mqtt]\nurl = \"{url}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            p("ca.pem"),
            p("cert.pem"),
            p("key.pem")
        )
    };
    // A password written into the broker's URL: the configuration is refused (the device signs in with
    // its certificate), and the file that holds the password is flagged as readable by every user.
    let agent = TestAgent::with_config(&mqtt("mqtts://device:Pa55word-x@127.0.0.1:8883"));
    chmod(&agent.config_path(), 0o644);
    let (code, report) = doctor(&agent, &[]);
    assert_eq!(code, 2, "a failure:\n{report}");
    let config = agent.config_path().display().to_string();
    let c = line(&report, "config file");
    assert!(c.starts_with("fail ") && c.contains(&config) && c.contains("password"), "{report}");
    assert!(c.contains(&format!("chmod 0600 {config}")), "{report}");
    let refused = line(&report, "config");
    assert!(refused.starts_with("fail ") && refused.contains("control.mqtt.url must not carry"), "{report}");
    assert!(!report.contains("Pa55word-x"), "the password is never printed:\n{report}");

    // Without it, the client key readable by every user fails with the chmod that fixes it.
    let agent = TestAgent::with_config(&mqtt("mqtts://127.0.0.1:8883"));
    chmod(&agent.config_path(), 0o644);
    let (code, report) = doctor(&agent, &[]);
    assert_eq!(code, 2, "a failure:\n{report}");
    assert!(line(&report, "config file").starts_with("ok "), "no secret in the file:\n{report}");
    let k = line(&report, "control.mqtt key_file");
    assert!(
        k.starts_with("fail ") && k.contains("mode 0644") && k.contains(&format!("chmod 0600 {}", p("key.pem"))),
        "{report}"
    );
    assert!(line(&report, "control.mqtt cert_file").starts_with("ok "), "a certificate is no secret:\n{report}");
    let link = line(&report, "cloud link mqtt");
    assert!(link.contains("mqtts://127.0.0.1:8883") && link.contains("unknown"), "{report}");

    chmod(&tls.path().join("key.pem"), 0o600);
    let (_, report) = doctor(&agent, &[]);
    assert!(line(&report, "control.mqtt key_file").starts_with("ok "), "{report}");
}

#[test]
fn json_is_one_array_of_checks_and_a_broken_config_is_a_finding() {
    let agent = TestAgent::new();
    let (code, out) = doctor(&agent, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let checks = v.as_array().expect("an array");
    assert!(checks.len() > 10, "{out}");
    for c in checks {
        let obj = c.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{c}");
        assert!(c["check"].is_string() && c["detail"].is_string(), "{c}");
        match c["status"].as_str() {
            Some("ok") => assert!(c["fix"].is_null(), "{c}"),
            Some("warn" | "fail") => assert!(c["fix"].is_string(), "{c}"),
            other => panic!("status {other:?}: {c}"),
        }
    }
    assert!(checks.iter().any(|c| c["check"] == "daemon" && c["status"] == "warn"), "{out}");
    assert_eq!(code, 0, "{out}");

    // A configuration that does not load is a failing check, and the rest still runs.
    std::fs::write(agent.config_path(), "[ffmpeg]\nstale_seconds = 3\n").unwrap();
    let (code, report) = doctor(&agent, &[]);
    assert_eq!(code, 2, "{report}");
    let c = line(&report, "config");
    assert!(c.starts_with("fail ") && c.contains("stale_seconds"), "{report}");
    assert!(line(&report, "ffmpeg").starts_with("ok "), "{report}");
    let missing = std::process::Command::new(AGENT_BIN)
        .args(["--config", "/nonexistent/vistter.toml", "doctor", "--service-user", &me()])
        .env_remove("VISTTER_CONFIG")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&missing.stdout);
    assert_eq!(missing.status.code(), Some(2), "{report}");
    assert!(line(&report, "config").contains("does not exist"), "{report}");
}

#[test]
fn a_running_daemon_is_seen_on_its_socket_and_its_status_page() {
    let mut agent = TestAgent::new();
    agent.spawn();
    agent.wait_up(Duration::from_secs(30));
    let (code, report) = doctor(&agent, &[]);
    assert!(line(&report, "daemon").starts_with("ok   daemon: running"), "{report}");
    assert!(line(&report, "status page").contains("answers at 127.0.0.1:"), "{report}");
    assert!(line(&report, "data dir contents").starts_with("ok "), "{report}");
    assert_eq!(code, 0, "{report}");
}

#[test]
fn a_camera_whose_port_is_closed_is_unreachable_and_its_password_is_never_shown() {
    let agent = TestAgent::new();
    let port = free_port(); // nothing listens there
    agent.ok(&["camera", "add", "gate", "--url", &format!("rtsp://admin:Hunter2-pw@127.0.0.1:{port}/live")]);
    let (code, report) = doctor(&agent, &[]);
    assert_eq!(code, 2, "{report}");
    let cam = line(&report, "camera gate");
    assert!(cam.starts_with("fail ") && cam.contains("unreachable"), "{report}");
    assert!(cam.contains(&format!("rtsp://admin:***@127.0.0.1:{port}/live")), "the URL is shown masked:\n{report}");
    assert!(cam.contains("camera probe gate"), "{report}");
    let (_, json) = doctor(&agent, &["--json"]);
    for text in [&report, &json] {
        assert!(!text.contains("Hunter2-pw"), "the camera password is never printed:\n{text}");
    }
}

/// No FFmpeg where the configuration says, and a client certificate the service's user cannot
/// read (root's, mode 0600): each is its own failure with the command that fixes it.
#[test]
fn no_ffmpeg_and_a_certificate_the_service_cannot_read_are_each_named_with_their_fix() {
    let tls = tempfile::tempdir().unwrap();
    chmod(tls.path(), 0o755);
    for (f, mode) in [("ca.pem", 0o644), ("cert.pem", 0o600), ("key.pem", 0o600)] {
        std::fs::write(tls.path().join(f), "-----BEGIN SOMETHING-----\n").unwrap();
        chmod(&tls.path().join(f), mode);
    }
    let p = |f: &str| tls.path().join(f).display().to_string();
    let agent = TestAgent::with_config(&format!(
        "[ffmpeg]\npath = \"/nonexistent/ffmpeg\"\nffprobe = \"/nonexistent/ffprobe\"\n\
         [control.mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p("ca.pem"),
        p("cert.pem"),
        p("key.pem")
    ));
    chmod(&agent.config_path(), 0o644);
    let out = agent.cli(&["doctor", "--service-user", "nobody"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "a failure:\n{report}");
    let f = line(&report, "ffmpeg");
    assert!(
        f.starts_with("fail ") && f.contains("/nonexistent/ffmpeg") && f.contains("apt-get install ffmpeg"),
        "{report}"
    );
    // Only root can read the certificate and its key: the service (nobody here) cannot.
    for (check, file) in [("control.mqtt cert_file", "cert.pem"), ("control.mqtt key_file", "key.pem")] {
        let l = line(&report, check);
        assert!(
            l.starts_with("fail ") && l.contains("the service's user nobody cannot read") && l.contains(&p(file)),
            "{check}:\n{report}"
        );
        assert!(l.contains("chgrp") || l.contains("chown"), "the fix is named: {l}");
    }
    assert!(line(&report, "daemon").starts_with("warn "), "the daemon is not running:\n{report}");
}
