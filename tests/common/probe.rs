//! ffprobe helpers. Each accepts a file path or a URL (rtsp:// inputs get TCP transport).

use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use super::proc::{input_opts, run_with_timeout};

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// "video" | "audio" | "data" | ...
    pub codec_type: String,
    /// e.g. "h264", "aac"
    pub codec_name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<u32>,
}

fn ffprobe(input: &OsStr, args: &[&str]) -> String {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]).args(input_opts(input)).args(args).arg(input);
    let out = run_with_timeout(&mut cmd, PROBE_TIMEOUT)
        .unwrap_or_else(|| panic!("ffprobe {input:?} timed out after {PROBE_TIMEOUT:?}"));
    if !out.status.success() {
        panic!("ffprobe {args:?} {input:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(input: &OsStr, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-of", "json"];
    a.extend_from_slice(args);
    let text = ffprobe(input, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ffprobe json for {input:?}: {e}: {text}"))
}

fn num(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The streams of a file or URL, in ffprobe's order. Panics if ffprobe fails.
pub fn probe_streams(input: impl AsRef<OsStr>) -> Vec<StreamInfo> {
    let v = json(input.as_ref(), &["-show_streams"]);
    let empty = vec![];
    v["streams"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|s| StreamInfo {
            codec_type: s["codec_type"].as_str().unwrap_or("").to_string(),
            codec_name: s["codec_name"].as_str().unwrap_or("").to_string(),
            width: s["width"].as_u64().map(|x| x as u32),
            height: s["height"].as_u64().map(|x| x as u32),
            sample_rate: num(&s["sample_rate"]).map(|x| x as u32),
        })
        .collect()
}

/// Codec names of the streams of the given type ("video" / "audio").
pub fn codecs_of(streams: &[StreamInfo], codec_type: &str) -> Vec<String> {
    streams.iter().filter(|s| s.codec_type == codec_type).map(|s| s.codec_name.clone()).collect()
}

/// Duration in seconds: the max of the format's and every stream's duration (0.0 if none).
pub fn probe_duration(input: impl AsRef<OsStr>) -> f64 {
    let v = json(input.as_ref(), &["-show_entries", "format=duration:stream=duration"]);
    let mut best = num(&v["format"]["duration"]).unwrap_or(0.0);
    if let Some(streams) = v["streams"].as_array() {
        for s in streams {
            if let Some(d) = num(&s["duration"]) {
                best = best.max(d);
            }
        }
    }
    best
}

/// Timestamp (pts_time, else dts_time) of every packet of the selected stream, in file order.
/// `stream` is an ffprobe stream specifier: "v", "a", "v:0", ...
pub fn packet_times(input: impl AsRef<OsStr>, stream: &str) -> Vec<f64> {
    let text = ffprobe(
        input.as_ref(),
        &["-select_streams", stream, "-show_entries", "packet=pts_time,dts_time", "-of", "csv=p=0"],
    );
    text.lines().filter_map(|line| line.split(',').find_map(|f| f.trim().parse::<f64>().ok())).collect()
}

/// Largest gap between consecutive timestamps (after sorting, so B-frame reordering does not
/// count). 0.0 for fewer than two timestamps.
pub fn max_gap(times: &[f64]) -> f64 {
    let mut t: Vec<f64> = times.iter().copied().filter(|x| x.is_finite()).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}
