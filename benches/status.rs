//! Status server and idle-cost benchmark:
//!
//! 1. an idle agent (nothing configured) over `BENCH_IDLE_SECS` (default 60): RSS (split into
//!    anonymous and file-backed pages) and CPU as a share of one core; targets ≤ 20 MB, ≤ 1%;
//! 2. a live program (two simulated cameras, one ingest) while `BENCH_CLIENTS` (default 50)
//!    clients fetch `/metrics` and `/api/v1/status` in turn for `BENCH_SECS` (default 20):
//!    latency p50/p99 per route (target p99 ≤ 20 ms), and the program's dropped frames during the
//!    load against the same length of time without it, measured in the same run.
//!
//! `cargo bench --bench status` (or `./bench`). Exits non-zero only if the run itself failed.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use support::*;

const P99_TARGET_MS: f64 = 20.0;
const RSS_TARGET_MB: f64 = 20.0;
const CPU_TARGET: f64 = 1.0;

fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

/// (VmRSS, RssAnon, RssFile) in kB.
fn rss_kb(pid: u32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let f = |k: &str| {
        s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    (f("VmRSS:"), f("RssAnon:"), f("RssFile:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the status server did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dropped(agent: &TestAgent) -> u64 {
    agent.program("main")["dropped_frames"].as_u64().unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let idle_secs = env_u64("BENCH_IDLE_SECS", 60);
    let load_secs = env_u64("BENCH_SECS", 20);
    let clients = env_u64("BENCH_CLIENTS", 50) as usize;
    println!("status benchmark: idle {idle_secs} s, then {clients} clients for {load_secs} s against a live program");
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap();

    // 1. Idle.
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    agent.spawn_at("info", &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &base).await;
    let pid = agent.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0) = (cpu_s(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu = (cpu_s(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let (rss, anon, file) = rss_kb(pid);

    // 2. A live program, then the same program under load.
    let cam_a = SimCamera::start("red");
    let cam_b = SimCamera::start("blue");
    let ingest = RtmpIngest::start();
    agent.ok(&["camera", "add", "a", "--url", &cam_a.url()]);
    agent.ok(&["camera", "add", "b", "--url", &cam_b.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "bench-status"]);
    agent.start_program_fps(&["a", "b"], &["d1"], 30);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet0 = dropped(&agent);
    tokio::time::sleep(Duration::from_secs(load_secs)).await;
    let quiet = dropped(&agent).saturating_sub(quiet0);

    let loaded0 = dropped(&agent);
    let deadline = Instant::now() + Duration::from_secs(load_secs);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let (mut metrics, mut status, mut errors) = (Vec::new(), Vec::new(), 0u64);
            let mut n = i;
            while Instant::now() < deadline {
                let path = if n % 2 == 0 { "/metrics" } else { "/api/v1/status" };
                n += 1;
                let t = Instant::now();
                let ok = match http.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                match (ok, path) {
                    (false, _) => errors += 1,
                    (true, "/metrics") => metrics.push(ms),
                    (true, _) => status.push(ms),
                }
            }
            (metrics, status, errors)
        }));
    }
    let (mut metrics, mut status, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (m, s, e) = t.await.unwrap();
        metrics.extend(m);
        status.extend(s);
        errors += e;
    }
    let loaded = dropped(&agent).saturating_sub(loaded0);
    let program: Value = agent.program("main");
    agent.stop();

    println!("\nresults:");
    println!(
        "  idle agent: RSS {:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)   [target ≤ {RSS_TARGET_MB} MB] {}",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        pass(rss as f64 / 1024.0 <= RSS_TARGET_MB)
    );
    println!(
        "  idle agent: CPU {idle_cpu:.2}% of a core over {idle_secs} s   [target ≤ {CPU_TARGET}%] {}",
        pass(idle_cpu <= CPU_TARGET)
    );
    for (name, v) in [("/metrics", &mut metrics), ("/api/v1/status", &mut status)] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p99 = percentile(v, 0.99);
        println!(
            "  {name:<15} {clients} clients: n={:<6} p50 {:6.2} ms  p99 {p99:6.2} ms  max {:6.2} ms   [target p99 ≤ {P99_TARGET_MS} ms] {}",
            v.len(),
            percentile(v, 0.5),
            v.last().copied().unwrap_or(f64::NAN),
            pass(p99 <= P99_TARGET_MS)
        );
    }
    println!("  failed requests: {errors}");
    println!(
        "  program dropped frames: {loaded} during the load, {quiet} in the same time without it   [target 0 more] {}",
        pass(loaded <= quiet)
    );
    println!(
        "  program at the end: {} frames, encoder speed {}",
        program["frames"], program["encoder"]["progress"]["speed"]
    );
}
