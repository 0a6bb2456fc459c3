//! Show benchmark: what a whole show costs against the one FFmpeg command that does the same job
//! without the agent's guarantees, both sides in one run against the same simulated cameras.
//!
//! The job: N RTSP cameras (1280x720@30 H.264 + AAC) → one program (camera cuts, a text overlay,
//! libx264 veryfast/zerolatency, GOP 60, AAC 128k) → 3 nginx-rtmp ingests.
//! - the agent: `program start` with the cameras and 3 destinations (native publisher), a text
//!   overlay, and a cut between the cameras every 5 s;
//! - the baseline: `ffmpeg -i cam… -filter_complex streamselect,drawtext -c:v libx264 … -f tee`.
//!
//! For each side: CPU seconds (utime + stime from /proc/PID/stat) and peak PSS (the sum over the
//! side's processes, sampled every 200 ms) in total and by role. Cases: 720p30 with 2 cameras,
//! 1080p30 with 2 cameras (the cameras scaled up on both sides), 720p30 with 3 cameras, all with
//! cameras showing a still colour at 300 kbit/s (cheap to decode and encode, so what the agent
//! adds shows most); and 720p30 with 2 cameras filming a moving picture at 3000 kbit/s, as real
//! cameras do.
//!
//! The agent runs as deployed (log level `info`, `MALLOC_ARENA_MAX=2` as the systemd unit sets).
//! The simulated cameras encode their audio with GStreamer's voaacenc, not avenc_aac, so that no
//! FFmpeg library is mapped outside the sides measured: PSS divides a shared page among every
//! process that maps it, and a simulator holding FFmpeg's libraries would take a share of them
//! from each side (more from the side with fewer FFmpeg processes). Real cameras share no memory
//! with the box.
//!
//! `cargo bench --bench show` (or `./bench`). Environment: `BENCH_SECS` measured seconds per side
//! after a 5 s warm-up (default 30); `BENCH_SHOW_CASES` a comma list of `720p2`, `1080p2`,
//! `720p3`, `720p2-moving` (default all). Exits non-zero only if the run itself failed; missed targets print MISS.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use support::{clk_tck, env_u64, pass, SimCamera, DEPLOYED_ENV};

const WARMUP: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const CPU_TARGET: f64 = 1.3;
const PSS_TARGET: f64 = 1.5;
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const PATTERNS: [&str; 3] = ["red", "blue", "green"];

struct Case {
    name: &'static str,
    profile: &'static str,
    width: u32,
    height: u32,
    kbps: u32,
    cameras: usize,
    /// Cameras filming a moving scene at a camera's bitrate instead of a still colour.
    moving: bool,
}

const CASES: [Case; 4] = [
    Case { name: "720p2", profile: "720p30", width: 1280, height: 720, kbps: 2500, cameras: 2, moving: false },
    Case { name: "1080p2", profile: "reliability", width: 1920, height: 1080, kbps: 4500, cameras: 2, moving: false },
    Case { name: "720p3", profile: "720p30", width: 1280, height: 720, kbps: 2500, cameras: 3, moving: false },
    Case { name: "720p2-moving", profile: "720p30", width: 1280, height: 720, kbps: 2500, cameras: 2, moving: true },
];

/// The moving cameras: scrolling test patterns at 3000 kbit/s, 4 pixels a frame.
const MOVING: [&str; 2] = ["smpte", "smpte100"];
const MOVING_KBPS: u32 = 3000;
const MOVING_SPEED: u32 = 4;

// ---------------------------------------------------------------------------------------------
// /proc sampling of a process tree.

fn ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

fn pss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn tree(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            if let Some(pp) = ppid(pid) {
                all.push((pid, pp));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// What a process of the agent's tree does, from its command line.
fn role(pid: u32, root: u32) -> String {
    if pid == root {
        return "the agent itself".into();
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    if cmd.contains("rtsp://") {
        "camera decoders".into()
    } else if cmd.contains("rawvideo") {
        "encoder".into()
    } else if cmd.contains("pipe:0") && cmd.contains("-c copy") {
        "FFmpeg pushers".into()
    } else {
        format!("other ({})", cmd.split_whitespace().next().unwrap_or("?"))
    }
}

#[derive(Default)]
struct Side {
    /// role → (CPU ticks, processes, peak PSS kB of the role)
    roles: BTreeMap<String, (u64, usize, u64)>,
    cpu_ticks: u64,
    peak_pss_kb: u64,
    wall: f64,
    procs: usize,
}

fn measure(root: u32, secs: u64, role_of: impl Fn(u32) -> String) -> Side {
    let mut first: HashMap<u32, u64> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut roles: HashMap<u32, String> = HashMap::new();
    let mut side = Side::default();
    let mut role_peak: HashMap<String, u64> = HashMap::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let mut total = 0;
        let mut by_role: HashMap<String, u64> = HashMap::new();
        for pid in tree(root) {
            let Some(t) = ticks(pid) else { continue };
            first.entry(pid).or_insert(t);
            last.insert(pid, t);
            let r = roles.entry(pid).or_insert_with(|| role_of(pid)).clone();
            let p = pss_kb(pid).unwrap_or(0);
            total += p;
            *by_role.entry(r).or_default() += p;
        }
        side.peak_pss_kb = side.peak_pss_kb.max(total);
        for (r, p) in by_role {
            let e = role_peak.entry(r).or_default();
            *e = (*e).max(p);
        }
        thread::sleep(SAMPLE_EVERY);
    }
    side.wall = t0.elapsed().as_secs_f64();
    for (pid, t1) in &last {
        let d = t1 - first[pid];
        let r = roles[pid].clone();
        let e = side.roles.entry(r.clone()).or_default();
        e.0 += d;
        e.1 += 1;
        e.2 = role_peak.get(&r).copied().unwrap_or(0);
        side.cpu_ticks += d;
    }
    side.procs = last.len();
    side
}

// ---------------------------------------------------------------------------------------------

fn run_agent(case: &Case, cams: &[SimCamera], secs: u64) -> Side {
    let ingests: Vec<RtmpIngest> = (0..3).map(|_| RtmpIngest::start()).collect();
    let mut agent = TestAgent::new();
    agent.use_production_config("");
    let ids = ["a", "b", "c"];
    let mut start = vec!["program", "start", "--profile", case.profile];
    for (id, cam) in ids.iter().zip(cams) {
        agent.ok(&["camera", "add", id, "--url", &cam.url()]);
        start.extend(["--camera", id]);
    }
    for (n, i) in ingests.iter().enumerate() {
        let id = format!("d{}", n + 1);
        agent.ok(&[
            "destination",
            "add",
            &id,
            "--platform",
            "custom",
            "--url",
            &i.url(),
            "--key",
            &format!("show-{n}"),
        ]);
    }
    start.extend(["--destination", "d1", "--destination", "d2", "--destination", "d3"]);
    agent.spawn_at("info", DEPLOYED_ENV);
    let t = Instant::now();
    loop {
        let out = agent.cli(&start);
        if out.status.success() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "program start: {}", String::from_utf8_lossy(&out.stderr));
        thread::sleep(Duration::from_millis(200));
    }
    agent.wait_program(Duration::from_secs(60), "program live on 3 ingests", |p| {
        p["encoder"]["phase"] == "running"
            && p["outputs"].as_array().is_some_and(|o| o.len() == 3 && o.iter().all(|o| o["phase"] == "running"))
    });
    agent.ok(&[
        "overlay",
        "show",
        "title",
        "--text",
        "Marina live {{time}}",
        "--position",
        "bottom_left",
        "--font-size",
        "36",
    ]);
    thread::sleep(WARMUP);
    let root = agent.pid().expect("agent pid");
    // Cuts every 5 s while measuring, from another thread (the CLI is not part of either side).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let stop = stop.clone();
        let cfg = agent.config_path();
        let n = cams.len();
        thread::spawn(move || {
            let mut k = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                thread::sleep(Duration::from_secs(5));
                let _ = std::process::Command::new(AGENT_BIN)
                    .args(["--config", cfg.to_str().unwrap(), "program", "cut", ["a", "b", "c"][k % n]])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                k += 1;
            }
        })
    };
    let side = measure(root, secs, |pid| role(pid, root));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = cutter.join();
    let p = agent.program("main");
    let restarts: u64 =
        p["outputs"].as_array().into_iter().flatten().map(|o| o["starts"].as_u64().unwrap_or(1) - 1).sum();
    if restarts > 0 {
        println!("  WARNING: the agent's publishers reconnected {restarts} times during the run");
    }
    agent.ok(&["program", "stop"]);
    agent.stop();
    for (n, i) in ingests.iter().enumerate() {
        assert_eq!(i.recordings().len(), 1, "agent: ingest {} recorded one session", n + 1);
    }
    side
}

fn run_ffmpeg(case: &Case, cams: &[SimCamera], secs: u64) -> Side {
    let ingests: Vec<RtmpIngest> = (0..3).map(|_| RtmpIngest::start()).collect();
    let mut cmd = ffmpeg_cmd();
    cmd.arg("-nostats");
    for c in cams {
        cmd.args(["-rtsp_transport", "tcp", "-timeout", "5000000", "-i", &c.url()]);
    }
    let inputs: String = (0..cams.len()).map(|i| format!("[{i}:v]")).collect();
    let scale = if case.width == 1280 { String::new() } else { format!(",scale={}:{}", case.width, case.height) };
    let filter = format!(
        "{inputs}streamselect=inputs={}:map=0{scale},drawtext=fontfile={FONT}:text='Marina live %{{localtime\\:%T}}':fontsize=36:fontcolor=white:x=24:y=h-60[v]",
        cams.len()
    );
    let b = format!("{}k", case.kbps);
    let buf = format!("{}k", case.kbps * 2);
    cmd.args(["-filter_complex", &filter, "-map", "[v]", "-map", "0:a"]);
    cmd.args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]);
    cmd.args(["-b:v", &b, "-maxrate", &b, "-bufsize", &buf, "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"]);
    cmd.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-flags", "+global_header"]);
    let tee: Vec<String> =
        ingests.iter().enumerate().map(|(n, i)| format!("[f=flv:onfail=ignore]{}/one-{n}", i.url())).collect();
    cmd.args(["-f", "tee", &tee.join("|")]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut ff = ProcGuard::spawn("ffmpeg (one command)", &mut cmd);
    let t = Instant::now();
    while ingests.iter().any(|i| i.recordings().is_empty()) {
        assert!(ff.is_running(), "the one FFmpeg command exited");
        assert!(t.elapsed() < Duration::from_secs(30), "the one FFmpeg command not publishing within 30 s");
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(WARMUP);
    let side = measure(ff.pid(), secs, |_| "ffmpeg".into());
    ff.terminate(Duration::from_secs(10));
    side
}

fn main() {
    let secs = env_u64("BENCH_SECS", 30).max(1);
    let only = std::env::var("BENCH_SHOW_CASES").ok();
    let tck = clk_tck();
    require_bin("ffmpeg");
    assert!(std::path::Path::new(FONT).exists(), "{FONT} missing: run scripts/setup.sh (fonts-dejavu-core)");
    let cases: Vec<&Case> =
        CASES.iter().filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|x| x.trim() == c.name))).collect();
    let still: Vec<SimCamera> = if cases.iter().any(|c| !c.moving) {
        PATTERNS.iter().map(|p| SimCamera::start(p)).collect()
    } else {
        Vec::new()
    };
    let moving: Vec<SimCamera> = if cases.iter().any(|c| c.moving) {
        MOVING.iter().map(|p| SimCamera::start_with(p, MOVING_KBPS, MOVING_SPEED)).collect()
    } else {
        Vec::new()
    };
    let mut missed = Vec::new();
    for case in cases {
        let cams = if case.moving { &moving[..case.cameras] } else { &still[..case.cameras] };
        eprintln!("show bench {}: agent …", case.name);
        let agent = run_agent(case, cams, secs);
        eprintln!("show bench {}: one FFmpeg command …", case.name);
        let one = run_ffmpeg(case, cams, secs);
        println!();
        println!(
            "show {}x{}@30 ({}), {} cameras 1280x720@30 ({}) → 3 ingests, libx264 veryfast {} kbit/s, {secs} s per side",
            case.width,
            case.height,
            case.name,
            case.cameras,
            if case.moving { "scrolling pictures, 3000 kbit/s" } else { "still colours, 300 kbit/s" },
            case.kbps
        );
        println!("{:<30}{:>8}{:>10}{:>14}{:>7}", "", "CPU s", "%core", "peak PSS MB", "procs");
        let row = |label: &str, ticks: u64, wall: f64, pss_kb: u64, n: usize| {
            let cpu = ticks as f64 / tck;
            println!("{label:<30}{cpu:>8.2}{:>9.1}%{:>14.1}{n:>7}", 100.0 * cpu / wall, pss_kb as f64 / 1024.0);
        };
        row("agent, all processes", agent.cpu_ticks, agent.wall, agent.peak_pss_kb, agent.procs);
        for (r, (t, n, p)) in &agent.roles {
            row(&format!("  {r}"), *t, agent.wall, *p, *n);
        }
        row("one FFmpeg command", one.cpu_ticks, one.wall, one.peak_pss_kb, one.procs);
        let cpu_ratio = (agent.cpu_ticks as f64 / agent.wall) / (one.cpu_ticks as f64 / one.wall).max(1e-9);
        let pss_ratio = agent.peak_pss_kb as f64 / one.peak_pss_kb.max(1) as f64;
        println!(
            "agent / one command: CPU {cpu_ratio:.2}x (target <= {CPU_TARGET}) {}   peak PSS {pss_ratio:.2}x (target <= {PSS_TARGET}) {}",
            pass(cpu_ratio <= CPU_TARGET),
            pass(pss_ratio <= PSS_TARGET)
        );
        if cpu_ratio > CPU_TARGET || pss_ratio > PSS_TARGET {
            missed.push(case.name);
        }
    }
    if !missed.is_empty() {
        println!("targets missed in: {}", missed.join(", "));
    }
}
