//! Thumbnails: small JPEGs of the program and of each source, refreshed every second and kept in
//! memory for the status page and the CLI. Encoded off the bus task (a blocking thread), from a
//! nearest-neighbour downscale straight out of YUV, so a 1080p frame costs the bus one clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::frame::{yuv_to_rgb, Frame};

/// Thumbnails are at most this wide (height follows the aspect ratio).
pub const MAX_WIDTH: u32 = 320;
const QUALITY: u8 = 70;

/// Latest JPEG per name (`program`, or a camera id).
#[derive(Clone, Default)]
pub struct Thumbnails {
    inner: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
}

impl Thumbnails {
    pub fn get(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().expect("thumbnails lock").get(name).cloned()
    }

    pub fn put(&self, name: &str, jpeg: Vec<u8>) {
        self.inner.lock().expect("thumbnails lock").insert(name.to_string(), Arc::new(jpeg));
    }
}

/// A JPEG of `frame`, scaled down to at most `max_width` wide.
pub fn jpeg(frame: &Frame, max_width: u32) -> Vec<u8> {
    let scale = (frame.width as f64 / max_width as f64).max(1.0);
    let w = ((frame.width as f64 / scale) as u32).max(2) & !1;
    let h = ((frame.height as f64 / scale) as u32).max(2) & !1;
    let (yp, up, vp) = frame.planes();
    let fw = frame.width as usize;
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let sy = ((y as f64 * scale) as usize).min(frame.height as usize - 1);
        for x in 0..w {
            let sx = ((x as f64 * scale) as usize).min(fw - 1);
            let c = (sy / 2) * (fw / 2) + sx / 2;
            let (r, g, b) = yuv_to_rgb(yp[sy * fw + sx], up[c], vp[c]);
            rgb.extend_from_slice(&[r, g, b]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("in-memory JPEG encoding of a valid buffer");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_of_a_frame_is_small_and_well_formed() {
        let f = Frame::solid(1280, 720, (255, 0, 0));
        let j = jpeg(&f, MAX_WIDTH);
        assert_eq!(&j[..2], &[0xff, 0xd8], "SOI");
        assert_eq!(&j[j.len() - 2..], &[0xff, 0xd9], "EOI");
        assert!(j.len() < 20_000, "{} bytes", j.len());
        // SOF0 carries height then width.
        let sof = j.windows(2).position(|w| w == [0xff, 0xc0]).expect("baseline SOF");
        let h = u16::from_be_bytes([j[sof + 5], j[sof + 6]]);
        let w = u16::from_be_bytes([j[sof + 7], j[sof + 8]]);
        assert_eq!((w, h), (320, 180));
        let small = jpeg(&Frame::solid(64, 36, (0, 0, 255)), MAX_WIDTH);
        let sof = small.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        assert_eq!(u16::from_be_bytes([small[sof + 7], small[sof + 8]]), 64, "never scaled up");
    }
}
