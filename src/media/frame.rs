//! Raw program frames: planar YUV 4:2:0 (FFmpeg's `yuv420p`, BT.601 limited range), the format
//! the decode ingests produce and the encoder consumes. Program sizes are even.

/// Frame buffers handed back after use, for the next frame of the same size: a raw 720p frame is
/// 1.4 MB, and the bus moves about 90 of them a second. A fresh buffer would be zeroed and
/// page-faulted in each time (a tenth of the agent's CPU); a recycled one is only overwritten.
/// Bounded in bytes; buffers of any size share it (programs of different sizes take their own).
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOL_BYTES: usize = 24 << 20;

/// A buffer of exactly `len` bytes (contents unspecified), recycled when one is available.
pub fn buffer(len: usize) -> Vec<u8> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match pool.iter().rposition(|b| b.len() == len) {
        Some(i) => pool.swap_remove(i),
        None => vec![0; len],
    }
}

/// Hands a frame buffer back for reuse (dropped when the pool is full).
pub fn recycle(buf: Vec<u8>) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = pool.iter().map(Vec::len).sum();
    if held + buf.len() <= POOL_BYTES {
        pool.push(buf);
    }
}

/// One frame: the Y plane (`width * height` bytes), then U and V (`width/2 * height/2` each).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

/// BT.601 limited-range RGB → YUV, as FFmpeg's default `yuv420p` conversion.
pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    (y.round().clamp(0.0, 255.0) as u8, u.round().clamp(0.0, 255.0) as u8, v.round().clamp(0.0, 255.0) as u8)
}

/// BT.601 limited-range YUV → RGB (for analysing frames in tests and thumbnails).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let (c, d, e) = (y as f32 - 16.0, u as f32 - 128.0, v as f32 - 128.0);
    let r = 1.164 * c + 1.596 * e;
    let g = 1.164 * c - 0.392 * d - 0.813 * e;
    let b = 1.164 * c + 2.017 * d;
    // Rounded to nearest; the float-to-int cast saturates at 0 and 255 (and is cheaper than round()).
    ((r + 0.5) as u8, (g + 0.5) as u8, (b + 0.5) as u8)
}

impl Frame {
    /// Bytes of one frame of this size.
    pub fn byte_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// A frame of one colour.
    pub fn solid(width: u32, height: u32, rgb: (u8, u8, u8)) -> Frame {
        assert!(width.is_multiple_of(2) && height.is_multiple_of(2), "program frames have even sizes");
        let (y, u, v) = rgb_to_yuv(rgb.0, rgb.1, rgb.2);
        let luma = (width * height) as usize;
        let chroma = luma / 4;
        let mut data = vec![y; luma + 2 * chroma];
        data[luma..luma + chroma].fill(u);
        data[luma + chroma..].fill(v);
        Frame { width, height, data }
    }

    /// A copy in a recycled buffer (`clone` would allocate and zero a new one).
    pub fn pooled_copy(&self) -> Frame {
        let mut data = buffer(self.data.len());
        data.copy_from_slice(&self.data);
        Frame { width: self.width, height: self.height, data }
    }

    /// Hands this frame's buffer back for reuse.
    pub fn recycle(self) {
        recycle(self.data)
    }

    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Option<Frame> {
        (data.len() == Self::byte_len(width, height)).then_some(Frame { width, height, data })
    }

    /// (Y, U, V) planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = luma / 4;
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(chroma);
        (y, u, v)
    }

    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = luma / 4;
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// Picture row `r`: its luma row and the chroma rows under it.
    pub fn row(&self, r: usize) -> (&[u8], &[u8], &[u8]) {
        row_of(self.planes(), self.width, r)
    }

    /// The RGB colour at a pixel.
    pub fn rgb_at(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let (yp, up, vp) = self.planes();
        let w = self.width as usize;
        let c = (y as usize / 2) * (w / 2) + x as usize / 2;
        yuv_to_rgb(yp[y as usize * w + x as usize], up[c], vp[c])
    }

    /// `self = self * (1 - t) + other * t`, for crossfades (t in 0..=1).
    pub fn mix_from(&mut self, other: &Frame, t: f32) {
        let t = (t.clamp(0.0, 1.0) * 256.0) as u32;
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a = ((*a as u32 * (256 - t) + *b as u32 * t) >> 8) as u8;
        }
    }
}

/// Row `r` of planes `width` pixels wide (luma row `r`, chroma row `r / 2`), counted from the
/// planes' first row.
fn row_of<'a>((y, u, v): (&'a [u8], &'a [u8], &'a [u8]), width: u32, r: usize) -> (&'a [u8], &'a [u8], &'a [u8]) {
    let (w, cw) = (width as usize, width as usize / 2);
    (&y[r * w..(r + 1) * w], &u[r / 2 * cw..(r / 2 + 1) * cw], &v[r / 2 * cw..(r / 2 + 1) * cw])
}

/// Whole rows of a frame: luma rows `top..top + rows` and the chroma rows under them (`top` and
/// `rows` even). Overlays are drawn on a copy of these rows only, and the rest of the source's
/// picture goes to the encoder uncopied (see [`OutFrame`]).
#[derive(Clone)]
pub struct Band {
    /// The frame's size.
    pub width: u32,
    pub height: u32,
    pub top: u32,
    pub rows: u32,
    data: Vec<u8>,
}

impl Band {
    /// A copy of rows `top..top + rows` of `frame` (even bounds inside the frame).
    pub fn copy_of(frame: &Frame, top: u32, rows: u32) -> Band {
        assert!(top.is_multiple_of(2) && rows.is_multiple_of(2) && top + rows <= frame.height, "band rows");
        let (w, cw) = (frame.width as usize, frame.width as usize / 2);
        let (t, r) = (top as usize, rows as usize);
        let (y, u, v) = frame.planes();
        let mut data = Vec::with_capacity(w * r + 2 * cw * (r / 2));
        data.extend_from_slice(&y[t * w..(t + r) * w]);
        for plane in [u, v] {
            data.extend_from_slice(&plane[t / 2 * cw..(t + r) / 2 * cw]);
        }
        Band { width: frame.width, height: frame.height, top, rows, data }
    }

    /// (Y, U, V) rows.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.width as usize * self.rows as usize;
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(rest.len() / 2);
        (y, u, v)
    }

    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width as usize * self.rows as usize;
        let (y, rest) = self.data.split_at_mut(luma);
        let chroma = rest.len() / 2;
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }
}

/// A program frame on its way to the encoder: a picture of its own (the slate, a crossfade), or a
/// source's picture as it is, with the rows the overlays cover replaced. The second is what a
/// show sends almost always: the source's 1.4 MB (at 720p) are never copied by the agent, and
/// reach the encoder's pipe by reference (see `encoder`).
pub enum OutFrame {
    Own(Frame),
    Over { base: std::sync::Arc<Frame>, band: Option<Band> },
}

impl OutFrame {
    pub fn byte_len(&self) -> usize {
        match self {
            OutFrame::Own(f) => f.data.len(),
            OutFrame::Over { base, .. } => base.data.len(),
        }
    }

    /// The frame's bytes, in order, as at most 9 slices.
    pub fn slices(&self) -> Vec<&[u8]> {
        match self {
            OutFrame::Own(f) => vec![&f.data],
            OutFrame::Over { base, band: None } => vec![&base.data],
            OutFrame::Over { base, band: Some(b) } => {
                let (w, cw) = (base.width as usize, base.width as usize / 2);
                let (t, r) = (b.top as usize, b.rows as usize);
                let (by, bu, bv) = base.planes();
                let (py, pu, pv) = b.planes();
                let mut out = Vec::with_capacity(9);
                for (plane, patch, width, top, rows) in
                    [(by, py, w, t, r), (bu, pu, cw, t / 2, r / 2), (bv, pv, cw, t / 2, r / 2)]
                {
                    out.extend([&plane[..top * width], patch, &plane[(top + rows) * width..]]);
                }
                out.retain(|s| !s.is_empty());
                out
            }
        }
    }

    /// (width, height).
    pub fn size(&self) -> (u32, u32) {
        match self {
            OutFrame::Own(f) => (f.width, f.height),
            OutFrame::Over { base, .. } => (base.width, base.height),
        }
    }

    /// Picture row `r` (`r < height`): its luma row and the chroma rows under it, from the band
    /// where the band covers it.
    pub fn row(&self, r: usize) -> (&[u8], &[u8], &[u8]) {
        match self {
            OutFrame::Own(f) => f.row(r),
            OutFrame::Over { band: Some(b), .. } if (b.top as usize..(b.top + b.rows) as usize).contains(&r) => {
                row_of(b.planes(), b.width, r - b.top as usize)
            }
            OutFrame::Over { base, .. } => base.row(r),
        }
    }

    /// The same picture for another reader (thumbnails): a source's picture is shared, not
    /// copied (only the band is); a picture of its own is copied.
    pub fn share(&self) -> OutFrame {
        match self {
            OutFrame::Own(f) => OutFrame::Own(f.pooled_copy()),
            OutFrame::Over { base, band } => OutFrame::Over { base: base.clone(), band: band.clone() },
        }
    }

    /// The whole picture in a frame of its own.
    pub fn to_frame(&self) -> Frame {
        match self {
            OutFrame::Own(f) => f.pooled_copy(),
            OutFrame::Over { base, .. } => {
                let mut data = buffer(base.data.len());
                let mut at = 0;
                for s in self.slices() {
                    data[at..at + s.len()].copy_from_slice(s);
                    at += s.len();
                }
                Frame { width: base.width, height: base.height, data }
            }
        }
    }

    /// Done with: its buffers go back for reuse (a source's picture too, if nothing else holds it).
    pub fn release(self) {
        match self {
            OutFrame::Own(f) => f.recycle(),
            OutFrame::Over { base, .. } => {
                if let Ok(f) = std::sync::Arc::try_unwrap(base) {
                    f.recycle();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_round_trip_is_close() {
        for rgb in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (128, 64, 200)] {
            let (y, u, v) = rgb_to_yuv(rgb.0, rgb.1, rgb.2);
            let back = yuv_to_rgb(y, u, v);
            for (a, b) in [(rgb.0, back.0), (rgb.1, back.1), (rgb.2, back.2)] {
                assert!((a as i32 - b as i32).abs() <= 3, "{rgb:?} → {back:?}");
            }
        }
        assert_eq!(rgb_to_yuv(0, 0, 0), (16, 128, 128));
        assert_eq!(rgb_to_yuv(255, 255, 255), (235, 128, 128));
    }

    /// A frame whose every byte differs from its neighbours', to see where each byte went.
    fn numbered(width: u32, height: u32) -> Frame {
        let data = (0..Frame::byte_len(width, height)).map(|i| (i * 7 % 251) as u8).collect();
        Frame::from_bytes(width, height, data).unwrap()
    }

    #[test]
    fn a_frame_with_a_band_drawn_over_reads_as_the_frame_with_those_rows_replaced() {
        let base = std::sync::Arc::new(numbered(8, 6));
        for (top, rows) in [(0, 2), (2, 2), (4, 2), (0, 6), (2, 4)] {
            let mut band = Band::copy_of(&base, top, rows);
            let (y, u, v) = band.planes_mut();
            y.fill(1);
            u.fill(2);
            v.fill(3);
            let out = OutFrame::Over { base: base.clone(), band: Some(band) };
            assert!(out.slices().len() <= 9);
            let flat: Vec<u8> = out.slices().concat();
            assert_eq!(flat.len(), out.byte_len());
            let got = out.to_frame();
            assert_eq!(got.data, flat);
            let mut want = (*base).clone();
            let (y, u, v) = want.planes_mut();
            let (t, r) = (top as usize, rows as usize);
            y[t * 8..(t + r) * 8].fill(1);
            u[t / 2 * 4..(t + r) / 2 * 4].fill(2);
            v[t / 2 * 4..(t + r) / 2 * 4].fill(3);
            assert_eq!(got, want, "band {top}+{rows}");
        }
        let plain = OutFrame::Over { base: base.clone(), band: None };
        assert_eq!(plain.slices().concat(), base.data);
    }

    #[test]
    fn solid_frames_and_mixing() {
        let mut a = Frame::solid(4, 2, (255, 0, 0));
        assert_eq!(a.data.len(), Frame::byte_len(4, 2));
        let b = Frame::solid(4, 2, (0, 0, 255));
        a.mix_from(&b, 1.0);
        assert_eq!(a, b);
        let red = Frame::solid(4, 2, (255, 0, 0));
        let mut half = red.clone();
        half.mix_from(&b, 0.5);
        let (r, _, bl) = half.rgb_at(1, 1);
        assert!((100..160).contains(&r) && (100..160).contains(&bl), "{:?}", half.rgb_at(1, 1));
    }
}
