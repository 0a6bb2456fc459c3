//! The per-frame half of compositing: an overlay converted once (per change of content or placement)
//! into premultiplied YUV 4:2:0 plus alpha, already aligned to the frame's chroma grid, so that blending a
//! frame is integer arithmetic over the overlay's visible bounding box and nothing else.
//!
//! Luma is blended per pixel with the pixel's own alpha. Chroma is blended per 2x2 block with the
//! *average* alpha of the four frame pixels of the block, pixels the overlay does not cover counting as
//! transparent: an opaque overlay that covers half a block moves that block's colour halfway, which is
//! what the block's averaged chroma would be had the overlay been drawn in RGB and subsampled afterwards.
//! Because the blocks are laid out in frame coordinates, an overlay at an odd x or y (or of odd size)
//! needs no special case in the blend loop; its placement is baked in when the sprite is built.
//!
//! Fixed point: with `a` the pixel alpha (0..=255) and `m` the opacity × fade multiplier (0..=256),
//! `out = (bg * (255*256 - a*m) + Y*a*m + round) / (255*256)`, i.e. exactly `bg*(1 - α) + fg*α` with
//! `α = a/255 * m/256`: true opacity (an overlay at 50% must look half transparent, not darker). `m = 0` or `a = 0` leaves the byte unchanged, and
//! `a = 255, m = 256` writes the overlay's value exactly. Chroma is the same with alpha sums over four
//! pixels (0..=1020). Everything fits in u32.

use super::raster::Rgba;
use crate::media::frame::{rgb_to_yuv, Band, Frame};

const LUMA_DEN: u32 = 255 * 256;
const CHROMA_DEN: u32 = 4 * 255 * 256;

/// An overlay ready to blend. Buffers are reused when rebuilt so that content changes (a `{{time}}`
/// tick) do not churn the allocator.
#[derive(Debug, Default)]
pub(super) struct Sprite {
    /// Top-left of the overlay in frame pixels (may be off-frame, negative, odd).
    x: i64,
    y: i64,
    w: u32,
    h: u32,
    /// Y * alpha per overlay pixel (0..=65025).
    luma: Vec<u16>,
    alpha: Vec<u8>,
    /// First chroma block (frame chroma coordinates) and the number of blocks the overlay touches.
    cx: i64,
    cy: i64,
    cw: u32,
    ch: u32,
    /// Per block: sum of U*alpha and V*alpha over the covered pixels, and the sum of alphas (0..=1020).
    u: Vec<u32>,
    v: Vec<u32>,
    calpha: Vec<u16>,
}

impl Sprite {
    /// The box the overlay occupies in frame pixels: (x, y, w, h).
    #[cfg(test)]
    pub(super) fn rect(&self) -> (i64, i64, u32, u32) {
        (self.x, self.y, self.w, self.h)
    }

    /// Addresses of the buffers, for tests that check frames reuse them.
    #[cfg(test)]
    pub(super) fn buffer_addrs(&self) -> [usize; 5] {
        [
            self.luma.as_ptr() as usize,
            self.alpha.as_ptr() as usize,
            self.u.as_ptr() as usize,
            self.v.as_ptr() as usize,
            self.calpha.as_ptr() as usize,
        ]
    }

    /// Rebuilds from straight RGBA placed with its top-left at (`x`, `y`).
    pub(super) fn rebuild(&mut self, img: &Rgba, x: i64, y: i64) {
        let (w, h) = (img.w, img.h);
        (self.x, self.y, self.w, self.h) = (x, y, w, h);
        let n = w as usize * h as usize;
        self.luma.clear();
        self.alpha.clear();
        self.luma.reserve(n);
        self.alpha.reserve(n);

        self.cx = x.div_euclid(2);
        self.cy = y.div_euclid(2);
        self.cw = if w == 0 { 0 } else { ((x + w as i64 - 1).div_euclid(2) - self.cx + 1) as u32 };
        self.ch = if h == 0 { 0 } else { ((y + h as i64 - 1).div_euclid(2) - self.cy + 1) as u32 };
        let blocks = self.cw as usize * self.ch as usize;
        for buf in [&mut self.u, &mut self.v] {
            buf.clear();
            buf.resize(blocks, 0);
        }
        self.calpha.clear();
        self.calpha.resize(blocks, 0);

        for oy in 0..h as i64 {
            let by = ((y + oy).div_euclid(2) - self.cy) as usize;
            for ox in 0..w as i64 {
                let i = (oy as usize * w as usize + ox as usize) * 4;
                let p = &img.px[i..i + 4];
                let a = p[3];
                // Colour under zero alpha is irrelevant; skipping it also keeps the sums exact zeros.
                let (yy, uu, vv) = if a == 0 { (0, 0, 0) } else { rgb_to_yuv(p[0], p[1], p[2]) };
                self.luma.push(yy as u16 * a as u16);
                self.alpha.push(a);
                let b = by * self.cw as usize + ((x + ox).div_euclid(2) - self.cx) as usize;
                self.u[b] += uu as u32 * a as u32;
                self.v[b] += vv as u32 * a as u32;
                self.calpha[b] += a as u16;
            }
        }
    }

    /// Blends onto `frame` with multiplier `m` (0..=256). The frame's buffer must match its size.
    pub(super) fn blend(&self, frame: &mut Frame, m: u32) {
        let (fw, fh) = (frame.width as i64, frame.height as i64);
        let (yp, up, vp) = frame.planes_mut();
        self.blend_rows((yp, up, vp), (fw, fh), (0, fh), m);
    }

    /// Blends onto the rows of a frame held in `band`, as [`Sprite::blend`] would onto the frame.
    pub(super) fn blend_band(&self, band: &mut Band, m: u32) {
        let (fw, fh) = (band.width as i64, band.height as i64);
        let rows = (band.top as i64, band.top as i64 + band.rows as i64);
        self.blend_rows(band.planes_mut(), (fw, fh), rows, m);
    }

    /// The luma rows (even bounds, inside the frame) that blending changes, luma and chroma: what a
    /// [`Band`] must hold. `None` when the overlay is off the frame.
    pub(super) fn rows(&self, fw: i64, fh: i64) -> Option<(u32, u32)> {
        let luma = clip(self.x, self.y, self.w, self.h, fw, fh)
            .map(|(_, _, y0, y1)| (y0.div_euclid(2), (y1 + 1).div_euclid(2)));
        let chroma = clip(self.cx, self.cy, self.cw, self.ch, fw / 2, fh / 2).map(|(_, _, y0, y1)| (y0, y1));
        let (top, bottom) = match (luma, chroma) {
            (Some(l), Some(c)) => (l.0.min(c.0), l.1.max(c.1)),
            (Some(r), None) | (None, Some(r)) => r,
            (None, None) => return None,
        };
        let (top, bottom) = (top * 2, (bottom * 2).min(fh.div_euclid(2) * 2));
        (top < bottom).then_some((top as u32, bottom as u32))
    }

    /// Blends onto planes that hold luma rows `rows.0..rows.1` of a `fw` x `fh` frame and the chroma
    /// rows under them (`rows` even); what lies outside those rows is left alone.
    fn blend_rows(
        &self,
        (yp, up, vp): (&mut [u8], &mut [u8], &mut [u8]),
        (fw, fh): (i64, i64),
        rows: (i64, i64),
        m: u32,
    ) {
        let m = m.min(256);
        if m == 0 {
            return;
        }
        let (top, bottom) = (rows.0.max(0), rows.1.min(fh));
        if let Some((x0, x1, y0, y1)) = clip(self.x, self.y, self.w, self.h, fw, fh) {
            let n = (x1 - x0) as usize;
            for fy in y0.max(top)..y1.min(bottom) {
                let s = ((fy - self.y) * self.w as i64 + (x0 - self.x)) as usize;
                let d = ((fy - top) * fw + x0) as usize;
                let dst = &mut yp[d..d + n];
                for ((px, &l), &a) in dst.iter_mut().zip(&self.luma[s..s + n]).zip(&self.alpha[s..s + n]) {
                    if a != 0 {
                        *px = mix(*px, l as u32, a as u32 * m, m, LUMA_DEN);
                    }
                }
            }
        }

        // Chroma planes are (w/2) x (h/2): an odd frame's last row/column has no chroma of its own.
        let (cfw, cfh) = (fw / 2, fh / 2);
        let (ctop, cbottom) = (top / 2, bottom / 2);
        if let Some((x0, x1, y0, y1)) = clip(self.cx, self.cy, self.cw, self.ch, cfw, cfh) {
            let n = (x1 - x0) as usize;
            for fy in y0.max(ctop)..y1.min(cbottom) {
                let s = ((fy - self.cy) * self.cw as i64 + (x0 - self.cx)) as usize;
                let d = ((fy - ctop) * cfw + x0) as usize;
                let alphas = &self.calpha[s..s + n];
                for (plane, sums) in [(&mut *up, &self.u), (&mut *vp, &self.v)] {
                    for ((px, &c), &a) in plane[d..d + n].iter_mut().zip(&sums[s..s + n]).zip(alphas) {
                        if a != 0 {
                            *px = mix(*px, c, a as u32 * m, m, CHROMA_DEN);
                        }
                    }
                }
            }
        }
    }
}

/// `bg * (den - ea) + premultiplied * m`, rounded; `ea = alpha * m` is at most `den`.
#[inline]
fn mix(bg: u8, premultiplied: u32, ea: u32, m: u32, den: u32) -> u8 {
    ((bg as u32 * (den - ea) + premultiplied * m + den / 2) / den) as u8
}

/// The part of the box at (`x`, `y`) of size `w` x `h` inside `0..fw` x `0..fh`, as half-open ranges.
fn clip(x: i64, y: i64, w: u32, h: u32, fw: i64, fh: i64) -> Option<(i64, i64, i64, i64)> {
    let (x0, x1) = (x.max(0), (x + w as i64).min(fw));
    let (y0, y1) = (y.max(0), (y + h as i64).min(fh));
    (x0 < x1 && y0 < y1).then_some((x0, x1, y0, y1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_opaque_pixel_moves_a_quarter_of_its_chroma_block() {
        let mut frame = Frame::solid(4, 4, (0, 0, 255));
        let (_, bu, bv) = rgb_to_yuv(0, 0, 255);
        let (ry, ru, rv) = rgb_to_yuv(255, 0, 0);
        let mut s = Sprite::default();
        s.rebuild(&Rgba::new(1, 1, [255, 0, 0, 255]), 3, 3);
        s.blend(&mut frame, 256);
        let (y, u, v) = frame.planes();
        assert_eq!(y[3 * 4 + 3], ry);
        let quarter = |b: u8, f: u8| ((b as f32 * 3.0 + f as f32) / 4.0).round() as u8;
        assert_eq!((u[3], v[3]), (quarter(bu, ru), quarter(bv, rv)));
        assert_eq!(&u[..3], &[bu; 3]);
    }

    #[test]
    fn full_alpha_and_multiplier_write_the_exact_value_and_zero_keeps_the_background() {
        for bg in [0u8, 16, 128, 235, 255] {
            for fg in [0u8, 16, 128, 235, 255] {
                assert_eq!(mix(bg, fg as u32 * 255, 255 * 256, 256, LUMA_DEN), fg);
                assert_eq!(mix(bg, fg as u32 * 255, 0, 0, LUMA_DEN), bg);
                assert_eq!(mix(bg, 0, 0, 256, LUMA_DEN), bg);
                assert_eq!(mix(bg, fg as u32 * 1020, 1020 * 256, 256, CHROMA_DEN), fg);
            }
        }
    }
}
