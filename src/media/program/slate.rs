//! The slate: the picture on air when no camera is (a configured PNG, else a generated card with
//! "We'll be right back" and the time).

use tokio::time::Instant;

use crate::media::compositor::{Compositor, Offset, OverlayKind, OverlaySpec, Position};
use crate::media::frame::{self, Frame};
use crate::media::ingest::ProgramFormat;
use crate::values::OverlayId;

/// The text of the generated slate card.
pub(super) fn slate_card(fmt: ProgramFormat) -> Option<Compositor> {
    let mut c = Compositor::new(fmt.width, fmt.height, None).ok()?;
    let size = (fmt.height as f32 / 10.0).max(8.0);
    let text = |id: &str, text: &str, size: f32, dy: i32| {
        let mut s = OverlaySpec::new(
            OverlayId::new(id).expect("a valid id"),
            OverlayKind::Text { text: text.into(), font_size: size, color: [255, 255, 255, 255], background: None },
        );
        s.position = Position::Center;
        s.offset_y = Offset::Px(dy);
        s
    };
    let now = Instant::now();
    c.show(text("title", "We'll be right back", size, -(size as i32) / 2), now).ok()?;
    c.show(text("clock", "{{time}} UTC", size * 0.6, size as i32 / 2 + 4), now).ok()?;
    Some(c)
}

/// The slate: a configured PNG (scaled to fit on black), else a dark card. Text ("We'll be right
/// back" and the time) is drawn on it by the compositor when available.
pub(super) fn make_slate(fmt: ProgramFormat, png: Option<&std::path::Path>) -> Frame {
    let base = Frame::solid(fmt.width, fmt.height, (16, 24, 40));
    if let Some(p) = png {
        match load_png_fit(p, fmt) {
            Ok(f) => return f,
            Err(e) => tracing::warn!("slate image {}: {e}; using the generated card", p.display()),
        }
    }
    base
}

/// Why the configured slate image cannot be used (the generated card is shown instead).
#[derive(Debug, thiserror::Error)]
enum SlateImageError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Decode(#[from] png::DecodingError),
}

fn load_png_fit(path: &std::path::Path, fmt: ProgramFormat) -> Result<Frame, SlateImageError> {
    let file = std::fs::File::open(path)?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let chans = info.color_type.samples();
    let (iw, ih) = (info.width as f64, info.height as f64);
    let mut out = Frame::solid(fmt.width, fmt.height, (0, 0, 0));
    let scale = (fmt.width as f64 / iw).min(fmt.height as f64 / ih);
    let (dw, dh) = ((iw * scale) as u32, (ih * scale) as u32);
    let (ox, oy) = ((fmt.width - dw) / 2, (fmt.height - dh) / 2);
    let w = fmt.width as usize;
    let rgb = |x: u32, y: u32| {
        let sx = ((x as f64 / scale) as usize).min(info.width as usize - 1);
        let sy = ((y as f64 / scale) as usize).min(info.height as usize - 1);
        let i = (sy * info.width as usize + sx) * chans;
        match chans {
            1 | 2 => (buf[i], buf[i], buf[i]),
            _ => (buf[i], buf[i + 1], buf[i + 2]),
        }
    };
    let (yp, up, vp) = out.planes_mut();
    for y in 0..dh {
        for x in 0..dw {
            let (r, g, b) = rgb(x, y);
            let (yy, u, v) = frame::rgb_to_yuv(r, g, b);
            let (px, py) = ((ox + x) as usize, (oy + y) as usize);
            yp[py * w + px] = yy;
            if px % 2 == 0 && py % 2 == 0 {
                up[(py / 2) * (w / 2) + px / 2] = u;
                vp[(py / 2) * (w / 2) + px / 2] = v;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slate_png_is_scaled_to_fit_and_letterboxed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slate.png");
        let mut enc = png::Encoder::new(std::io::BufWriter::new(std::fs::File::create(&path).unwrap()), 4, 2);
        enc.set_color(png::ColorType::Rgb);
        enc.write_header().unwrap().write_image_data(&[255, 0, 0].repeat(8)).unwrap();
        let fmt = ProgramFormat { width: 16, height: 16, fps: 25 };
        let f = make_slate(fmt, Some(&path));
        let (r, g, b) = f.rgb_at(8, 8);
        assert!(r > 200 && g < 40 && b < 40, "the image fills the width: {:?}", (r, g, b));
        assert!(f.rgb_at(8, 1).0 < 40, "black bars above and below (2:1 image in a square)");
        let fallback = make_slate(fmt, Some(&dir.path().join("missing.png")));
        assert_eq!(fallback, Frame::solid(16, 16, (16, 24, 40)), "an unreadable slate image falls back to the card");
    }
}
