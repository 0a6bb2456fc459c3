//! Camera probing with ffprobe: is the camera reachable, and what does it send?
//!
//! Used by `camera probe`, pre-flight, before every relay ingest start and (through the
//! [`probe_cache`](super::probe_cache)) by decode ingests: an ingest's arguments depend on whether
//! the camera has audio and in which codec. Bounded by a timeout; the camera password never appears
//! in the error text.
//!
//! A [`CameraSource`] says by its [`SourceKind`] what it is (a network camera, a media file, a
//! built-in synthetic source), so nothing downstream tells sources apart by looking inside a URL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::secret::{Redactor, Secret};
use crate::values::SourceId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraProbe {
    pub video_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub audio_codec: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeError {
    #[error("camera did not answer within {0} s")]
    Timeout(u64),
    #[error("camera unreachable: {0}")]
    Unreachable(String),
    #[error("cannot run ffprobe: {0}")]
    Tool(String),
    #[error("camera answered with no video stream")]
    NoVideo,
}

/// What a source is, with what it takes to open it.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A network camera (`rtsp://` or `rtsps://`).
    Rtsp {
        /// The URL to open, credentials included.
        url: Secret,
        /// Secrets to scrub from FFmpeg output (the password, plain and percent-encoded).
        secrets: Vec<Secret>,
    },
    /// A local media file that plays like a camera (a timeline's `show_media`).
    Media(PathBuf),
    /// A built-in synthetic source (the demo): lavfi graphs, paced in real time; silence when
    /// `audio` is None.
    Lavfi { video: String, audio: Option<String> },
}

/// A source of the program: its id, what it is, and how to show it.
#[derive(Debug, Clone)]
pub struct CameraSource {
    pub camera_id: SourceId,
    pub kind: SourceKind,
    /// How to show it to people: the URL with the password masked, an asset name.
    pub shown: String,
}

impl CameraSource {
    pub fn rtsp(camera_id: impl Into<SourceId>, url: Secret, shown: String, secrets: Vec<Secret>) -> CameraSource {
        CameraSource { camera_id: camera_id.into(), kind: SourceKind::Rtsp { url, secrets }, shown }
    }

    /// What FFmpeg opens (`-i`), as a secret since a camera URL holds the password.
    pub fn input(&self) -> Secret {
        match &self.kind {
            SourceKind::Rtsp { url, .. } => url.clone(),
            SourceKind::Media(path) => Secret::new(path.display().to_string()),
            SourceKind::Lavfi { video, .. } => Secret::new(video.clone()),
        }
    }

    /// The secrets to scrub from anything FFmpeg prints about this source.
    pub fn secrets(&self) -> &[Secret] {
        match &self.kind {
            SourceKind::Rtsp { secrets, .. } => secrets,
            _ => &[],
        }
    }

    /// A network camera (RTSP options apply: TCP transport, the socket timeout).
    pub fn is_rtsp(&self) -> bool {
        matches!(self.kind, SourceKind::Rtsp { .. })
    }
}

pub async fn probe_camera(ffprobe: &Path, cam: &CameraSource, timeout: Duration) -> Result<CameraProbe, ProbeError> {
    let rtsp_timeout_us = timeout.as_micros().to_string();
    let mut cmd = Command::new(ffprobe);
    cmd.args(["-v", "error", "-of", "json", "-show_streams"]);
    if let SourceKind::Lavfi { .. } = cam.kind {
        cmd.args(["-f", "lavfi"]);
    }
    if cam.is_rtsp() {
        cmd.args(["-rtsp_transport", "tcp", "-timeout", &rtsp_timeout_us]);
    }
    let input = cam.input();
    cmd.arg(input.expose()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let redactor = Redactor::with_replacements(
        cam.secrets().iter().map(|s| (s.clone(), "***".to_string())).chain([(input.clone(), cam.shown.clone())]),
    );
    let child = cmd.spawn().map_err(|e| ProbeError::Tool(format!("{}: {e}", ffprobe.display())))?;
    let deadline = timeout + Duration::from_secs(3);
    let out = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Err(_) => return Err(ProbeError::Timeout(deadline.as_secs())),
        Ok(Err(e)) => return Err(ProbeError::Tool(e.to_string())),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no answer").to_string();
        return Err(ProbeError::Unreachable(redactor.redact(&last)));
    }
    parse_probe(&out.stdout)
}

fn parse_probe(json: &[u8]) -> Result<CameraProbe, ProbeError> {
    #[derive(serde::Deserialize)]
    struct Out {
        #[serde(default)]
        streams: Vec<Stream>,
    }
    #[derive(serde::Deserialize)]
    struct Stream {
        codec_type: Option<String>,
        codec_name: Option<String>,
        width: Option<u32>,
        height: Option<u32>,
    }
    let out: Out =
        serde_json::from_slice(json).map_err(|e| ProbeError::Tool(format!("unreadable ffprobe output: {e}")))?;
    let video = out.streams.iter().find(|s| s.codec_type.as_deref() == Some("video")).ok_or(ProbeError::NoVideo)?;
    let audio = out.streams.iter().find(|s| s.codec_type.as_deref() == Some("audio"));
    Ok(CameraProbe {
        video_codec: video.codec_name.clone(),
        width: video.width,
        height: video.height,
        audio_codec: audio.and_then(|a| a.codec_name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffprobe_json() {
        let j = br#"{"streams":[{"index":0,"codec_name":"h264","codec_type":"video","width":320,"height":180},{"codec_name":"aac","codec_type":"audio"}]}"#;
        let p = parse_probe(j).unwrap();
        assert_eq!(p.video_codec.as_deref(), Some("h264"));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        assert_eq!(parse_probe(br#"{"streams":[{"codec_type":"audio"}]}"#), Err(ProbeError::NoVideo));
        assert!(parse_probe(b"not json").is_err());
    }
}
