//! A camera no program decodes shows its own picture: the daemon asks the camera's ONVIF `GetSnapshotUri` and
//! fetches that JPEG with HTTP Digest, for the status page's thumbnail route and for `CAMERA_ACTION snapshot`
//! (through the local operator socket, the same typed command as the cloud's). The camera is the fake ONVIF
//! camera (`common::onvif::FakeOnvif`) on loopback, requiring Digest and WS-Security. `goto_preset` commands
//! reuse the camera's client, and with it what was learned of the camera's authentication.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use base64::Engine as _;
use common::onvif::{DigestAlg, FakeOnvif, FakeOnvifOptions, SnapshotAuth};
use common::*;
use serde_json::Value;

const PASSWORD: &str = "Sn4p-cam-Secret";

/// A JPEG only this test's camera serves (SOI, a COM segment naming it, EOI).
fn marked_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x10];
    j.extend_from_slice(b"harbour-cam-01");
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// One HTTP/1.0 GET: the status code and the body's bytes.
fn get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw[end..].to_vec())
}

/// One command over the local operator socket; its reply.
fn command(agent: &TestAgent, cmd: &Value) -> Value {
    let mut s = UnixStream::connect(agent.data_dir().join("agent.sock")).expect("connect to agent.sock");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    writeln!(s, "{cmd}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("a reply line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

#[test]
fn a_camera_not_on_air_shows_its_own_snapshot_on_the_page_and_to_the_cloud() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = FakeOnvifOptions {
        username: "admin".into(),
        password: PASSWORD.into(),
        digest: Some(DigestAlg::Md5),
        snapshot_auth: SnapshotAuth::Digest,
        snapshot: marked_jpeg(),
        ..Default::default()
    };
    let onvif = rt.block_on(FakeOnvif::start(opts));
    let status_port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{status_port}\"\n"));
    let port = onvif.port().to_string();
    agent.ok(&[
        "camera",
        "add",
        "harbour",
        "--url",
        // Nothing listens there: no program decodes this camera, and nothing needs to.
        &format!("rtsp://127.0.0.1:{}/stream", free_port()),
        "--username",
        "admin",
        "--password",
        PASSWORD,
        "--onvif-host",
        "127.0.0.1",
        "--onvif-port",
        &port,
    ]);
    agent.ok(&["camera", "preset", "set", "harbour", "dock", "--token", "dock"]);
    agent.ok(&["camera", "add", "plain", "--url", &format!("rtsp://127.0.0.1:{}/s", free_port())]);
    agent.spawn();
    agent.wait_up(Duration::from_secs(30));

    // The page's thumbnail route: the first ask waits for the camera's snapshot (no broken picture first).
    let (status, body) = get_bytes(status_port, "/thumb/show/camera/harbour.jpg");
    assert_eq!(
        status,
        200,
        "the first ask has the snapshot ({}); the camera saw {:?}; log:\n{}",
        String::from_utf8_lossy(&body),
        onvif.actions(),
        tail(&agent.log(), 40)
    );
    assert_eq!(body, marked_jpeg(), "the thumbnail is the camera's own snapshot");

    // Cached briefly: a page polling hard costs the camera no fetch per poll.
    let fetched = || onvif.requests().iter().filter(|r| r.action == "snapshot" && r.status == 200).count();
    let before = fetched();
    for _ in 0..10 {
        assert_eq!(get_bytes(status_port, "/thumb/show/camera/harbour.jpg").0, 200);
    }
    assert!(fetched() <= before + 1, "{} fetches for 10 polls", fetched() - before);

    // CAMERA_ACTION snapshot, the cloud's command, over the operator socket.
    let reply = command(
        &agent,
        &serde_json::json!({"type": "CAMERA_ACTION", "payload": {"action": "snapshot", "camera_id": "harbour"}}),
    );
    let b64 = find(&reply, "jpeg_base64").and_then(Value::as_str).unwrap_or_else(|| panic!("no JPEG in {reply}"));
    let jpeg = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    assert_eq!(jpeg, marked_jpeg());

    // A camera without ONVIF and not in a program: a clear refusal, and no thumbnail.
    let reply = command(
        &agent,
        &serde_json::json!({"type": "CAMERA_ACTION", "payload": {"action": "snapshot", "camera_id": "plain"}}),
    );
    assert!(find(&reply, "jpeg_base64").is_none(), "{reply}");
    assert!(reply.to_string().contains("ONVIF"), "{reply}");
    assert_eq!(get_bytes(status_port, "/thumb/show/camera/plain.jpg").0, 404);

    // The camera saw the ONVIF calls, signed, and the snapshot fetched with Digest; the password went nowhere.
    let reqs = onvif.requests();
    assert!(reqs.iter().any(|r| r.action == "GetSnapshotUri" && r.auth_ok), "{:?}", onvif.actions());
    assert!(reqs.iter().any(|r| r.action == "snapshot" && r.http_auth.as_deref() == Some("Digest")));
    assert!(!onvif.raw().contains(PASSWORD), "the password went over the wire");

    // CAMERA_ACTION goto_preset twice: the camera's client is kept between commands, so what it learned (the
    // clock, Digest, its nonce) serves the second one: no new challenge, no new clock read.
    let before = onvif.requests().len();
    for _ in 0..2 {
        let reply = command(
            &agent,
            &serde_json::json!({"type": "CAMERA_ACTION", "payload": {"action": "goto_preset", "camera_id": "harbour", "preset_id": "dock"}}),
        );
        assert!(!reply.to_string().contains("error"), "{reply}");
    }
    assert_eq!(onvif.moves().len(), 2);
    let later = &onvif.requests()[before..];
    assert!(later.iter().all(|r| r.status == 200), "{later:?}");
    assert!(!later.iter().any(|r| r.action == "GetSystemDateAndTime"), "{later:?}");

    agent.stop();
    assert!(!agent.log().contains(PASSWORD), "the camera password is in the log");
}
