//! Control-plane benchmark: the real `vistter-agent` daemon with both links up (MQTT to a local
//! mosquitto, WebSocket to `studio serve-ws` over mTLS), commanded through the broker. One run
//! measures:
//!
//! 1. ACK round trip: `BENCH_COMMANDS` (default 10,000) signed PING commands sent one at a time,
//!    each timed from its publish to its ACK arriving; p50/p99/max;
//! 2. the baseline: a trivial echo client on the same broker (subscribes, republishes), the same
//!    number of messages of the same size, timed the same way, alternating with the commands (one
//!    command, one echo) so a machine load that varies during the run weighs on both alike;
//! 3. sustained rate: the same number of commands again with up to `BENCH_WINDOW` (default 256)
//!    in flight, commands/s from the first publish to the last ACK (every RESULT is awaited too);
//! 4. the agent's RSS (VmRSS and its peak, VmHWM, split into anonymous and file-backed pages) with
//!    both transports connected, before and after the runs, against the same agent with no cloud
//!    link configured. Both agents run as deployed (`MALLOC_ARENA_MAX=2`, as the systemd unit and
//!    the balena image set it).
//!
//! Targets (DESIGN §3, control-plane issue): p99 ≤ 10 ms and ≤ 2 × the echo's p99; ≥ 2,000
//! commands/s; RSS ≤ 20 MB. `cargo bench --bench control` (or `./bench`). Exits non-zero only if
//! the run itself failed; a missed target prints MISS.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mqtt::{Broker, Pki, WsServer};
use common::*;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;
use vistter_agent::control::envelope::{b64, sign, timestamp_now};

const DEVICE: &str = "vs-bench";
const PREFIX: &str = "vistter/v1";
const P99_TARGET_MS: f64 = 10.0;
const RATE_TARGET: f64 = 2000.0;
const RSS_TARGET_MB: f64 = 20.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99, max) = (percentile(&v, 0.5), percentile(&v, 0.99), v[v.len() - 1]);
    println!("  {name:<28} n={:<6} p50 {p50:7.3} ms  p99 {p99:7.3} ms  max {max:7.3} ms", v.len());
    (p50, p99)
}

/// The bench's MQTT client (see `support::mqtt_client`).
async fn client(port: u16, id: &str, sub: &str) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    mqtt_client(port, id, sub, 1000).await
}

fn ping(key: &SigningKey, n: usize) -> (String, String) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": DEVICE, "type": "PING", "payload": {}});
    let _ = n;
    sign(m.as_object_mut().unwrap(), "bench", key).unwrap();
    (id, m.to_string())
}

/// VmRSS, VmHWM, RssAnon (heap and stacks), RssFile (the binary and libraries), in kB.
fn rss_kb(pid: u32) -> (u64, u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let f = |k: &str| {
        s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    (f("VmRSS:"), f("VmHWM:"), f("RssAnon:"), f("RssFile:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_u64("BENCH_COMMANDS", 10_000) as usize;
    let window = env_u64("BENCH_WINDOW", 256) as usize;
    println!("control-plane benchmark: {n} commands, window {window}, {} cores", num_cpus());
    let pki = Pki::new(DEVICE);
    let b = Broker::start(None);
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x77; 32]);
    let keyfile = keys.path().join("bench.json");
    std::fs::write(
        &keyfile,
        json!({"key_id": "bench", "private_key_seed": b64(key.as_bytes()), "public_key": b64(key.verifying_key().as_bytes())})
            .to_string(),
    )
    .unwrap();
    let ws = WsServer::start(&pki, &keyfile);
    let ws_port = ws.port;
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\n\
         [control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\n\
         [control.ws]\nurl = \"wss://127.0.0.1:{ws_port}/v1/devices/{{device_id}}/channel\"\n{}",
        b.port,
        pki.config_lines()
    ));
    agent.ok(&["trust", "add", "bench", "--public-key", &b64(key.verifying_key().as_bytes())]);
    let base = format!("{PREFIX}/devices/{DEVICE}");
    let (c, mut rx) = client(b.port, "bench-studio", &format!("{base}/#")).await;
    // As deployed: at the level a deployed agent logs at, with the allocator setting of the
    // systemd unit and the balena image (MALLOC_ARENA_MAX=2).
    agent.spawn_at("info", DEPLOYED_ENV);
    let t0 = Instant::now();
    loop {
        let st: Value = serde_json::from_str(&agent.ok(&["status", "--json"])).unwrap_or_default();
        if st["links"] == json!({"mqtt": "connected", "ws": "connected"}) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the links did not both connect: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both links up (the WebSocket one connects on its own; give it a moment either way).
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    let idle = rss_kb(agent.pid().unwrap());
    // The baseline: the same agent with no cloud link configured, idle as long.
    let mut plain = TestAgent::new();
    plain.spawn_at("info", DEPLOYED_ENV);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let plain_rss = rss_kb(plain.pid().unwrap());
    plain.stop();

    // 1 and 2. ACK round trips, one command at a time, and the baseline: a trivial echo client on
    // the same broker, messages of the same size, timed the same way. The two alternate (one
    // command, one echo) so that both see the same machine: a load that comes and goes during the
    // run weighs on both figures alike.
    let commands: Vec<(String, String)> = (0..n).map(|i| ping(&key, i)).collect();
    let size = commands[0].1.len();
    let (echo, mut echo_rx) = client(b.port, "bench-echo", "bench/echo/in").await;
    tokio::spawn(async move {
        while let Some((_, body)) = echo_rx.recv().await {
            let _ = echo.publish("bench/echo/out", QoS::AtLeastOnce, false, body).await;
        }
    });
    let (e, mut e_rx) = client(b.port, "bench-echo-client", "bench/echo/out").await;
    let filler = "x".repeat(size);
    let mut acks = Vec::with_capacity(n);
    let mut echoes = Vec::with_capacity(n);
    for (id, body) in &commands {
        let t = Instant::now();
        c.publish(format!("{base}/commands"), QoS::AtLeastOnce, false, body.clone()).await.unwrap();
        loop {
            let (topic, body) =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an ACK").unwrap();
            if !topic.ends_with("/replies") {
                continue;
            }
            let m: Value = serde_json::from_slice(&body).unwrap();
            if m["correlation_id"] == id.as_str() && m["type"] == "ACK" {
                acks.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert_ne!(m["type"], "NACK", "{m}");
        }
        let t = Instant::now();
        e.publish("bench/echo/in", QoS::AtLeastOnce, false, filler.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), e_rx.recv()).await.expect("an echo").unwrap();
        echoes.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // 3. Sustained: up to `window` in flight, until every ACK and RESULT is in.
    let commands: Vec<(String, String)> = (0..n).map(|i| ping(&key, i)).collect();
    let pending: Arc<Mutex<HashMap<String, u8>>> = Arc::default();
    let t = Instant::now();
    let (mut sent, mut acked, mut results) = (0usize, 0usize, 0usize);
    while results < n {
        while sent < n && sent - results < window {
            let (id, body) = &commands[sent];
            pending.lock().unwrap().insert(id.clone(), 0);
            c.publish(format!("{base}/commands"), QoS::AtLeastOnce, false, body.clone()).await.unwrap();
            sent += 1;
        }
        let (topic, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("replies").unwrap();
        if !topic.ends_with("/replies") {
            continue;
        }
        let m: Value = serde_json::from_slice(&body).unwrap();
        let id = m["correlation_id"].as_str().unwrap_or_default();
        if pending.lock().unwrap().contains_key(id) {
            match m["type"].as_str() {
                Some("ACK") => acked += 1,
                Some("RESULT") => results += 1,
                _ => panic!("{m}"),
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let (rss, hwm, anon, file) = rss_kb(agent.pid().unwrap());
    let threads = std::fs::read_dir(format!("/proc/{}/task", agent.pid().unwrap())).map(|d| d.count()).unwrap_or(0);
    let wal = std::fs::metadata(agent.data_dir().join("agent.db-wal")).map(|m| m.len()).unwrap_or(0);
    let log = agent.log();
    drop(c);
    agent.stop();
    drop(ws);

    println!("\nresults ({size}-byte commands through mosquitto on loopback):");
    let (_, p99) = summary("agent: publish → ACK", acks);
    let (_, echo_p99) = summary("baseline: echo round trip", echoes);
    println!(
        "  sustained: {n} commands ({acked} ACK + {results} RESULT) in {secs:.2} s = {rate:.0} commands/s   [target ≥ {RATE_TARGET:.0}] {}",
        pass(rate >= RATE_TARGET)
    );
    println!("  p99 {p99:.3} ms   [target ≤ {P99_TARGET_MS} ms] {}", pass(p99 <= P99_TARGET_MS));
    println!("  p99 / echo p99 = {:.2}   [target ≤ 2] {}", p99 / echo_p99, pass(p99 <= 2.0 * echo_p99));
    println!(
        "  agent RSS, MQTT and WebSocket connected, before the runs: {:.1} MB   [target ≤ {RSS_TARGET_MB} MB] {}",
        idle.0 as f64 / 1024.0,
        pass(idle.0 as f64 / 1024.0 <= RSS_TARGET_MB)
    );
    println!(
        "  agent RSS after the runs (20,000 commands at full speed): {:.1} MB (peak {:.1} MB)   [target ≤ {RSS_TARGET_MB} MB] {}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        pass(rss as f64 / 1024.0 <= RSS_TARGET_MB)
    );
    println!(
        "  baseline: the agent with no cloud link, idle: RSS {:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)",
        plain_rss.0 as f64 / 1024.0,
        plain_rss.2 as f64 / 1024.0,
        plain_rss.3 as f64 / 1024.0
    );
    println!(
        "  before the runs: RSS {:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)",
        idle.0 as f64 / 1024.0,
        idle.2 as f64 / 1024.0,
        idle.3 as f64 / 1024.0
    );
    println!(
        "  after the runs:  of which anonymous (heap, stacks) {:.1} MB, file-backed (binary, libraries) {:.1} MB; {threads} threads",
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    println!("  the database's WAL file after the runs: {:.1} MB", wal as f64 / (1 << 20) as f64);
    let ws_up = log.contains("WebSocket link connected");
    println!("  WebSocket link connected during the run: {ws_up}");
}
