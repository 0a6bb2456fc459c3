//! What the agent needs installed on the box: FFmpeg with the encoders it uses, ffprobe, and the
//! font of text overlays. The FFmpeg facts come from the hardware probe's own functions
//! ([`crate::media::hwaccel`]); its verdict is read from the cache the daemon keeps and never
//! probed here (a probe test-encodes with every candidate, and writes the cache).

use std::path::Path;

use super::Check;
use crate::config::Config;
use crate::media::compositor::{Compositor, DEFAULT_FONT};
use crate::media::hwaccel::{self, CANDIDATES, SOFTWARE};

/// The audio encoder of every program and show, and of relays that re-encode audio.
const AUDIO: &str = "aac";

/// `ffmpeg version 6.1.1-3ubuntu5 Copyright …` → `6.1.1-3ubuntu5`.
fn version_of(line: &str) -> &str {
    line.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or(line)
}

/// FFmpeg and its encoders, ffprobe, and the hardware encoder verdict.
pub async fn ffmpeg(cfg: &Config) -> Vec<Check> {
    let install = "sudo apt-get install ffmpeg (or set ffmpeg.path and ffmpeg.ffprobe)";
    if cfg.control_plane_only {
        return vec![Check::ok("ffmpeg", "not needed (control_plane_only = true)")];
    }
    let ffmpeg = &cfg.ffmpeg.path;
    let mut out = Vec::new();
    let line = match hwaccel::version_line(ffmpeg).await {
        Ok(l) => l,
        Err(e) => {
            out.push(Check::fail("ffmpeg", e.to_string(), install));
            out.push(ffprobe(&cfg.ffmpeg.ffprobe, install).await);
            return out;
        }
    };
    let version = version_of(&line);
    match hwaccel::listed_encoders(ffmpeg).await {
        Ok(listed) => {
            let missing: Vec<&str> = [SOFTWARE, AUDIO].into_iter().filter(|e| !listed.contains(*e)).collect();
            if missing.is_empty() {
                out.push(Check::ok("ffmpeg", format!("{version} ({}) with {SOFTWARE}, {AUDIO}", ffmpeg.display())));
            } else {
                out.push(Check::fail(
                    "ffmpeg",
                    format!("{version} ({}) has no {} encoder", ffmpeg.display(), missing.join(", ")),
                    "install an FFmpeg built with libx264 and aac, e.g. Debian's: sudo apt-get install ffmpeg",
                ));
            }
            let board = hwaccel::Board::detect().map(|(_, model)| model);
            out.push(hardware(&listed, &line, &cfg.data_dir.join("hwaccel.json"), board.as_deref()));
        }
        Err(e) => out.push(Check::fail("ffmpeg", format!("{version}: its encoders cannot be listed: {e}"), install)),
    }
    out.push(ffprobe(&cfg.ffmpeg.ffprobe, install).await);
    out
}

async fn ffprobe(path: &Path, install: &str) -> Check {
    match hwaccel::version_line(path).await {
        Ok(l) => Check::ok("ffprobe", format!("{} ({})", version_of(&l), path.display())),
        Err(e) => Check::fail("ffprobe", format!("{e}; cameras cannot be probed"), install),
    }
}

/// The hardware H.264 encoders this FFmpeg lists, and the one the agent uses if the probe has run;
/// on a board whose hardware is known (a Raspberry Pi 4 or 5), what it should use, and a warning
/// when the probe chose otherwise. `board` is the device tree's model of this machine, if any.
fn hardware(
    listed: &std::collections::BTreeSet<String>,
    version_line: &str,
    cache: &Path,
    board: Option<&str>,
) -> Check {
    let verdict = hwaccel::read_cache(cache, version_line);
    let check = found(listed, verdict.as_ref());
    let Some(model) = board else { return check };
    match hwaccel::board_note(model, verdict.as_ref().map(|v| v.chosen.as_str())) {
        Some((true, note)) => Check { detail: format!("{}; {note}", check.detail), ..check },
        Some((false, note)) => Check::warn(
            "hardware encoder",
            format!("{}; {note}", check.detail),
            "check that /dev/video11 exists and the service's user is in the video group, then `sudo vistter-agent hwaccel --refresh`",
        ),
        None => check,
    }
}

fn found(listed: &std::collections::BTreeSet<String>, verdict: Option<&hwaccel::Verdict>) -> Check {
    if let Some(v) = verdict {
        let detail = if v.chosen == SOFTWARE {
            format!("none of this FFmpeg's hardware encoders works here: {SOFTWARE} (software) is used")
        } else {
            format!("{} (it passed a test encode)", v.chosen)
        };
        return Check::ok("hardware encoder", detail);
    }
    let hw: Vec<&str> = CANDIDATES.iter().copied().filter(|c| listed.contains(*c)).collect();
    if hw.is_empty() {
        return Check::ok("hardware encoder", format!("this FFmpeg lists none: {SOFTWARE} (software) is used"));
    }
    Check::ok(
        "hardware encoder",
        format!(
            "this FFmpeg lists {}; not test-encoded yet (the first show does it, or `sudo vistter-agent hwaccel`); {SOFTWARE} if none works",
            hw.join(", ")
        ),
    )
}

/// The font text overlays are drawn with, loaded as the compositor loads it.
pub fn fonts() -> Check {
    match Compositor::new(2, 2, Some(Path::new(DEFAULT_FONT))) {
        Ok(_) => Check::ok("fonts", format!("{DEFAULT_FONT} (text overlays)")),
        Err(e) => Check::warn(
            "fonts",
            format!("no usable DejaVu font ({e}): text overlays are refused, logos still work"),
            "sudo apt-get install fonts-dejavu-core",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe verdict cached for `version` that chose `chosen`.
    fn cached(dir: &Path, version: &str, chosen: &str) -> std::path::PathBuf {
        let cache = dir.join("hwaccel.json");
        let v = hwaccel::Verdict {
            ffmpeg_version: version.into(),
            candidates: Vec::new(),
            chosen: chosen.into(),
            board: None,
        };
        std::fs::write(&cache, serde_json::to_vec(&v).unwrap()).unwrap();
        cache
    }

    #[test]
    fn a_raspberry_pi_is_told_which_encoder_it_should_use() {
        let dir = tempfile::tempdir().unwrap();
        let listed: std::collections::BTreeSet<String> = ["h264_v4l2m2m", "libx264"].map(String::from).into();
        let line = "ffmpeg version 5.1.6-0+deb12u1+rpt3 Copyright";

        let pi5 = hardware(&listed, line, &cached(dir.path(), line, "libx264"), Some("Raspberry Pi 5 Model B Rev 1.0"));
        assert_eq!(pi5.status, super::super::Status::Ok, "{}", pi5.detail);
        assert!(
            pi5.detail.contains("Raspberry Pi 5 Model B Rev 1.0: libx264 (it has no H.264 encoder block"),
            "{}",
            pi5.detail
        );

        let pi4 =
            hardware(&listed, line, &cached(dir.path(), line, "h264_v4l2m2m"), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(pi4.status, super::super::Status::Ok, "{}", pi4.detail);
        assert!(pi4.detail.starts_with("h264_v4l2m2m (it passed a test encode); Raspberry Pi 4"), "{}", pi4.detail);

        // The Pi 4's encoder block failed its test encode: a warning, with what to look at.
        let broken =
            hardware(&listed, line, &cached(dir.path(), line, "libx264"), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(broken.status, super::super::Status::Warn, "{}", broken.detail);
        assert!(broken.detail.ends_with("but the probe chose libx264"), "{}", broken.detail);
        assert!(broken.fix.as_deref().is_some_and(|f| f.contains("/dev/video11")), "{:?}", broken.fix);

        // Not probed yet on a Pi 4: what it should use, no warning.
        let fresh = hardware(&listed, line, &dir.path().join("absent.json"), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(fresh.status, super::super::Status::Ok, "{}", fresh.detail);
        assert!(fresh.detail.contains("Raspberry Pi 4 Model B Rev 1.4: h264_v4l2m2m"), "{}", fresh.detail);

        // Any other machine: the line as it was.
        let pc = hardware(&listed, line, &cached(dir.path(), line, "libx264"), None);
        assert!(!pc.detail.contains("Raspberry"), "{}", pc.detail);
        let rock = hardware(&listed, line, &cached(dir.path(), line, "libx264"), Some("Radxa ROCK 5B"));
        assert_eq!((rock.status, rock.detail), (pc.status, pc.detail));
    }

    #[test]
    fn the_version_is_read_from_the_version_line() {
        assert_eq!(version_of("ffmpeg version 6.1.1-3ubuntu5 Copyright (c) 2000-2023"), "6.1.1-3ubuntu5");
        assert_eq!(version_of("ffprobe version n7.0 Copyright"), "n7.0");
        assert_eq!(version_of("something else"), "something else");
    }
}
