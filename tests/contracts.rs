//! The published control-plane contract (`schemas/control/`, `schemas/examples/`) against the
//! agent: every schema compiles offline, every golden message validates against the envelope
//! schema and its payload's, its signature verifies with the published test key, and the golden
//! commands pass the agent's own checks. The agent and the schemas agree on hostile payloads.
//!
//! `VSA_WRITE_GOLDEN=1 cargo test --test contracts` rewrites the golden files (signed with the
//! published test keys) and the signed-bytes walkthrough; without it they are only checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde_json::{json, Map, Value};
use vistter_agent::control::check::{Checker, NackCode};
use vistter_agent::control::envelope::{b64, sign, signed_bytes, Signature};
use vistter_agent::control::trust::{Role, TrustEntry, TrustStore};

const BASE: &str = "https://vistter.example/schemas/";
const DEVICE: &str = "vs-example-01";
/// Published, test-only seeds (schemas/examples/test-keys.json): never trust these on a device.
const STUDIO_SEED: [u8; 32] = [0x11; 32];
const DEVICE_SEED: [u8; 32] = [0x22; 32];
const STUDIO_KEY_ID: &str = "studio-test-2026";
const DEVICE_KEY_ID: &str = "vs-example-01";
const TIMESTAMP: &str = "2026-11-24T12:00:00.000Z";

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Resolves `https://vistter.example/schemas/…` to the repository's files: no network.
struct Files;

impl jsonschema::Retrieve for Files {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let rel = uri.as_str().strip_prefix(BASE).ok_or_else(|| format!("not one of ours: {uri}"))?;
        let text = std::fs::read_to_string(schemas_dir().join(rel))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn validator(file: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(schemas_dir().join(file)).unwrap()).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_retriever(Files)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file} compiles: {e}"))
}

fn payload_schema(ty: &str) -> String {
    format!("control/{}.v1.json", ty.to_lowercase())
}

/// The golden messages: (file name, message before signing, signed by the studio or the device).
fn golden() -> Vec<(&'static str, Value, bool)> {
    let id = |n: u32| format!("0b9f0c52-6a4e-4f6f-9d2e-{n:012x}");
    let cmd = |n: u32, ty: &str, payload: Value| {
        json!({"schema_version": "1.0", "message_id": id(n), "correlation_id": null, "timestamp": TIMESTAMP,
               "expires_at": "2026-11-24T12:05:00Z", "device_id": DEVICE, "type": ty, "payload": payload})
    };
    let reply = |n: u32, seq: u64, ty: &str, payload: Value| {
        json!({"schema_version": "1.0", "message_id": id(n), "correlation_id": id(1), "timestamp": TIMESTAMP,
               "device_id": DEVICE, "type": ty, "payload": payload, "seq": seq})
    };
    let telemetry = |n: u32, seq: u64, ty: &str, payload: Value| {
        json!({"schema_version": "1.0", "message_id": id(n), "correlation_id": null, "timestamp": TIMESTAMP,
               "device_id": DEVICE, "type": ty, "payload": payload, "seq": seq})
    };
    // A sealed value's bytes are random each time it is sealed; this one is fixed text of the
    // right shape (the device's sealing key is published in test-keys.json for real sealing).
    let sealed =
        json!({"sealed": "c2VhbGVkIHRvIHRoZSBkZXZpY2UncyBYMjU1MTkga2V5OyByZWdlbmVyYXRlIHdpdGggc3R1ZGlvIHNlbmQ="});
    vec![
        ("ping.json", cmd(1, "PING", json!({})), true),
        (
            "stream_control.json",
            cmd(
                2,
                "STREAM_CONTROL",
                json!({"command": "go_live", "timeline_id": "marina-daily", "destination_ids": ["youtube-main"]}),
            ),
            true,
        ),
        (
            "timeline_execute.json",
            cmd(3, "TIMELINE_EXECUTE", json!({"action": "seek", "timeline_id": "marina-daily", "position_s": 90.5})),
            true,
        ),
        (
            "overlay_update.json",
            cmd(
                4,
                "OVERLAY_UPDATE",
                json!({"action": "show", "overlay_id": "score", "overlay": {"type": "text", "text": "Home 2 - 1 Away", "position": "top_right", "opacity": 0.9, "font_size": 36, "color": "#FFFFFF", "background": "#00000080"}}),
            ),
            true,
        ),
        (
            "camera_action.json",
            cmd(
                5,
                "CAMERA_ACTION",
                json!({"action": "add", "camera_id": "dock", "camera": {"url": "rtsp://192.168.1.20:554/stream1", "username": "viewer", "password": sealed}}),
            ),
            true,
        ),
        (
            "device_config.json",
            cmd(
                6,
                "DEVICE_CONFIG",
                json!({"mode": "merge", "destinations": [{"id": "youtube-main", "platform": "youtube", "stream_key": sealed, "enabled": true}]}),
            ),
            true,
        ),
        (
            "timeline_load.json",
            cmd(
                7,
                "TIMELINE_LOAD",
                json!({"package_url": "https://studio.example/packages/marina-daily-7.vseg", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 1048576, "activate": true}),
            ),
            true,
        ),
        (
            "camera_action_discover.json",
            cmd(
                8,
                "CAMERA_ACTION",
                json!({"action": "discover", "discover": {"wait_ms": 3000, "username": "viewer", "password": sealed}}),
            ),
            true,
        ),
        ("ack.json", reply(101, 41, "ACK", json!({})), false),
        (
            "nack.json",
            reply(
                102,
                42,
                "NACK",
                json!({"code": "schema_violation", "message": "\"#zzzzzz\" is not a colour: use #RRGGBB or #RRGGBBAA", "pointer": "/payload/overlay/color"}),
            ),
            false,
        ),
        (
            "progress.json",
            reply(103, 43, "PROGRESS", json!({"percent": 40, "state": "preflight", "detail": "probing camera dock"})),
            false,
        ),
        (
            "result.json",
            reply(104, 44, "RESULT", json!({"status": "succeeded", "output": {"agent_time": TIMESTAMP}})),
            false,
        ),
        (
            "result_discover.json",
            reply(
                108,
                48,
                "RESULT",
                json!({"status": "succeeded", "output": {"kind": "cameras", "ignored_answers": 0, "cameras": [{
                    "address": "192.168.1.64",
                    "endpoint": "urn:uuid:4b1ec2a8-35c6-11b2-8c3a-bcad28d1e1f7",
                    "xaddrs": ["http://192.168.1.64/onvif/device_service"],
                    "onvif_url": "http://192.168.1.64/onvif/device_service",
                    "onvif_host": "192.168.1.64",
                    "onvif_port": 80,
                    "manufacturer": "HIKVISION",
                    "model": "DS-2CD2142FWD-I",
                    "firmware": "V5.5.82 build 190220",
                    "scopes": {"name": "HIKVISION DS-2CD2142FWD-I", "hardware": "DS-2CD2142FWD-I"},
                    "streams": [
                        {"profile": "Profile_1", "name": "mainStream", "url": "rtsp://192.168.1.64:554/Streaming/Channels/101", "encoding": "H264", "width": 2688, "height": 1520},
                        {"profile": "Profile_2", "name": "subStream", "url": "rtsp://192.168.1.64:554/Streaming/Channels/102", "encoding": "H264", "width": 640, "height": 480}
                    ],
                    "add_command": "vistter-agent camera add cam-192-168-1-64 --url 'rtsp://192.168.1.64:554/Streaming/Channels/101' --username 'viewer' --password-stdin --onvif-host '192.168.1.64' --onvif-port 80"
                }]}}),
            ),
            false,
        ),
        (
            "event.json",
            telemetry(
                105,
                45,
                "EVENT",
                json!({"event_type": "camera_down", "severity": "warning", "context": {"camera_id": "dock", "program": "show"}}),
            ),
            false,
        ),
        (
            "metrics.json",
            telemetry(
                106,
                46,
                "METRICS",
                json!({"cpu": {"percent": 23.5}, "memory": {"rss_mb": 19.6}, "temperature": {"soc_c": 51.0}, "disk": {"free_mb": 20480}, "network": {"tx_kbps": 2600}, "programs": [{"id": "show", "fps": 30, "speed": 1.0}], "destinations": [{"id": "youtube-main", "state": "running", "bitrate_kbps": 2500}]}),
            ),
            false,
        ),
        (
            "state.json",
            telemetry(
                107,
                47,
                "STATE",
                json!({"online": true, "agent_version": "0.1.0", "device_public_key": b64(SigningKey::from_bytes(&DEVICE_SEED).verifying_key().as_bytes()), "device_sealing_key": b64(crypto_box::SecretKey::from(DEVICE_SEED).public_key().as_bytes()), "capabilities": {"commands": ["PING", "STREAM_CONTROL", "TIMELINE_EXECUTE", "OVERLAY_UPDATE", "CAMERA_ACTION", "DEVICE_CONFIG", "TIMELINE_LOAD"], "transports": ["mqtt", "ws"], "encoder": "libx264", "features": []}, "link": {"mqtt": "connected"}, "segments": [], "program": null}),
            ),
            false,
        ),
    ]
}

fn write_golden() {
    let dir = schemas_dir().join("examples");
    std::fs::create_dir_all(&dir).unwrap();
    let (studio, device) = (SigningKey::from_bytes(&STUDIO_SEED), SigningKey::from_bytes(&DEVICE_SEED));
    for (file, msg, by_studio) in golden() {
        let mut m = msg.as_object().unwrap().clone();
        if by_studio {
            sign(&mut m, STUDIO_KEY_ID, &studio).unwrap();
        } else {
            sign(&mut m, DEVICE_KEY_ID, &device).unwrap();
        }
        std::fs::write(dir.join(file), serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
    }
    let keys = json!({
        "warning": "TEST ONLY. These private keys are published: never trust them on a real device.",
        "studio": {"key_id": STUDIO_KEY_ID, "roles": ["command"], "private_key_seed": b64(&STUDIO_SEED),
                   "public_key": b64(studio.verifying_key().as_bytes())},
        "device": {"device_id": DEVICE, "key_id": DEVICE_KEY_ID, "private_key_seed": b64(&DEVICE_SEED),
                   "device_public_key": b64(device.verifying_key().as_bytes()),
                   "sealing_private_key": b64(&DEVICE_SEED),
                   "device_sealing_key": b64(crypto_box::SecretKey::from(DEVICE_SEED).public_key().as_bytes())},
    });
    std::fs::write(dir.join("test-keys.json"), serde_json::to_string_pretty(&keys).unwrap() + "\n").unwrap();
}

fn read(file: &str) -> Map<String, Value> {
    let path = schemas_dir().join("examples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (VSA_WRITE_GOLDEN=1 cargo test --test contracts writes the golden files)", path.display())
    });
    serde_json::from_str(&text).unwrap()
}

fn trust() -> TrustStore {
    let pk = b64(SigningKey::from_bytes(&STUDIO_SEED).verifying_key().as_bytes());
    let mut t = TrustStore::default();
    t.add(TrustEntry::new(STUDIO_KEY_ID, &pk, &[Role::Command]).unwrap()).unwrap();
    t
}

#[test]
fn golden_messages_validate_verify_and_pass_the_agents_checks() {
    if std::env::var("VSA_WRITE_GOLDEN").as_deref() == Ok("1") {
        write_golden();
    }
    let envelope = validator("control/envelope.v1.json");
    let (studio, device) =
        (SigningKey::from_bytes(&STUDIO_SEED).verifying_key(), SigningKey::from_bytes(&DEVICE_SEED).verifying_key());
    let trust = trust();
    let checker = Checker { device_id: DEVICE, trust: &trust, max_bytes: 256 * 1024 };
    let mut types = Vec::new();
    for (file, _, by_studio) in golden() {
        let m = read(file);
        let v = Value::Object(m.clone());
        let errs: Vec<String> = envelope.iter_errors(&v).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errs.is_empty(), "{file}: envelope schema: {errs:?}");
        let ty = m["type"].as_str().unwrap().to_string();
        let payload = validator(&payload_schema(&ty));
        let errs: Vec<String> =
            payload.iter_errors(&m["payload"]).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errs.is_empty(), "{file}: payload schema: {errs:?}");
        let sig: Signature = serde_json::from_value(m["signature"].clone()).unwrap();
        let key = if by_studio { &studio } else { &device };
        vistter_agent::control::envelope::verify(&m, &sig, key).unwrap_or_else(|e| panic!("{file}: {e}"));
        if by_studio {
            let raw = serde_json::to_vec(&m).unwrap();
            let now: jiff::Timestamp = TIMESTAMP.parse().unwrap();
            let verdict = checker.authenticate(&raw).map_err(|r| r.nack).and_then(|a| a.check(now, 300, &trust));
            assert!(verdict.is_ok(), "{file}: the agent refuses its own golden message: {verdict:?}");
        }
        types.push(ty);
    }
    // Some types have more than one golden message (CAMERA_ACTION `add` and `discover`).
    types.sort();
    types.dedup();
    let mut want: Vec<String> = validator_enum("control/envelope.v1.json", "/properties/type/enum");
    want.sort();
    assert_eq!(types, want, "one golden message per type");
}

fn validator_enum(file: &str, pointer: &str) -> Vec<String> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(schemas_dir().join(file)).unwrap()).unwrap();
    schema.pointer(pointer).unwrap().as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// The README's walkthrough shows the exact signed bytes of `ping.json`: they are what the code
/// signs.
#[test]
fn the_readme_shows_the_exact_signed_bytes() {
    let m = read("ping.json");
    let bytes = String::from_utf8(signed_bytes(&m).unwrap()).unwrap();
    let readme = std::fs::read_to_string(schemas_dir().join("examples/README.md")).unwrap();
    let canonical = bytes.strip_prefix("vistter.envelope.v1\n").unwrap();
    assert!(readme.contains(canonical), "schemas/examples/README.md shows:\n{canonical}");
    let sig = m["signature"]["value"].as_str().unwrap();
    assert!(readme.contains(sig), "the README shows the signature {sig}");
}

/// Hostile payloads: the schema and the agent's typed checks agree (both refuse), and valid ones
/// pass both. Each case is (type, payload, valid?).
#[test]
fn schemas_and_the_agent_agree_on_payloads() {
    let cases: Vec<(&str, Value, bool)> = vec![
        ("PING", json!({}), true),
        ("PING", json!({"x": 1}), false),
        ("STREAM_CONTROL", json!({"command": "kill_all"}), true),
        (
            "TIMELINE_LOAD",
            json!({"package_url": "https://cdn.example/p.vseg", "sha256": "ab".repeat(32), "size": 10, "activate": true}),
            true,
        ),
        (
            "TIMELINE_LOAD",
            json!({"package_url": "http://cdn.example/p.vseg", "sha256": "ab".repeat(32), "size": 10}),
            false,
        ),
        (
            "TIMELINE_LOAD",
            json!({"package_url": "https://cdn.example/p.vseg", "sha256": "AB".repeat(32), "size": 10}),
            false,
        ),
        ("TIMELINE_LOAD", json!({"package_url": "https://cdn.example/p.vseg", "size": 10}), false),
        (
            "TIMELINE_LOAD",
            json!({"package_url": "https://cdn.example/p.vseg", "sha256": "ab".repeat(32), "size": 0}),
            false,
        ),
        ("TIMELINE_LOAD", json!({}), false),
        ("STREAM_CONTROL", json!({"command": "explode"}), false),
        ("STREAM_CONTROL", json!({"command": "set_encoder", "encoder": {"bitrate_kbps": 99}}), false),
        ("STREAM_CONTROL", json!({"command": "set_encoder", "encoder": {"bitrate_kbps": 50001}}), false),
        (
            "STREAM_CONTROL",
            json!({"command": "set_encoder", "encoder": {"profile": "720p30", "bitrate_kbps": 2500}}),
            true,
        ),
        ("STREAM_CONTROL", json!({"command": "go_live", "destination_ids": ["a b"]}), false),
        ("TIMELINE_EXECUTE", json!({"action": "seek", "position_s": -1}), false),
        ("TIMELINE_EXECUTE", json!({"action": "seek", "position_s": 31536001}), false),
        ("TIMELINE_EXECUTE", json!({"action": "seek", "position_s": 12.25}), true),
        ("TIMELINE_EXECUTE", json!({"action": "pin_camera", "camera_id": "é"}), false),
        ("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"score": "2-1"}}), true),
        ("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"score": 2}}), false),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "opacity": 1.5}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "color": "#aébbb"}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "scale": 0.01}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "font_size": 401}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "layer": 1001}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "fade_in": 61}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "offset": {"x": 8193}}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x".repeat(501)}}),
            false,
        ),
        (
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "hi", "position": "center", "offset": {"x": 10, "y": "5%"}, "layer": 3, "fade_in": 0.5}}),
            true,
        ),
        ("CAMERA_ACTION", json!({"action": "snapshot", "camera_id": "dock"}), true),
        ("CAMERA_ACTION", json!({"action": "discover"}), true),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"wait_ms": 500, "username": "admin"}}), true),
        ("CAMERA_ACTION", json!({"action": "discover", "camera_id": "dock"}), false),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"wait_ms": 10001}}), false),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"wait_ms": 99}}), false),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"username": ""}}), false),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"username": "a\nb"}}), false),
        ("CAMERA_ACTION", json!({"action": "discover", "discover": {"interface": "eth0"}}), false),
        ("CAMERA_ACTION", json!({"action": "snapshot", "camera_id": "dock", "discover": {}}), false),
        ("CAMERA_ACTION", json!({"action": "snapshot"}), false),
        ("CAMERA_ACTION", json!({"action": "goto_preset", "camera_id": "dock", "preset_id": "../x"}), false),
        (
            "CAMERA_ACTION",
            json!({"action": "add", "camera_id": "dock", "camera": {"url": "rtsp://h/s", "onvif": {"host": "h", "port": 70000}}}),
            false,
        ),
        ("DEVICE_CONFIG", json!({"mode": "merge"}), true),
        ("DEVICE_CONFIG", json!({"mode": "sideways"}), false),
    ];
    let mut validators = BTreeMap::new();
    for (ty, payload, valid) in cases {
        let v = validators.entry(ty).or_insert_with(|| validator(&payload_schema(ty)));
        let by_schema = v.is_valid(&payload);
        let by_agent = vistter_agent::command::from_parts(ty, payload.clone()).is_ok();
        assert_eq!(by_schema, valid, "schema on {ty} {payload}");
        assert_eq!(by_agent, valid, "agent on {ty} {payload}");
    }
}

/// Credentials in a URL (a camera's, a destination's ingest, a package's) would cross the broker in
/// the clear: the schemas refuse them, and so do the agent's cloud checks (schema_violation, the
/// URL's pointer named); the same URLs without them pass both. Each case is (type, payload,
/// pointer of the refusal).
#[test]
fn schemas_and_the_cloud_checks_agree_on_credentials_in_urls() {
    let studio = SigningKey::from_bytes(&STUDIO_SEED);
    let trust = trust();
    let checker = Checker { device_id: DEVICE, trust: &trust, max_bytes: 256 * 1024 };
    let now: jiff::Timestamp = TIMESTAMP.parse().unwrap();
    let camera = |url: &str| json!({"action": "add", "camera_id": "dock", "camera": {"url": url}});
    let ingest = |url: &str| json!({"mode": "merge", "destinations": [{"id": "x", "platform": "custom", "url": url}]});
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("CAMERA_ACTION", camera("rtsp://admin:pw@10.0.0.2/s"), Some("/payload/camera/url")),
        ("CAMERA_ACTION", camera("rtsp://admin@10.0.0.2:554/s"), Some("/payload/camera/url")),
        ("CAMERA_ACTION", camera("rtsp://10.0.0.2:554/s"), None),
        ("CAMERA_ACTION", camera("rtsp://10.0.0.2/s?user=a@b"), None),
        (
            "CAMERA_ACTION",
            json!({"action": "discover", "discover": {"username": "admin", "password": "hunter2"}}),
            Some("/payload/discover/password"),
        ),
        (
            "DEVICE_CONFIG",
            json!({"mode": "merge", "cameras": [{"id": "gate", "url": "rtsps://a:b@h/s"}]}),
            Some("/payload/cameras/0/url"),
        ),
        ("DEVICE_CONFIG", json!({"mode": "merge", "cameras": [{"id": "gate", "url": "rtsps://h/s"}]}), None),
        ("DEVICE_CONFIG", ingest("rtmp://k:live_key@h/live"), Some("/payload/destinations/0/url")),
        ("DEVICE_CONFIG", ingest("rtmp://h/live"), None),
        (
            "TIMELINE_LOAD",
            json!({"package_url": "https://u:p@cdn.example/p.vseg", "sha256": "ab".repeat(32), "size": 10}),
            Some("/payload/package_url"),
        ),
    ];
    for (ty, payload, refused_at) in cases {
        let by_schema = validator(&payload_schema(ty)).is_valid(&payload);
        assert_eq!(by_schema, refused_at.is_none(), "schema on {ty} {payload}");
        let mut m = json!({"schema_version": "1.0", "message_id": "0b9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11",
                           "correlation_id": null, "timestamp": TIMESTAMP, "device_id": DEVICE, "type": ty,
                           "payload": payload});
        sign(m.as_object_mut().unwrap(), STUDIO_KEY_ID, &studio).unwrap();
        let raw = serde_json::to_vec(&m).unwrap();
        let verdict = checker.authenticate(&raw).map_err(|r| r.nack).and_then(|a| a.check(now, 300, &trust));
        match refused_at {
            Some(at) => {
                let n = verdict.expect_err(&format!("agent on {ty} {}", m["payload"]));
                assert_eq!((n.code, n.pointer.as_deref()), (NackCode::SchemaViolation, Some(at)), "{n:?}");
            }
            None => assert!(verdict.is_ok(), "agent on {ty} {}: {verdict:?}", m["payload"]),
        }
    }
}

/// `schemas/segment/`: the manifest the packer writes validates, and the schema refuses what the
/// agent's manifest parser refuses (paths leaving the package, unknown fields, bad hashes).
#[test]
fn segment_manifests_made_by_the_packer_validate_and_hostile_ones_do_not() {
    use vistter_agent::segments::{manifest::Manifest, Limits};
    let v = validator("segment/manifest.v1.json");
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/segment_package/manifest.json");
    let good: Value = serde_json::from_str(&std::fs::read_to_string(seed).unwrap()).unwrap();
    let errs: Vec<String> = v.iter_errors(&good).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errs.is_empty(), "the packer's manifest: {errs:?}");
    assert!(Manifest::parse(good.to_string().as_bytes(), &Limits::default()).is_ok());
    let with_path = |p: &str| {
        let mut m = good.clone();
        m["files"][0]["path"] = p.into();
        m
    };
    let mut hostile =
        vec![with_path("../x"), with_path("/etc/passwd"), with_path("a//b"), with_path("a/./b"), with_path("a\\b")];
    hostile.push(with_path("a/"));
    let mut extra = good.clone();
    extra["mode"] = 4095.into();
    hostile.push(extra);
    let mut hash = good.clone();
    hash["files"][0]["sha256"] = "AB".repeat(32).into();
    hostile.push(hash);
    let mut format = good.clone();
    format["format"] = "vistter-segment/2".into();
    hostile.push(format);
    for m in hostile {
        assert!(!v.is_valid(&m), "the schema accepts {m}");
        assert!(Manifest::parse(m.to_string().as_bytes(), &Limits::default()).is_err(), "the agent accepts {m}");
    }
    let sig = validator("segment/signature.v1.json");
    let ok = json!({"alg": "ed25519", "key_id": "segments", "value": b64(&[0u8; 64])});
    assert!(sig.is_valid(&ok), "{ok}");
    assert!(!sig.is_valid(&json!({"alg": "rsa", "key_id": "k", "value": b64(&[0u8; 64])})));
}

/// The golden RESULT of `CAMERA_ACTION discover` has the output shape `result.v1.json` documents, and
/// the agent reads that output back as its own type.
#[test]
fn the_discover_result_matches_its_documented_output() {
    let schema = json!({"$ref": format!("{BASE}control/result.v1.json#/$defs/discovered_cameras")});
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_retriever(Files)
        .build(&schema)
        .unwrap_or_else(|e| panic!("discovered_cameras compiles: {e}"));
    let m = read("result_discover.json");
    let output = &m["payload"]["output"];
    let errs: Vec<String> = v.iter_errors(output).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errs.is_empty(), "{errs:?}");
    let typed: vistter_agent::command::Output = serde_json::from_value(output.clone()).expect("the agent's own type");
    assert!(matches!(typed, vistter_agent::command::Output::Cameras { ref cameras, .. } if cameras.len() == 1));
    assert!(!v.is_valid(&json!({"kind": "cameras", "cameras": [{"address": "x"}], "ignored_answers": 0})));
}
