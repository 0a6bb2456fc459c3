//! The cloud link against a real mosquitto with an mTLS listener (dev PKI from
//! `certs/make-dev-ca.sh`): only a valid client certificate connects, and renewed files are picked
//! up without a restart; an outage of the cloud loses nothing (every message arrives, `seq`
//! contiguous and in order; commands queued while the device was away run when it is back), also
//! when the broker restarts without persistence; `kill -9` leaves an offline STATE (the will,
//! carrying `after_seq`) within 1.5 ×
//! keepalive.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mqtt::{publish, Broker, Pki, Proxy, Sub};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use vistter_agent::control::envelope::{b64, public_key_from_b64, sign, timestamp_now, verify, Signature};

const PREFIX: &str = "vistter/v1";

fn command(key: &SigningKey, device: &str, id: &str, ty: &str, payload: Value) -> Vec<u8> {
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": device, "type": ty, "payload": payload});
    sign(m.as_object_mut().unwrap(), "studio", key).unwrap();
    serde_json::to_vec(&m).unwrap()
}

fn verified(msg: &Value, device_key: &str) -> bool {
    let Ok(sig) = serde_json::from_value::<Signature>(msg["signature"].clone()) else { return false };
    verify(msg.as_object().unwrap(), &sig, &public_key_from_b64(device_key).unwrap()).is_ok()
}

fn agent_for(device: &str, url: &str, pki_lines: &str, extra: &str) -> TestAgent {
    TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{device}\"\nmetrics_interval_s = 1\n{extra}[control.mqtt]\nurl = \"{url}\"\n{pki_lines}keepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n"
    ))
}

fn device_key(agent: &TestAgent) -> String {
    let device: Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    device["device_public_key"].as_str().unwrap().to_string()
}

#[test]
fn only_a_valid_client_certificate_connects_and_renewed_files_are_used_without_a_restart() {
    let device = "vs-mtls";
    let pki = Pki::new(device);
    let rogue = Pki::new(device);
    let b = Broker::start(Some(&pki));
    let tls_port = b.tls_port.unwrap();

    // The broker side: no certificate, or one from another CA, is refused.
    for args in [
        vec!["--cafile".to_string(), pki.path("ca.pem").display().to_string()],
        vec![
            "--cafile".into(),
            pki.path("ca.pem").display().to_string(),
            "--cert".into(),
            rogue.path("device.pem").display().to_string(),
            "--key".into(),
            rogue.path("device.key").display().to_string(),
        ],
    ] {
        let out = run_with_timeout(
            Command::new(find_bin("mosquitto_sub").unwrap())
                .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "-t", "x", "-C", "1", "-W", "3"])
                .args(&args),
            Duration::from_secs(10),
        )
        .expect("mosquitto_sub ended");
        assert!(!out.status.success(), "a client without a valid certificate connected: {args:?}");
    }

    // The agent with a certificate from another CA: refused, reported, retried with backoff.
    let files = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "device.pem", "device.key"] {
        let from = if f == "ca.pem" { pki.path(f) } else { rogue.path(f) };
        std::fs::copy(from, files.path().join(f)).unwrap();
    }
    let lines = format!(
        "ca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/device.pem\"\nkey_file = \"{0}/device.key\"\n",
        files.path().display()
    );
    let mut agent = agent_for(device, &format!("mqtts://127.0.0.1:{tls_port}"), &lines, "");
    let key = device_key(&agent);
    let states = Sub::new(b.port, &format!("{PREFIX}/devices/{device}/state"));
    agent.spawn();
    let t0 = Instant::now();
    while agent.log().matches("reconnecting in").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no refused attempts reported:\n{}", tail(&agent.log(), 20));
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = agent.log();
    let retries = log.matches("reconnecting in").count();
    assert!(retries >= 2, "retried: {retries}\n{}", tail(&log, 20));
    assert!(states.rx.recv_timeout(Duration::from_millis(200)).is_err(), "nothing published with a rogue certificate");
    assert!(agent.pid().is_some_and(alive), "the daemon carries on");

    // Renewed files, written in place: the agent reconnects with them, no restart.
    for f in ["device.pem", "device.key"] {
        std::fs::copy(pki.path(f), files.path().join(f)).unwrap();
    }
    let birth = states.next_where(Duration::from_secs(30), "an online STATE", |m| m["payload"]["online"] == true);
    assert!(verified(&birth, &key), "{birth}");
    assert_eq!(birth["payload"]["link"]["mqtt"], "connected", "{birth}");
    assert!(!agent.log().contains("BEGIN PRIVATE KEY"), "no key material in the log");
}

/// Every message seen on the device's topics, by `seq` (first arrival kept).
fn seqs(msgs: &[Value]) -> BTreeSet<i64> {
    msgs.iter().filter_map(|m| m["seq"].as_i64()).collect()
}

fn missing(s: &BTreeSet<i64>) -> Vec<i64> {
    let (Some(lo), Some(hi)) = (s.first(), s.last()) else { return vec![] };
    (*lo..=*hi).filter(|x| !s.contains(x)).collect()
}

/// Non-STATE messages in arrival order, repeats (same seq) removed, must have rising `seq`.
fn assert_in_order(msgs: &[Value]) {
    let mut seen = BTreeSet::new();
    let mut last = 0;
    for m in msgs.iter().filter(|m| m["type"] != "STATE" && m.get("seq").is_some()) {
        let s = m["seq"].as_i64().unwrap();
        if seen.insert(s) {
            assert!(s > last, "seq {s} after {last}: out of order");
            last = s;
        }
    }
}

#[test]
fn an_outage_of_the_cloud_loses_nothing_and_kill_9_leaves_an_offline_state() {
    let device = "vs-outage";
    let outage = Duration::from_secs(std::env::var("VSA_OUTAGE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let pki = Pki::new(device);
    let mut b = Broker::start(Some(&pki));
    let proxy = Proxy::start(b.tls_port.unwrap());
    let mut agent = agent_for(device, &format!("mqtts://127.0.0.1:{}", proxy.port), &pki.config_lines(), "");
    let studio = SigningKey::from_bytes(&[0x55; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    let key = device_key(&agent);
    let base = format!("{PREFIX}/devices/{device}");
    let all = Sub::new(b.port, &format!("{base}/#"));
    agent.spawn();
    let mut first =
        all.until(Duration::from_secs(30), "the birth", |m| m["type"] == "STATE" && m["payload"]["online"] == true);
    first.extend(all.until(Duration::from_secs(10), "METRICS", |m| m["type"] == "METRICS"));

    // 1. The cloud is gone for `outage`; the broker keeps the session. A command sent meanwhile
    //    waits in it.
    proxy.cut();
    let cut_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let id = "0d9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    publish(b.port, &format!("{base}/commands"), &command(&studio, device, id, "PING", json!({})), false);
    std::thread::sleep(outage.saturating_sub(cut_at.elapsed()));
    proxy.restore();
    let mut msgs = all.until(Duration::from_secs(30), "the RESULT of the queued command", |m| {
        m["type"] == "RESULT" && m["correlation_id"] == id
    });
    let result = msgs.last().unwrap().clone();
    assert_eq!(result["payload"]["status"], "succeeded", "{result}");
    msgs.extend(all.drain(Duration::from_secs(3)));
    msgs.splice(0..0, first);
    let metrics = msgs.iter().filter(|m| m["type"] == "METRICS").count() as u64;
    assert!(metrics + 3 >= outage.as_secs(), "{metrics} METRICS for a {} s outage", outage.as_secs());
    // (The subscription sees the command topic too: commands carry no `seq`.)
    let from_device = msgs.iter().filter(|m| m.get("seq").is_some());
    assert!(from_device.clone().all(|m| verified(m, &key)), "every message is signed by the device");

    // 2. The broker restarts without persistence while the device is away: the session is lost,
    //    the outbox is not.
    proxy.cut();
    msgs.extend(all.drain(Duration::from_secs(1)));
    b.restart();
    let after = Sub::new(b.port, &format!("{base}/#"));
    std::thread::sleep(Duration::from_secs(8));
    proxy.restore();
    let mut msgs2 =
        after.until(Duration::from_secs(30), "the birth", |m| m["type"] == "STATE" && m["payload"]["online"] == true);
    let id2 = "0e9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
    std::thread::sleep(Duration::from_millis(500));
    publish(b.port, &format!("{base}/commands"), &command(&studio, device, id2, "PING", json!({})), false);
    msgs2.extend(after.drain(Duration::from_secs(3)));
    assert!(
        msgs2.iter().any(|m| m["type"] == "RESULT" && m["correlation_id"] == id2),
        "resubscribed: the command after the session loss was answered"
    );
    assert_in_order(&msgs2);

    // Nothing lost across both: the seqs form one run. A Last Will takes no number (it carries
    // `after_seq`), so the will the restarted broker forgot leaves no hole.
    assert_in_order(&msgs);
    let mut both = msgs.clone();
    both.append(&mut msgs2);
    let s = seqs(&both);
    let gaps = missing(&s);
    assert!(gaps.is_empty(), "seq gaps {gaps:?} in {} messages", s.len());

    // 3. kill -9: the broker publishes the retained offline STATE within 1.5 × keepalive.
    let t = Instant::now();
    agent.kill9();
    let death = after.next_where(Duration::from_secs(15), "the offline STATE", |m| {
        m["type"] == "STATE" && m["payload"]["online"] == false
    });
    let took = t.elapsed();
    assert!(took <= Duration::from_secs_f64(7.5 + 1.5), "offline after {took:?}");
    assert!(verified(&death, &key));
    // The will names the last number sent before it was signed, and takes none of its own.
    assert!(death.get("seq").is_none(), "a will takes no seq: {death}");
    let after_seq = death["after_seq"].as_i64().unwrap_or_else(|| panic!("a will carries after_seq: {death}"));
    assert!(after_seq >= 1 && after_seq <= *s.last().unwrap(), "after_seq {after_seq} within the run seen: {death}");
    let late = Sub::new(b.port, &format!("{base}/state"));
    assert_eq!(late.next(Duration::from_secs(5))["payload"]["online"], false, "retained");
}
