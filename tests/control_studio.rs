//! The reference studio client and the WebSocket link, and interoperability with an independent
//! implementation of the contract (tests/interop/vistter_interop.py, Python):
//! - over WebSocket (`studio serve-ws`, mTLS) with MQTT connected too: a command is answered on
//!   the transport it came in on, telemetry goes on both, the NACK and dedupe cases hold, also
//!   after a restart;
//! - a DEVICE_CONFIG signed and sealed by the Python implementation is accepted, its stream key
//!   works at a real ingest, and that key appears nowhere in the broker's persistence file, the
//!   agent's log, its telemetry or its replies; the agent's messages verify in Python; `studio
//!   send` signs, seals and prints verified replies.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mqtt::{Broker, Pki, Sub, WsServer};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use vistter_agent::control::envelope::{sign, timestamp_now};

const PREFIX: &str = "vistter/v1";

fn studio_key(dir: &Path, id: &str) -> (PathBuf, SigningKey, String) {
    let path = dir.join(format!("{id}.json"));
    let out = Command::new(AGENT_BIN).args(["studio", "keygen", "--key-id", id, "-o"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "studio keygen: {}", String::from_utf8_lossy(&out.stderr));
    let k: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    use base64::Engine;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(k["private_key_seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    (path, SigningKey::from_bytes(&seed), k["public_key"].as_str().unwrap().to_string())
}

fn signed(key: &SigningKey, key_id: &str, device: &str, id: &str, ty: &str, payload: Value) -> String {
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": device, "type": ty, "payload": payload});
    sign(m.as_object_mut().unwrap(), key_id, key).unwrap();
    m.to_string()
}

#[test]
fn the_websocket_link_answers_on_its_own_transport_and_refuses_what_mqtt_refuses() {
    let device = "vs-ws";
    let pki = Pki::new(device);
    let keys = tempfile::tempdir().unwrap();
    let (key_path, key, public) = studio_key(keys.path(), "studio-ws");
    let b = Broker::start(None);
    let mut ws = WsServer::start(&pki, &key_path);
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{device}\"\nmetrics_interval_s = 2\n\
         [control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n\
         [control.ws]\nurl = \"wss://127.0.0.1:{}/v1/devices/{{device_id}}/channel\"\n{}ping_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n",
        b.port,
        ws.port,
        pki.config_lines()
    ));
    agent.ok(&["trust", "add", "studio-ws", "--public-key", &public]);
    let mqtt = Sub::new(b.port, &format!("{PREFIX}/devices/{device}/#"));
    agent.spawn();
    let birth = ws.next_where(Duration::from_secs(30), "the birth", |m| m["type"] == "STATE");
    assert_eq!(birth["payload"]["online"], true);
    assert_eq!(birth["payload"]["link"]["ws"], "connected", "{birth}");
    assert_eq!(birth["payload"]["capabilities"]["transports"], json!(["mqtt", "ws"]));
    let t0 = Instant::now();
    loop {
        let st: Value = serde_json::from_str(&agent.ok(&["status", "--json"])).unwrap();
        if st["links"] == json!({"mqtt": "connected", "ws": "connected"}) {
            assert_eq!(st["daemon_running"], true);
            // The status server's picture says when each link last heard from the other side.
            let contact = &st["live"]["cloud_last_contact_s"];
            for t in ["mqtt", "ws"] {
                assert!(contact[t].as_f64().is_some_and(|s| s < 60.0), "last contact of {t}: {st}");
            }
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "`status` never showed both links connected: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A command over WebSocket is answered there, and only there.
    ws.send(json!({"device": device, "type": "PING", "payload": {}}));
    let ack = ws.next_where(Duration::from_secs(15), "the ACK", |m| m["type"] == "ACK");
    let id = ack["correlation_id"].as_str().unwrap().to_string();
    let result = ws.next_where(Duration::from_secs(15), "the RESULT", |m| m["type"] == "RESULT");
    assert_eq!(
        (result["correlation_id"].as_str(), result["payload"]["status"].as_str()),
        (Some(&*id), Some("succeeded"))
    );
    // Telemetry goes on both links.
    ws.next_where(Duration::from_secs(10), "METRICS over WebSocket", |m| m["type"] == "METRICS");
    let on_mqtt = mqtt.drain(Duration::from_secs(3));
    assert!(on_mqtt.iter().any(|m| m["type"] == "METRICS"), "METRICS over MQTT too");
    assert!(!on_mqtt.iter().any(|m| m["correlation_id"] == id.as_str()), "the reply stayed on its own transport");

    // The NACK cases, over WebSocket.
    let good = |id: &str, ty: &str, payload: Value| signed(&key, "studio-ws", device, id, ty, payload);
    let cases: Vec<(String, &str)> = vec![
        ("{oops".into(), "invalid_envelope"),
        ("null".into(), "invalid_envelope"),
        ("[".repeat(5000), "invalid_envelope"),
        ("x".repeat(300 * 1024), "invalid_envelope"),
        (r#"{"schema_version": "9.0"}"#.into(), "unsupported_version"),
        (
            good("11111111-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({})).replace("\"PING\"", "\"PONG\""),
            "bad_signature",
        ),
        (good("22222222-6a4e-4f6f-9d2e-3c7a1d2b8e11", "REBOOT", json!({})), "unsupported_type"),
        (
            signed(&key, "studio-ws", "another", "33333333-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({})),
            "wrong_device",
        ),
        (signed(&key, "nobody", device, "44444444-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({})), "unknown_key"),
        (
            good(
                "55555555-6a4e-4f6f-9d2e-3c7a1d2b8e11",
                "OVERLAY_UPDATE",
                json!({"action": "show", "overlay_id": "o",
                 "overlay": {"type": "text", "text": "x", "opacity": 7}}),
            ),
            "schema_violation",
        ),
    ];
    for (raw, code) in &cases {
        ws.send(json!({"device": device, "raw": raw}));
        let n = ws.next_where(Duration::from_secs(15), "a NACK", |m| m["type"] == "NACK");
        assert_eq!(n["payload"]["code"], *code, "{raw} → {n}");
    }

    // Dedupe over WebSocket: the same message again, and after a restart: the identical replies.
    let once = good("66666666-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({}));
    ws.send(json!({"device": device, "raw": once}));
    let first = ws.replies_to("66666666-6a4e-4f6f-9d2e-3c7a1d2b8e11", 2);
    ws.send(json!({"device": device, "raw": once}));
    assert_eq!(ws.replies_to("66666666-6a4e-4f6f-9d2e-3c7a1d2b8e11", 2), first);
    agent.stop();
    agent.spawn();
    ws.next_where(Duration::from_secs(30), "the birth after a restart", |m| {
        m["type"] == "STATE" && m["payload"]["online"] == true
    });
    ws.send(json!({"device": device, "raw": once}));
    assert_eq!(ws.replies_to("66666666-6a4e-4f6f-9d2e-3c7a1d2b8e11", 2), first, "after a restart");
    assert!(agent.pid().is_some_and(alive));
}

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/setup.sh (it makes the Python virtual environment)", p.display());
    p
}

fn interop(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/vistter_interop.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.as_mut().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn an_independent_implementation_commands_the_agent_and_a_sealed_stream_key_works_but_never_shows() {
    let device = "vs-interop";
    let secret = "interop-key-7f3a9c";
    let examples: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples/test-keys.json"))
            .unwrap(),
    )
    .unwrap();
    let studio = &examples["studio"];
    let mut b = Broker::start_with(None, true);
    let cam = RtspCamera::start("ball");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{device}\"\nmetrics_interval_s = 2\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\n",
        b.port
    ));
    agent.ok(&["camera", "add", "cam1", "--url", &cam.url()]);
    agent.ok(&[
        "trust",
        "add",
        studio["key_id"].as_str().unwrap(),
        "--public-key",
        studio["public_key"].as_str().unwrap(),
    ]);
    let dev: Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    let (device_key, sealing_key) = (
        dev["device_public_key"].as_str().unwrap().to_string(),
        dev["device_sealing_key"].as_str().unwrap().to_string(),
    );
    let everything = Sub::new(b.port, &format!("{PREFIX}/devices/{device}/#"));
    agent.spawn();
    everything.next_where(Duration::from_secs(30), "the birth", |m| m["type"] == "STATE");

    // Python signs and seals a DEVICE_CONFIG from the published contract; the agent accepts it and
    // its replies verify in Python.
    let payload = json!({"mode": "merge", "destinations": [
        {"id": "yt", "platform": "custom", "url": ingest.url(), "stream_key": secret}]});
    // The Python client sends one command, sealing the secret at `pointer`.
    let python_send = |ty: &str, payload: &Value, pointer: &str| {
        interop(
            &[
                "mqtt-command",
                "--port",
                &b.port.to_string(),
                "--prefix",
                PREFIX,
                "--device-id",
                device,
                "--seed",
                studio["private_key_seed"].as_str().unwrap(),
                "--key-id",
                studio["key_id"].as_str().unwrap(),
                "--device-public-key",
                &device_key,
                "--type",
                ty,
                "--payload",
                &payload.to_string(),
                "--seal",
                pointer,
                "--sealing-key",
                &sealing_key,
            ],
            None,
        )
    };
    let (ok, out) = python_send("DEVICE_CONFIG", &payload, "/destinations/0/stream_key");
    assert!(ok, "the Python client: {out}");
    let out: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let types: Vec<&str> = out["replies"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ACK", "RESULT"], "{out}");
    assert_eq!(out["replies"][1]["payload"]["status"], "succeeded", "{out}");
    assert!(!out["command"].to_string().contains(secret), "Python sealed the key");

    // A camera password sealed by Python: accepted, stored (sealed at rest), never shown.
    let cam_payload = json!({"action": "add", "camera_id": "cam2", "camera": {"url": cam.url(), "username": "admin",
                             "password": format!("{secret}-cam")}});
    let (ok, out) = python_send("CAMERA_ACTION", &cam_payload, "/camera/password");
    assert!(ok, "the Python client: {out}");
    assert!(out.contains("\"succeeded\""), "{out}");
    let cams = agent.ok(&["camera", "list", "--json"]);
    assert!(cams.contains("\"cam2\"") && cams.contains("admin") && !cams.contains(secret), "{cams}");

    // The key works at the ingest: nginx-rtmp names each recording after the stream key.
    agent.start_program(&["cam1"], &["yt"]);
    let t0 = Instant::now();
    while !ingest.recordings().iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with(secret)) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no recording under the key: {:?}", ingest.recordings());
        std::thread::sleep(Duration::from_millis(300));
    }

    // `studio send` (the agent's own client) signs and seals too, and prints verified replies.
    let keyfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keyfile.path(), studio.to_string()).unwrap();
    let send = Command::new(AGENT_BIN)
        .args(["studio", "send", "--broker", &format!("mqtt://127.0.0.1:{}", b.port), "--device", device])
        .arg("--key")
        .arg(keyfile.path())
        .args(["--type", "DEVICE_CONFIG", "--payload"])
        .arg(json!({"mode": "merge", "destinations": [{"id": "yt2", "platform": "custom", "url": ingest.url(), "stream_key": "x"}]}).to_string())
        .args(["--seal", &format!("/destinations/0/stream_key={secret}-2")])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&send.stdout).to_string();
    assert!(send.status.success(), "studio send: {printed} {}", String::from_utf8_lossy(&send.stderr));
    let replies: Vec<Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(replies.len(), 2, "{printed}");
    assert!(replies.iter().all(|r| r["verified"] == true), "{printed}");
    let listed = agent.ok(&["destination", "list", "--json"]);
    assert!(listed.contains("\"yt2\"") && !listed.contains(secret), "{listed}");

    // CAMERA_ACTION snapshot: the camera's current picture, a JPEG in the RESULT.
    let snap = Command::new(AGENT_BIN)
        .args(["studio", "send", "--broker", &format!("mqtt://127.0.0.1:{}", b.port), "--device", device])
        .arg("--key")
        .arg(keyfile.path())
        .args(["--type", "CAMERA_ACTION", "--payload", r#"{"action": "snapshot", "camera_id": "cam1"}"#])
        .output()
        .unwrap();
    assert!(snap.status.success(), "snapshot: {}", String::from_utf8_lossy(&snap.stdout));
    let last: Value = serde_json::from_str(String::from_utf8_lossy(&snap.stdout).lines().last().unwrap()).unwrap();
    let jpeg = last["message"]["payload"]["output"]["jpeg_base64"].as_str().unwrap_or_default().to_string();
    assert!(jpeg.starts_with("/9j/") && jpeg.len() <= 200 * 1024 * 4 / 3 + 4, "a JPEG of at most 200 KiB: {last}");

    // The agent's telemetry verifies in Python too.
    let telemetry = everything.drain(Duration::from_secs(4));
    let from_device: Vec<&Value> = telemetry.iter().filter(|m| m.get("seq").is_some()).collect();
    assert!(from_device.iter().any(|m| m["type"] == "METRICS"), "METRICS seen");
    let lines: String = from_device.iter().map(|m| format!("{m}\n")).collect();
    let (ok, out) = interop(&["verify", "--public-key", &device_key], Some(&lines));
    assert!(ok, "Python could not verify the agent's messages: {out}");

    // The key is nowhere: not in the broker's persistence file, the agent's log, telemetry or replies.
    agent.stop();
    b.stop();
    let db = std::fs::read(b.persistence_file()).expect("mosquitto wrote its persistence file");
    assert!(!db.is_empty());
    assert!(!String::from_utf8_lossy(&db).contains(secret), "the broker's persistence file holds the key");
    assert!(!agent.log().contains(secret), "the agent's log holds the key");
    for m in &telemetry {
        assert!(!m.to_string().contains(secret), "a message holds the key: {m}");
    }
}

/// `studio send` each command and return its printed replies (ACK … RESULT), all verified.
fn studio_send(port: u16, device: &str, key: &Path, ty: &str, payload: Value) -> Vec<Value> {
    let out = Command::new(AGENT_BIN)
        .args(["studio", "send", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--device", device])
        .arg("--key")
        .arg(key)
        .args(["--type", ty, "--payload", &payload.to_string()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "studio send {ty}: {printed} {}", String::from_utf8_lossy(&out.stderr));
    let replies: Vec<Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(replies.iter().all(|r| r["verified"] == true), "{printed}");
    let types: Vec<&str> = replies.iter().map(|r| r["message"]["type"].as_str().unwrap()).collect();
    assert_eq!((types.first(), types.last()), (Some(&"ACK"), Some(&"RESULT")), "{printed}");
    replies
}

/// End to end through the broker with `studio send`: a loaded timeline plays to a real ingest, an
/// overlay is shown and its variable changed, the emergency slate goes on: each has its ACK and
/// RESULT, and each is seen in the recording.
#[test]
fn studio_send_drives_a_show_whose_changes_are_seen_in_the_recording() {
    const W: u32 = 16;
    const H: u32 = 9;
    let device = "vs-e2e";
    let keys = tempfile::tempdir().unwrap();
    let (key_path, _, public) = studio_key(keys.path(), "studio-e2e");
    let b = Broker::start(None);
    let red = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{device}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\n",
        b.port
    ));
    agent.ok(&["trust", "add", "studio-e2e", "--public-key", &public]);
    agent.ok(&["camera", "add", "r", "--url", &red.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "e2e-key"]);
    let tl = json!({"id": "e2e", "name": "e2e", "duration": 120, "fps": 25, "resolution": "320x180", "loop": false,
        "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 120, "action": "show_camera",
                                        "params": {"camera_id": "r"}}]}, "overlays": []}});
    let file = keys.path().join("e2e.json");
    std::fs::write(&file, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", &file.display().to_string()]);
    let states = Sub::new(b.port, &format!("{PREFIX}/devices/{device}/state"));
    agent.spawn();
    states.next_where(Duration::from_secs(30), "the birth", |m| m["payload"]["online"] == true);
    std::thread::sleep(Duration::from_millis(300));

    let send = |ty: &str, payload: Value| studio_send(b.port, device, &key_path, ty, payload);
    send("TIMELINE_EXECUTE", json!({"action": "play", "timeline_id": "e2e", "destination_ids": ["d1"]}));
    agent.wait_show(Duration::from_secs(30), "playing", |s| s["status"]["engine"]["position_s"].as_f64() > Some(2.0));
    // A text box on a green background in the top-left corner; its variable makes it wider.
    send(
        "OVERLAY_UPDATE",
        json!({"action": "show", "overlay_id": "score", "overlay": {"type": "text", "text": "{{var:score}}",
               "position": "top_left", "offset": {"x": 0, "y": 0}, "font_size": 48, "color": "#00FF00",
               "background": "#00FF00"}}),
    );
    send("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"score": "1"}}));
    std::thread::sleep(Duration::from_secs(2));
    send("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"score": "1234567890"}}));
    std::thread::sleep(Duration::from_secs(2));
    send("STREAM_CONTROL", json!({"command": "emergency_slate", "on": true}));
    std::thread::sleep(Duration::from_secs(2));
    // The cloud started it, so the local operator may not stop it: the cloud does.
    assert!(!agent.cli(&["timeline", "stop"]).status.success(), "cloud > local operator");
    send("TIMELINE_EXECUTE", json!({"action": "stop"}));
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let frames = decode_rgb(&recs[0], W, H);
    let corner = classes(&frames, W, 0, 1);
    let wide = classes(&frames, W, 8, 1);
    let bottom = classes(&frames, W, 14, 7);
    let played = first_from(&bottom, 0, 'R').expect("the red camera played");
    let shown = first_from(&corner, played, 'G').expect("the overlay was shown in the corner");
    assert_eq!(wide.get(shown), Some(&'R'), "with a short value the box is narrow");
    let widened = first_from(&wide, shown, 'G').expect("set_vars widened the box");
    let slate = first_from(&bottom, widened, 'S').expect("the emergency slate went on air");
    eprintln!("frames: played {played}, overlay {shown}, set_vars {widened}, slate {slate} of {}", frames.len());
}

/// A frame far over the message limit (and over the WebSocket client's own limit) from the
/// server: answered `invalid_envelope` with `correlation_id: null`, and the connection stays: no
/// new birth STATE, and a PING after it is answered at once.
#[test]
fn a_poison_frame_cannot_wedge_the_websocket_link() {
    let device = "vs-ws-poison";
    let pki = Pki::new(device);
    let keys = tempfile::tempdir().unwrap();
    let (key_path, _key, public) = studio_key(keys.path(), "studio-ws");
    let mut ws = WsServer::start(&pki, &key_path);
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{device}\"\nmax_message_bytes = 65536\n\
         [control.ws]\nurl = \"wss://127.0.0.1:{}/v1/devices/{{device_id}}/channel\"\n{}ping_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n",
        ws.port,
        pki.config_lines()
    ));
    agent.ok(&["trust", "add", "studio-ws", "--public-key", &public]);
    agent.spawn();
    ws.next_where(Duration::from_secs(30), "the birth", |m| m["type"] == "STATE" && m["payload"]["online"] == true);

    ws.send(json!({"device": device, "raw": "{".to_string() + &"x".repeat(1 << 20)}));
    let n = ws.next_where(Duration::from_secs(15), "a NACK", |m| m["type"] == "NACK");
    assert_eq!(n["payload"]["code"], "invalid_envelope", "{n}");
    assert_eq!(n["correlation_id"], Value::Null, "{n}");
    assert!(n["payload"]["message"].as_str().unwrap().contains("over the"), "{n}");

    let t0 = Instant::now();
    ws.send(json!({"device": device, "type": "PING", "payload": {}}));
    let ack = ws.next_where(Duration::from_secs(15), "the PING's ACK", |m| m["type"] == "ACK" || m["type"] == "STATE");
    eprintln!("PING after the poison frame answered in {} ms", t0.elapsed().as_millis());
    assert_eq!(ack["type"], "ACK", "the link reconnected (a new birth) before answering: {ack}");
    assert!(t0.elapsed() < Duration::from_secs(3), "the PING waited {:?}", t0.elapsed());
    assert!(agent.pid().is_some_and(alive));
}
