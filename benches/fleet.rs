//! Fleet benchmark: `FLEET_AGENTS` (default 500) real `vistter-agent` daemons, each with
//! `control_plane_only = true` (the same binary; no FFmpeg, no show), on one local mosquitto, with
//! the production reconnect settings. One run measures:
//!
//! 1. memory per agent once all are connected: VmRSS and PSS (PSS shares the binary's pages
//!    fairly between the agents), mean and max, and the fleet's total PSS;
//! 2. a fleet-wide command: one signed `PING` to every device, published back to back by one cloud
//!    client; per device the time from the first publish to its ACK, p50/p99/max, and the time
//!    until all answered; `FLEET_ROUNDS` (default 5) rounds;
//! 3. telemetry throughput: METRICS (every `FLEET_METRICS_S`, default 5 s) and other telemetry
//!    received by the cloud over `FLEET_WINDOW_S` (default 30 s): messages/s, bytes/s, and `seq`
//!    holes per device (goal 0);
//! 4. a broker restart: mosquitto stopped and started again on the same port; new connections per
//!    second as the broker's own log records them, until every agent is back. The agents wait a
//!    random 0..`drop_delay_max_s` (default 30 s) after a drop before they reconnect, so the bound
//!    is N / 30 s on average; the target is a busiest second of at most `FLEET_RATE_BOUND`
//!    (default 50) connections.
//!
//! `cargo bench --bench fleet` (or `./bench`). Exits non-zero only if the run itself failed; a
//! missed target prints MISS.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;
use vistter_agent::control::envelope::{b64, sign, timestamp_now};

const PREFIX: &str = "vistter/v1";

/// mosquitto on a fixed port, logging each connection with a Unix timestamp; restartable.
struct LoggedBroker {
    port: u16,
    dir: tempfile::TempDir,
    proc: Option<ProcGuard>,
    generation: u32,
}

impl LoggedBroker {
    fn start() -> LoggedBroker {
        require_bin("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        // mosquitto started as root runs as its own user: it writes its log here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut b = LoggedBroker { port: free_port(), dir, proc: None, generation: 0 };
        b.restart();
        b
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("mosquitto-{}.log", self.generation))
    }

    /// A new broker process on the same port (a new log file), with no memory of sessions.
    fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
        self.generation += 1;
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings true\nset_tcp_nodelay true\npersistence false\nmax_queued_messages 10000\n\
                 log_dest file {}\nlog_type notice\nlog_type error\nlog_type warning\nconnection_messages true\n\
                 log_timestamp true\nlistener {} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n",
                self.log_path().display(),
                self.port
            ),
        )
        .unwrap();
        let proc = ProcGuard::spawn(
            "mosquitto",
            Command::new(find_bin("mosquitto").unwrap())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// (Unix second, client id) of every `New client connected … as <id>` line of the current log.
    fn connections(&self) -> Vec<(u64, String)> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("New client connected"))
            .filter_map(|l| {
                let t = l.split(':').next()?.trim().parse().ok()?;
                let id = l.split(" as ").nth(1)?.split_whitespace().next()?.to_string();
                Some((t, id))
            })
            .collect()
    }
}

fn device(i: usize) -> String {
    format!("fleet-{i:04}")
}

/// One agent's folder: its config (control-plane-only, production link settings) and data dir.
fn prepare(root: &Path, i: usize, port: u16, metrics_s: u64, studio: &str) -> PathBuf {
    let dir = root.join(device(i));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ncontrol_plane_only = true\nlog_level = \"warn\"\nlog_format = \"text\"\n\
             [status]\nenabled = false\n\
             [control]\ndevice_id = \"{}\"\nmetrics_interval_s = {metrics_s}\n\
             [control.mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nallow_insecure = true\n",
            dir.join("data").display(),
            device(i)
        ),
    )
    .unwrap();
    let out = Command::new(AGENT_BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["trust", "add", "studio", "--public-key", studio])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "trust add: {}", String::from_utf8_lossy(&out.stderr));
    cfg
}

fn spawn_agent(cfg: &Path, i: usize) -> ProcGuard {
    let mut cmd = Command::new(AGENT_BIN);
    cmd.arg("--config").arg(cfg).arg("run").stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in DEPLOYED_ENV {
        cmd.env(k, v);
    }
    ProcGuard::spawn(&device(i), &mut cmd)
}

/// (VmRSS, PSS) of a process in kB.
fn rss_pss(pid: u32) -> (u64, u64) {
    let field = |text: &str, k: &str| {
        text.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&rollup, "Pss:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The cloud: one MQTT client subscribed to every device's replies, metrics, events and state;
/// each message is stamped when the bench takes it.
async fn cloud(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<(Instant, String, Vec<u8>)>) {
    let (c, mut raw) = mqtt_client(port, "fleet-cloud", &format!("{PREFIX}/devices/+/#"), 2000).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((topic, body)) = raw.recv().await {
            if tx.send((Instant::now(), topic, body)).is_err() {
                return;
            }
        }
    });
    (c, rx)
}

fn ping(key: &SigningKey, device_id: &str) -> (String, Vec<u8>) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": device_id, "type": "PING", "payload": {}});
    sign(m.as_object_mut().unwrap(), "studio", key).unwrap();
    (id, serde_json::to_vec(&m).unwrap())
}

fn device_of(topic: &str) -> Option<&str> {
    topic.strip_prefix(PREFIX)?.strip_prefix("/devices/")?.split('/').next()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_u64("FLEET_AGENTS", 500) as usize;
    let rounds = env_u64("FLEET_ROUNDS", 5) as usize;
    let metrics_s = env_u64("FLEET_METRICS_S", 5);
    let window_s = env_u64("FLEET_WINDOW_S", 30);
    let bound = env_u64("FLEET_RATE_BOUND", 50) as usize;
    println!("fleet benchmark: {n} control-plane-only agents on one mosquitto, {} cores", num_cpus());
    let mut broker = LoggedBroker::start();
    let root = tempfile::tempdir().unwrap();
    let studio = SigningKey::from_bytes(&[0x42; 32]);
    let studio_pub = b64(studio.verifying_key().as_bytes());

    // Prepare the agents (their CLI, a few at a time), then start them all.
    let t = Instant::now();
    let cfgs: Vec<PathBuf> = std::thread::scope(|s| {
        let per = n.div_ceil(4).max(1);
        let handles: Vec<_> = (0..n)
            .collect::<Vec<_>>()
            .chunks(per)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                let (root, studio_pub, port) = (root.path(), studio_pub.as_str(), broker.port);
                s.spawn(move || {
                    chunk.iter().map(|&i| prepare(root, i, port, metrics_s, studio_pub)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    println!("  prepared {n} agents in {:.1} s", t.elapsed().as_secs_f64());
    let (c, mut rx) = cloud(broker.port).await;
    let t = Instant::now();
    let mut agents: Vec<ProcGuard> = cfgs.iter().enumerate().map(|(i, cfg)| spawn_agent(cfg, i)).collect();
    // Every agent's birth (a retained STATE with online: true).
    let mut online: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 5);
    while online.len() < n && Instant::now() < deadline {
        if let Ok(Some((_, topic, body))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            if topic.ends_with("/state") {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                if v["payload"]["online"] == true {
                    online.insert(device_of(&topic).unwrap_or_default().to_string());
                }
            }
        }
    }
    let up_s = t.elapsed().as_secs_f64();
    let dead = agents.iter_mut().map(|a| !a.is_running()).filter(|d| *d).count();
    println!("  {}/{n} agents online after {up_s:.1} s ({dead} exited)", online.len());
    assert_eq!(online.len(), n, "not every agent came online");

    // 1. Memory, after a settling period.
    tokio::time::sleep(Duration::from_secs(10)).await;
    while rx.try_recv().is_ok() {}
    let mem: Vec<(u64, u64)> = agents.iter().map(|a| rss_pss(a.pid())).collect();
    let rss: Vec<f64> = mem.iter().map(|m| m.0 as f64 / 1024.0).collect();
    let pss: Vec<f64> = mem.iter().map(|m| m.1 as f64 / 1024.0).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let broker_rss = rss_pss(broker.proc.as_ref().unwrap().pid()).0 as f64 / 1024.0;
    println!("memory per agent:");
    println!("  RSS mean {:.1} MB, max {:.1} MB", mean(&rss), max(&rss));
    println!(
        "  PSS mean {:.1} MB, max {:.1} MB; the fleet {:.0} MB in all; mosquitto RSS {broker_rss:.1} MB",
        mean(&pss),
        max(&pss),
        pss.iter().sum::<f64>()
    );

    // 2. Fleet-wide commands.
    println!("fleet-wide PING, {rounds} rounds (each: one command per device, back to back):");
    let mut all_lat: Vec<f64> = Vec::new();
    let mut completions: Vec<f64> = Vec::new();
    let mut telemetry_during: Vec<(Instant, String, Vec<u8>)> = Vec::new();
    for round in 0..rounds {
        let msgs: Vec<(usize, String, Vec<u8>)> = (0..n)
            .map(|i| {
                let (id, body) = ping(&studio, &device(i));
                (i, id, body)
            })
            .collect();
        let mut pending: HashMap<String, usize> = msgs.iter().map(|(i, id, _)| (id.clone(), *i)).collect();
        let t0 = Instant::now();
        for (i, _, body) in &msgs {
            c.publish(format!("{PREFIX}/devices/{}/commands", device(*i)), QoS::AtLeastOnce, false, body.clone())
                .await
                .unwrap();
        }
        let publish_s = t0.elapsed().as_secs_f64();
        let mut lat: Vec<f64> = Vec::new();
        let deadline = t0 + Duration::from_secs(60);
        while !pending.is_empty() && Instant::now() < deadline {
            let Ok(Some((at, topic, body))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await else {
                continue;
            };
            if !topic.ends_with("/replies") {
                telemetry_during.push((at, topic, body));
                continue;
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if v["type"] == "ACK" {
                if let Some(corr) = v["correlation_id"].as_str() {
                    if pending.remove(corr).is_some() {
                        lat.push(at.duration_since(t0).as_secs_f64() * 1e3);
                    }
                }
            }
        }
        let answered = lat.len();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let done = lat.last().copied().unwrap_or(f64::NAN);
        println!(
            "  round {}: {answered}/{n} ACKed; publish {:.0} ms; ACK p50 {:.0} ms, p99 {:.0} ms, all answered at {done:.0} ms",
            round + 1,
            publish_s * 1e3,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        assert_eq!(answered, n, "round {}: {} devices never answered", round + 1, n - answered);
        completions.push(done);
        all_lat.extend(lat);
        // Let the RESULTs drain before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while rx.try_recv().is_ok() {}
    }
    all_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    completions.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  all rounds: ACK p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all {n} answered in {:.0}..{:.0} ms",
        percentile(&all_lat, 0.5),
        percentile(&all_lat, 0.99),
        all_lat[all_lat.len() - 1],
        completions[0],
        completions[completions.len() - 1]
    );

    // 3. Telemetry throughput.
    let t0 = Instant::now();
    let (mut msgs, mut bytes, mut metrics) = (0u64, 0u64, 0u64);
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    while t0.elapsed() < Duration::from_secs(window_s) {
        let Ok(Some((_, topic, body))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await else {
            continue;
        };
        if topic.ends_with("/replies") || topic.ends_with("/state") {
            continue;
        }
        msgs += 1;
        bytes += body.len() as u64;
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["type"] == "METRICS" {
            metrics += 1;
        }
        if let (Some(d), Some(s)) = (device_of(&topic), v["seq"].as_i64()) {
            seqs.entry(d.to_string()).or_default().push(s);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let holes: usize = seqs
        .values_mut()
        .map(|v| {
            v.sort();
            v.dedup();
            let span = (v[v.len() - 1] - v[0] + 1) as usize;
            span - v.len()
        })
        .sum();
    println!("telemetry over {secs:.0} s:");
    println!(
        "  {:.0} messages/s ({:.0} METRICS/s, expected {:.0}), {:.1} kB/s; {} devices reporting; seq holes {holes} (goal 0) {}",
        msgs as f64 / secs,
        metrics as f64 / secs,
        n as f64 / metrics_s as f64,
        bytes as f64 / secs / 1e3,
        seqs.len(),
        pass(holes == 0)
    );
    drop(telemetry_during);

    // 4. Broker restart.
    drop(c);
    broker.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut conns = broker.connections();
    loop {
        let ids: BTreeSet<&String> = conns.iter().map(|c| &c.1).filter(|id| id.starts_with("fleet-0")).collect();
        if ids.len() >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        conns = broker.connections();
    }
    let all_back = t0.elapsed().as_secs_f64();
    let fleet: Vec<&(u64, String)> = conns.iter().filter(|c| c.1.starts_with("fleet-0")).collect();
    let back: BTreeSet<&String> = fleet.iter().map(|c| &c.1).collect();
    let mut per_sec: BTreeMap<u64, usize> = BTreeMap::new();
    for (t, _) in &fleet {
        *per_sec.entry(*t).or_default() += 1;
    }
    let busiest = per_sec.values().copied().max().unwrap_or(0);
    let first = per_sec.keys().next().copied().unwrap_or(0);
    let span = per_sec.keys().last().copied().unwrap_or(0).saturating_sub(first) + 1;
    println!("broker restart:");
    println!(
        "  {}/{n} agents back in {all_back:.1} s; {} connections over {span} s ({:.1}/s on average); busiest second {busiest} (bound ≤ {bound}) {}",
        back.len(),
        fleet.len(),
        fleet.len() as f64 / span as f64,
        pass(busiest <= bound && back.len() == n)
    );
    let profile: Vec<String> = per_sec.iter().map(|(t, c)| format!("{}:{c}", t - first)).collect();
    println!("  connections per second (s:count): {}", profile.join(" "));

    // Stop the fleet: SIGTERM to all, then the guards reap them.
    for a in &mut agents {
        a.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for a in &mut agents {
        a.wait_timeout(Duration::from_secs(10));
    }
    drop(agents);
}
