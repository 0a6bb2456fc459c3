//! RGBA pictures before they become sprites: PNG decoding (every PNG colour type normalised to RGBA8),
//! bilinear resampling for `scale`, and text rasterised with ab_glyph. All of this runs when an overlay
//! changes, never per frame, so it favours clarity (f32 maths) over speed. Pixels are straight (not
//! premultiplied) alpha; resampling and compositing premultiply internally so that the colour of fully
//! transparent pixels never bleeds into edges as dark or coloured fringes.

use ab_glyph::{point, Font, PxScale, ScaleFont};

/// Straight-alpha RGBA8, row-major, `w * h * 4` bytes.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Rgba {
    pub w: u32,
    pub h: u32,
    pub px: Vec<u8>,
}

impl std::fmt::Debug for Rgba {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgba({}x{})", self.w, self.h)
    }
}

/// Largest decoded source image (64 MiB of RGBA): a hostile or careless PNG header must not make us
/// allocate gigabytes before the size checks against the frame can run.
pub(super) const MAX_SOURCE_PIXELS: u64 = 16 * 1024 * 1024;

/// Why an overlay's PNG cannot be used (the reason of `OverlayError::InvalidPng`).
#[derive(Debug, thiserror::Error)]
pub(super) enum PngError {
    #[error("{0}")]
    Decode(#[from] png::DecodingError),
    #[error("{w}x{h} is larger than the {MAX_SOURCE_PIXELS}-pixel limit")]
    TooLarge { w: u32, h: u32 },
    #[error("palette was not expanded")]
    PaletteNotExpanded,
    #[error("unsupported bit depth {0:?} after normalisation")]
    BitDepth(png::BitDepth),
}

impl Rgba {
    pub(super) fn new(w: u32, h: u32, fill: [u8; 4]) -> Rgba {
        let mut px = vec![0; w as usize * h as usize * 4];
        for p in px.chunks_exact_mut(4) {
            p.copy_from_slice(&fill);
        }
        Rgba { w, h, px }
    }

    /// Size from the PNG header alone, to check before decoding.
    pub(super) fn png_size(bytes: &[u8]) -> Result<(u32, u32), PngError> {
        let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
        Ok(reader.info().size())
    }

    pub(super) fn decode_png(bytes: &[u8]) -> Result<Rgba, PngError> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        // EXPAND turns palette, low-bit grey and tRNS into 8-bit channels (tRNS becomes alpha).
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info()?;
        let (w, h) = reader.info().size();
        if w as u64 * h as u64 > MAX_SOURCE_PIXELS {
            return Err(PngError::TooLarge { w, h });
        }
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf)?;
        if info.bit_depth != png::BitDepth::Eight {
            return Err(PngError::BitDepth(info.bit_depth));
        }
        let channels = match info.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => return Err(PngError::PaletteNotExpanded),
        };
        let (w, h) = (info.width, info.height);
        let mut px = Vec::with_capacity(w as usize * h as usize * 4);
        for row in buf.chunks(info.line_size).take(h as usize) {
            for p in row[..w as usize * channels].chunks_exact(channels) {
                px.extend_from_slice(&match channels {
                    1 => [p[0], p[0], p[0], 255],
                    2 => [p[0], p[0], p[0], p[1]],
                    3 => [p[0], p[1], p[2], 255],
                    _ => [p[0], p[1], p[2], p[3]],
                });
            }
        }
        Ok(Rgba { w, h, px })
    }

    /// Bilinear resample to `w` x `h` (both at least 1), sampling at pixel centres.
    pub(super) fn resized(&self, w: u32, h: u32) -> Rgba {
        if (w, h) == (self.w, self.h) || self.w == 0 || self.h == 0 {
            return self.clone();
        }
        let (sx, sy) = (self.w as f32 / w as f32, self.h as f32 / h as f32);
        let axis = |o: u32, s: f32, n: u32| {
            let f = ((o as f32 + 0.5) * s - 0.5).clamp(0.0, (n - 1) as f32);
            let i = f.floor() as u32;
            (i, (i + 1).min(n - 1), f - i as f32)
        };
        let mut out = Rgba::new(w, h, [0; 4]);
        for oy in 0..h {
            let (y0, y1, ty) = axis(oy, sy, self.h);
            for ox in 0..w {
                let (x0, x1, tx) = axis(ox, sx, self.w);
                let mut acc = [0f32; 4];
                for (x, y, wgt) in [
                    (x0, y0, (1.0 - tx) * (1.0 - ty)),
                    (x1, y0, tx * (1.0 - ty)),
                    (x0, y1, (1.0 - tx) * ty),
                    (x1, y1, tx * ty),
                ] {
                    let i = (y as usize * self.w as usize + x as usize) * 4;
                    let p = &self.px[i..i + 4];
                    let a = p[3] as f32 / 255.0 * wgt;
                    acc[0] += p[0] as f32 * a;
                    acc[1] += p[1] as f32 * a;
                    acc[2] += p[2] as f32 * a;
                    acc[3] += a;
                }
                let i = (oy as usize * w as usize + ox as usize) * 4;
                if acc[3] > 0.0 {
                    for c in 0..3 {
                        out.px[i + c] = (acc[c] / acc[3]).round().clamp(0.0, 255.0) as u8;
                    }
                    out.px[i + 3] = (acc[3] * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    /// Porter-Duff "over" of a colour with coverage `a` (0..=1) onto one pixel; off-canvas is ignored.
    fn blend_px(&mut self, x: i64, y: i64, rgb: [u8; 3], a: f32) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 || a <= 0.0 {
            return;
        }
        let i = (y as usize * self.w as usize + x as usize) * 4;
        let d = &mut self.px[i..i + 4];
        let a = a.min(1.0);
        let da = d[3] as f32 / 255.0;
        let oa = a + da * (1.0 - a);
        for c in 0..3 {
            let v = (rgb[c] as f32 * a + d[c] as f32 * da * (1.0 - a)) / oa;
            d[c] = v.round().clamp(0.0, 255.0) as u8;
        }
        d[3] = (oa * 255.0).round().clamp(0.0, 255.0) as u8;
    }

    /// Draws `src` over `self` with its top-left corner at (`x`, `y`), clipped to `self`.
    pub(super) fn draw_over(&mut self, x: i64, y: i64, src: &Rgba) {
        for sy in 0..src.h as i64 {
            for sx in 0..src.w as i64 {
                let i = (sy as usize * src.w as usize + sx as usize) * 4;
                let p = &src.px[i..i + 4];
                self.blend_px(x + sx, y + sy, [p[0], p[1], p[2]], p[3] as f32 / 255.0);
            }
        }
    }
}

/// How a block of text is drawn.
#[derive(Debug, Clone, Copy)]
pub(super) struct TextStyle {
    /// Font size in pixels (already multiplied by the overlay's scale).
    pub px: f32,
    pub color: [u8; 4],
    pub background: Option<[u8; 4]>,
    /// Margin around the text, in em: the padding of the background box, and room for glyphs that
    /// overhang their advance (italic-ish shapes, `j`) when there is no box.
    pub pad_em: f32,
}

/// Rasterises `text` (lines split on `\n`, left-aligned) into a box of its own size plus padding.
/// `Err((w, h))` when that box would exceed `max_pixels`; the size is checked before allocating.
pub(super) fn render_text<F: Font>(
    font: &F,
    text: &str,
    style: TextStyle,
    max_pixels: u64,
) -> Result<Rgba, (u64, u64)> {
    let font = font.as_scaled(PxScale::from(style.px));
    let line_h = font.ascent() - font.descent() + font.line_gap();
    let lines = || text.split('\n').map(|l| l.trim_end_matches('\r'));
    let advance = |line: &str| {
        let mut x = 0.0;
        let mut prev = None;
        for c in line.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            x += font.h_advance(id);
            prev = Some(id);
        }
        x
    };
    let pad = (style.pad_em * style.px).round().max(1.0) as f64;
    let text_w = lines().map(advance).fold(0.0f32, f32::max) as f64;
    let n = lines().count() as f64;
    let text_h = n * line_h as f64 - font.line_gap() as f64;
    let (w, h) = ((text_w.ceil() + 2.0 * pad).max(1.0), (text_h.ceil() + 2.0 * pad).max(1.0));
    if w * h > max_pixels as f64 {
        return Err((w as u64, h as u64));
    }
    let mut out = Rgba::new(w as u32, h as u32, style.background.unwrap_or([0; 4]));
    let rgb = [style.color[0], style.color[1], style.color[2]];
    let alpha = style.color[3] as f32 / 255.0;
    for (i, line) in lines().enumerate() {
        let baseline = pad as f32 + font.ascent() + i as f32 * line_h;
        let mut x = pad as f32;
        let mut prev = None;
        for c in line.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            let glyph = id.with_scale_and_position(style.px, point(x, baseline));
            x += font.h_advance(id);
            prev = Some(id);
            if let Some(outlined) = font.outline_glyph(glyph) {
                let min = outlined.px_bounds().min;
                outlined.draw(|gx, gy, coverage| {
                    out.blend_px(min.x as i64 + gx as i64, min.y as i64 + gy as i64, rgb, coverage * alpha)
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
            enc.set_trns(vec![255, 0]);
        }
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn every_png_colour_type_becomes_rgba8() {
        use png::{BitDepth::*, ColorType::*};
        type Img = super::Rgba;
        let rgba = Img::decode_png(&encode(1, 1, Rgba, Eight, &[1, 2, 3, 4], None)).unwrap();
        assert_eq!(rgba.px, [1, 2, 3, 4]);
        let rgb = Img::decode_png(&encode(1, 1, Rgb, Eight, &[1, 2, 3], None)).unwrap();
        assert_eq!(rgb.px, [1, 2, 3, 255]);
        let grey = Img::decode_png(&encode(2, 1, GrayscaleAlpha, Eight, &[9, 80, 10, 90], None)).unwrap();
        assert_eq!(grey.px, [9, 9, 9, 80, 10, 10, 10, 90]);
        let sixteen = Img::decode_png(&encode(1, 1, Rgba, Sixteen, &[1, 0, 2, 0, 3, 0, 255, 255], None)).unwrap();
        assert_eq!(sixteen.px, [1, 2, 3, 255]);
        // Palette with a transparent second entry, 1-bit indices: pixels 0,1 → opaque red, transparent green.
        let pal = Img::decode_png(&encode(2, 1, Indexed, One, &[0b0100_0000], Some(&[255, 0, 0, 0, 255, 0]))).unwrap();
        assert_eq!(pal.px, [255, 0, 0, 255, 0, 255, 0, 0]);
        assert!(Img::decode_png(b"not a png at all").is_err());
    }

    #[test]
    fn resampling_keeps_solid_colours_and_does_not_bleed_transparent_colour() {
        let solid = Rgba::new(3, 5, [10, 200, 30, 255]).resized(7, 2);
        assert_eq!((solid.w, solid.h), (7, 2));
        assert!(solid.px.chunks(4).all(|p| p == [10, 200, 30, 255]));
        // Opaque white next to transparent *black*: the edge must stay white, only less opaque.
        let mut edge = Rgba::new(2, 1, [0, 0, 0, 0]);
        edge.px[..4].copy_from_slice(&[255, 255, 255, 255]);
        let up = edge.resized(8, 1);
        for p in up.px.chunks(4).filter(|p| p[3] > 0) {
            assert_eq!(&p[..3], [255, 255, 255]);
        }
    }
}
