//! `TIMELINE_LOAD` through a real mosquitto, the package served over HTTPS by a local server with
//! the dev PKI (the agent trusts its CA through `segments.download_ca_file`): PROGRESS while it
//! downloads, then RESULT; a connection dropped halfway is resumed with a Range request; a wrong
//! SHA-256 fails and installs nothing; a package larger than the free disk is refused before a
//! byte is downloaded; an inline timeline is stored.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::https::{Mode, PackageServer};
use common::mqtt::{publish, Broker, Pki, Sub};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vistter_agent::control::envelope::{b64, sign, timestamp_now};

const DEVICE: &str = "vs-seg-cloud";
const PREFIX: &str = "vistter/v1";

struct Cloud {
    broker: Broker,
    agent: TestAgent,
    studio: SigningKey,
    key_file: PathBuf,
    replies: Sub,
    _dir: tempfile::TempDir,
}

fn cloud(pki: &Pki, extra: &str) -> Cloud {
    let broker = Broker::start(None);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n\
         [control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n\
         [segments]\ndownload_ca_file = \"{}\"\n{extra}",
        broker.port,
        pki.path("ca.pem").display()
    ));
    let studio = SigningKey::from_bytes(&[0x51; 32]);
    let public = b64(studio.verifying_key().as_bytes());
    agent.ok(&["trust", "add", "studio", "--public-key", &public, "--role", "command", "--role", "segment"]);
    let key_file = dir.path().join("studio.json");
    std::fs::write(
        &key_file,
        json!({"key_id": "studio", "private_key_seed": b64(studio.as_bytes()), "public_key": public}).to_string(),
    )
    .unwrap();
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let replies = Sub::new(broker.port, &format!("{base}/replies"));
    let states = Sub::new(broker.port, &format!("{base}/state"));
    agent.spawn();
    let birth = states.next_where(Duration::from_secs(20), "the birth STATE", |m| m["payload"]["online"] == true);
    assert_eq!(birth["type"], "STATE");
    // The command topic is subscribed once the link is up.
    std::thread::sleep(Duration::from_millis(300));
    Cloud { broker, agent, studio, key_file, replies, _dir: dir }
}

/// A package of a slate timeline and `asset_mb` MB of random bytes, version `version`.
fn package(c: &Cloud, version: u64, asset_mb: usize) -> (PathBuf, String, u64) {
    let src = c._dir.path().join(format!("src-{version}"));
    std::fs::create_dir_all(src.join("assets")).unwrap();
    let tl = json!({"id": "cloud-tl", "name": "from the cloud", "duration": 6, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 6,
        "action": "show_slate", "params": {}}]}, "overlays": []}});
    std::fs::write(src.join("timeline.json"), tl.to_string()).unwrap();
    let blob: Vec<u8> = (0..asset_mb * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(src.join("assets/blob.bin"), blob).unwrap();
    let out = c._dir.path().join(format!("p{version}.vseg"));
    c.agent.ok(&[
        "segment",
        "pack",
        src.to_str().unwrap(),
        "--key",
        c.key_file.to_str().unwrap(),
        "--id",
        "cloudseg",
        "--version",
        &version.to_string(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    (out, hex(&Sha256::digest(&bytes)), bytes.len() as u64)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Publishes a signed TIMELINE_LOAD and returns every reply up to and including its RESULT.
fn load(c: &Cloud, id: &str, payload: Value) -> Vec<Value> {
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": DEVICE, "type": "TIMELINE_LOAD", "payload": payload});
    sign(m.as_object_mut().unwrap(), "studio", &c.studio).unwrap();
    publish(c.broker.port, &format!("{PREFIX}/devices/{DEVICE}/commands"), m.to_string().as_bytes(), false);
    let mine: Vec<Value> = c
        .replies
        .until(Duration::from_secs(90), "the RESULT", |r| r["correlation_id"] == id && r["type"] == "RESULT")
        .into_iter()
        .filter(|r| r["correlation_id"] == id)
        .collect();
    assert_eq!(mine[0]["type"], "ACK", "the ACK comes first: {mine:?}");
    mine
}

fn segments(agent: &TestAgent) -> Vec<Value> {
    serde_json::from_str::<Value>(&agent.ok(&["segment", "list", "--json"])).unwrap().as_array().unwrap().clone()
}

fn downloads_left(agent: &TestAgent) -> Vec<PathBuf> {
    std::fs::read_dir(agent.data_dir().join("segments/.downloads"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn result(replies: &[Value]) -> &Value {
    replies.last().unwrap()
}

#[test]
fn a_package_is_downloaded_with_progress_resumed_after_a_drop_and_bad_ones_install_nothing() {
    let pki = Pki::new(DEVICE);
    let c = cloud(&pki, "");

    // 1. Dropped halfway: resumed with a Range request, then installed and reported.
    let (file, sha, size) = package(&c, 1, 8);
    let server = PackageServer::start(&pki, file.clone(), Mode::DropFirstAfter(size / 3));
    let replies = load(
        &c,
        "7a000000-0000-4000-8000-000000000001",
        json!({"package_url": server.url(), "sha256": sha, "size": size, "activate": true}),
    );
    let r = result(&replies);
    assert_eq!(r["payload"]["status"], "succeeded", "{r}\nlog:\n{}", tail(&c.agent.log(), 30));
    assert_eq!(r["payload"]["output"]["kind"], "segment_installed", "{r}");
    assert_eq!(r["payload"]["output"]["segment"]["version"], 1, "{r}");
    let progress: Vec<&Value> = replies.iter().filter(|m| m["type"] == "PROGRESS").collect();
    assert!(!progress.is_empty(), "PROGRESS while downloading: {replies:?}");
    let pcts: Vec<u64> = progress.iter().map(|p| p["payload"]["percent"].as_u64().unwrap()).collect();
    assert!(pcts.windows(2).all(|w| w[0] <= w[1]) && pcts.iter().all(|p| *p <= 100), "percent only rises: {pcts:?}");
    let reqs = server.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "one dropped request and one resumed: {reqs:?}");
    assert_eq!(reqs[0], None);
    let from: u64 = reqs[1].as_deref().and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()).unwrap();
    assert!(from > 0 && from <= size / 3, "resumed where it stopped, not from 0: {reqs:?}");
    let rows = segments(&c.agent);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["version"].as_u64(), rows[0]["active"].as_bool()), (Some(1), Some(true)), "{rows:?}");
    assert!(rows[0]["source"] == "cloud", "{rows:?}");
    assert!(downloads_left(&c.agent).is_empty(), "the download is removed once installed");
    drop(server);

    // 2. A wrong SHA-256: RESULT failed, nothing installed, nothing left behind.
    let (file2, _, size2) = package(&c, 2, 1);
    let server = PackageServer::start(&pki, file2, Mode::Whole);
    let replies = load(
        &c,
        "7a000000-0000-4000-8000-000000000002",
        json!({"package_url": server.url(), "sha256": "ab".repeat(32), "size": size2}),
    );
    let r = result(&replies);
    assert_eq!(r["payload"]["status"], "failed", "{r}");
    assert!(r["payload"]["error"]["message"].as_str().unwrap().contains("checksum_mismatch"), "{r}");
    assert_eq!(segments(&c.agent), rows, "nothing installed");
    assert!(downloads_left(&c.agent).is_empty(), "the bad download is deleted: {:?}", downloads_left(&c.agent));
    drop(server);

    // 3. Larger than the free disk: refused before anything is requested.
    let server = PackageServer::start(&pki, file.clone(), Mode::Whole);
    let huge = 1u64 << 50;
    let replies = load(
        &c,
        "7a000000-0000-4000-8000-000000000003",
        json!({"package_url": server.url(), "sha256": sha, "size": huge}),
    );
    let r = result(&replies);
    assert_eq!(r["payload"]["status"], "failed", "{r}");
    let msg = r["payload"]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no_space") || msg.contains("too_large"), "{r}");
    assert!(server.requests.lock().unwrap().is_empty(), "nothing was downloaded");
    assert_eq!(segments(&c.agent), rows, "nothing installed");

    // 4. An inline timeline (no assets): stored.
    let tl = json!({"id": "inline-tl", "name": "inline", "duration": 4, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 4,
        "action": "show_slate", "params": {}}]}, "overlays": []}});
    let replies = load(&c, "7a000000-0000-4000-8000-000000000004", json!({"timeline": tl}));
    let r = result(&replies);
    assert_eq!(r["payload"]["status"], "succeeded", "{r}");
    assert_eq!(r["payload"]["output"], json!({"kind": "timeline_loaded", "timeline_id": "inline-tl"}));
    assert!(c.agent.ok(&["timeline", "list"]).contains("inline-tl"));
    assert!(c.agent.pid().is_some_and(alive), "the daemon is still up");
}

#[test]
fn a_package_too_large_for_the_disk_is_refused_before_downloading() {
    let pki = Pki::new(DEVICE);
    // The package limit out of the way, so the free-space check is what refuses.
    let c = cloud(&pki, "[segments.limits]\nmax_compressed_bytes = 4503599627370496\n");
    let (file, sha, _) = package(&c, 1, 1);
    let server = PackageServer::start(&pki, file, Mode::Whole);
    let replies = load(
        &c,
        "7b000000-0000-4000-8000-000000000001",
        json!({"package_url": server.url(), "sha256": sha, "size": 1u64 << 50}),
    );
    let r = result(&replies);
    assert_eq!(r["payload"]["status"], "failed", "{r}");
    assert!(r["payload"]["error"]["message"].as_str().unwrap().contains("no_space"), "{r}");
    assert!(server.requests.lock().unwrap().is_empty(), "nothing was downloaded");
    assert!(segments(&c.agent).is_empty());
}

/// A key trusted only to command cannot replace the timeline a signed segment package installed
/// by sending an inline `TIMELINE_LOAD` with its id: the load is refused as a conflict naming
/// `payload.timeline.id`, the segment's timeline is unchanged, and the segment's next version
/// installs as usual.
#[test]
fn a_command_key_cannot_rewrite_a_signed_segment_timeline() {
    let pki = Pki::new(DEVICE);
    let mut c = cloud(&pki, "");
    let (file, sha, size) = package(&c, 1, 0);
    let server = PackageServer::start(&pki, file, Mode::Whole);
    let r = load(
        &c,
        "7b000000-0000-4000-8000-000000000001",
        json!({"package_url": server.url(), "sha256": sha, "size": size, "activate": true}),
    );
    assert_eq!(result(&r)["payload"]["status"], "succeeded", "{:?}", result(&r));
    let before = c.agent.ok(&["timeline", "show", "cloud-tl"]);

    // The attacker's key: `command` only.
    let attacker = SigningKey::from_bytes(&[0x52; 32]);
    c.agent.ok(&[
        "trust",
        "add",
        "cmd-only",
        "--public-key",
        &b64(attacker.verifying_key().as_bytes()),
        "--role",
        "command",
    ]);
    let hijack = json!({"id": "cloud-tl", "name": "hijacked", "duration": 4, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 4,
        "action": "show_slate", "params": {}}]}, "overlays": []}});
    let studio = std::mem::replace(&mut c.studio, attacker);
    // The trust store is re-read by the running daemon within a couple of seconds.
    let t0 = std::time::Instant::now();
    let replies = loop {
        let id = format!("7b000000-0000-4000-8000-{:012x}", t0.elapsed().as_millis());
        let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                           "device_id": DEVICE, "type": "TIMELINE_LOAD", "payload": {"timeline": hijack}});
        sign(m.as_object_mut().unwrap(), "cmd-only", &c.studio).unwrap();
        publish(c.broker.port, &format!("{PREFIX}/devices/{DEVICE}/commands"), m.to_string().as_bytes(), false);
        let first = c.replies.next_where(Duration::from_secs(10), "a reply", |r| r["correlation_id"] == id.as_str());
        if first["type"] == "NACK" && first["payload"]["code"] == "unknown_key" {
            assert!(t0.elapsed() < Duration::from_secs(10), "the new key was never trusted");
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let mut all = vec![first];
        if all[0]["type"] == "ACK" {
            all.push(c.replies.next_where(Duration::from_secs(10), "the RESULT", |r| {
                r["correlation_id"] == id.as_str() && r["type"] == "RESULT"
            }));
        }
        break all;
    };
    let last = replies.last().unwrap();
    let refused = (last["type"] == "RESULT" && last["payload"]["status"] == "failed") || last["type"] == "NACK";
    assert!(refused, "the inline load of a segment's timeline was accepted: {replies:?}");
    let text = last.to_string();
    assert!(text.contains("conflict") && text.contains("timeline") && text.contains("id"), "{last}");
    assert_eq!(c.agent.ok(&["timeline", "show", "cloud-tl"]), before, "the segment's timeline is unchanged");

    // The segment's next version, signed by a segment key, still installs.
    c.studio = studio;
    let (file2, sha2, size2) = package(&c, 2, 0);
    let server2 = PackageServer::start(&pki, file2, Mode::Whole);
    let r = load(
        &c,
        "7b000000-0000-4000-8000-000000000002",
        json!({"package_url": server2.url(), "sha256": sha2, "size": size2, "activate": true}),
    );
    assert_eq!(result(&r)["payload"]["status"], "succeeded", "{:?}", result(&r));
    let rows = segments(&c.agent);
    assert!(rows.iter().any(|s| s["version"] == 2 && s["active"] == true), "{rows:?}");
    drop(server);
    assert!(c.agent.pid().is_some_and(alive));
}
