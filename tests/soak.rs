//! The chaos soak: the whole box with the cloud in the loop, under a seeded schedule of faults.
//!
//! Three RTSP cameras, three RTMP ingests (nginx-rtmp), a looping 10-cue timeline with a logo
//! overlay to all three, mosquitto with persistence, and a cloud side (a persistent
//! `mosquitto_sub` session for replies, events and metrics; `mosquitto_pub` for commands) that
//! sends a signed command every few seconds. Faults, picked by a seeded generator and logged with
//! their time: camera hang / kill / restart, a camera back at another resolution, destination
//! kill / hang / restart, a destination refusing the key, broker restart and broker down, agent
//! SIGKILL and restart, hostile files in the USB drop folder, the agent's wall clock stepped
//! forward and back past the commands' freshness window (the clock test hook, never the host's
//! clock), and the data disk full (a small loop-mounted ext4 as the data dir, when this runs as
//! root; the report says when it cannot). The loop device's own counters give the bytes written
//! to the data disk per hour while the show plays with telemetry flowing.
//!
//! `SOAK_QUIET_S` (default 18: the fault-free seconds at the start, over which the bytes written
//! per hour are measured; `scripts/soak` uses 600), `SOAK_FAULTS` (a comma-separated subset of the fault kinds, to chase one down), `SOAK_KEEP_LOG`
//! (where to copy the agent's log), `SOAK_SECS` (default 240: the CI profile), `SOAK_SEED` (default
//! 1), `SOAK_REPORT` (a markdown
//! file to write the report to; `scripts/soak` runs the long profile with the release build and
//! commits it under `docs/soak/`), `SOAK_BROKER_DOWN_S` (default 10; 120 in the long profile).
//!
//! Goals checked (the test fails on any): every command answered exactly once: one ACK and one
//! RESULT, or one NACK; the replies' and telemetry's `seq` contiguous at the cloud across the broker
//! outage and the agent kills; the show on air at the end on every destination; no gap over 1 s
//! inside any recording; agent RSS and open fds flat within one agent process (no more than
//! +50% and +32 MB / +64 fds from its first sample after warm-up). Packet loss, latency and
//! jitter: every camera and ingest link goes through a userspace proxy (`common::netem`) that adds
//! them for one fault, because `tc netem` is often missing from the kernel (the test checks for it
//! and the report says so).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::mqtt::{publish, Broker, Sub};
use common::netem::{Impaired, Impairment};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use vistter_agent::control::envelope::{b64, sign, timestamp_now};

const DEVICE: &str = "vs-soak";
const BASE: &str = "vistter/v1/devices/vs-soak";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: a small seeded generator, so a run's fault schedule is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    CameraHang,
    CameraKill,
    DestinationKill,
    DestinationHang,
    BrokerRestart,
    BrokerDown,
    AgentKill,
    DropFolder,
    CameraResize,
    DestinationRefusesKey,
    ClockStep,
    DiskFull,
    SlowLinks,
}

const FAULTS: [Fault; 13] = [
    Fault::CameraHang,
    Fault::CameraKill,
    Fault::DestinationKill,
    Fault::DestinationHang,
    Fault::BrokerRestart,
    Fault::BrokerDown,
    Fault::AgentKill,
    Fault::DropFolder,
    Fault::CameraResize,
    Fault::DestinationRefusesKey,
    Fault::ClockStep,
    Fault::DiskFull,
    Fault::SlowLinks,
];

/// A small ext4 file system on a loop device, mounted as the agent's data dir: it can be filled,
/// and its device counts every byte written to it. Unmounted on drop.
struct SmallDisk {
    at: std::path::PathBuf,
    /// `loopN`.
    dev: String,
}

impl SmallDisk {
    fn mount(image: &std::path::Path, at: &std::path::Path, mb: u64) -> Result<SmallDisk, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2).map(String::from));
        if uid.as_deref() != Some("0") {
            return Err("not running as root (mount needs it)".into());
        }
        let run = |cmd: &mut std::process::Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        std::fs::File::create(image).and_then(|f| f.set_len(mb << 20)).map_err(|e| e.to_string())?;
        run(std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(image))?;
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        run(std::process::Command::new("mount").args(["-o", "loop"]).arg(image).arg(at))?;
        let source = run(std::process::Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(at))?;
        let dev = source.rsplit('/').next().unwrap_or_default().to_string();
        Ok(SmallDisk { at: at.to_path_buf(), dev })
    }

    /// Bytes written to the device so far (sectors of 512 bytes, from /sys/block).
    fn written(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", self.dev)).unwrap_or_default();
        stat.split_whitespace().nth(6).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512
    }

    /// Free bytes, as `df` says.
    fn avail(&self) -> u64 {
        std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.at)
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Takes every free block; returns what is left free.
    fn fill(&self) -> u64 {
        let filler = self.at.join("filler");
        let avail = self.avail();
        let _ = std::process::Command::new("fallocate").args(["-l", &avail.to_string()]).arg(&filler).status();
        // What fallocate left (metadata rounding): a few more small blocks.
        for i in 0..64 {
            if std::fs::write(self.at.join(format!("filler-{i}")), vec![0u8; 4096]).is_err() {
                break;
            }
        }
        self.avail()
    }

    fn unfill(&self) {
        let _ = std::fs::remove_file(self.at.join("filler"));
        for i in 0..64 {
            let _ = std::fs::remove_file(self.at.join(format!("filler-{i}")));
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// The port of a `scheme://127.0.0.1:PORT/…` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).expect("a port in the URL")
}

/// Whether this kernel has `tc netem` (tried in a network namespace of our own, never the host's).
fn netem_available() -> Result<(), String> {
    let ns = format!("vsa-soak-{}", std::process::id());
    let ok = std::process::Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success());
    if !ok {
        return Err("cannot make a network namespace (ip netns add)".into());
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "10ms"])
        .output();
    let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).status();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("tc netem: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("tc: {e}")),
    }
}

/// The signed command the cloud sends.
fn command(key: &SigningKey, id: &str, ty: &str, payload: Value) -> Vec<u8> {
    let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null, "timestamp": timestamp_now(),
                       "device_id": DEVICE, "type": ty, "payload": payload});
    sign(m.as_object_mut().unwrap(), "studio", key).unwrap();
    serde_json::to_vec(&m).unwrap()
}

/// Resident set (kB) and open fds of a process, from /proc.
fn rss_fds(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// A cloud-side subscriber with a persistent session: what the broker queued for it while it was
/// away (the broker restarts with its persistence file) arrives when it is back.
fn cloud_sub(port: u16) -> Sub {
    Sub::persistent(port, &format!("{BASE}/#"), "soak-cloud")
}

fn timeline_doc() -> Value {
    let order = ["a", "b", "c", "b", "a", "c", "a", "b", "c", "a"];
    let video: Vec<Value> = order
        .iter()
        .enumerate()
        .map(|(i, cam)| {
            json!({"id": format!("c{i}"), "start_time": i as f64 * 2.0, "duration": 2.0, "action": "show_camera",
                   "params": {"camera_id": cam}})
        })
        .collect();
    let logo = json!({"id": "logo", "start_time": 0.0, "duration": 20.0, "action": "show_overlay",
                      "params": {"type": "logo", "image": "logo.png", "position": "top_right", "opacity": 0.8}});
    json!({"id": "soak", "name": "soak", "duration": 20.0, "fps": 25, "resolution": "320x180", "loop": true,
           "tracks": {"video": {"cues": video}, "overlays": [{"layer": 1, "cues": [logo]}]}})
}

struct Sample {
    t: f64,
    pid: u32,
    rss_kb: u64,
    fds: usize,
}

#[test]
fn the_box_survives_a_seeded_schedule_of_faults_with_the_cloud_in_the_loop() {
    let secs = env_u64("SOAK_SECS", 240);
    let seed = env_u64("SOAK_SEED", 1).max(1);
    let broker_down_s = env_u64("SOAK_BROKER_DOWN_S", 10);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // SOAK_FAULTS=CameraKill,ClockStep: only these kinds (names as in `Fault`), to chase one down.
    let only: Option<Vec<Fault>> = std::env::var("SOAK_FAULTS").ok().map(|v| {
        let names: Vec<&str> = v.split(',').map(str::trim).collect();
        FAULTS.iter().copied().filter(|f| names.contains(&format!("{f:?}").as_str())).collect()
    });

    let mut broker = Broker::start_with(None, true);
    let mut cams = [RtspCamera::start("red"), RtspCamera::start("green"), RtspCamera::start("blue")];
    let mut ingests = [RtmpIngest::start(), RtmpIngest::start(), RtmpIngest::start()];
    let work = tempfile::tempdir().unwrap();
    let drop_dir = work.path().join("usb");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let status_port = free_port();
    let clock_file = work.path().join("clock-offset");
    std::fs::write(&clock_file, "0").unwrap();
    let clock_env = [(vistter_agent::clock::CLOCK_HOOK_ENV, clock_file.to_str().unwrap())];
    let mut agent = TestAgent::with_config(&format!(
        "[control]\ndevice_id = \"{DEVICE}\"\nmetrics_interval_s = 5\n\
         [control.mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\nkeepalive_s = 5\nreconnect_max_s = 2\ndrop_delay_max_s = 1\n\
         [segments]\ndrop_folders = [\"{}\"]\nrescan_s = 1\n\
         [status]\nlisten = \"127.0.0.1:{status_port}\"\n",
        broker.port,
        drop_dir.display()
    ));
    // Declared after the agent, so it is unmounted before the agent's folder goes.
    let disk = SmallDisk::mount(&work.path().join("data.img"), &agent.data_dir(), 256);
    let mut unavailable: Vec<String> = Vec::new();
    if let Err(e) = &disk {
        unavailable.push(format!("the nearly full data disk ({e})"));
    }
    if let Err(e) = netem_available() {
        unavailable.push(format!(
            "packet loss, latency and jitter by `tc netem` ({e}); a userspace proxy on every camera and ingest link adds latency, jitter and retransmission-like stalls instead"
        ));
    }
    let studio = SigningKey::from_bytes(&[0x5a; 32]);
    agent.ok(&["trust", "add", "studio", "--public-key", &b64(studio.verifying_key().as_bytes())]);
    // Every camera and ingest link goes through a proxy that can slow it down (tc netem's job,
    // which this kernel may not have).
    let cam_links: Vec<Impaired> = cams.iter().map(|c| Impaired::start(port_of(&c.url()))).collect();
    let ingest_links: Vec<Impaired> = ingests.iter().map(|i| Impaired::start(i.port())).collect();
    for ((id, cam), link) in ["a", "b", "c"].iter().zip(&cams).zip(&cam_links) {
        let url = cam.url().replace(&format!(":{}/", port_of(&cam.url())), &format!(":{}/", link.port));
        agent.ok(&["camera", "add", id, "--url", &url]);
    }
    for (i, link) in ingest_links.iter().enumerate() {
        let id = format!("d{}", i + 1);
        let url = format!("rtmp://127.0.0.1:{}/live", link.port);
        agent.ok(&["destination", "add", &id, "--platform", "custom", "--url", &url, "--key", "soak-key"]);
    }
    write_png(&work.path().join("logo.png"), 64, 32, [255, 255, 255]);
    let tl = work.path().join("soak.json");
    std::fs::write(&tl, serde_json::to_vec_pretty(&timeline_doc()).unwrap()).unwrap();
    agent.ok(&["timeline", "load", tl.to_str().unwrap()]);

    let sub = cloud_sub(broker.port);
    agent.spawn_with_env(&clock_env);
    agent.ok_when_up(&[
        "timeline",
        "play",
        "soak",
        "--destination",
        "d1",
        "--destination",
        "d2",
        "--destination",
        "d3",
    ]);
    agent.wait_show(Duration::from_secs(60), "the show playing", |s| s["status"]["engine"]["state"] == "playing");
    for ingest in &ingests {
        ingest.wait_for_recordings(1, Duration::from_secs(30));
    }

    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    let written_at_start = disk.as_ref().map(|d| d.written()).unwrap_or(0);
    let mut quiet_rate: Option<f64> = None;
    let mut resized = [false; 3];
    let mut nack_windows: Vec<(f64, f64, &str)> = Vec::new();
    let mut faults: Vec<(f64, String)> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut cloud = CloudSide {
        studio: &studio,
        seed,
        port: broker.port,
        sub,
        t0,
        n: 0,
        next_cmd: 0.0,
        sent: Vec::new(),
        sent_at: BTreeMap::new(),
        messages: Vec::new(),
    };
    // The first seconds have no fault: the disk's write rate is measured over them.
    let quiet_s = env_u64("SOAK_QUIET_S", 18) as f64;
    let mut next_fault = quiet_s + 2.0;
    let mut next_sample = 0.0;
    let mut agent_kills = 0u32;
    let mut faulted_destinations: BTreeSet<usize> = BTreeSet::new();
    let mut bag: Vec<Fault> = Vec::new();
    let end = secs as f64;

    while now() < end {
        let t = now();
        if quiet_rate.is_none() && t >= quiet_s {
            // Before the first fault: the show plays and telemetry flows, nothing else.
            if let Ok(d) = &disk {
                quiet_rate = Some((d.written() - written_at_start) as f64 / t * 3600.0);
            }
        }
        if t >= next_sample {
            if let Some(pid) = agent.pid() {
                if let Some((rss_kb, fds)) = rss_fds(pid) {
                    samples.push(Sample { t, pid, rss_kb, fds });
                }
            }
            next_sample = t + 5.0;
        }
        cloud.pump();
        if t >= next_fault && t < end - 40.0 {
            // Every kind of fault once per round, in a seeded order.
            if bag.is_empty() {
                bag = FAULTS.iter().copied().filter(|f| only.as_ref().is_none_or(|o| o.contains(f))).collect();
                for i in (1..bag.len()).rev() {
                    bag.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            let fault = bag.pop().unwrap();
            let which = rng.below(3) as usize;
            let what = match fault {
                Fault::CameraHang => {
                    cams[which].hang();
                    cloud.hold(4);
                    cams[which].resume();
                    format!("camera {} hung 4 s", ["a", "b", "c"][which])
                }
                Fault::CameraKill => {
                    cams[which].kill();
                    cloud.hold(3);
                    cams[which].restart();
                    format!("camera {} killed, restarted after 3 s", ["a", "b", "c"][which])
                }
                Fault::DestinationKill => {
                    faulted_destinations.insert(which);
                    ingests[which].stop();
                    cloud.hold(3);
                    ingests[which].restart();
                    format!("destination d{} killed, restarted after 3 s", which + 1)
                }
                Fault::DestinationHang => {
                    faulted_destinations.insert(which);
                    let pid = nix::unistd::Pid::from_raw(ingests[which].pid() as i32);
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGSTOP);
                    cloud.hold(8);
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGCONT);
                    format!("destination d{} hung 8 s", which + 1)
                }
                Fault::BrokerRestart => {
                    broker.stop();
                    broker.restart();
                    "broker restarted".to_string()
                }
                Fault::BrokerDown => {
                    broker.stop();
                    let until = now() + broker_down_s as f64;
                    while now() < until {
                        cloud.hold_ms(500);
                    }
                    broker.restart();
                    format!("broker down {broker_down_s} s")
                }
                Fault::AgentKill => {
                    agent_kills += 1;
                    agent.kill9();
                    agent.spawn_with_env(&clock_env);
                    agent.wait_up(Duration::from_secs(30));
                    "agent SIGKILLed and restarted".to_string()
                }
                Fault::DropFolder => {
                    let n = cloud.n;
                    let name = format!("hostile-{n}.vseg");
                    std::fs::write(drop_dir.join(&name), vseg::noise(4096, n)).unwrap();
                    let _ = std::os::unix::fs::symlink("/etc/shadow", drop_dir.join(format!("link-{n}.vseg")));
                    format!("USB drop: {name} (noise) and a symlink to /etc/shadow")
                }
                Fault::CameraResize => {
                    resized[which] = !resized[which];
                    let size = resized[which].then_some((480, 270));
                    cams[which].restart_at(size);
                    let (w, h) = size.unwrap_or((320, 180));
                    format!("camera {} back at {w}x{h}", ["a", "b", "c"][which])
                }
                Fault::DestinationRefusesKey => {
                    faulted_destinations.insert(which);
                    ingests[which].restart_refusing(true);
                    cloud.hold(10);
                    ingests[which].restart_refusing(false);
                    format!("destination d{} refused the stream key for 10 s", which + 1)
                }
                Fault::ClockStep => {
                    // Past the freshness window (300 s) both ways: commands meanwhile get a NACK.
                    let from = now();
                    std::fs::write(&clock_file, "600").unwrap();
                    cloud.hold(8);
                    std::fs::write(&clock_file, "-600").unwrap();
                    cloud.hold(8);
                    std::fs::write(&clock_file, "0").unwrap();
                    nack_windows.push((from, now() + 1.0, "clock"));
                    "the agent's clock stepped +600 s for 8 s, then -600 s for 8 s, then back".to_string()
                }
                Fault::SlowLinks => {
                    // What a congested or lossy link does to TCP: latency, jitter, and now and then
                    // a retransmission stall.
                    let slow = Impairment {
                        delay: Duration::from_millis(150),
                        jitter: Duration::from_millis(100),
                        stall_chance: 0.02,
                        stall: Duration::from_millis(400),
                    };
                    for l in cam_links.iter().chain(&ingest_links) {
                        l.set(slow);
                    }
                    cloud.hold(20);
                    for l in cam_links.iter().chain(&ingest_links) {
                        l.set(Impairment::default());
                    }
                    "camera and ingest links: 150 ms + 0..100 ms jitter, 2% of chunks stalled 400 ms, for 20 s"
                        .to_string()
                }
                Fault::DiskFull => match &disk {
                    Ok(d) => {
                        let from = now();
                        let left = d.fill();
                        cloud.hold(15);
                        d.unfill();
                        nack_windows.push((from, now() + 1.0, "disk"));
                        format!("the data disk full for 15 s ({left} bytes left free)")
                    }
                    Err(e) => format!("the data disk full: skipped ({e})"),
                },
            };
            eprintln!("[{:7.1} s] fault: {what}", t);
            faults.push((t, what));
            next_fault = now() + 5.0 + rng.below(4) as f64;
        }
        cloud.drain(200);
    }

    // Settle: everything back, every reply and queued telemetry delivered.
    agent.wait_show(Duration::from_secs(60), "the show playing after the faults", |s| {
        s["status"]["engine"]["state"] == "playing"
    });
    let settle = Instant::now();
    loop {
        cloud.drain(1000);
        let answered = answered(&cloud.messages);
        if cloud.sent.iter().all(|id| answered.get(id).is_some_and(Answers::complete))
            || settle.elapsed() > Duration::from_secs(60)
        {
            break;
        }
    }
    // One more metrics period, so telemetry after the last fault is seen too.
    cloud.drain(6000);
    let CloudSide { sent, sent_at, messages, .. } = cloud;
    let live_recordings: Vec<usize> = ingests.iter().map(|i| i.recordings().len()).collect();
    if let Ok(keep) = std::env::var("SOAK_KEEP_LOG") {
        let _ = std::fs::copy(agent.log_path(), keep);
    }
    agent.stop();
    for i in &mut ingests {
        i.stop();
    }

    // Figures.
    let answered = answered(&messages);
    let missing: Vec<&String> = sent.iter().filter(|id| !answered.get(*id).is_some_and(Answers::complete)).collect();
    let twice: Vec<(&String, Answers)> =
        answered.iter().filter(|(_, k)| k.ack + k.nack > 1 || k.result > 1).map(|(id, k)| (id, k.clone())).collect();
    // NACKs, and whether each fell inside a clock step or a full disk.
    let mut nacks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, k) in &answered {
        if k.nack == 0 {
            continue;
        }
        let at = sent_at.get(id).copied().unwrap_or(-1.0);
        let window =
            nack_windows.iter().find(|w| at >= w.0 - 3.0 && at <= w.1).map(|w| w.2).unwrap_or("outside a fault");
        nacks.entry(window).or_default().push(format!("{at:.0} s: {}", k.nack_reason));
    }
    let stray_nacks = nacks.get("outside a fault").cloned().unwrap_or_default();
    let written_total = disk.as_ref().map(|d| d.written() - written_at_start).unwrap_or(0);
    let seqs: BTreeSet<i64> = messages.iter().filter_map(|m| m["seq"].as_i64()).collect();
    let holes: Vec<i64> = match (seqs.first(), seqs.last()) {
        (Some(&lo), Some(&hi)) => (lo..=hi).filter(|s| !seqs.contains(s)).collect(),
        _ => Vec::new(),
    };
    let mut gaps = Vec::new();
    for (i, ingest) in ingests.iter().enumerate() {
        for r in ingest.recordings() {
            let times = packet_times(&r, "v");
            if times.len() > 10 {
                gaps.push((
                    format!("d{}", i + 1),
                    r.file_name().unwrap().to_string_lossy().into_owned(),
                    max_gap(&times),
                ));
            }
        }
    }
    let worst_gap = gaps.iter().map(|g| g.2).fold(0.0, f64::max);
    // RSS and fds per agent process, from its first sample 30 s in (warm-up) to its last.
    let mut growth = Vec::new();
    let mut by_pid: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for s in &samples {
        by_pid.entry(s.pid).or_default().push(s);
    }
    for (pid, v) in &by_pid {
        let start = v.first().unwrap().t;
        let warm: Vec<&&Sample> = v.iter().filter(|s| s.t >= start + 30.0).collect();
        if let (Some(a), Some(b)) = (warm.first(), warm.last()) {
            growth.push((*pid, a.rss_kb, b.rss_kb, a.fds, b.fds, b.t - a.t));
        }
    }
    let healthy: Vec<usize> = (0..3).filter(|i| !faulted_destinations.contains(i)).collect();
    let reconnects: Vec<(String, i64)> =
        healthy.iter().map(|&i| (format!("d{}", i + 1), live_recordings[i] as i64 - 1 - agent_kills as i64)).collect();
    // FFmpeg restarts by role, from the agent's log (every failed job is retried).
    let mut restarts: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(agent.log_path()).unwrap_or_default().lines() {
        if line.contains("ffmpeg job failed") {
            // JSON lines (`"job":"…"`) or text (`job=…`).
            let job = line
                .split("\"job\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .or_else(|| line.split("job=").nth(1).and_then(|r| r.split_whitespace().next()))
                .unwrap_or("?");
            // The role: the job name without its owner (`program:show/camera:a` → `camera`).
            let role = job.rsplit('/').next().unwrap_or(job).split(':').next().unwrap_or(job);
            *restarts.entry(role.trim_matches('"').to_string()).or_default() += 1;
        }
    }

    let mut report = String::new();
    let _ = writeln!(report, "# Soak run: {secs} s, seed {seed}\n");
    for u in &unavailable {
        let _ = writeln!(report, "Not in this run: {u}.\n");
    }
    let _ = writeln!(report, "## Faults\n");
    for (t, f) in &faults {
        let _ = writeln!(report, "- {t:7.1} s  {f}");
    }
    let _ = writeln!(report, "\n## Figures\n");
    let _ = writeln!(report, "| figure | value | goal |\n| --- | --- | --- |");
    let _ = writeln!(
        report,
        "| commands sent / answered (ACK and RESULT, or NACK) | {} / {} | all |",
        sent.len(),
        sent.len() - missing.len()
    );
    let _ = writeln!(report, "| commands answered more than once (distinct replies) | {} | 0 |", twice.len());
    // What each command sent during a clock step or a full disk got.
    for (from, to, what) in &nack_windows {
        let inside: Vec<String> = sent_at
            .iter()
            .filter(|(_, t)| **t >= *from && **t <= *to)
            .map(|(id, t)| {
                let a = answered.get(id).cloned().unwrap_or_default();
                let got = if a.nack > 0 {
                    format!("NACK {}", a.nack_reason)
                } else {
                    format!("ACK {} RESULT {}", a.ack, a.result)
                };
                format!("{t:.0} s: {got}")
            })
            .collect();
        let _ = writeln!(report, "| commands during the {what} fault at {from:.0} s | {} | |", inside.join("; "));
    }
    for (window, list) in &nacks {
        let _ = writeln!(
            report,
            "| NACKs, {window} | {} ({}) | only inside a clock step or a full disk |",
            list.len(),
            list.join("; ")
        );
    }
    if disk.is_ok() {
        let hours = now() / 3600.0;
        let _ = writeln!(
            report,
            "| bytes written to the data disk per hour, show + telemetry, before any fault | {:.1} MB/h | |",
            quiet_rate.unwrap_or(0.0) / 1e6
        );
        let _ = writeln!(
            report,
            "| bytes written to the data disk per hour, whole run (faults, restarts) | {:.1} MB/h | |",
            written_total as f64 / hours / 1e6
        );
    }
    let _ = writeln!(
        report,
        "| seq seen at the cloud | {} ({}..{}) | contiguous |",
        seqs.len(),
        seqs.first().unwrap_or(&0),
        seqs.last().unwrap_or(&0)
    );
    let _ = writeln!(report, "| seq holes | {} | 0 |", holes.len());
    let _ = writeln!(report, "| largest gap inside a recording | {worst_gap:.3} s | ≤ 1 s |");
    let _ = writeln!(report, "| reconnects per healthy destination (beyond agent restarts) | {reconnects:?} | 0 |");
    let _ = writeln!(report, "| agent kills | {agent_kills} | |");
    let _ = writeln!(report, "| FFmpeg restarts by role | {restarts:?} | |");
    let _ = writeln!(report, "| recordings per destination | {live_recordings:?} | |");
    let _ = writeln!(report, "\n## Agent RSS and fds (per process, after 30 s warm-up)\n");
    for (pid, r0, r1, f0, f1, dt) in &growth {
        let _ = writeln!(
            report,
            "- pid {pid}: RSS {:.1} → {:.1} MB, fds {f0} → {f1}, over {dt:.0} s",
            *r0 as f64 / 1e3,
            *r1 as f64 / 1e3
        );
    }
    let _ = writeln!(report, "\n## Samples (t s, pid, RSS kB, fds)\n\n```");
    for s in &samples {
        let _ = writeln!(report, "{:.1} {} {} {}", s.t, s.pid, s.rss_kb, s.fds);
    }
    let _ = writeln!(report, "```");
    eprintln!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        let svg = std::path::Path::new(&path).with_extension("svg");
        let name = svg.file_name().unwrap().to_string_lossy().into_owned();
        report.push_str(&format!("\n![agent RSS and open fds over time]({name})\n"));
        std::fs::write(&path, &report).unwrap();
        std::fs::write(&svg, plot(&samples, &faults, secs as f64)).unwrap();
    }

    assert!(missing.is_empty(), "commands without ACK and RESULT: {missing:?}");
    assert!(twice.is_empty(), "commands answered more than once: {twice:?}");
    assert!(stray_nacks.is_empty(), "commands refused outside a clock step or a full disk: {stray_nacks:?}");
    assert!(holes.is_empty(), "seq holes at the cloud: {holes:?}");
    assert!(worst_gap <= 1.0, "a gap of {worst_gap:.3} s inside a recording: {gaps:?}");
    for (pid, r0, r1, f0, f1, _) in &growth {
        assert!(
            (*r1 as f64) <= *r0 as f64 * 1.5 + 32_000.0 && *f1 <= f0 + 64,
            "agent {pid} grew: RSS {r0} → {r1} kB, fds {f0} → {f1}"
        );
    }
    for (i, n) in live_recordings.iter().enumerate() {
        assert!(*n >= 1, "d{} has no recording", i + 1);
    }
}

/// Replies to one command, each counted once per distinct `message_id` (a redelivered copy of the
/// same reply is not a second answer).
#[derive(Debug, Clone, Default)]
struct Answers {
    ack: usize,
    nack: usize,
    result: usize,
    /// The last NACK's error code and message.
    nack_reason: String,
}

impl Answers {
    /// One ACK and one RESULT, or one NACK.
    fn complete(&self) -> bool {
        (self.ack >= 1 && self.result >= 1) || self.nack >= 1
    }
}

/// The cloud: sends a signed command every 3 s while the broker is up (a command not delivered
/// is not counted as sent, as a real cloud retries it) and records everything it receives.
struct CloudSide<'a> {
    studio: &'a SigningKey,
    seed: u64,
    port: u16,
    sub: Sub,
    t0: Instant,
    n: u64,
    next_cmd: f64,
    sent: Vec<String>,
    /// When each command was sent, seconds into the run.
    sent_at: BTreeMap<String, f64>,
    messages: Vec<Value>,
}

impl CloudSide<'_> {
    /// Sends the next command if it is due, then collects for 200 ms.
    fn pump(&mut self) {
        let t = self.t0.elapsed().as_secs_f64();
        if t >= self.next_cmd {
            self.n += 1;
            let n = self.n;
            let id = format!("{:08x}-50a0-4000-8000-{:012x}", self.seed as u32, n);
            let (ty, payload) = if n.is_multiple_of(3) {
                ("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"n": n.to_string()}}))
            } else {
                ("PING", json!({}))
            };
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                publish(self.port, &format!("{BASE}/commands"), &command(self.studio, &id, ty, payload), false);
                self.sent.push(id.clone());
                self.sent_at.insert(id, t);
            }
            self.next_cmd = t + 3.0;
        }
        self.drain(200);
    }

    fn drain(&mut self, ms: u64) {
        self.messages.extend(self.sub.drain(Duration::from_millis(ms)));
    }

    /// Keeps the cloud going for `secs` seconds (while a fault lasts).
    fn hold(&mut self, secs: u64) {
        self.hold_ms(secs * 1000);
    }

    fn hold_ms(&mut self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            self.pump();
        }
    }
}

fn answered(messages: &[Value]) -> BTreeMap<String, Answers> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out: BTreeMap<String, Answers> = BTreeMap::new();
    for m in messages {
        let (Some(id), Some(corr)) = (m["message_id"].as_str(), m["correlation_id"].as_str()) else { continue };
        if !seen.insert(id.to_string()) {
            continue;
        }
        let e = out.entry(corr.to_string()).or_default();
        match m["type"].as_str() {
            Some("ACK") => e.ack += 1,
            Some("NACK") => {
                e.nack += 1;
                e.nack_reason = format!("{} {}", m["payload"]["code"], m["payload"]["message"]);
            }
            Some("RESULT") => e.result += 1,
            _ => {}
        }
    }
    out
}

/// RSS (MB, blue) and open fds (orange) over the run as an SVG, faults as grey ticks.
fn plot(samples: &[Sample], faults: &[(f64, String)], secs: f64) -> String {
    let (w, h, pad) = (900.0, 300.0, 40.0);
    let max_rss = samples.iter().map(|s| s.rss_kb as f64 / 1e3).fold(1.0, f64::max) * 1.1;
    let max_fds = samples.iter().map(|s| s.fds as f64).fold(1.0, f64::max) * 1.1;
    let x = |t: f64| pad + t / secs.max(1.0) * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - pad - v / max * (h - 2.0 * pad);
    let line = |f: &dyn Fn(&Sample) -> f64, max: f64| -> String {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s), max))).collect::<Vec<_>>().join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\
         <text x=\"{pad}\" y=\"15\" fill=\"#1f77b4\">RSS MB (max {max_rss:.0})</text>\
         <text x=\"220\" y=\"15\" fill=\"#ff7f0e\">open fds (max {max_fds:.0})</text>\
         <text x=\"{r}\" y=\"{t}\" text-anchor=\"end\">{secs:.0} s</text>",
        b = h - pad,
        r = w - pad,
        t = h - pad + 15.0,
    );
    for (t, f) in faults {
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#bbb\"><title>{3}</title></line>",
            x(*t),
            pad,
            h - pad,
            f.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" points=\"{}\"/>",
        line(&|s: &Sample| s.rss_kb as f64 / 1e3, max_rss)
    );
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#ff7f0e\" points=\"{}\"/>",
        line(&|s: &Sample| s.fds as f64, max_fds)
    );
    svg + "</svg>\n"
}
