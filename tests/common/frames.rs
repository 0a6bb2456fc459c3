//! Reading a recording back frame by frame: what colour is where, for proving which source was on
//! air at each frame of the program.

use std::path::Path;
use std::process::Command;

/// The recording decoded to `w`x`h` RGB24 frames (FFmpeg scales it down first).
pub fn decode_rgb(path: &Path, w: u32, h: u32) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("scale={w}:{h}:flags=area"), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "decode {path:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact((w * h * 3) as usize).map(<[u8]>::to_vec).collect()
}

pub fn pixel(frame: &[u8], w: u32, x: u32, y: u32) -> (u8, u8, u8) {
    let i = ((y * w + x) * 3) as usize;
    (frame[i], frame[i + 1], frame[i + 2])
}

/// 'R', 'G', 'B' for a dominant primary, 'S' for the dark slate, '?' otherwise.
pub fn classify((r, g, b): (u8, u8, u8)) -> char {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    if r > 150 && g < 90 && b < 90 {
        'R'
    } else if g > 150 && r < 90 && b < 90 {
        'G'
    } else if b > 150 && r < 90 && g < 90 {
        'B'
    } else if r < 70 && g < 70 && b < 90 {
        'S'
    } else {
        '?'
    }
}

/// Per frame, the class of the pixel at (x, y) of a `w`x`h` decode.
pub fn classes(frames: &[Vec<u8>], w: u32, x: u32, y: u32) -> Vec<char> {
    frames.iter().map(|f| classify(pixel(f, w, x, y))).collect()
}

/// The first index >= `from` where the class is `want`.
pub fn first_from(classes: &[char], from: usize, want: char) -> Option<usize> {
    classes.iter().enumerate().skip(from).find(|(_, c)| **c == want).map(|(i, _)| i)
}
