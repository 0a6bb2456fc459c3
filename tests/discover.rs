//! `camera discover` and the cloud's `CAMERA_ACTION discover` against simulated cameras
//! (`common::ws_discovery`): WS-Discovery on loopback multicast (a port of each test's own, probes sent out
//! of 127.0.0.1 only), the ONVIF calls over HTTP on 127.0.0.1. Assertions are on what the operator sees (the
//! listing, the `camera add` line that works when pasted, the RESULT on the broker) and on what never
//! happens (a crash on hostile answers, a request to a host that did not answer, the password anywhere).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mqtt::{publish, Broker, Sub};
use common::ws_discovery::{free_udp_port, probe_matches, CameraSpec, FakeCamera, Netns, Profile, Responder};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use vistter_agent::control::envelope::{b64, sign, timestamp_now};
use vistter_agent::ptz::discover::{self, Credentials, ProbeOptions};
use vistter_agent::secret::Secret;

const PASSWORD: &str = "Disc0very-s3cret!";
const DEVICE: &str = "vs-discover-test";

fn spec(n: u32, model: &str, profiles: Vec<Profile>) -> CameraSpec {
    CameraSpec {
        endpoint: format!("urn:uuid:6a1b2c3d-0000-4000-8000-00000000000{n}"),
        manufacturer: if n == 1 { "HIKVISION".into() } else { "Dahua".into() },
        model: model.into(),
        scope_name: format!("Camera%20{n}"),
        username: "admin".into(),
        password: PASSWORD.into(),
        http_digest: false,
        profiles,
    }
}

fn profile(token: &str, name: &str, w: u32, h: u32, uri: &str) -> Profile {
    Profile { token: token.into(), name: name.into(), width: w, height: h, uri: uri.into() }
}

/// Every kind of bad answer, each answering the probe's own MessageID (so only the parser's checks stop
/// it), then a flood of copies of one of them.
fn hostile(id: &str) -> Vec<Vec<u8>> {
    let x = "http://127.0.0.1:9/onvif/device_service";
    let mut out = vec![
        // Huge: a valid match padded past the size cap (and as large as a UDP datagram goes).
        probe_matches(id, "urn:uuid:huge", x, &"onvif://www.onvif.org/name/x ".repeat(2000)).into_bytes(),
        // Garbage.
        (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
        // Deep XML around a valid match.
        format!("{}{}", "<a>".repeat(3000), probe_matches(id, "urn:uuid:deep", x, "")).into_bytes(),
        // Only non-http XAddrs.
        probe_matches(id, "urn:uuid:ftp", "ftp://127.0.0.1/x file:///etc/passwd javascript:alert(1)", "").into_bytes(),
        // No endpoint reference.
        probe_matches(id, "", x, "").into_bytes(),
        // An answer to some other probe.
        probe_matches("uuid:not-this-probe", "urn:uuid:stale", x, "").into_bytes(),
        // Truncated mid-element.
        probe_matches(id, "urn:uuid:cut", x, "").into_bytes()[..600].to_vec(),
    ];
    let copy = out[1].clone();
    out.extend(std::iter::repeat_n(copy, 300));
    out
}

fn agent_config(port: u16) -> String {
    format!("[discovery]\ninterfaces = [\"127.0.0.1\"]\nport = {port}\n")
}

/// Two cameras and a hostile responder on the same port: the listing names both cameras, their models and
/// every stream URL; the hostile answers are counted, not listed, and crash nothing; the password appears
/// nowhere; and the printed `camera add` line, pasted into a shell with the password on stdin, adds a camera
/// that really streams (ffprobe through `--probe`).
#[test]
fn camera_discover_finds_two_cameras_prints_their_streams_and_the_add_line_works() {
    let rtsp = RtspCamera::start("smpte");
    let port = free_udp_port();
    let a = FakeCamera::start(
        port,
        spec(
            1,
            "DS-2CD2142FWD-I",
            vec![
                profile("Profile_1", "mainStream", 1280, 720, &rtsp.url()),
                profile("Profile_2", "subStream", 640, 360, "rtsp://127.0.0.1:554/Streaming/Channels/102?a=1&b=2"),
            ],
        ),
    );
    let b = FakeCamera::start(
        port,
        spec(
            2,
            "IPC-HDW2431T",
            vec![profile(
                "MediaProfile000",
                "Main",
                2688,
                1520,
                "rtsp://127.0.0.1:554/cam/realmonitor?channel=1&subtype=0",
            )],
        ),
    );
    // After the cameras: a flood beyond the socket's buffer drops datagrams, as a real network would,
    // and the point here is what is done with the hostile ones, not a race with the real ones.
    let bad = Responder::start_after(port, Duration::from_millis(100), hostile);
    let agent = TestAgent::with_config(&agent_config(port));

    let out = agent.cli_stdin(
        &["camera", "discover", "--wait-ms", "1500", "--username", "admin", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("2 camera(s) found"), "{stdout}");
    for want in [
        "HIKVISION DS-2CD2142FWD-I \"Camera 1\"",
        "Dahua IPC-HDW2431T \"Camera 2\"",
        "urn:uuid:6a1b2c3d-0000-4000-8000-000000000001",
        &format!("http://127.0.0.1:{}/onvif/device_service", a.http_port),
        &format!("{}  (mainStream, H264, 1280x720)", rtsp.url()),
        "rtsp://127.0.0.1:554/Streaming/Channels/102?a=1&b=2  (subStream, H264, 640x360)",
        "rtsp://127.0.0.1:554/cam/realmonitor?channel=1&subtype=0  (Main, H264, 2688x1520)",
        "add:      vistter-agent camera add cam-127-0-0-1 --url",
        "add:      vistter-agent camera add cam-127-0-0-1-2 --url",
        "--username 'admin' --password-stdin --onvif-host '127.0.0.1' --onvif-port",
        "answer(s) ignored",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    for hidden in ["urn:uuid:huge", "urn:uuid:deep", "urn:uuid:ftp", "urn:uuid:stale", "urn:uuid:cut", PASSWORD] {
        assert!(!stdout.contains(hidden) && !stderr.contains(hidden), "{hidden} shown:\n{stdout}\n{stderr}");
    }
    // Every request carried a good digest; each camera was asked its clock (unsigned), model, services,
    // profiles, stream URLs.
    for (cam, streams) in [(&a, 2), (&b, 1)] {
        let actions = cam.actions();
        assert!(actions.iter().all(|(_, ok)| *ok), "{actions:?}");
        let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
        let mut want = vec!["GetSystemDateAndTime", "GetDeviceInformation", "GetCapabilities", "GetProfiles"];
        want.extend(std::iter::repeat_n("GetStreamUri", streams));
        assert_eq!(names, want);
    }

    // --json: the same, for scripts.
    let out = agent.cli_stdin(
        &["camera", "discover", "--wait-ms", "1500", "--username", "admin", "--password-stdin", "--json"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cams = d["cameras"].as_array().expect("cameras");
    assert_eq!(cams.len(), 2, "{d:#}");
    let by_model = |m: &str| cams.iter().find(|c| c["model"] == m).unwrap_or_else(|| panic!("{m} in {d:#}"));
    let hik = by_model("DS-2CD2142FWD-I");
    assert_eq!(hik["streams"][0]["url"], rtsp.url().as_str());
    assert_eq!(hik["onvif_port"], a.http_port);
    assert_eq!(by_model("IPC-HDW2431T")["firmware"], "V5.5.82 build 190220");
    assert!((7..=20).contains(&d["ignored_answers"].as_u64().unwrap()), "{d:#}");

    // The add line, pasted into a shell.
    let line = hik["add_command"].as_str().expect("add line");
    let rest = line.strip_prefix("vistter-agent ").expect("starts with the command");
    let pasted = format!("'{AGENT_BIN}' --config '{}' {rest} --probe", agent.config_path().display());
    let mut sh = Command::new("sh")
        .args(["-c", &pasted])
        .env_remove("VISTTER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    std::io::Write::write_all(&mut sh.stdin.take().unwrap(), format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = sh.wait_with_output().unwrap();
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_str(&agent.ok(&["camera", "list", "--json"])).unwrap();
    assert_eq!(list[0]["id"].as_str(), rest.split_whitespace().nth(2), "{list}");
    assert_eq!(list[0]["url"], rtsp.url().as_str(), "{list}");
    assert_eq!(list[0]["username"], "admin", "{list}");
    assert!(!list.to_string().contains(PASSWORD));
    drop(bad);
}

/// Hostile answers beside one real camera, through the library: only the camera is kept, every bad answer
/// is counted; an answer whose XAddr names another host is listed but that host is never contacted (a
/// listener on 127.0.0.2 sees no connection), so a forged answer cannot aim our signed requests anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_are_ignored_and_a_foreign_xaddr_is_never_contacted() {
    let port = free_udp_port();
    // Its first profile cannot stream (a fault): skipped, the second is listed.
    let _cam = FakeCamera::start(
        port,
        spec(
            1,
            "M3045-V",
            vec![profile("p9", "metadata", 0, 0, ""), profile("p0", "main", 1920, 1080, "rtsp://127.0.0.1/x")],
        ),
    );
    let elsewhere = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    elsewhere.set_nonblocking(true).unwrap();
    let foreign = format!("http://{}/onvif/device_service", elsewhere.local_addr().unwrap());
    let bad = Responder::start_after(port, Duration::from_millis(100), move |id| {
        let mut d = hostile(id);
        // Before the flood, which may fill the prober's socket buffer.
        d.insert(0, probe_matches(id, "urn:uuid:foreign", &foreign, "onvif://www.onvif.org/name/Forged").into_bytes());
        d
    });
    let opts = ProbeOptions {
        wait: Duration::from_millis(1500),
        target: SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), port),
        interfaces: vec![Ipv4Addr::LOCALHOST],
    };
    let creds = Credentials { username: "admin".into(), password: Secret::new(PASSWORD) };
    let found = discover::discover(&opts, Some(&creds)).await.expect("discovery runs");

    // In order of arrival, which a loaded machine may change.
    let mut eps: Vec<&str> = found.cameras.iter().map(|c| c.endpoint.as_str()).collect();
    eps.sort();
    assert_eq!(eps, ["urn:uuid:6a1b2c3d-0000-4000-8000-000000000001", "urn:uuid:foreign"], "{found:#?}");
    let by = |ep: &str| found.cameras.iter().find(|c| c.endpoint == ep).unwrap();
    let real = by("urn:uuid:6a1b2c3d-0000-4000-8000-000000000001");
    let urls: Vec<&str> = real.streams.iter().map(|p| p.url.as_str()).collect();
    assert_eq!(urls, ["rtsp://127.0.0.1/x"], "{found:#?}");
    assert!(real.add_command.as_deref().is_some_and(|l| l.contains("'rtsp://127.0.0.1/x'")), "{real:#?}");
    let forged = by("urn:uuid:foreign");
    assert!(forged.streams.is_empty() && forged.add_command.is_none(), "{forged:#?}");
    assert!(forged.note.as_deref().is_some_and(|n| n.contains("not contacted")), "{forged:#?}");
    assert!(elsewhere.accept().is_err(), "the host named by the forged XAddr was contacted");
    // Huge, garbage, deep, ftp-only, no endpoint, stale, truncated: 7 for each of the two sends of the probe
    // (some may be lost in the flood); the 300 copies of the garbage are read once, not counted 300 times.
    assert!((7..=20).contains(&found.ignored_answers), "{found:#?}");
    assert!(!format!("{found:?}").contains(PASSWORD));
    assert!(!bad.probes.lock().unwrap().is_empty(), "the hostile responder saw the probe");
}

/// Without credentials the cameras are still listed (model from the scopes), with a note saying a login
/// is wanted; with a wrong password the note is the camera's refusal, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_or_with_wrong_credentials_the_camera_is_listed_with_a_note() {
    let port = free_udp_port();
    let _cam = FakeCamera::start(
        port,
        spec(1, "RLC-810A", vec![profile("p0", "main", 3840, 2160, "rtsp://127.0.0.1/h264Preview_01_main")]),
    );
    let opts = ProbeOptions {
        wait: Duration::from_millis(1000),
        target: SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), port),
        interfaces: vec![Ipv4Addr::LOCALHOST],
    };
    let none = discover::discover(&opts, None).await.expect("discovery runs");
    assert_eq!(none.cameras.len(), 1, "{none:#?}");
    let c = &none.cameras[0];
    assert_eq!(c.model.as_deref(), Some("RLC-810A"), "the hardware scope");
    assert_eq!(c.scopes.name.as_deref(), Some("Camera 1"));
    assert!(c.streams.is_empty());
    let note = c.note.as_deref().unwrap_or_default();
    assert!(note.contains("not authorized") && note.contains("--username"), "{note}");

    let wrong = "Wr0ng-pa55word-for-test";
    let creds = Credentials { username: "admin".into(), password: Secret::new(wrong) };
    let refused = discover::discover(&opts, Some(&creds)).await.expect("discovery runs");
    let note = refused.cameras[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("not authorized"), "{note}");
    assert!(!format!("{refused:?}").contains(wrong), "{refused:#?}");
    let rendered = serde_json::to_string(&refused).unwrap();
    assert!(!rendered.contains(wrong));
}

/// A camera that wants HTTP Digest on its ONVIF calls and ignores WS-Security (Reolink and many OEM cameras):
/// with credentials its streams are listed, each request after the challenge carrying a Digest the camera
/// checks; without them the note asks for a login; with a wrong password the note says the camera refused,
/// and the password is nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_wants_http_digest_lists_its_streams() {
    let port = free_udp_port();
    let url = "rtsp://127.0.0.1:554/h264Preview_01_main";
    let cam = FakeCamera::start(
        port,
        CameraSpec { http_digest: true, ..spec(1, "RLC-823A", vec![profile("p0", "main", 2560, 1440, url)]) },
    );
    let opts = ProbeOptions {
        wait: Duration::from_millis(1000),
        target: SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), port),
        interfaces: vec![Ipv4Addr::LOCALHOST],
    };
    let creds = Credentials { username: "admin".into(), password: Secret::new(PASSWORD) };
    let found = discover::discover(&opts, Some(&creds)).await.expect("discovery runs");
    assert_eq!(found.cameras.len(), 1, "{found:#?}");
    let c = &found.cameras[0];
    assert_eq!(c.manufacturer.as_deref(), Some("HIKVISION"), "GetDeviceInformation answered: {c:#?}");
    assert_eq!(c.streams.iter().map(|s| s.url.as_str()).collect::<Vec<_>>(), vec![url], "{c:#?}");
    assert!(c.note.is_none(), "{c:#?}");
    let actions = cam.actions();
    for want in ["GetDeviceInformation", "GetProfiles", "GetStreamUri"] {
        assert!(actions.iter().any(|(a, ok)| a == want && *ok), "{want} answered with a valid Digest: {actions:?}");
    }

    let none = discover::discover(&opts, None).await.expect("discovery runs");
    let note = none.cameras[0].note.as_deref().unwrap_or_default();
    assert!(none.cameras[0].streams.is_empty() && note.contains("--username"), "{note}");

    let wrong = "Wr0ng-digest-pa55word";
    let creds = Credentials { username: "admin".into(), password: Secret::new(wrong) };
    let refused = discover::discover(&opts, Some(&creds)).await.expect("discovery runs");
    let note = refused.cameras[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("refused our HTTP Digest"), "{note}");
    let rendered = format!("{refused:?}{}", serde_json::to_string(&refused).unwrap());
    assert!(!rendered.contains(wrong) && !rendered.contains(PASSWORD), "{rendered}");
}

/// The cloud's `CAMERA_ACTION discover` (announced in STATE `capabilities.features`), with the password
/// sealed to the device: ACK, then a RESULT whose
/// output lists both cameras and their streams, in the shape `result.v1.json` documents; the password is in
/// neither the replies nor the log.
#[test]
fn the_cloud_discover_action_returns_the_cameras() {
    let port = free_udp_port();
    let _a = FakeCamera::start(
        port,
        spec(
            1,
            "DS-2CD2142FWD-I",
            vec![profile("Profile_1", "mainStream", 1920, 1080, "rtsp://127.0.0.1:554/Streaming/Channels/101")],
        ),
    );
    let _b = FakeCamera::start(
        port,
        spec(
            2,
            "IPC-HDW2431T",
            vec![profile("MediaProfile000", "Main", 2688, 1520, "rtsp://127.0.0.1:554/cam/realmonitor?channel=1")],
        ),
    );
    let _bad = Responder::start_after(port, Duration::from_millis(100), hostile);
    let broker = Broker::start(None);
    let mut agent = TestAgent::with_config(&format!(
        "{}[control]\ndevice_id = \"{DEVICE}\"\n[control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\n",
        agent_config(port),
        broker.port
    ));
    let studio = SigningKey::from_bytes(&[0x44; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let device: Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    let sealing = device["device_sealing_key"].as_str().expect("sealing key");
    let sealed = vistter_agent::control::keys::seal_to(sealing, PASSWORD).expect("sealed");
    let base = format!("vistter/v1/devices/{DEVICE}");
    let replies = Sub::new(broker.port, &format!("{base}/replies"));
    let states = Sub::new(broker.port, &format!("{base}/state"));
    agent.spawn();
    let birth = states.next_where(Duration::from_secs(20), "the birth STATE", |m| m["payload"]["online"] == true);
    let features = &birth["payload"]["capabilities"]["features"];
    assert!(features.as_array().is_some_and(|f| f.contains(&json!("camera_discover"))), "{birth}");
    std::thread::sleep(Duration::from_millis(300));

    let id = "9d9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e01";
    let payload = json!({"action": "discover", "discover": {"wait_ms": 1500, "username": "admin", "password": {"sealed": sealed}}});
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": DEVICE, "type": "CAMERA_ACTION", "payload": payload});
    sign(m.as_object_mut().unwrap(), "studio", &studio).unwrap();
    publish(broker.port, &format!("{base}/commands"), &serde_json::to_vec(&m).unwrap(), false);
    let ack = replies.next_where(Duration::from_secs(10), "the ACK", |m| m["correlation_id"] == id);
    assert_eq!(ack["type"], "ACK", "{ack}");
    let r = replies
        .next_where(Duration::from_secs(30), "the RESULT", |m| m["correlation_id"] == id && m["type"] == "RESULT");
    assert_eq!(r["payload"]["status"], "succeeded", "{r}");
    let output = &r["payload"]["output"];
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/control/result.v1.json")).unwrap(),
    )
    .unwrap();
    let mut def = schema["$defs"]["discovered_cameras"].clone();
    def["$defs"] = schema["$defs"].clone();
    let v = jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&def).expect("schema");
    let errs: Vec<String> = v.iter_errors(output).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errs.is_empty(), "{errs:?}\n{output:#}");
    let cams = output["cameras"].as_array().unwrap();
    let mut models: Vec<&str> = cams.iter().filter_map(|c| c["model"].as_str()).collect();
    models.sort();
    assert_eq!(models, ["DS-2CD2142FWD-I", "IPC-HDW2431T"], "{output:#}");
    let urls: Vec<&str> = cams.iter().filter_map(|c| c["streams"][0]["url"].as_str()).collect();
    assert!(urls.contains(&"rtsp://127.0.0.1:554/Streaming/Channels/101"), "{urls:?}");
    assert!(urls.contains(&"rtsp://127.0.0.1:554/cam/realmonitor?channel=1"), "{urls:?}");
    assert!(output["ignored_answers"].as_u64().unwrap() >= 7, "{output:#}");
    assert!(!r.to_string().contains(PASSWORD));
    assert!(agent.pid().is_some_and(alive), "the daemon carries on");
    agent.stop();
    assert!(!agent.log().contains(PASSWORD), "the log holds the password");
}

/// The production path, in a network namespace of the test's own: no interface named and the real port
/// 3702. The probe goes out of every interface that is up and not loopback (the two ends of a veth pair)
/// and finds the camera on the far end, at the address it answered from.
#[test]
fn with_no_interface_named_every_interface_is_probed_on_port_3702() {
    let ns = Netns::new("disc");
    let far = ns.far;
    let uri = format!("rtsp://{far}:554/Streaming/Channels/101");
    let cam_uri = uri.clone();
    let cam = ns.run(move || {
        FakeCamera::start_on(
            far,
            3702,
            spec(1, "DS-2CD2142FWD-I", vec![profile("Profile_1", "main", 1920, 1080, &cam_uri)]),
        )
    });
    let agent = TestAgent::new();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, AGENT_BIN, "--config"])
        .arg(agent.config_path())
        .args(["camera", "discover", "--wait-ms", "1500", "--username", "admin", "--password-stdin", "--json"])
        .env_remove("VISTTER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cams = d["cameras"].as_array().expect("cameras");
    assert_eq!(cams.len(), 1, "{d:#}");
    assert_eq!(cams[0]["address"], far.to_string(), "{d:#}");
    assert_eq!(cams[0]["streams"][0]["url"], uri.as_str(), "{d:#}");
    // The camera heard the probe on both ends of the pair and answered each: one camera, nothing ignored.
    assert_eq!(d["ignored_answers"], 0, "{d:#}");
    assert!(cam.actions().iter().all(|(_, ok)| *ok));
    drop(cam);
    drop(ns);
}
