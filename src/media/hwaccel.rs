//! Hardware H.264 encoder probing.
//!
//! Being listed by `ffmpeg -encoders` proves only that FFmpeg was built with an encoder, not that
//! this box has the hardware (every Debian FFmpeg lists nvenc and vaapi). So each listed candidate
//! does a one-second test encode; the first that works is chosen, else libx264. The verdict is
//! cached per FFmpeg version in the data dir, because probing costs seconds at every start.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// Hardware encoders, in order of preference.
pub const CANDIDATES: &[&str] = &["h264_v4l2m2m", "h264_videotoolbox", "h264_vaapi", "h264_qsv", "h264_nvenc"];
pub const SOFTWARE: &str = "libx264";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    pub encoder: String,
    /// Listed by `ffmpeg -encoders`.
    pub listed: bool,
    /// The one-second test encode succeeded.
    pub works: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub ffmpeg_version: String,
    pub candidates: Vec<Candidate>,
    pub chosen: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("cannot run {0}: {1} (install FFmpeg: scripts/setup.sh)")]
    NoFfmpeg(String, String),
}

/// Why one FFmpeg run of the probe gave no output.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0} s")]
    Timeout(u64),
}

async fn output(ffmpeg: &Path, args: &[&str], timeout: Duration) -> Result<std::process::Output, RunError> {
    let child = Command::new(ffmpeg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(RunError::Timeout(timeout.as_secs())),
    }
}

fn test_args(encoder: &str) -> Vec<&str> {
    let mut a = vec!["-hide_banner", "-nostdin", "-loglevel", "error"];
    if encoder == "h264_vaapi" {
        a.extend(["-vaapi_device", "/dev/dri/renderD128"]);
    }
    a.extend(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "1"]);
    match encoder {
        "h264_vaapi" => a.extend(["-vf", "format=nv12,hwupload"]),
        "h264_qsv" => a.extend(["-pix_fmt", "nv12"]),
        _ => a.extend(["-pix_fmt", "yuv420p"]),
    }
    a.extend(["-c:v", encoder, "-f", "null", "-"]);
    a
}

/// The first line of `ffmpeg -version` (`ffmpeg version 6.1.1 Copyright …`): what the cache is keyed by.
pub async fn version_line(ffmpeg: &Path) -> Result<String, HwError> {
    let out = output(ffmpeg, &["-hide_banner", "-version"], Duration::from_secs(10))
        .await
        .map_err(|e| HwError::NoFfmpeg(ffmpeg.display().to_string(), e.to_string()))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
}

/// The encoders this FFmpeg build lists (`ffmpeg -encoders`): built in, not proven to work.
pub async fn listed_encoders(ffmpeg: &Path) -> Result<BTreeSet<String>, HwError> {
    let list = output(ffmpeg, &["-hide_banner", "-encoders"], Duration::from_secs(10))
        .await
        .map_err(|e| HwError::NoFfmpeg(ffmpeg.display().to_string(), e.to_string()))?;
    // Each encoder line is ` V....D libx264  description`; the header's lines have no second word
    // that is an encoder name the agent asks about.
    Ok(String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect())
}

/// Lists and test-encodes every candidate (no cache).
pub async fn probe(ffmpeg: &Path) -> Result<Verdict, HwError> {
    let version = version_line(ffmpeg).await?;
    let listed = listed_encoders(ffmpeg).await?;
    let mut candidates = Vec::new();
    for enc in CANDIDATES.iter().chain([&SOFTWARE]) {
        let mut c = Candidate { encoder: enc.to_string(), listed: listed.contains(*enc), works: false, error: None };
        if c.listed {
            match output(ffmpeg, &test_args(enc), Duration::from_secs(15)).await {
                Ok(o) if o.status.success() => c.works = true,
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    c.error = Some(err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed").to_string());
                }
                Err(e) => c.error = Some(e.to_string()),
            }
        } else {
            c.error = Some("not in this FFmpeg build".into());
        }
        candidates.push(c);
    }
    let chosen = candidates.iter().find(|c| c.works).map(|c| c.encoder.clone()).unwrap_or_else(|| SOFTWARE.into());
    Ok(Verdict { ffmpeg_version: version, candidates, chosen })
}

/// The cached verdict for this FFmpeg, probing (and caching) when absent, stale or `refresh`.
pub async fn cached(ffmpeg: &Path, cache: &Path, refresh: bool) -> Result<Verdict, HwError> {
    // Within one process the verdict is remembered per binary (path, size, modification time):
    // pre-flight and the start of a show both ask, and `ffmpeg -version` is not free on a Pi.
    static MEMO: std::sync::Mutex<Vec<(String, Verdict)>> = std::sync::Mutex::new(Vec::new());
    let key = {
        let meta = std::fs::metadata(ffmpeg).ok();
        format!("{}|{:?}|{:?}", ffmpeg.display(), meta.as_ref().map(|m| m.len()), meta.and_then(|m| m.modified().ok()))
    };
    if !refresh {
        if let Some((_, v)) = MEMO.lock().expect("hwaccel memo").iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
    }
    let v = cached_on_disk(ffmpeg, cache, refresh).await?;
    let mut memo = MEMO.lock().expect("hwaccel memo");
    memo.retain(|(k, _)| *k != key);
    memo.push((key, v.clone()));
    Ok(v)
}

/// The verdict cached at `cache` if it was made with the FFmpeg whose `-version` line is
/// `version`; reads only (`vistter-agent doctor` reports it without probing).
pub fn read_cache(cache: &Path, version: &str) -> Option<Verdict> {
    let v = std::fs::read(cache).ok().and_then(|b| serde_json::from_slice::<Verdict>(&b).ok())?;
    (v.ffmpeg_version == version).then_some(v)
}

async fn cached_on_disk(ffmpeg: &Path, cache: &Path, refresh: bool) -> Result<Verdict, HwError> {
    let current = version_line(ffmpeg).await?;
    if !refresh {
        if let Some(v) = read_cache(cache, &current) {
            return Ok(v);
        }
    }
    let v = probe(ffmpeg).await?;
    let tmp = cache.with_extension("tmp");
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).expect("serializes")).is_ok() {
        let _ = std::fs::rename(tmp, cache);
    }
    Ok(v)
}
