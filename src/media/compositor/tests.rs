//! Compositor tests: blends checked on pixels (after `yuv_to_rgb`), placement, clipping (property test),
//! fades on explicit `Instant`s, z-order, tokens and text with the real DejaVu Sans, and error paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use time::macros::datetime;
use tokio::time::Instant;

use super::*;
use crate::media::frame::{rgb_to_yuv, OutFrame};
use crate::values::OverlayId;

fn oid(s: &str) -> OverlayId {
    OverlayId::new(s).unwrap()
}

const BLUE: (u8, u8, u8) = (0, 0, 255);
const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];

fn wall() -> OffsetDateTime {
    datetime!(2024-03-07 09:05:03 UTC)
}

fn compositor(w: u32, h: u32) -> Compositor {
    Compositor::new(w, h, Some(Path::new(DEFAULT_FONT))).unwrap()
}

/// A solid `w` x `h` RGBA PNG in `dir`.
fn png_file(dir: &Path, name: &str, w: u32, h: u32, rgba: [u8; 4]) -> PathBuf {
    let path = dir.join(name);
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&rgba.repeat((w * h) as usize)).unwrap();
    path
}

fn image(id: &str, png: PathBuf) -> OverlaySpec {
    OverlaySpec::new(oid(id), OverlayKind::Image { png })
}

fn text(id: &str, text: &str, background: Option<[u8; 4]>) -> OverlaySpec {
    OverlaySpec::new(oid(id), OverlayKind::Text { text: text.into(), font_size: 32.0, color: [255; 4], background })
}

/// Shows an RGBA picture directly, scaled as `Prepared::load` would scale a PNG.
fn show_rgba(c: &mut Compositor, spec: OverlaySpec, img: Rgba, now: Instant) {
    let (w, h) = scaled(img.w, img.h, spec.scale);
    let source = Source::image(&spec, img.resized(w as u32, h as u32), c.width, c.height);
    c.show_prepared(Prepared { spec, source }, now).unwrap();
}

fn luma(frame: &Frame, x: u32, y: u32) -> u8 {
    frame.planes().0[(y * frame.width + x) as usize]
}

fn assert_rgb_near(got: (u8, u8, u8), want: (f32, f32, f32), tolerance: f32) {
    let ok =
        [(got.0, want.0), (got.1, want.1), (got.2, want.2)].iter().all(|&(g, w)| (g as f32 - w).abs() <= tolerance);
    assert!(ok, "got {got:?}, want {want:?} ± {tolerance}");
}

fn overlay<'a>(c: &'a Compositor, id: &str) -> &'a Overlay {
    c.overlays.iter().find(|o| o.spec.id == id).unwrap()
}

#[test]
fn opacity_is_true_alpha_multiplication() {
    let dir = tempfile::tempdir().unwrap();
    let red = png_file(dir.path(), "red.png", 16, 16, RED);
    let half_red = png_file(dir.path(), "half-red.png", 16, 16, [255, 0, 0, 128]);
    let now = Instant::now();
    let blended = |png: &PathBuf, opacity: f32| {
        let mut c = compositor(64, 48);
        let mut spec = image("logo", png.clone());
        (spec.offset_x, spec.offset_y, spec.opacity) = (Offset::Px(8), Offset::Px(8), opacity);
        c.show(spec, now).unwrap();
        let mut frame = Frame::solid(64, 48, BLUE);
        c.compose(&mut frame, now, wall());
        frame
    };

    assert_rgb_near(blended(&red, 0.5).rgb_at(12, 12), (127.5, 0.0, 127.5), 3.0);
    // Pixel alpha and opacity multiply: 128/255 × 0.5 ≈ a quarter of the way to red.
    let a = 128.0 / 255.0 * 0.5;
    assert_rgb_near(blended(&half_red, 0.5).rgb_at(12, 12), (255.0 * a, 0.0, 255.0 * (1.0 - a)), 3.0);
    assert_rgb_near(blended(&half_red, 1.0).rgb_at(12, 12), (128.0, 0.0, 127.0), 3.0);

    assert_eq!(blended(&red, 0.0), Frame::solid(64, 48, BLUE), "opacity 0 must leave the frame untouched");

    let opaque = blended(&red, 1.0);
    let (y, u, v) = rgb_to_yuv(255, 0, 0);
    for (px, py) in [(8, 8), (23, 23), (15, 9)] {
        let (yp, up, vp) = opaque.planes();
        let c = ((py / 2) * 32 + px / 2) as usize;
        assert_eq!((yp[(py * 64 + px) as usize], up[c], vp[c]), (y, u, v));
        assert_rgb_near(opaque.rgb_at(px, py), (255.0, 0.0, 0.0), 3.0);
    }
    assert_eq!(opaque.rgb_at(7, 7), Frame::solid(2, 2, BLUE).rgb_at(0, 0));
}

#[test]
fn top_right_with_pixel_offsets_lands_exactly() {
    let mut c = compositor(64, 48);
    let mut spec = OverlaySpec::new(oid("box"), OverlayKind::Logo { png: PathBuf::new() });
    (spec.position, spec.offset_x, spec.offset_y) = (Position::TopRight, Offset::Px(10), Offset::Px(10));
    let now = Instant::now();
    show_rgba(&mut c, spec, Rgba::new(10, 6, RED), now);
    let mut frame = Frame::solid(64, 48, BLUE);
    c.compose(&mut frame, now, wall());
    let (red, blue) = (rgb_to_yuv(255, 0, 0).0, rgb_to_yuv(0, 0, 255).0);
    // The box is x 44..54, y 10..16: 10 px from the right edge and from the top.
    for (x, y) in [(44, 10), (53, 10), (44, 15), (53, 15)] {
        assert_eq!(luma(&frame, x, y), red, "({x}, {y}) is inside");
    }
    for (x, y) in [(43, 10), (54, 10), (44, 9), (44, 16), (53, 16), (54, 15)] {
        assert_eq!(luma(&frame, x, y), blue, "({x}, {y}) is outside");
    }
    assert_rgb_near(frame.rgb_at(44, 10), (255.0, 0.0, 0.0), 3.0);
    assert_rgb_near(frame.rgb_at(42, 10), (0.0, 0.0, 255.0), 3.0);
}

#[test]
fn anchors_and_percent_offsets() {
    let spec = |position, ox, oy| OverlaySpec {
        position,
        offset_x: ox,
        offset_y: oy,
        ..OverlaySpec::new(oid("o"), OverlayKind::Logo { png: PathBuf::new() })
    };
    let (w, h, fw, fh) = (10, 6, 640, 360);
    assert_eq!(place(&spec(Position::TopLeft, Offset::Px(-3), Offset::Px(4)), w, h, fw, fh), (-3, 4));
    assert_eq!(place(&spec(Position::BottomLeft, Offset::Px(0), Offset::Px(20)), w, h, fw, fh), (0, 334));
    assert_eq!(place(&spec(Position::BottomRight, Offset::Px(1), Offset::Px(1)), w, h, fw, fh), (629, 353));
    assert_eq!(place(&spec(Position::Center, Offset::Px(0), Offset::Px(-5)), w, h, fw, fh), (315, 172));
    assert_eq!(place(&spec(Position::Center, Offset::Px(0), Offset::Px(0)), 11, 7, fw, fh), (314, 176));
    // 5% of the width from the left, bottom at 85% of the height.
    assert_eq!(place(&spec(Position::LowerThird, Offset::Px(0), Offset::Px(0)), w, h, fw, fh), (32, 300));
    let pct = spec(Position::TopRight, Offset::Percent(10.0), Offset::Percent(50.0));
    assert_eq!(place(&pct, w, h, fw, fh), (640 - 10 - 64, 180));
    let huge = spec(Position::TopLeft, Offset::Percent(1e30), Offset::Px(i32::MIN));
    let (x, y) = place(&huge, w, h, fw, fh);
    assert!(x > fw as i64 && y < 0);
}

#[derive(Debug, Clone)]
struct Case {
    fw: u32,
    fh: u32,
    ow: u32,
    oh: u32,
    position: Position,
    ox: i32,
    oy: i32,
    scale: f32,
    opacity: f32,
}

fn cases() -> impl Strategy<Value = Case> {
    let positions = prop::sample::select(vec![
        Position::TopLeft,
        Position::TopRight,
        Position::BottomLeft,
        Position::BottomRight,
        Position::Center,
        Position::LowerThird,
    ]);
    (
        (1u32..=24, 1u32..=24, 1u32..=40, 1u32..=40),
        positions,
        (-80i32..80, -80i32..80),
        prop::sample::select(vec![0.3f32, 0.5, 1.0, 1.0, 1.7, 2.5]),
        prop::sample::select(vec![1.0f32, 1.0, 0.37]),
    )
        .prop_map(|((fw, fh, ow, oh), position, (ox, oy), scale, opacity)| Case {
            fw: fw * 2,
            fh: fh * 2,
            ow,
            oh,
            position,
            ox,
            oy,
            scale,
            opacity,
        })
}

/// Where the spec says the overlay goes, restated independently of `place`.
fn expected_origin(c: &Case, w: i64, h: i64) -> (i64, i64) {
    let (fw, fh, ox, oy) = (c.fw as i64, c.fh as i64, c.ox as i64, c.oy as i64);
    match c.position {
        Position::TopLeft => (ox, oy),
        Position::TopRight => (fw - w - ox, oy),
        Position::BottomLeft => (ox, fh - h - oy),
        Position::BottomRight => (fw - w - ox, fh - h - oy),
        Position::Center => ((fw - w).div_euclid(2) + ox, (fh - h).div_euclid(2) + oy),
        Position::LowerThird => ((fw as f64 * 0.05).round() as i64 + ox, (fh as f64 * 0.85).round() as i64 - h - oy),
    }
}

proptest! {
    // Failures are reported with their minimal case; no regression file is written into the repository.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Overlays off the edges, larger than the frame, odd sizes and odd placements: no panic, the
    /// visible part drawn, and every pixel outside the overlay's box untouched.
    #[test]
    fn clipping_draws_the_visible_part_and_nothing_else(case in cases()) {
        let mut comp = compositor(case.fw, case.fh);
        let mut spec = OverlaySpec::new(oid("o"), OverlayKind::Image { png: PathBuf::new() });
        spec.position = case.position;
        (spec.offset_x, spec.offset_y) = (Offset::Px(case.ox), Offset::Px(case.oy));
        (spec.scale, spec.opacity) = (case.scale, case.opacity);
        let now = Instant::now();
        let (w, h) = scaled(case.ow, case.oh, case.scale);
        let (w, h) = (w as i64, h as i64);
        let bg = Frame::solid(case.fw, case.fh, BLUE);
        let mut frame = bg.clone();
        if w * h > 4 * case.fw as i64 * case.fh as i64 {
            let source = Source::image(&spec, Rgba::new(w as u32, h as u32, GREEN), case.fw, case.fh);
            let err = comp.show_prepared(Prepared { spec, source }, now);
            prop_assert!(matches!(err, Err(OverlayError::TooLarge { .. })), "{:?}", err);
            comp.compose(&mut frame, now, wall());
            prop_assert_eq!(frame, bg);
            return Ok(());
        }
        show_rgba(&mut comp, spec, Rgba::new(case.ow, case.oh, GREEN), now);
        let (x0, y0) = expected_origin(&case, w, h);
        prop_assert_eq!(overlay(&comp, "o").sprite.rect(), (x0, y0, w as u32, h as u32));
        comp.compose(&mut frame, now, wall());
        prop_assert_eq!(frame.data.len(), bg.data.len());
        let inside = |x: i64, y: i64| x >= x0 && x < x0 + w && y >= y0 && y < y0 + h;
        let fg = rgb_to_yuv(0, 255, 0);
        let (fy, fu, fv) = frame.planes();
        let (by, bu, bv) = bg.planes();
        for y in 0..case.fh as i64 {
            for x in 0..case.fw as i64 {
                let i = (y * case.fw as i64 + x) as usize;
                if !inside(x, y) {
                    prop_assert_eq!(fy[i], by[i], "luma outside at ({}, {})", x, y);
                } else if case.opacity == 1.0 {
                    prop_assert_eq!(fy[i], fg.0, "luma inside at ({}, {})", x, y);
                } else {
                    prop_assert!(fy[i] != by[i] || fg.0 == by[i]);
                }
            }
        }
        let cw = case.fw as i64 / 2;
        for cy in 0..case.fh as i64 / 2 {
            for cx in 0..cw {
                let i = (cy * cw + cx) as usize;
                let covered = [(0, 0), (1, 0), (0, 1), (1, 1)].iter().filter(|(dx, dy)| inside(2 * cx + dx, 2 * cy + dy)).count();
                if covered == 0 {
                    prop_assert_eq!((fu[i], fv[i]), (bu[i], bv[i]), "chroma outside at ({}, {})", cx, cy);
                } else if covered == 4 && case.opacity == 1.0 {
                    prop_assert_eq!((fu[i], fv[i]), (fg.1, fg.2), "chroma inside at ({}, {})", cx, cy);
                } else {
                    let between = |v: u8, a: u8, b: u8| v >= a.min(b) && v <= a.max(b);
                    prop_assert!(between(fu[i], bu[i], fg.1) && between(fv[i], bv[i], fg.2));
                }
            }
        }
    }

    /// Drawing onto a copy of only the rows the overlays cover, then reading the picture with
    /// those rows replaced, gives exactly what drawing onto the whole picture gives: any
    /// placement, two overlays at once, half transparent, text included.
    #[test]
    fn drawing_on_the_covered_rows_equals_drawing_on_the_whole_picture(case in cases(), other in cases(), label in prop::bool::ANY) {
        let (fw, fh) = (case.fw.max(64), case.fh.max(48));
        let now = Instant::now();
        let mut whole = compositor(fw, fh);
        let mut banded = compositor(fw, fh);
        for (id, c, colour) in [("a", &case, GREEN), ("b", &other, [255, 0, 0, 140])] {
            let mut spec = OverlaySpec::new(oid(id), OverlayKind::Image { png: PathBuf::new() });
            spec.position = c.position;
            (spec.offset_x, spec.offset_y) = (Offset::Px(c.ox), Offset::Px(c.oy));
            (spec.scale, spec.opacity) = (c.scale, c.opacity);
            let (w, h) = scaled(c.ow, c.oh, c.scale);
            if w as i64 * h as i64 > 4 * fw as i64 * fh as i64 {
                continue;
            }
            show_rgba(&mut whole, spec.clone(), Rgba::new(c.ow, c.oh, colour), now);
            show_rgba(&mut banded, spec, Rgba::new(c.ow, c.oh, colour), now);
        }
        if label {
            for comp in [&mut whole, &mut banded] {
                comp.show(text("t", "{{time}}", Some([0, 0, 0, 128])), now).unwrap();
            }
        }
        let data = (0..Frame::byte_len(fw, fh)).map(|i| (i * 13 % 241) as u8).collect();
        let base = Frame::from_bytes(fw, fh, data).unwrap();
        let mut want = base.clone();
        whole.compose(&mut want, now, wall());
        let band = banded.compose_over(&base, now, wall());
        let got = OutFrame::Over { base: std::sync::Arc::new(base), band }.to_frame();
        prop_assert!(got == want, "the band differs from drawing on the whole picture");
    }
}

#[test]
fn fade_in_ramps_up_and_fade_out_ramps_down_then_removes() {
    let mut c = compositor(32, 32);
    let mut spec = OverlaySpec::new(oid("f"), OverlayKind::Image { png: PathBuf::new() });
    (spec.fade_in, spec.fade_out) = (Duration::from_secs(1), Duration::from_secs(1));
    let t0 = Instant::now();
    show_rgba(&mut c, spec, Rgba::new(32, 32, RED), t0);
    let bg = Frame::solid(32, 32, BLUE);
    let red_at = |c: &mut Compositor, t: Instant| {
        let mut frame = bg.clone();
        c.compose(&mut frame, t, wall());
        (frame.rgb_at(10, 10).0, frame == bg)
    };
    let ms = |n: u64| Duration::from_millis(n);

    let ramp: Vec<_> = [0, 250, 500, 750, 1000].iter().map(|&n| red_at(&mut c, t0 + ms(n))).collect();
    assert!(ramp[0].1, "nothing drawn at the start of a fade-in");
    assert!(ramp.windows(2).all(|p| p[0].0 < p[1].0), "{ramp:?}");
    assert!(ramp[4].0 >= 252, "{ramp:?}");
    assert!((ramp[2].0 as i32 - 128).abs() <= 3, "half way is half: {ramp:?}");

    let t1 = t0 + ms(5000);
    assert_eq!(red_at(&mut c, t1).0, ramp[4].0, "stays fully visible");
    assert!(c.hide("f", t1));
    assert!(c.hide("f", t1 + ms(100)), "hiding again is fine and does not restart the fade");
    let fall: Vec<_> = [0, 250, 500, 750].iter().map(|&n| red_at(&mut c, t1 + ms(n))).collect();
    assert_eq!(fall[0].0, ramp[4].0);
    assert!(fall.windows(2).all(|p| p[0].0 > p[1].0), "{fall:?}");
    for (up, down) in ramp[1..4].iter().zip(fall[1..].iter().rev()) {
        assert!((up.0 as i32 - down.0 as i32).abs() <= 1, "fade-out mirrors fade-in: {ramp:?} {fall:?}");
    }
    assert_eq!(c.ids(), ["f"]);
    assert!(red_at(&mut c, t1 + ms(1000)).1, "nothing drawn at the end of the fade-out");
    assert!(c.ids().is_empty(), "removed once faded out");
    assert!(!c.hide("f", t1 + ms(2000)));
}

#[test]
fn hide_during_fade_in_starts_from_the_current_level_and_zero_fade_out_removes_at_once() {
    let mut c = compositor(8, 8);
    let mut spec = OverlaySpec::new(oid("f"), OverlayKind::Image { png: PathBuf::new() });
    (spec.fade_in, spec.fade_out) = (Duration::from_secs(1), Duration::from_secs(1));
    let t0 = Instant::now();
    show_rgba(&mut c, spec.clone(), Rgba::new(8, 8, RED), t0);
    c.hide("f", t0 + Duration::from_millis(500));
    let level = overlay(&c, "f").fade.level(t0 + Duration::from_millis(500), &spec);
    assert!((level - 0.5).abs() < 1e-3);
    let level = overlay(&c, "f").fade.level(t0 + Duration::from_millis(1000), &spec);
    assert!((level - 0.25).abs() < 1e-3, "{level}");

    spec.fade_out = Duration::ZERO;
    show_rgba(&mut c, OverlaySpec { id: oid("g"), ..spec }, Rgba::new(8, 8, RED), t0);
    assert!(c.hide("g", t0));
    assert_eq!(c.ids(), ["f"]);
    c.clear();
    assert!(c.ids().is_empty());
}

#[test]
fn replacing_a_visible_overlay_does_not_fade_again_and_keeps_its_slot() {
    let mut c = compositor(16, 16);
    let t0 = Instant::now();
    let spec = |id: &str| OverlaySpec {
        fade_in: Duration::from_secs(1),
        ..OverlaySpec::new(oid(id), OverlayKind::Image { png: PathBuf::new() })
    };
    show_rgba(&mut c, spec("a"), Rgba::new(16, 16, RED), t0);
    show_rgba(&mut c, spec("b"), Rgba::new(16, 16, GREEN), t0);
    let t1 = t0 + Duration::from_secs(2);
    // "a" is replaced with green-over-everything... but keeps its slot below "b".
    show_rgba(&mut c, spec("a"), Rgba::new(16, 16, [255, 255, 255, 255]), t1);
    assert_eq!(c.ids(), ["a", "b"]);
    assert_eq!(overlay(&c, "a").fade.level(t1, &spec("a")), 1.0, "no blink when updating");
    c.hide("b", t1);
    let mut frame = Frame::solid(16, 16, BLUE);
    c.compose(&mut frame, t1, wall());
    assert_rgb_near(frame.rgb_at(3, 3), (255.0, 255.0, 255.0), 3.0);
}

#[test]
fn higher_layer_wins_and_ties_go_to_the_later_one() {
    let now = Instant::now();
    let spec = |id: &str, layer| OverlaySpec {
        layer,
        ..OverlaySpec::new(oid(id), OverlayKind::Image { png: PathBuf::new() })
    };
    let mut c = compositor(16, 16);
    show_rgba(&mut c, spec("top", 2), Rgba::new(16, 16, RED), now);
    show_rgba(&mut c, spec("bottom", 1), Rgba::new(16, 16, GREEN), now);
    let mut frame = Frame::solid(16, 16, BLUE);
    c.compose(&mut frame, now, wall());
    assert_rgb_near(frame.rgb_at(5, 5), (255.0, 0.0, 0.0), 3.0);
    assert_eq!(c.ids(), ["bottom", "top"]);

    let mut c = compositor(16, 16);
    show_rgba(&mut c, spec("first", 0), Rgba::new(16, 16, RED), now);
    show_rgba(&mut c, spec("second", 0), Rgba::new(16, 16, GREEN), now);
    let mut frame = Frame::solid(16, 16, BLUE);
    c.compose(&mut frame, now, wall());
    assert_rgb_near(frame.rgb_at(5, 5), (0.0, 255.0, 0.0), 3.0);
}

#[test]
fn render_tokens_is_pure_and_tolerant() {
    let vars: HashMap<String, String> = [("tide".to_string(), "1.2 m".to_string())].into();
    let wall = datetime!(2024-12-31 23:59:58 +1);
    assert_eq!(render_tokens("Tide {{var:tide}} at {{time}}", &vars, wall), "Tide 1.2 m at 23:59:58");
    assert_eq!(render_tokens("{{date}}", &vars, wall), "2024-12-31");
    assert_eq!(render_tokens("{{date}}", &vars, wall.to_offset(time::UtcOffset::UTC)), "2024-12-31");
    assert_eq!(render_tokens("{{time}}", &vars, wall.to_offset(time::macros::offset!(+3))), "01:59:58");
    assert_eq!(render_tokens("x{{var:wind}}y", &vars, wall), "xy");
    assert_eq!(render_tokens("{{nope}} {{time", &vars, wall), "{{nope}} {{time");
}

/// Pixels noticeably brighter than the background, in the overlay's box.
fn bright_pixels(frame: &Frame, bg: &Frame) -> usize {
    frame.planes().0.iter().zip(bg.planes().0).filter(|(a, b)| **a > **b + 40).count()
}

#[test]
fn text_renders_with_dejavu_sans() {
    let mut c = compositor(200, 100);
    let now = Instant::now();
    c.show(text("t", "Hello", None), now).unwrap();
    let bg = Frame::solid(200, 100, (0, 0, 0));
    let mut frame = bg.clone();
    c.compose(&mut frame, now, wall());
    let lit = bright_pixels(&frame, &bg);
    assert!(lit > 100, "only {lit} text pixels");
    let (_, _, w, h) = overlay(&c, "t").sprite.rect();
    assert!((60..120).contains(&w) && (30..50).contains(&h), "{w}x{h}");

    // Scale doubles the font size (and so roughly the box).
    c.show(OverlaySpec { scale: 2.0, ..text("t", "Hello", None) }, now).unwrap();
    let (_, _, w2, h2) = overlay(&c, "t").sprite.rect();
    assert!(w2.abs_diff(2 * w) <= 4 && h2.abs_diff(2 * h) <= 4, "{w}x{h} → {w2}x{h2}");

    // Two lines are taller than one.
    c.show(text("t", "Hello\nworld", None), now).unwrap();
    assert!(overlay(&c, "t").sprite.rect().3 > h + 20);
}

#[test]
fn text_background_box_is_padded() {
    let mut c = compositor(200, 100);
    let now = Instant::now();
    c.show(text("t", "Hi", Some([255, 0, 0, 255])), now).unwrap();
    let mut frame = Frame::solid(200, 100, BLUE);
    c.compose(&mut frame, now, wall());
    let pad = (0.3f32 * 32.0).round() as u32;
    let (_, _, w, h) = overlay(&c, "t").sprite.rect();
    // The padding ring is background colour on every side.
    for (x, y) in [(0, 0), (pad - 1, h / 2), (w - 1, h - 1), (w / 2, pad - 1), (w / 2, h - 1)] {
        assert_eq!(luma(&frame, x, y), rgb_to_yuv(255, 0, 0).0, "({x}, {y}) of {w}x{h}");
    }
    assert_eq!(luma(&frame, w, 0), rgb_to_yuv(0, 0, 255).0);
    assert!(bright_pixels(&frame, &Frame::solid(200, 100, (255, 0, 0))) > 30, "white text on the box");
}

#[test]
fn set_var_changes_the_pixels_and_only_rerenders_its_users() {
    let mut c = compositor(200, 100);
    let now = Instant::now();
    c.show(text("tide", "{{var:tide}}", None), now).unwrap();
    c.show(OverlaySpec { position: Position::BottomLeft, ..text("other", "x", None) }, now).unwrap();
    let bg = Frame::solid(200, 100, (0, 0, 0));
    let compose = |c: &mut Compositor| {
        let mut frame = bg.clone();
        c.compose(&mut frame, now, wall());
        frame
    };
    let before = compose(&mut c);
    let builds = |c: &Compositor| (overlay(c, "tide").builds, overlay(c, "other").builds);
    let b0 = builds(&c);
    c.set_var("tide", "1.2 m");
    let after = compose(&mut c);
    assert_ne!(before, after);
    assert!(bright_pixels(&after, &bg) > bright_pixels(&before, &bg) + 50);
    assert_eq!(builds(&c), (b0.0 + 1, b0.1));
    c.set_var("tide", "1.2 m");
    c.set_var("wind", "5 kn");
    assert_eq!(compose(&mut c), after);
    assert_eq!(builds(&c), (b0.0 + 1, b0.1), "unchanged or unused variables re-render nothing");
}

#[test]
fn clock_text_rerenders_once_a_second_and_shows_the_wall_time() {
    let mut c = compositor(320, 100);
    let now = Instant::now();
    c.show(text("clock", "{{time}}", None), now).unwrap();
    let mut frame = Frame::solid(320, 100, (0, 0, 0));
    c.compose(&mut frame, now, wall());
    let builds = overlay(&c, "clock").builds;
    assert_eq!(overlay(&c, "clock").text.as_ref().unwrap().rendered, "09:05:03");
    for i in 0..30 {
        c.compose(&mut frame, now, wall() + Duration::from_millis(i * 30));
    }
    assert_eq!(overlay(&c, "clock").builds, builds, "same second, same text");
    c.compose(&mut frame, now, wall() + Duration::from_secs(1));
    assert_eq!(overlay(&c, "clock").builds, builds + 1);
    assert_eq!(overlay(&c, "clock").text.as_ref().unwrap().rendered, "09:05:04");
}

#[test]
fn lower_thirds_draw_text_over_their_image_or_on_a_bar() {
    let dir = tempfile::tempdir().unwrap();
    let png = png_file(dir.path(), "l3.png", 200, 40, [255, 255, 255, 255]);
    let kind = |png| OverlayKind::LowerThird {
        png,
        text: "Tide".into(),
        font_size: 20.0,
        color: [0, 0, 0, 255],
        background: None,
    };
    let mut c = compositor(640, 360);
    let now = Instant::now();
    c.show(OverlaySpec::new(oid("l3"), kind(Some(png))), now).unwrap();
    let bg = Frame::solid(640, 360, BLUE);
    let mut frame = bg.clone();
    c.compose(&mut frame, now, wall());
    assert_eq!(overlay(&c, "l3").sprite.rect(), (32, 306 - 40, 200, 40));
    let white = rgb_to_yuv(255, 255, 255).0;
    assert_eq!(luma(&frame, 32, 266), white);
    assert_eq!(luma(&frame, 231, 305), white);
    assert_eq!(luma(&frame, 31, 266), luma(&bg, 31, 266));
    let dark =
        (266..306).flat_map(|y| (32..132).map(move |x| (x, y))).filter(|&(x, y)| luma(&frame, x, y) < 100).count();
    assert!(dark > 30, "black text on the left of the image: {dark}");

    // No image: the text sits on a translucent dark bar.
    c.show(OverlaySpec::new(oid("l3"), kind(None)), now).unwrap();
    let mut frame = bg.clone();
    c.compose(&mut frame, now, wall());
    let (x, y, _, _) = overlay(&c, "l3").sprite.rect();
    assert!(luma(&frame, x as u32, y as u32) < luma(&bg, 0, 0));
}

#[test]
fn font_errors() {
    let err = Compositor::new(64, 48, Some(Path::new("/nonexistent/font.ttf"))).unwrap_err();
    assert!(matches!(err, OverlayError::ReadFont { .. }));
    assert!(err.to_string().contains("/nonexistent/font.ttf"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.ttf");
    std::fs::write(&bogus, b"definitely not a font").unwrap();
    assert!(matches!(Compositor::new(64, 48, Some(&bogus)), Err(OverlayError::InvalidFont { .. })));

    // What a box without the default font gets: images work, text is refused with a reason.
    let mut c = compositor(64, 48);
    c.font = None;
    let err = c.show(text("t", "hi", None), Instant::now()).unwrap_err();
    assert!(matches!(err, OverlayError::NoFont { .. }) && err.to_string().contains("DejaVuSans.ttf"), "{err}");
    let png = png_file(dir.path(), "ok.png", 4, 4, RED);
    c.show(image("i", png), Instant::now()).unwrap();
}

#[test]
fn unreadable_or_invalid_png_names_the_path_and_keeps_the_old_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\n but then garbage").unwrap();
    let now = Instant::now();
    let mut c = compositor(64, 48);
    c.show(image("logo", png_file(dir.path(), "good.png", 8, 8, RED)), now).unwrap();

    let err = c.show(image("logo", garbage.clone()), now).unwrap_err();
    assert!(matches!(err, OverlayError::InvalidPng { .. }), "{err:?}");
    assert!(err.to_string().contains(&garbage.display().to_string()), "{err}");
    let missing = dir.path().join("missing.png");
    let err = c.show(image("logo", missing.clone()), now).unwrap_err();
    assert!(matches!(err, OverlayError::ReadPng { .. }) && err.to_string().contains(&missing.display().to_string()));

    assert_eq!(c.ids(), ["logo"]);
    let mut frame = Frame::solid(64, 48, BLUE);
    c.compose(&mut frame, now, wall());
    assert_rgb_near(frame.rgb_at(2, 2), (255.0, 0.0, 0.0), 3.0);
}

#[test]
fn bad_values_and_oversized_overlays_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let png = png_file(dir.path(), "p.png", 40, 40, RED);
    let now = Instant::now();
    let mut c = compositor(64, 48);
    let bad = |spec: OverlaySpec| {
        matches!(Compositor::show(&mut compositor(64, 48), spec, now), Err(OverlayError::BadValue { .. }))
    };
    let base = image("p", png.clone());
    for opacity in [-0.1, 1.01, f32::NAN] {
        assert!(bad(OverlaySpec { opacity, ..base.clone() }), "opacity {opacity}");
    }
    for scale in [0.0, -1.0, f32::INFINITY, f32::NAN] {
        assert!(bad(OverlaySpec { scale, ..base.clone() }), "scale {scale}");
    }
    assert!(bad(OverlaySpec { offset_x: Offset::Percent(f32::NAN), ..base.clone() }));
    let t = OverlayKind::Text { text: "x".into(), font_size: 0.0, color: [255; 4], background: None };
    assert!(bad(OverlaySpec::new(oid("t"), t)));

    // 40x40 at scale 10 is 400x400, far more than 4 frames of 64x48.
    let err = c.show(OverlaySpec { scale: 10.0, ..base.clone() }, now).unwrap_err();
    assert!(matches!(err, OverlayError::TooLarge { width: 400, height: 400, .. }), "{err:?}");
    let err = c.show(OverlaySpec { scale: 50.0, ..text("t", "big", None) }, now).unwrap_err();
    assert!(matches!(err, OverlayError::TooLarge { .. }), "{err:?}");
    // Larger than the frame but within the limit is fine (and clipped).
    c.show(OverlaySpec { scale: 2.0, ..base }, now).unwrap();
    assert!(matches!(Compositor::new(63, 48, None), Err(OverlayError::BadFrameSize { .. })));
}

#[test]
fn a_frame_of_another_size_replaces_the_overlays() {
    let mut c = compositor(64, 48);
    let now = Instant::now();
    let spec = OverlaySpec {
        position: Position::BottomRight,
        ..OverlaySpec::new(oid("o"), OverlayKind::Image { png: PathBuf::new() })
    };
    show_rgba(&mut c, spec, Rgba::new(4, 4, RED), now);
    let mut frame = Frame::solid(128, 96, BLUE);
    c.compose(&mut frame, now, wall());
    assert_eq!(overlay(&c, "o").sprite.rect(), (124, 92, 4, 4));
    assert_rgb_near(frame.rgb_at(127, 95), (255.0, 0.0, 0.0), 3.0);
    // A buffer that does not match its size is left alone rather than risking a panic.
    let mut broken = Frame { width: 64, height: 48, data: vec![7; 10] };
    c.compose(&mut broken, now, wall());
    assert_eq!(broken.data, [7; 10]);
    // Odd sizes are not program sizes (and their chroma planes are ambiguous): left alone too.
    let mut odd = Frame { width: 3, height: 3, data: vec![7; Frame::byte_len(3, 3)] };
    c.compose(&mut odd, now, wall());
    assert_eq!(odd.data, vec![7; Frame::byte_len(3, 3)]);
    assert_eq!(overlay(&c, "o").sprite.rect(), (124, 92, 4, 4));
}

#[test]
fn compositor_and_prepared_overlays_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Compositor>();
    send::<Prepared>();
    send::<OverlayError>();
}

/// Not timed: checks, by structure, that steady-state frames do no per-frame work beyond blending. A
/// 200x100 logo on 720p composed many times is never rebuilt, its buffers never move, and the overlay
/// list never reallocates (so nothing on the frame path allocates).
#[test]
fn steady_state_compose_rebuilds_and_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let png = png_file(dir.path(), "logo.png", 200, 100, [255, 255, 255, 200]);
    let mut c = compositor(1280, 720);
    let now = Instant::now();
    let mut spec = image("logo", png);
    (spec.position, spec.offset_x, spec.offset_y, spec.opacity) =
        (Position::BottomRight, Offset::Px(33), Offset::Percent(3.0), 0.8);
    c.show(spec, now).unwrap();
    c.show(text("clock", "{{date}} {{time}}", Some([0, 0, 0, 128])), now).unwrap();

    let mut frame = Frame::solid(1280, 720, BLUE);
    c.compose(&mut frame, now, wall());
    let snapshot = |c: &Compositor| {
        let o: Vec<_> = c.overlays.iter().map(|o| (o.builds, o.sprite.buffer_addrs())).collect();
        (o, c.overlays.as_ptr() as usize, c.overlays.capacity())
    };
    let before = snapshot(&c);
    let first = frame.clone();
    for i in 1..=120u64 {
        let mut f = Frame::solid(1280, 720, BLUE);
        c.compose(&mut f, now + Duration::from_millis(i * 33), wall() + Duration::from_millis(i % 30));
        assert_eq!(f, first);
    }
    assert_eq!(snapshot(&c), before);
}
