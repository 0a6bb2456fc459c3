//! Shared integration-test harness: an RTSP camera simulator, an RTMP ingest (nginx-rtmp),
//! ffprobe helpers and process guards. Each test binary uses a subset, hence the allow.
//!
//! Rules: everything binds 127.0.0.1 on a free port; every process started here is owned by a
//! guard that kills it by pid on Drop.
#![allow(dead_code)]
#![allow(unused_imports)]

mod agent;
pub mod browser;
mod camera;
pub mod fake_rtmp;
mod frames;
pub mod https;
mod ingest;
pub mod mqtt;
pub mod netem;
pub mod onvif;
pub mod openapi;
mod probe;
mod proc;
mod tls;
pub mod vseg;
pub mod ws_discovery;

pub use agent::{alive, event_lines, tail, TestAgent, AGENT_BIN};
pub use camera::{CameraOpts, RtspCamera, CAMERA_PYTHON};
pub use frames::{classes, classify, decode_rgb, first_from, pixel};
pub use ingest::{RtmpIngest, RTMP_MODULE};
pub use probe::{codecs_of, max_gap, packet_times, probe_duration, probe_streams, StreamInfo};
pub use proc::{ffmpeg_cmd, run_with_timeout, ProcGuard};
pub use tls::TlsFront;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A port that was free on 127.0.0.1 a moment ago (bind :0, read it, drop the listener).
/// Never returns the same port twice within one test binary, so parallel tests do not race
/// each other for it; the guards still retry on another port if something else took it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if seen.insert(port) {
            return port;
        }
    }
}

/// The Debian package that provides a binary the tests run.
fn package_of(name: &str) -> &'static str {
    match name {
        "ffmpeg" | "ffprobe" => "ffmpeg",
        "nginx" => "nginx-light (+ libnginx-mod-rtmp)",
        "gst-launch-1.0" | "gst-inspect-1.0" => "gstreamer1.0-tools",
        "python3" => "python3-gi",
        "mosquitto" => "mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
        "stunnel4" | "stunnel" => "stunnel4",
        "openssl" => "openssl",
        "chromium" => "chromium",
        _ => "providing it",
    }
}

/// Finds `name` on PATH (or as an absolute path) and returns its path.
pub fn find_bin(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    // nginx lives in /usr/sbin, which a non-root PATH may lack.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|c| {
            use std::os::unix::fs::PermissionsExt;
            c.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
        })
}

/// Panics with how to get `name` if it is not installed.
pub fn require_bin(name: &str) {
    if find_bin(name).is_none() {
        panic!("{name} not found: run scripts/setup.sh (installs Debian package {})", package_of(name));
    }
}

/// A small opaque PNG (w × h, one colour), its folder made if needed.
pub fn write_png(path: &std::path::Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(std::fs::File::create(path).unwrap()), w, h);
    enc.set_color(png::ColorType::Rgb);
    let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
    enc.write_header().unwrap().write_image_data(&data).unwrap();
}
