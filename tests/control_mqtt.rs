//! The MQTT link against a real mosquitto on loopback (plain listener, `allow_insecure`): a
//! signed command published on the device's command topic gets ACK and RESULT on its replies
//! topic, signed by the device; a repeat gets the same replies and runs nothing again; a
//! tampered command gets one NACK; new device key files are used without a restart and announced;
//! the retained STATE says online, and offline after a stop.

mod common;

use std::time::{Duration, Instant};

use common::mqtt::{publish, Broker, Sub};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use vistter_agent::control::envelope::{b64, public_key_from_b64, sign, timestamp_now, verify, Signature};

const DEVICE: &str = "vs-mqtt-test";
const PREFIX: &str = "vistter/v1";

fn broker() -> Broker {
    Broker::start(None)
}

fn command(key: &SigningKey, id: &str, ty: &str, payload: Value) -> Vec<u8> {
    command_by(key, "studio", id, ty, payload)
}

fn command_by(key: &SigningKey, key_id: &str, id: &str, ty: &str, payload: Value) -> Vec<u8> {
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": DEVICE, "type": ty, "payload": payload});
    sign(m.as_object_mut().unwrap(), key_id, key).unwrap();
    serde_json::to_vec(&m).unwrap()
}

fn verified(msg: &Value, device_key: &str) -> bool {
    let sig: Signature = serde_json::from_value(msg["signature"].clone()).unwrap();
    verify(msg.as_object().unwrap(), &sig, &public_key_from_b64(device_key).unwrap()).is_ok()
}

#[test]
fn commands_over_mqtt_are_answered_once_signed_and_state_is_retained() {
    let b = broker();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n",
        b.port
    ));
    let studio = SigningKey::from_bytes(&[0x33; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let device: Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    let device_key = device["device_public_key"].as_str().unwrap().to_string();
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(b.port, &format!("{base}/replies"));
    let states = Sub::new(b.port, &format!("{base}/state"));
    agent.spawn();

    let birth = states.next(Duration::from_secs(20));
    assert_eq!(birth["type"], "STATE");
    assert_eq!(birth["payload"]["online"], true, "{birth}");
    assert_eq!(birth["payload"]["device_public_key"], device_key.as_str());
    assert!(verified(&birth, &device_key), "STATE is signed by the device");
    // The command topic is subscribed once the link is up; give it a moment after the birth.
    std::thread::sleep(Duration::from_millis(300));

    let id = "1c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    let ping = command(&studio, id, "PING", json!({}));
    publish(b.port, &format!("{base}/commands"), &ping, false);
    let ack = replies.next(Duration::from_secs(10));
    let result = replies.next(Duration::from_secs(10));
    assert_eq!((ack["type"].as_str(), result["type"].as_str()), (Some("ACK"), Some("RESULT")), "{ack} {result}");
    assert_eq!(ack["correlation_id"], id);
    assert_eq!(result["payload"]["status"], "succeeded", "{result}");
    assert!(result["payload"]["output"]["agent_time"].is_string(), "{result}");
    assert!(verified(&ack, &device_key) && verified(&result, &device_key), "replies are signed by the device");

    // The same message again: the identical replies, nothing runs again.
    publish(b.port, &format!("{base}/commands"), &ping, false);
    assert_eq!(replies.next(Duration::from_secs(10)), ack);
    assert_eq!(replies.next(Duration::from_secs(10)), result);

    // One byte changed after signing: one NACK, bad_signature.
    let tampered = String::from_utf8(command(
        &studio,
        "2c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11",
        "OVERLAY_UPDATE",
        json!({"action": "set_vars", "vars": {"a": "b"}}),
    ))
    .unwrap()
    .replace("\"b\"", "\"c\"");
    publish(b.port, &format!("{base}/commands"), tampered.as_bytes(), false);
    let nack = replies.next(Duration::from_secs(10));
    assert_eq!(
        (nack["type"].as_str(), nack["payload"]["code"].as_str()),
        (Some("NACK"), Some("bad_signature")),
        "{nack}"
    );
    assert!(replies.rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing more after a NACK");

    // Hostile messages on the command topic: each gets a NACK, and the link and the daemon carry on.
    let hostile: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00garbage".to_vec(),
        b"{\"schema_version\": \"9.0\"}".to_vec(),
        vec![b'['; 5000],
        vec![b'x'; 300 * 1024],
        b"null".to_vec(),
    ];
    for h in &hostile {
        publish(b.port, &format!("{base}/commands"), h, false);
        let n = replies.next(Duration::from_secs(10));
        assert_eq!(n["type"], "NACK", "{n}");
    }
    assert!(agent.pid().is_some_and(alive), "the daemon survived the hostile messages");
    publish(
        b.port,
        &format!("{base}/commands"),
        &command(&studio, "5c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({})),
        false,
    );
    assert_eq!(replies.next(Duration::from_secs(10))["type"], "ACK", "still answering");
    assert_eq!(replies.next(Duration::from_secs(10))["type"], "RESULT");

    // A key trusted while the daemon runs is honoured without a restart (the store is re-read).
    let second = SigningKey::from_bytes(&[0x44; 32]);
    let by_second = |id: &str| command_by(&second, "studio2", id, "PING", json!({}));
    publish(b.port, &format!("{base}/commands"), &by_second("3c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11"), false);
    assert_eq!(replies.next(Duration::from_secs(10))["payload"]["code"], "unknown_key");
    agent.ok(&["trust", "add", "studio2", "--public-key", &b64(second.verifying_key().as_bytes())]);
    let start = Instant::now();
    loop {
        let id = format!("4c9f0c52-6a4e-4f6f-9d2e-{:012x}", start.elapsed().as_millis());
        publish(b.port, &format!("{base}/commands"), &by_second(&id), false);
        let r = replies.next(Duration::from_secs(10));
        if r["type"] == "ACK" {
            assert_eq!(replies.next(Duration::from_secs(10))["type"], "RESULT");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the new key was not honoured: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // New device key files (a re-provisioned device): used without a restart, and announced in a
    // new birth STATE, signed by the new key.
    let donor = TestAgent::new();
    let donor_keys: Value = serde_json::from_str(&donor.ok(&["device", "show", "--json"])).unwrap();
    let new_key = donor_keys["device_public_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, device_key);
    for f in ["device_ed25519.key", "device_x25519.key"] {
        let tmp = agent.data_dir().join(format!("{f}.new"));
        std::fs::copy(donor.data_dir().join(f), &tmp).unwrap();
        std::fs::rename(&tmp, agent.data_dir().join(f)).unwrap();
    }
    let birth = states.next_where(Duration::from_secs(20), "a birth STATE with the new key", |m| {
        m["payload"]["online"] == true && m["payload"]["device_public_key"] == new_key.as_str()
    });
    assert!(verified(&birth, &new_key), "signed by the new key: {birth}");
    std::thread::sleep(Duration::from_millis(300));
    publish(
        b.port,
        &format!("{base}/commands"),
        &command(&studio, "6c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({})),
        false,
    );
    // Matched by id: replies the broker had not acknowledged before the link reconnected for the
    // new keys are delivered again first (at least once), signed as they were stored.
    let this = "6c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    let ack =
        replies.next_where(Duration::from_secs(10), "the ACK", |m| m["type"] == "ACK" && m["correlation_id"] == this);
    assert!(verified(&ack, &new_key) && !verified(&ack, &device_key), "replies are signed by the new key");
    let result = replies
        .next_where(Duration::from_secs(10), "the RESULT", |m| m["type"] == "RESULT" && m["correlation_id"] == this);
    assert!(verified(&result, &new_key), "{result}");

    // Stopped: the retained state says offline.
    agent.stop();
    let death = states.next_where(Duration::from_secs(10), "the offline STATE", |m| m["payload"]["online"] == false);
    assert!(verified(&death, &new_key));
    let late = Sub::new(b.port, &format!("{base}/state"));
    assert_eq!(late.next(Duration::from_secs(5))["payload"]["online"], false, "retained");
}

/// One QoS-1 command over the MQTT client's packet limit, which the broker (persistent session)
/// would deliver again on every reconnect: it is answered `invalid_envelope` with
/// `correlation_id: null`, acknowledged to the broker so it never comes back, and the link stays
/// up: no reconnect, and a PING sent after it is answered at once.
#[test]
fn a_poison_message_cannot_wedge_the_mqtt_link() {
    let b = broker();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\nmax_message_bytes = 65536\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n",
        b.port
    ));
    let studio = SigningKey::from_bytes(&[0x33; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(b.port, &format!("{base}/replies"));
    let states = Sub::new(b.port, &format!("{base}/state"));
    agent.spawn();
    assert_eq!(states.next(Duration::from_secs(20))["payload"]["online"], true);
    std::thread::sleep(Duration::from_millis(300));

    // 1 MiB: far over both the message limit (64 KiB) and the MQTT client's packet limit.
    let mut poison = command(&studio, "7c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({}));
    poison.truncate(poison.len() - 1);
    poison.extend_from_slice(b",\"pad\":\"");
    poison.resize(poison.len() + (1 << 20), b'a');
    poison.extend_from_slice(b"\"}");
    publish(b.port, &format!("{base}/commands"), &poison, false);
    let nack = replies.next(Duration::from_secs(10));
    assert_eq!(
        (nack["type"].as_str(), nack["payload"]["code"].as_str()),
        (Some("NACK"), Some("invalid_envelope")),
        "{nack}"
    );
    assert_eq!(nack["correlation_id"], Value::Null, "{nack}");
    assert!(nack["payload"]["message"].as_str().unwrap().contains("over the"), "{nack}");

    let id = "8c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    let t0 = Instant::now();
    publish(b.port, &format!("{base}/commands"), &command(&studio, id, "PING", json!({})), false);
    let ack = replies
        .next_where(Duration::from_secs(10), "the PING's ACK", |m| m["correlation_id"] == id && m["type"] == "ACK");
    let took = t0.elapsed();
    eprintln!("PING after the poison message answered in {} ms", took.as_millis());
    assert_eq!(ack["type"], "ACK");
    // Coarse: a link that had dropped would need a reconnect with a backoff of at least 200 ms
    // plus a new session; this bound only catches that.
    assert!(took < Duration::from_secs(3), "the PING waited {took:?}");
    // Neither a reconnect (a new birth STATE) nor the poison again (a second NACK).
    let later = states.drain(Duration::from_secs(3));
    assert!(later.is_empty(), "the link reconnected: {later:?}");
    let more = replies.drain(Duration::from_secs(2));
    assert!(!more.iter().any(|m| m["type"] == "NACK"), "the poison message was delivered again: {more:?}");
    assert!(agent.pid().is_some_and(alive), "the daemon lives");
}

/// A camera password (or a destination's credentials) written into a URL would cross the broker in
/// the clear: the device refuses it as a plaintext secret, stores nothing, and the secret appears
/// neither in the NACK nor in its log. The same camera without credentials in its URL is added.
#[test]
fn a_camera_password_in_the_url_from_the_cloud_is_a_schema_violation() {
    let b = broker();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\n",
        b.port
    ));
    let studio = SigningKey::from_bytes(&[0x33; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(b.port, &format!("{base}/replies"));
    let states = Sub::new(b.port, &format!("{base}/state"));
    agent.spawn();
    states.next_where(Duration::from_secs(20), "the birth STATE", |m| m["payload"]["online"] == true);
    std::thread::sleep(Duration::from_millis(300));

    let secrets = ["hunter2-cam", "operator-name", "hunter3-cfg", "live_stream_key_123"];
    let cases = [
        (
            "CAMERA_ACTION",
            json!({"action": "add", "camera_id": "dock", "camera": {"url": "rtsp://admin:hunter2-cam@127.0.0.1:8554/s"}}),
            "/payload/camera/url",
        ),
        (
            "CAMERA_ACTION",
            json!({"action": "update", "camera_id": "dock", "camera": {"url": "rtsp://operator-name@127.0.0.1:8554/s"}}),
            "/payload/camera/url",
        ),
        (
            "DEVICE_CONFIG",
            json!({"mode": "merge", "cameras": [{"id": "gate", "url": "rtsps://admin:hunter3-cfg@127.0.0.1/s"}]}),
            "/payload/cameras/0/url",
        ),
        (
            "DEVICE_CONFIG",
            json!({"mode": "merge", "destinations": [{"id": "yt", "platform": "custom", "url": "rtmp://u:live_stream_key_123@127.0.0.1/live"}]}),
            "/payload/destinations/0/url",
        ),
    ];
    for (i, (ty, payload, pointer)) in cases.into_iter().enumerate() {
        let id = format!("7c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e{i:02x}");
        publish(b.port, &format!("{base}/commands"), &command(&studio, &id, ty, payload), false);
        let n = replies.next_where(Duration::from_secs(10), "the NACK", |m| m["correlation_id"] == id.as_str());
        assert_eq!(
            (n["type"].as_str(), n["payload"]["code"].as_str(), n["payload"]["pointer"].as_str()),
            (Some("NACK"), Some("schema_violation"), Some(pointer)),
            "{n}"
        );
        for s in secrets {
            assert!(!n.to_string().contains(s), "the NACK repeats {s}: {n}");
        }
    }
    assert!(replies.rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing ran: no RESULT");
    // The same camera, its URL without credentials: added.
    let id = "8c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    let add = json!({"action": "add", "camera_id": "dock", "camera": {"url": "rtsp://127.0.0.1:8554/s", "username": "admin"}});
    publish(b.port, &format!("{base}/commands"), &command(&studio, id, "CAMERA_ACTION", add), false);
    let r = replies.next_where(Duration::from_secs(10), "the RESULT", |m| m["type"] == "RESULT");
    assert_eq!(r["payload"]["status"], "succeeded", "{r}");
    assert!(agent.pid().is_some_and(alive), "the daemon carries on");
    agent.stop();
    let cams: Value = serde_json::from_str(&agent.ok(&["camera", "list", "--json"])).unwrap();
    assert_eq!(cams.as_array().map(Vec::len), Some(1), "only the camera without credentials: {cams}");
    assert_eq!(cams[0]["url"], "rtsp://127.0.0.1:8554/s", "{cams}");
    let log = agent.log();
    for s in secrets {
        assert!(!log.contains(s), "the log holds {s}");
    }
}

/// The trust store has one writer at a time, and every write starts from what is stored: a key
/// the operator revoked with `trust remove` is not trusted again by a `DEVICE_CONFIG.trust`
/// change that arrives a moment later (the daemon's copy in memory is refreshed only every 2 s).
/// The last writer wins, and nothing revoked comes back.
#[test]
fn a_revocation_by_the_cli_is_not_undone_by_a_device_config_trust_change() {
    let b = broker();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n",
        b.port
    ));
    let admin = SigningKey::from_bytes(&[0x61; 32]);
    agent.ok(&[
        "trust",
        "add",
        "admin",
        "--public-key",
        &b64(admin.verifying_key().as_bytes()),
        "--role",
        "command",
        "--role",
        "trust_admin",
    ]);
    let pk = |seed: u8| b64(SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes());
    for i in 0..3u8 {
        agent.ok(&["trust", "add", &format!("old{i}"), "--public-key", &pk(0x70 + i)]);
    }
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(b.port, &format!("{base}/replies"));
    let states = Sub::new(b.port, &format!("{base}/state"));
    agent.spawn();
    assert_eq!(states.next(Duration::from_secs(20))["payload"]["online"], true);
    std::thread::sleep(Duration::from_millis(300));

    for i in 0..3u8 {
        // The operator revokes a key; at once, the cloud adds another one.
        agent.ok(&["trust", "remove", &format!("old{i}")]);
        let id = format!("9c9f0c52-6a4e-4f6f-9d2e-{i:012x}");
        let cfg = json!({"mode": "merge", "trust": {"add": [
            {"key_id": format!("new{i}"), "public_key": pk(0x80 + i), "roles": ["command"]}]}});
        publish(b.port, &format!("{base}/commands"), &command_by(&admin, "admin", &id, "DEVICE_CONFIG", cfg), false);
        let result = replies.next_where(Duration::from_secs(10), "the RESULT", |m| {
            m["correlation_id"] == id.as_str() && (m["type"] == "RESULT" || m["type"] == "NACK")
        });
        assert_eq!(result["payload"]["status"], "succeeded", "{result}");
    }
    let stored: Value = serde_json::from_str(&agent.ok(&["trust", "list", "--json"])).unwrap();
    let ids: Vec<&str> = stored["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    for i in 0..3 {
        assert!(!ids.contains(&format!("old{i}").as_str()), "revoked key old{i} is trusted again: {ids:?}");
        assert!(ids.contains(&format!("new{i}").as_str()), "the cloud's key new{i} is missing: {ids:?}");
    }
    // The other way round: the cloud revokes, then the operator trusts the name again with
    // another key; the operator revokes, then the cloud trusts it again. The last writer wins.
    let device_config = |id: &str, trust: Value| {
        publish(
            b.port,
            &format!("{base}/commands"),
            &command_by(&admin, "admin", id, "DEVICE_CONFIG", json!({"mode": "merge", "trust": trust})),
            false,
        );
        let r = replies.next_where(Duration::from_secs(10), "the RESULT", |m| {
            m["correlation_id"] == id && (m["type"] == "RESULT" || m["type"] == "NACK")
        });
        assert_eq!(r["payload"]["status"], "succeeded", "{r}");
    };
    device_config("9e9f0c52-6a4e-4f6f-9d2e-000000000001", json!({"revoke": ["new1"]}));
    agent.ok(&["trust", "add", "new1", "--public-key", &pk(0x90)]);
    agent.ok(&["trust", "remove", "new2"]);
    device_config(
        "9e9f0c52-6a4e-4f6f-9d2e-000000000002",
        json!({"add": [{"key_id": "new2", "public_key": pk(0x91), "roles": ["command"]}]}),
    );
    let stored: Value = serde_json::from_str(&agent.ok(&["trust", "list", "--json"])).unwrap();
    let key_of = |id: &str| {
        stored["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == id).map(|k| k["public_key"].clone())
    };
    assert_eq!(key_of("new1"), Some(json!(pk(0x90))), "the operator wrote last: {stored}");
    assert_eq!(key_of("new2"), Some(json!(pk(0x91))), "the cloud wrote last: {stored}");
    assert_eq!(key_of("old1"), None, "nothing revoked comes back: {stored}");
    // And the daemon does not honour a revoked key either.
    let revoked = SigningKey::from_bytes(&[0x70; 32]);
    let id = "9d9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    publish(b.port, &format!("{base}/commands"), &command_by(&revoked, "old0", id, "PING", json!({})), false);
    let n = replies.next_where(Duration::from_secs(10), "the reply", |m| m["correlation_id"] == id);
    assert_eq!(n["payload"]["code"], "unknown_key", "{n}");
}

/// The device's wall clock stepped 600 s forward (a bad time source): the cloud's commands look
/// 10 minutes old and are refused as expired, one NACK each, nothing run. Stepped 600 s back, its
/// clock never goes below the newest command it trusted (the time floor), so fresh commands are
/// taken; and once the clock is right again, so are they.
#[test]
fn a_stepped_clock_refuses_stale_commands_and_recovers() {
    let b = broker();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\n",
        b.port
    ));
    let studio = SigningKey::from_bytes(&[0x34; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(b.port, &format!("{base}/replies"));
    let states = Sub::new(b.port, &format!("{base}/state"));
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "0").unwrap();
    agent.spawn_with_env(&[(vistter_agent::clock::CLOCK_HOOK_ENV, offset.path().to_str().unwrap())]);
    assert_eq!(states.next(Duration::from_secs(20))["payload"]["online"], true);
    std::thread::sleep(Duration::from_millis(300));
    let answer = |id: &str| {
        publish(b.port, &format!("{base}/commands"), &command(&studio, id, "PING", json!({})), false);
        replies.next_where(Duration::from_secs(10), "the PING's first reply", |m| {
            m["correlation_id"] == id && (m["type"] == "ACK" || m["type"] == "NACK")
        })
    };
    let first = answer("9c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e01");
    assert_eq!(first["type"], "ACK", "{first}");
    std::fs::write(offset.path(), "600").unwrap();
    let ahead = answer("9c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e02");
    assert_eq!((ahead["type"].as_str(), ahead["payload"]["code"].as_str()), (Some("NACK"), Some("expired")), "{ahead}");
    std::fs::write(offset.path(), "-600").unwrap();
    let behind = answer("9c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e03");
    assert_eq!(behind["type"], "ACK", "the time floor keeps a clock that fell behind usable: {behind}");
    std::fs::write(offset.path(), "0").unwrap();
    let right = answer("9c9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e04");
    assert_eq!(right["type"], "ACK", "{right}");
    assert!(agent.pid().is_some_and(alive), "the daemon lives");
}
