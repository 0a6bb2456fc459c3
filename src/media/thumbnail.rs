//! Thumbnails: small JPEGs of the program and of each source for the status page, the CLI and the
//! cloud. Every second the bus hands over a small picture (a nearest-neighbour downscale straight
//! out of YUV, made off the bus task); it becomes a JPEG only when somebody asks for it. A show
//! nobody looks at spends nothing on JPEG encoding (it was 6% of the agent's CPU during a show),
//! and what is asked for is never more than a second old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::frame::{yuv_to_rgb, Frame, OutFrame};

/// Thumbnails are at most this wide (height follows the aspect ratio).
pub const MAX_WIDTH: u32 = 320;
const QUALITY: u8 = 70;

/// A downscaled picture waiting to be encoded.
pub struct Small {
    rgb: Vec<u8>,
    width: u16,
    height: u16,
}

#[derive(Default)]
struct Entry {
    /// The newest picture, when it is newer than `jpeg`.
    pending: Option<Small>,
    jpeg: Option<Arc<Vec<u8>>>,
}

/// Latest picture per name (`program`, or a camera id).
#[derive(Clone, Default)]
pub struct Thumbnails {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Thumbnails {
    /// The newest picture of `name` as a JPEG, encoded now if it has not been yet.
    pub fn get(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        let pending = {
            let mut map = self.inner.lock().expect("thumbnails lock");
            let e = map.get_mut(name)?;
            match e.pending.take() {
                Some(p) => p,
                None => return e.jpeg.clone(),
            }
        };
        // Encoded outside the lock: the bus's next picture is not held up by a reader.
        let jpeg = Arc::new(encode(&pending));
        let mut map = self.inner.lock().expect("thumbnails lock");
        let e = map.entry(name.to_string()).or_default();
        // A newer picture that arrived meanwhile stays pending; this one is still the newest JPEG.
        e.jpeg = Some(jpeg.clone());
        Some(jpeg)
    }

    /// Replaces the picture of `name`.
    pub fn put(&self, name: &str, picture: Small) {
        self.inner.lock().expect("thumbnails lock").entry(name.to_string()).or_default().pending = Some(picture);
    }
}

/// `frame` scaled down to at most `max_width` wide, as RGB.
pub fn downscale(frame: &Frame, max_width: u32) -> Small {
    downscale_rows(frame.width, frame.height, max_width, |r| frame.row(r))
}

/// A program frame scaled down: a source's picture is read where it is, with the overlays' rows
/// from their band, without a copy of the whole picture.
pub fn downscale_out(frame: &OutFrame, max_width: u32) -> Small {
    let (w, h) = frame.size();
    downscale_rows(w, h, max_width, |r| frame.row(r))
}

/// A picture of `width` x `height` given by its rows (luma row, chroma rows under it), scaled
/// down to at most `max_width` wide by nearest neighbour.
fn downscale_rows<'a>(
    width: u32,
    height: u32,
    max_width: u32,
    row: impl Fn(usize) -> (&'a [u8], &'a [u8], &'a [u8]),
) -> Small {
    let scale = (width as f64 / max_width as f64).max(1.0);
    let w = ((width as f64 / scale) as u32).max(2) & !1;
    let h = ((height as f64 / scale) as u32).max(2) & !1;
    let fw = width as usize;
    let cols: Vec<usize> = (0..w).map(|x| ((x as f64 * scale) as usize).min(fw - 1)).collect();
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let sy = ((y as f64 * scale) as usize).min(height as usize - 1);
        let (yr, ur, vr) = row(sy);
        for &sx in &cols {
            let (r, g, b) = yuv_to_rgb(yr[sx], ur[sx / 2], vr[sx / 2]);
            rgb.extend_from_slice(&[r, g, b]);
        }
    }
    Small { rgb, width: w as u16, height: h as u16 }
}

/// The JPEG of a downscaled picture.
pub fn encode(p: &Small) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(&p.rgb, p.width, p.height, jpeg_encoder::ColorType::Rgb)
        .expect("in-memory JPEG encoding of a valid buffer");
    out
}

/// A JPEG of `frame`, scaled down to at most `max_width` wide.
pub fn jpeg(frame: &Frame, max_width: u32) -> Vec<u8> {
    encode(&downscale(frame, max_width))
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

    /// The program's thumbnail is read from the source's picture and the overlays' band without a
    /// copy; it must be the thumbnail of the picture the encoder gets.
    #[test]
    fn a_program_frame_downscales_as_its_whole_picture_would() {
        use crate::media::frame::Band;
        for (w, h) in [(1280, 720), (854, 480), (64, 36)] {
            let data = (0..Frame::byte_len(w, h)).map(|i| (i * 7 % 251) as u8).collect();
            let base = Arc::new(Frame::from_bytes(w, h, data).unwrap());
            for (top, rows) in [(0, 2), (h - 12, 12), (2, h - 4), (0, h), (h / 2, 2)] {
                let mut band = Band::copy_of(&base, top, rows);
                let (y, u, v) = band.planes_mut();
                y.fill(200);
                u.fill(20);
                v.fill(240);
                for out in
                    [OutFrame::Over { base: base.clone(), band: Some(band.clone()) }, OutFrame::Own((*base).clone())]
                {
                    let (got, want) = (downscale_out(&out, MAX_WIDTH), downscale(&out.to_frame(), MAX_WIDTH));
                    assert_eq!((got.width, got.height), (want.width, want.height));
                    assert!(got.rgb == want.rgb, "{w}x{h}, band {top}+{rows}");
                }
            }
        }
    }

    #[test]
    fn a_picture_is_encoded_once_when_asked_and_the_newest_wins() {
        let t = Thumbnails::default();
        assert!(t.get("c1").is_none());
        t.put("c1", downscale(&Frame::solid(1280, 720, (255, 0, 0)), MAX_WIDTH));
        let first = t.get("c1").expect("encoded on demand");
        assert_eq!(&first[..2], &[0xff, 0xd8]);
        assert!(Arc::ptr_eq(&first, &t.get("c1").unwrap()), "not encoded twice");
        t.put("c1", downscale(&Frame::solid(1280, 720, (0, 0, 255)), MAX_WIDTH));
        let second = t.get("c1").unwrap();
        assert!(!Arc::ptr_eq(&first, &second) && first != second, "the newer picture");
        assert_eq!(*second, jpeg(&Frame::solid(1280, 720, (0, 0, 255)), MAX_WIDTH));
    }
}
