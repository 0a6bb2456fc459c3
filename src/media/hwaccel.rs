//! Hardware H.264 encoder probing.
//!
//! Being listed by `ffmpeg -encoders` proves only that FFmpeg was built with an encoder, not that
//! this box has the hardware (every Debian FFmpeg lists nvenc and vaapi). So each listed candidate
//! does a one-second test encode; the first that works is chosen, else libx264. The verdict is
//! cached per FFmpeg version in the data dir, because probing costs seconds at every start.
//!
//! The probe also names the board when the device tree does (`/proc/device-tree/model`) and it is
//! one whose H.264 hardware is known, so `hwaccel` and `doctor` can say what it should end up with:
//! a Raspberry Pi 4 (and 400, Compute Module 4) encodes with its VideoCore block through
//! `h264_v4l2m2m`; a Raspberry Pi 5 (and 500, Compute Module 5) has no H.264 encoder block, so
//! its FFmpeg may list `h264_v4l2m2m` but the test encode fails and `libx264` is used.

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
    /// The board's model as the device tree names it (`Raspberry Pi 5 Model B Rev 1.0`), if it does.
    /// Absent in verdicts cached before the board was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
}

/// Where Linux on a device-tree board (every Raspberry Pi) names the board.
pub const DEVICE_TREE_MODEL: &str = "/proc/device-tree/model";

/// A board whose H.264 encoding hardware is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Raspberry Pi 4 Model B, 400, Compute Module 4 and 4S: a VideoCore VI H.264 encoder, which
    /// FFmpeg drives as the V4L2 memory-to-memory device `/dev/video11`.
    RaspberryPi4,
    /// Raspberry Pi 5, 500, Compute Module 5: no H.264 encoder block (its only codec block decodes
    /// HEVC); H.264 is encoded in software on its Cortex-A76 cores.
    RaspberryPi5,
}

impl Board {
    /// The board a device-tree model string names (`Raspberry Pi 4 Model B Rev 1.4`), or `None`
    /// for any other (an older Pi, another board, garbage).
    pub fn from_model(model: &str) -> Option<Board> {
        let mut words = model.trim_end_matches('\0').trim().strip_prefix("Raspberry Pi ")?.split_whitespace();
        let mut generation = words.next()?;
        if generation == "Compute" {
            if words.next()? != "Module" {
                return None;
            }
            generation = words.next()?;
        }
        match generation {
            "4" | "400" | "4S" => Some(Board::RaspberryPi4),
            "5" | "500" => Some(Board::RaspberryPi5),
            _ => None,
        }
    }

    /// The board this machine is, read from the device tree; `None` elsewhere.
    pub fn detect() -> Option<(Board, String)> {
        let model = read_model(Path::new(DEVICE_TREE_MODEL))?;
        Board::from_model(&model).map(|b| (b, model))
    }

    /// The encoder the probe should choose on this board.
    pub fn expected_encoder(self) -> &'static str {
        match self {
            Board::RaspberryPi4 => "h264_v4l2m2m",
            Board::RaspberryPi5 => SOFTWARE,
        }
    }

    /// Why, in words for `doctor` and `hwaccel`.
    pub fn reason(self) -> &'static str {
        match self {
            Board::RaspberryPi4 => "its H.264 encoder block, through V4L2 (/dev/video11)",
            Board::RaspberryPi5 => "it has no H.264 encoder block, so H.264 is encoded in software",
        }
    }
}

/// The device-tree model file's text (NUL-terminated there), if it exists and is text.
fn read_model(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let model = text.trim_end_matches('\0').trim();
    (!model.is_empty()).then(|| model.to_string())
}

/// What the board should use and whether the probe's choice agrees: `(agrees, sentence)`, or
/// `None` when the board is not one whose hardware is known.
///
/// `Raspberry Pi 5 Model B Rev 1.0: libx264 (it has no H.264 encoder block, so …)`.
pub fn board_note(model: &str, chosen: Option<&str>) -> Option<(bool, String)> {
    let board = Board::from_model(model)?;
    let expected = board.expected_encoder();
    let agrees = chosen.is_none_or(|c| c == expected);
    let mut note = format!("{model}: {expected} ({})", board.reason());
    if let Some(c) = chosen.filter(|c| *c != expected) {
        note.push_str(&format!(", but the probe chose {c}"));
    }
    Some((agrees, note))
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
    let board = read_model(Path::new(DEVICE_TREE_MODEL));
    Ok(Verdict { ffmpeg_version: version, candidates, chosen, board })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pi_4_uses_h264_v4l2m2m_and_a_pi_5_libx264() {
        for (model, board) in [
            ("Raspberry Pi 4 Model B Rev 1.4", Board::RaspberryPi4),
            ("Raspberry Pi 400 Rev 1.0", Board::RaspberryPi4),
            ("Raspberry Pi Compute Module 4 Rev 1.0", Board::RaspberryPi4),
            ("Raspberry Pi Compute Module 4S Rev 1.0", Board::RaspberryPi4),
            ("Raspberry Pi 5 Model B Rev 1.0\0", Board::RaspberryPi5),
            ("Raspberry Pi 500 Rev 1.0", Board::RaspberryPi5),
            ("Raspberry Pi Compute Module 5 Rev 1.0", Board::RaspberryPi5),
        ] {
            assert_eq!(Board::from_model(model), Some(board), "{model:?}");
        }
        assert_eq!(Board::RaspberryPi4.expected_encoder(), "h264_v4l2m2m");
        assert!(CANDIDATES.contains(&Board::RaspberryPi4.expected_encoder()), "the Pi 4's encoder must be probed");
        assert_eq!(Board::RaspberryPi5.expected_encoder(), "libx264");
    }

    #[test]
    fn other_boards_are_not_named() {
        for model in [
            "Raspberry Pi 3 Model B Plus Rev 1.3",
            "Raspberry Pi Zero 2 W Rev 1.0",
            "Raspberry Pi 45",
            "Raspberry Pi Compute Module",
            "Raspberry Pi Compute Thing 4",
            "Radxa ROCK 5B",
            "Raspberry Pi",
            "",
        ] {
            assert_eq!(Board::from_model(model), None, "{model:?}");
            assert_eq!(board_note(model, Some(SOFTWARE)), None, "{model:?}");
        }
    }

    #[test]
    fn the_note_names_the_encoder_and_whether_the_probe_agrees() {
        let (agrees, note) = board_note("Raspberry Pi 5 Model B Rev 1.0", Some("libx264")).unwrap();
        assert!(agrees);
        assert_eq!(
            note,
            "Raspberry Pi 5 Model B Rev 1.0: libx264 (it has no H.264 encoder block, so H.264 is encoded in software)"
        );
        let (agrees, note) = board_note("Raspberry Pi 4 Model B Rev 1.4", Some("h264_v4l2m2m")).unwrap();
        assert!(agrees);
        assert_eq!(
            note,
            "Raspberry Pi 4 Model B Rev 1.4: h264_v4l2m2m (its H.264 encoder block, through V4L2 (/dev/video11))"
        );
        // Not probed yet: what it should use, nothing to disagree with.
        assert!(board_note("Raspberry Pi 4 Model B Rev 1.4", None).unwrap().0);
        // The encoder block did not pass its test encode (no /dev/video11, or no access to it).
        let (agrees, note) = board_note("Raspberry Pi 4 Model B Rev 1.4", Some("libx264")).unwrap();
        assert!(!agrees);
        assert!(
            note.ends_with(
                "h264_v4l2m2m (its H.264 encoder block, through V4L2 (/dev/video11)), but the probe chose libx264"
            ),
            "{note}"
        );
    }

    #[test]
    fn the_model_is_read_without_its_nul_and_a_missing_file_is_no_board() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model");
        std::fs::write(&path, b"Raspberry Pi 5 Model B Rev 1.0\0").unwrap();
        assert_eq!(read_model(&path).as_deref(), Some("Raspberry Pi 5 Model B Rev 1.0"));
        std::fs::write(&path, b"\xff\xfe\0").unwrap();
        assert_eq!(read_model(&path), None, "not text");
        std::fs::write(&path, b"\0").unwrap();
        assert_eq!(read_model(&path), None, "empty");
        assert_eq!(read_model(&dir.path().join("absent")), None);
    }

    #[test]
    fn a_verdict_cached_without_a_board_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("hwaccel.json");
        let old = r#"{"ffmpeg_version":"ffmpeg version 5.1.6","candidates":[],"chosen":"libx264"}"#;
        std::fs::write(&cache, old).unwrap();
        let v = read_cache(&cache, "ffmpeg version 5.1.6").expect("an old cache is still valid");
        assert_eq!((v.chosen.as_str(), v.board.as_deref()), ("libx264", None));
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("board"), "no board key when there is none: {json}");
    }

    proptest! {
        #[test]
        fn any_model_text_is_named_or_not_without_panicking(model in any::<String>(), chosen in any::<String>()) {
            let board = Board::from_model(&model);
            let note = board_note(&model, Some(&chosen));
            prop_assert_eq!(board.is_some(), note.is_some());
        }
    }
}
