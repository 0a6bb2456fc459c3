//! Segment package benchmark: a `BENCH_SEGMENT_MB` (default 1024) MiB folder, mostly
//! incompressible media plus some compressible files, measured in one run:
//!
//! 1. `vistter-agent segment import` (verify: signature, every SHA-256, limits; stage; fsync;
//!    install) against the baseline `zstd -dc F | tar -x` followed by `sha256sum` of every file;
//!    wall time, MB/s, and the import's peak RSS (VmHWM, polled);
//! 2. `vistter-agent segment pack` against `tar -c | zstd -3` plus `sha256sum` of every file.
//!
//! Targets (segments issue): import ≥ 0.8 × the baseline's speed, peak RSS ≤ 64 MB.
//! `cargo bench --bench segments` (or `./bench`). Exits non-zero only if the run itself failed.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::RngCore;
use serde_json::json;
use support::*;

const SPEED_TARGET: f64 = 0.8;
const RSS_TARGET_MB: f64 = 64.0;

fn sh(script: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("bash").arg("-c").arg(script).output().expect("run bash");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// Runs `cmd` to completion, polling its peak RSS (VmHWM). Returns (wall time, peak kB, stdout).
fn timed_rss(cmd: &mut Command) -> (Duration, u64, String) {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) =
                s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    (t.elapsed(), peak, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The folder: a timeline, `media_mb` MiB of random "video" in a few files, compressible text.
fn make_folder(dir: &Path, total_mb: u64) {
    std::fs::create_dir_all(dir.join("media")).unwrap();
    std::fs::create_dir_all(dir.join("text")).unwrap();
    let tl = json!({"id": "bench", "name": "bench", "duration": 10, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 10, "action": "show_slate",
        "params": {}}]}, "overlays": []}});
    std::fs::write(dir.join("timeline.json"), tl.to_string()).unwrap();
    let media_mb = total_mb * 9 / 10;
    let files = 4u64;
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..files {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("media/clip{i}.mp4"))).unwrap());
        for _ in 0..media_mb / files {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf).unwrap();
        }
    }
    // Compressible: log-like lines.
    let text_mb = total_mb - media_mb;
    for i in 0..10u64 {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("text/notes{i}.txt"))).unwrap());
        let mut n = 0u64;
        while n < text_mb * (1 << 20) / 10 {
            let line = format!("{i:04} line {n:012} lower third: the marina at dawn, wind {} kn\n", n % 37);
            f.write_all(line.as_bytes()).unwrap();
            n += line.len() as u64;
        }
    }
}

fn main() {
    let mb = env_u64("BENCH_SEGMENT_MB", 1024);
    println!("segment package benchmark: {mb} MiB folder (90% incompressible), {} cores", num_cpus());
    for bin in ["zstd", "tar", "sha256sum"] {
        require_bin(bin);
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_folder(&src, mb);
    let size_of = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes: u64 = walk(&src).iter().map(|p| size_of(p)).sum();

    let agent = TestAgent::with_config("[control]\ndevice_id = \"vs-bench\"\n");
    let key = work.path().join("key.json");
    agent.ok(&["segment", "keygen", "--key-id", "bench", "-o", key.to_str().unwrap()]);
    let public = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&key).unwrap()).unwrap()
        ["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    agent.ok(&["trust", "add", "bench", "--public-key", &public, "--role", "segment"]);

    // Pack: the agent, then the baseline (tar | zstd, and sha256sum of every file).
    let pkg = work.path().join("bench.vseg");
    sh("sync");
    let (pack_t, pack_rss, _) = timed_rss(
        Command::new(AGENT_BIN)
            .arg("--config")
            .arg(agent.data_dir().parent().unwrap().join("config.toml"))
            .args(["segment", "pack"])
            .arg(&src)
            .args(["--key", key.to_str().unwrap(), "--id", "bench", "--version", "1", "-o"])
            .arg(&pkg),
    );
    let base_pkg = work.path().join("baseline.tar.zst");
    let base_pack_t = sh(&format!(
        "cd {src} && tar -c . | zstd -q -3 -o {out} && find . -type f -print0 | xargs -0 sha256sum > /dev/null",
        src = src.display(),
        out = base_pkg.display()
    ));

    // Import: the agent, then the baseline (zstd -dc | tar -x, then sha256sum of every file).
    sh("sync");
    let (imp_t, imp_rss, out) = timed_rss(
        Command::new(AGENT_BIN)
            .arg("--config")
            .arg(agent.data_dir().parent().unwrap().join("config.toml"))
            .args(["segment", "import"])
            .arg(&pkg),
    );
    assert!(out.contains("installed"), "{out}");
    let dest = work.path().join("baseline-out");
    std::fs::create_dir_all(&dest).unwrap();
    sh("sync");
    let base_imp_t = sh(&format!(
        "zstd -dc {pkg} | tar -x -C {dest} && cd {dest} && find . -type f -print0 | xargs -0 sha256sum > /dev/null",
        pkg = pkg.display(),
        dest = dest.display()
    ));

    let mbs = |d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "\nresults ({:.0} MiB of files, package {:.0} MiB):",
        bytes as f64 / 1048576.0,
        size_of(&pkg) as f64 / 1048576.0
    );
    println!(
        "  import  agent {:6.2} s = {:6.0} MiB/s   baseline (zstd -dc | tar -x; sha256sum) {:6.2} s = {:6.0} MiB/s",
        imp_t.as_secs_f64(),
        mbs(imp_t),
        base_imp_t.as_secs_f64(),
        mbs(base_imp_t)
    );
    let ratio = base_imp_t.as_secs_f64() / imp_t.as_secs_f64();
    println!("  import speed / baseline = {ratio:.2}   [target ≥ {SPEED_TARGET}] {}", pass(ratio >= SPEED_TARGET));
    println!(
        "  import peak RSS {:.1} MB   [target ≤ {RSS_TARGET_MB} MB] {}",
        imp_rss as f64 / 1024.0,
        pass(imp_rss as f64 / 1024.0 <= RSS_TARGET_MB)
    );
    println!(
        "  pack    agent {:6.2} s = {:6.0} MiB/s (peak RSS {:.1} MB)   baseline (tar -c | zstd -3; sha256sum) {:6.2} s = {:6.0} MiB/s   ratio {:.2}",
        pack_t.as_secs_f64(),
        mbs(pack_t),
        pack_rss as f64 / 1024.0,
        base_pack_t.as_secs_f64(),
        mbs(base_pack_t),
        base_pack_t.as_secs_f64() / pack_t.as_secs_f64()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}
