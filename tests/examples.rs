//! The files in `examples/` work as shipped: the venue config passes `check-config`, and
//! `examples/setup.sh` (cameras, a YouTube destination, the example timeline with its logo and
//! lower thirds, a daily schedule) runs against a fresh data dir with the real CLI.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn the_example_config_is_valid() {
    let out = Command::new(AGENT_BIN)
        .arg("--config")
        .arg(examples().join("venue.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("device_id = \"harbour-01\""), "{text}");
}

#[test]
fn the_example_setup_loads_the_show_and_its_schedule() {
    let agent = TestAgent::new();
    let data = agent.data_dir();
    let mut child = Command::new(examples().join("setup.sh"))
        .env("AGENT_CLI", format!("{AGENT_BIN} --data-dir {}", data.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"example-stream-key\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "setup.sh: {}", String::from_utf8_lossy(&out.stderr));
    let cli = |args: &[&str]| -> Value {
        let mut a = vec!["--data-dir", data.to_str().unwrap()];
        a.extend_from_slice(args);
        let out = Command::new(AGENT_BIN).args(&a).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let timelines = cli(&["timeline", "list", "--json"]).to_string();
    assert!(timelines.contains("harbour-day"), "{timelines}");
    let schedules = cli(&["schedule", "list", "--json"]).to_string();
    assert!(schedules.contains("daytime") && schedules.contains("Europe/London"), "{schedules}");
    let cameras = cli(&["camera", "list", "--json"]).to_string();
    for c in ["harbour", "pier", "beach"] {
        assert!(cameras.contains(c), "{cameras}");
    }
    let destinations = cli(&["destination", "list", "--json"]).to_string();
    assert!(destinations.contains("youtube") && !destinations.contains("example-stream-key"), "{destinations}");
}
