//! Relay benchmark: one RTSP camera (1280x720) relayed to 3 nginx-rtmp ingests, through the real
//! `vistter-agent` daemon twice (ingest FFmpeg → agent fan-out → the native publisher's 3 tasks;
//! then → 3 pusher FFmpegs) and once through a bare `ffmpeg -f tee` as the baseline, in the same
//! run against the same camera. Reports CPU seconds
//! (utime + stime from /proc/PID/stat) and peak RSS (VmRSS sampled every 200 ms) of each side.
//!
//! `cargo bench --bench relay` (or `./bench`). Environment:
//! - `BENCH_SECS`: measured seconds per side after the stream is live + 2 s warm-up (default 60);
//! - `BENCH_KBPS`: camera H.264 target bitrate in kbit/s (default 3000; the simulator's own is 300).
//!
//! Exits non-zero only if the run itself failed; missed targets are printed as MISS.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use support::{clk_tck, env_u64, pass, DEPLOYED_ENV};

const WARMUP: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const FPS: u32 = 25;
const KEYS: [&str; 3] = ["bench-k1", "bench-k2", "bench-k3"];
const CPU_RATIO_TARGET: f64 = 2.0;
/// The native publisher's targets against the bare tee: CPU and peak PSS of all processes.
const NATIVE_CPU_TARGET: f64 = 1.2;
const NATIVE_MEM_TARGET: f64 = 1.5;
const AGENT_RSS_TARGET_MB: f64 = 20.0;

// ---------------------------------------------------------------------------------------------
// Camera: tests/support/rtsp_camera.py at 1280x720, with the bitrate raised and the SMPTE bars
// scrolling (static bars compress to almost nothing whatever the target), its audio encoded with
// voaacenc (avenc_aac would map FFmpeg's libraries into the simulator, which would then take a
// share of their pages from the PSS of every FFmpeg measured; real cameras share no memory with
// the box).

struct BenchCamera {
    url: String,
    log: PathBuf,
    proc: ProcGuard,
    _dir: tempfile::TempDir,
}

impl BenchCamera {
    fn start(kbps: u64) -> BenchCamera {
        require_bin("ffprobe");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py");
        let dir = tempfile::Builder::new().prefix("bench-cam-").tempdir().expect("tempdir");
        for attempt in 1..=5 {
            let port = free_port();
            let log = dir.path().join(format!("camera-{attempt}.log"));
            let mut cmd = Command::new(CAMERA_PYTHON);
            cmd.arg(&script)
                .args(["--port", &port.to_string(), "--pattern", "smpte"])
                .args(["--bitrate", &kbps.to_string(), "--motion", "4", "--aac-encoder", "voaacenc"])
                .args(["--width", &WIDTH.to_string(), "--height", &HEIGHT.to_string(), "--fps", &FPS.to_string()])
                // Never leave a __pycache__ in tests/support.
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(File::create(&log).expect("camera log"));
            let mut proc = ProcGuard::spawn("rtsp_camera.py (bench)", &mut cmd);
            let stdout = proc.child_mut().stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.trim() == "READY" {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(15)).is_err() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("cannot listen") && attempt < 5 {
                    eprintln!("bench camera: port {port} busy, retrying");
                    continue;
                }
                panic!("camera simulator printed no READY; stderr:\n{text}");
            }
            let url = format!("rtsp://127.0.0.1:{port}/cam");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut probe = Command::new("ffprobe");
                probe.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", "5000000"]);
                probe.args(["-analyzeduration", "500000", "-show_streams", &url]);
                let ok = run_with_timeout(&mut probe, Duration::from_secs(15)).is_some_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("codec_type=video")
                });
                if ok {
                    return BenchCamera { url, log, proc, _dir: dir };
                }
                assert!(
                    proc.is_running(),
                    "camera died; stderr:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                assert!(Instant::now() < deadline, "camera {url} not serving within 30 s");
                thread::sleep(Duration::from_millis(300));
            }
        }
        unreachable!()
    }

    /// The GStreamer launch line the simulator printed.
    fn launch_line(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("launch: ")).unwrap_or("?").to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// /proc sampling.

struct Stat {
    ppid: u32,
    ticks: u64,
    start: u64,
    comm: String,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let comm = s[open + 1..close].to_string();
    // Fields after ")": state(3) ppid(4) ... utime(14) stime(15) ... starttime(22).
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    Some(Stat { ppid: num(1)? as u32, ticks: num(11)? + num(12)?, start: num(19)?, comm })
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Proportional set size (shared pages split between their users), from smaps_rollup.
fn pss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// utime + stime of each thread of `pid`: tid → (thread name, ticks).
fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut m = HashMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return m };
    for e in rd.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else { continue };
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else { continue };
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        m.insert(tid, (s[open + 1..close].to_string(), num(11) + num(12)));
    }
    m
}

fn children_of(pid: u32) -> Vec<(u32, Stat)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(st) = read_stat(p) {
            if st.ppid == pid {
                v.push((p, st));
            }
        }
    }
    v
}

#[derive(Default)]
struct Tracked {
    comm: String,
    /// Ticks when first seen in the measured window (0 for a process born after it began).
    base: u64,
    last: u64,
    peak_rss_kb: u64,
    peak_pss_kb: u64,
}

/// CPU and RSS of one process and (optionally) its direct children over a window.
struct Meter {
    root: u32,
    children: bool,
    procs: BTreeMap<(u32, u64), Tracked>,
    root_key: (u32, u64),
    peak_total_rss_kb: u64,
    peak_total_pss_kb: u64,
    /// The root's threads at the start of the window.
    threads0: HashMap<u32, (String, u64)>,
    samples: u32,
    started: Instant,
    wall: Duration,
}

impl Meter {
    fn start(root: u32, children: bool) -> Meter {
        let st = read_stat(root).unwrap_or_else(|| panic!("process {root} is gone"));
        let root_key = (root, st.start);
        let mut m = Meter {
            root,
            children,
            procs: BTreeMap::new(),
            root_key,
            peak_total_rss_kb: 0,
            peak_total_pss_kb: 0,
            threads0: thread_ticks(root),
            samples: 0,
            started: Instant::now(),
            wall: Duration::ZERO,
        };
        m.sample(true);
        m
    }

    /// One sample; false if the root process is gone.
    fn sample(&mut self, first: bool) -> bool {
        let mut seen = vec![(self.root, read_stat(self.root))];
        if self.children {
            seen.extend(children_of(self.root).into_iter().map(|(p, s)| (p, Some(s))));
        }
        let (mut total, mut total_pss) = (0, 0);
        let mut root_alive = false;
        for (pid, st) in seen {
            let Some(st) = st else { continue };
            let key = (pid, st.start);
            if key == self.root_key {
                root_alive = true;
            } else if pid == self.root {
                continue; // pid reused: not ours
            }
            let rss = status_kb(pid, "VmRSS:").unwrap_or(0);
            let pss = pss_kb(pid).unwrap_or(0);
            total += rss;
            total_pss += pss;
            let t = self.procs.entry(key).or_insert_with(|| Tracked {
                comm: st.comm.clone(),
                base: if first { st.ticks } else { 0 },
                ..Tracked::default()
            });
            t.last = st.ticks;
            t.peak_rss_kb = t.peak_rss_kb.max(rss);
            t.peak_pss_kb = t.peak_pss_kb.max(pss);
        }
        if root_alive {
            self.peak_total_rss_kb = self.peak_total_rss_kb.max(total);
            self.peak_total_pss_kb = self.peak_total_pss_kb.max(total_pss);
            self.samples += 1;
            self.wall = self.started.elapsed();
        }
        root_alive
    }

    /// Samples every 200 ms for `d`; panics if the root process dies.
    fn run_for(&mut self, d: Duration, what: &str) {
        let end = self.started + d;
        while Instant::now() < end {
            thread::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now())));
            assert!(self.sample(false), "{what} (pid {}) died during the measurement", self.root);
        }
    }

    fn cpu_s(&self, t: &Tracked, tck: f64) -> f64 {
        t.last.saturating_sub(t.base) as f64 / tck
    }

    fn root(&self) -> &Tracked {
        &self.procs[&self.root_key]
    }

    fn total_cpu_s(&self, tck: f64) -> f64 {
        self.procs.values().map(|t| self.cpu_s(t, tck)).sum()
    }

    /// CPU of the root's threads over the window, grouped by thread name, busiest first; threads
    /// that ended inside the window are lumped as "(exited threads)".
    fn thread_cpu(&self, tck: f64) -> Vec<(String, usize, f64)> {
        let now = thread_ticks(self.root);
        let mut by: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let mut counted = 0;
        for (tid, (name, ticks)) in &now {
            let d = ticks.saturating_sub(self.threads0.get(tid).map(|t| t.1).unwrap_or(0));
            counted += d;
            let e = by.entry(name.clone()).or_default();
            e.0 += 1;
            e.1 += d;
        }
        let root = self.root();
        let rest = root.last.saturating_sub(root.base).saturating_sub(counted);
        if rest > 0 {
            by.insert("(exited threads)".into(), (0, rest));
        }
        let mut v: Vec<(String, usize, f64)> = by.into_iter().map(|(k, (n, t))| (k, n, t as f64 / tck)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    fn child_entries(&self) -> impl Iterator<Item = (&(u32, u64), &Tracked)> {
        self.procs.iter().filter(|(k, _)| **k != self.root_key)
    }
}

// ---------------------------------------------------------------------------------------------

struct Recording {
    files: usize,
    duration: f64,
    bytes: u64,
}

/// Stops the ingests (closing their files) and probes what each recorded.
fn collect_recordings(ingests: &mut [RtmpIngest]) -> Vec<Recording> {
    ingests
        .iter_mut()
        .map(|i| {
            i.stop();
            let recs = i.recordings();
            Recording {
                files: recs.len(),
                duration: recs.iter().map(probe_duration).sum(),
                bytes: recs.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum(),
            }
        })
        .collect()
}

fn start_ingests() -> Vec<RtmpIngest> {
    (0..3).map(|_| RtmpIngest::start()).collect()
}

struct AgentResult {
    meter: Meter,
    labels: HashMap<u32, String>,
    hwm_kb: u64,
    restarts: Option<String>,
    threads: Vec<(String, usize, f64)>,
    recs: Vec<Recording>,
}

fn bench_agent(cam: &BenchCamera, secs: u64, publisher: &str) -> AgentResult {
    let mut ingests = start_ingests();
    let mut agent = TestAgent::new();
    // Production settings instead of the test harness's fast 200 ms reconcile.
    agent.use_production_config("");
    let pairs: Vec<(String, String)> = ingests.iter().zip(KEYS).map(|(i, k)| (i.url(), k.to_string())).collect();
    agent.relay_setup("r1", &cam.url, &pairs);
    for n in 1..=pairs.len() {
        agent.ok(&["destination", "update", &format!("d{n}"), "--publisher", publisher]);
    }
    agent.spawn_at("info", DEPLOYED_ENV);
    let took = agent.wait_live("r1", Duration::from_secs(60));
    let pid = agent.pid().expect("agent pid");
    eprintln!(
        "agent (pid {pid}): stream live after {:.1} s; warming up {} s, measuring {secs} s",
        took.as_secs_f64(),
        WARMUP.as_secs()
    );
    thread::sleep(WARMUP);
    let pids = agent.ffmpeg_pids("r1");
    let want = if publisher == "ffmpeg" { 4 } else { 1 };
    assert_eq!(pids.len(), want, "expected the ingest FFmpeg and, with the ffmpeg publisher, 3 pushers: {pids:?}");
    let status = agent.status("r1");
    let mut labels = HashMap::new();
    labels.insert(pids[0], "ingest ffmpeg".to_string());
    for o in status["status"]["outputs"].as_array().into_iter().flatten() {
        if let Some(p) = o["pid"].as_u64() {
            labels.insert(p as u32, format!("pusher ffmpeg {}", o["destination"].as_str().unwrap_or("?")));
        }
    }
    let mut meter = Meter::start(pid, true);
    meter.run_for(Duration::from_secs(secs), "vistter-agent");
    let threads = meter.thread_cpu(clk_tck());
    let hwm_kb = status_kb(pid, "VmHWM:").unwrap_or(0);
    let state = agent.state("r1");
    let after = agent.ffmpeg_pids("r1");
    let restarts = (state != "live" || after != pids)
        .then(|| format!("stream state at end {state:?}, FFmpeg pids {pids:?} -> {after:?}"));
    agent.ok(&["stream", "stop", "r1"]);
    agent.wait_for("r1", Duration::from_secs(30), "stream stopped", |s| s["stream"]["state"] == "stopped");
    agent.stop();
    let recs = collect_recordings(&mut ingests);
    AgentResult { meter, labels, hwm_kb, restarts, threads, recs }
}

struct TeeResult {
    meter: Meter,
    hwm_kb: u64,
    recs: Vec<Recording>,
}

fn bench_tee(cam: &BenchCamera, secs: u64) -> TeeResult {
    let mut ingests = start_ingests();
    let tee = ingests
        .iter()
        .zip(KEYS)
        .map(|(i, k)| format!("[f=flv:onfail=ignore]{}/{k}", i.url()))
        .collect::<Vec<_>>()
        .join("|");
    let log_dir = tempfile::Builder::new().prefix("bench-tee-").tempdir().expect("tempdir");
    let log = log_dir.path().join("ffmpeg.log");
    let mut cmd = ffmpeg_cmd();
    cmd.args(["-nostats", "-rtsp_transport", "tcp", "-timeout", "5000000", "-i", &cam.url]);
    cmd.args(["-map", "0", "-c", "copy", "-flags", "+global_header", "-f", "tee", &tee]);
    cmd.stdout(Stdio::null()).stderr(File::create(&log).expect("tee log"));
    let mut ff = ProcGuard::spawn("ffmpeg tee", &mut cmd);
    let t0 = Instant::now();
    // Live = every ingest has a publish session (nginx opens the recording when it starts).
    while ingests.iter().any(|i| i.recordings().is_empty()) {
        assert!(ff.is_running(), "ffmpeg tee exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(t0.elapsed() < Duration::from_secs(30), "ffmpeg tee not publishing to all 3 ingests within 30 s");
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "tee: publishing after {:.1} s; warming up {} s, measuring {secs} s",
        t0.elapsed().as_secs_f64(),
        WARMUP.as_secs()
    );
    thread::sleep(WARMUP);
    let mut meter = Meter::start(ff.pid(), false);
    meter.run_for(Duration::from_secs(secs), "ffmpeg tee");
    let hwm_kb = status_kb(ff.pid(), "VmHWM:").unwrap_or(0);
    // SIGTERM: FFmpeg finishes its outputs cleanly.
    ff.terminate(Duration::from_secs(10));
    let recs = collect_recordings(&mut ingests);
    TeeResult { meter, hwm_kb, recs }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Prints each ingest's recordings; false if one has nothing close to the run length.
fn report_recordings(what: &str, recs: &[Recording], expect: f64) -> bool {
    let mut ok = true;
    let parts: Vec<String> = recs
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let kbps = if r.duration > 0.0 { r.bytes as f64 * 8.0 / r.duration / 1000.0 } else { 0.0 };
            if r.files == 0 || r.duration < 0.5 * expect {
                ok = false;
            }
            let flag = if r.duration < 0.9 * expect { " SHORT" } else { "" };
            let files = if r.files == 1 { String::new() } else { format!(" in {} files", r.files) };
            format!("ingest{} {:.1} s{files} {:.0} kbit/s{flag}", n + 1, r.duration, kbps)
        })
        .collect();
    println!("  recordings {what:<6} {} (expect >= {expect:.0} s)", parts.join(", "));
    ok
}

fn main() {
    let secs = env_u64("BENCH_SECS", 60).max(1);
    let kbps = env_u64("BENCH_KBPS", 3000).max(1);
    let tck = clk_tck();
    require_bin("ffmpeg");
    eprintln!("relay bench: agent binary {AGENT_BIN}");
    let cam = BenchCamera::start(kbps);
    eprintln!("camera {} (pid {}): {}", cam.url, cam.proc.pid(), cam.launch_line());

    let native = bench_agent(&cam, secs, "native");
    let ffpush = bench_agent(&cam, secs, "ffmpeg");
    let tee = bench_tee(&cam, secs);
    let expect = secs as f64;
    let tee_cpu = tee.meter.total_cpu_s(tck);
    let bitrate_patched = cam.launch_line().contains(&format!("bitrate={kbps} "));

    println!();
    println!(
        "relay benchmark: 1 camera → 3 ingests, {secs} s each side (after live + {} s warm-up), camera {WIDTH}x{HEIGHT} {FPS} fps H.264 (x264 CBR {} kbit/s{}) + AAC, scrolling SMPTE",
        WARMUP.as_secs(),
        if bitrate_patched { kbps } else { 300 },
        if bitrate_patched { "" } else { ", simulator default: bitrate override not applied" },
    );
    println!("CLK_TCK {tck}, sampled every {} ms", SAMPLE_EVERY.as_millis());
    println!("{:<38}{:>8}{:>12}{:>14}{:>14}", "", "CPU s", "CPU %core", "peak RSS MB", "peak PSS MB");
    let pct = |cpu: f64, m: &Meter| 100.0 * cpu / m.wall.as_secs_f64().max(1e-9);
    let row = |label: &str, cpu: f64, m: &Meter, rss_kb: u64, pss_kb: u64, extra: String| {
        println!("{label:<38}{cpu:>8.2}{:>11.1}%{:>14.1}{:>14.1}{extra}", pct(cpu, m), mb(rss_kb), mb(pss_kb));
    };
    let mut ok = true;
    let mut totals = Vec::new();
    for (name, agent) in [("native publisher", &native), ("ffmpeg publisher", &ffpush)] {
        let am = &agent.meter;
        let root = am.root();
        row(
            &format!("agent alone ({name})"),
            am.cpu_s(root, tck),
            am,
            root.peak_rss_kb,
            root.peak_pss_kb,
            format!("   (VmHWM {:.1} MB)", mb(agent.hwm_kb)),
        );
        row(
            &format!("agent + ffmpeg children ({name})"),
            am.total_cpu_s(tck),
            am,
            am.peak_total_rss_kb,
            am.peak_total_pss_kb,
            String::new(),
        );
        for ((pid, _), t) in am.child_entries() {
            let label = agent.labels.get(pid).cloned().unwrap_or_else(|| format!("other child: {}", t.comm));
            row(&format!("  {label} ({pid})"), am.cpu_s(t, tck), am, t.peak_rss_kb, t.peak_pss_kb, String::new());
        }
        totals.push((name, am.total_cpu_s(tck), am.peak_total_pss_kb, mb(root.peak_rss_kb)));
    }
    let tr = tee.meter.root();
    row(
        "bare ffmpeg tee",
        tee_cpu,
        &tee.meter,
        tr.peak_rss_kb,
        tr.peak_pss_kb,
        format!("   (VmHWM {:.1} MB)", mb(tee.hwm_kb)),
    );
    for (name, agent) in [("native", &native), ("ffmpeg", &ffpush)] {
        let threads: Vec<String> = agent
            .threads
            .iter()
            .filter(|t| t.2 > 0.0)
            .map(|(name, n, cpu)| if *n > 1 { format!("{name} x{n} {cpu:.2} s") } else { format!("{name} {cpu:.2} s") })
            .collect();
        println!(
            "  agent CPU by thread ({name}): {}",
            if threads.is_empty() { "-".to_string() } else { threads.join(", ") }
        );
        ok &= report_recordings(name, &agent.recs, expect);
        if let Some(r) = &agent.restarts {
            println!("  WARNING: the agent's pipeline changed during the run ({name}): {r}");
        }
    }
    ok &= report_recordings("tee", &tee.recs, expect);
    for (name, cpu, pss_kb, rss) in totals {
        let ratio = cpu / tee_cpu.max(1e-9);
        let mem = pss_kb as f64 / tr.peak_pss_kb.max(1) as f64;
        let (cpu_target, mem_target) = if name.starts_with("native") {
            (NATIVE_CPU_TARGET, NATIVE_MEM_TARGET)
        } else {
            (CPU_RATIO_TARGET, f64::INFINITY)
        };
        println!(
            "{name}: CPU {ratio:.2}x the tee (target <= {cpu_target:.1}) {}   PSS {mem:.2}x the tee (target <= {mem_target:.1}) {}   agent RSS {rss:.1} MB (target <= {AGENT_RSS_TARGET_MB:.0}) {}",
            pass(ratio <= cpu_target),
            pass(mem <= mem_target),
            pass(rss <= AGENT_RSS_TARGET_MB)
        );
    }
    drop(cam);
    if !ok {
        eprintln!("relay bench: FAILED: an ingest recorded far less than the run length (see above)");
        std::process::exit(1);
    }
}
