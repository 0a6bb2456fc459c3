//! Overlays composited by the agent onto raw program frames, on the bus's clock and with true opacity.
//!
//! An overlay's content (a PNG, text, or a lower third made of both) is turned into straight RGBA once,
//! when it is shown or its text changes, and then into a sprite (`compositor/sprite.rs`): premultiplied
//! YUV 4:2:0 plus alpha, already placed on the frame's chroma grid. The program bus calls [`Compositor::compose`] for every
//! frame (30 fps on a Raspberry Pi), which only computes each overlay's opacity × fade multiplier and
//! blends its sprite over the visible part of its bounding box, in layer order: no decoding, no text
//! layout, no allocation. Text with `{{time}}`/`{{date}}` is re-rendered only when the displayed second
//! (or date) changes, `{{var:…}}` text only when [`Compositor::set_var`] changed a variable it shows.
//!
//! Opacity is true alpha multiplication (`out = bg·(1 − a·op·fade) + fg·a·op·fade`), tested on pixels,
//! because "opacity" that was really a blend-mode switch is how the previous version got it wrong.
//! Fades run on the program clock (`tokio::time::Instant`), never on an FFmpeg process clock.
//!
//! Reading and decoding a PNG is the one slow step; it happens in [`Prepared::load`], which the caller
//! may run on a blocking thread before handing the result to [`Compositor::show_prepared`] so that a
//! large image never delays a frame. [`Compositor::show`] does both in one call, for convenience.

mod raster;
pub mod request;
mod sprite;
mod tokens;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ab_glyph::FontVec;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::media::frame::{Band, Frame};
use crate::values::OverlayId;
use raster::{render_text, Rgba, TextStyle};
use sprite::Sprite;
use tokens::{ClockKey, Template};

/// Debian's `fonts-dejavu-core`.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The bar behind a lower third that has neither an image nor a background colour of its own.
const DEFAULT_BAR: [u8; 4] = [0, 0, 0, 160];
/// Padding around text, in em: a visible box gets a comfortable margin; bare text only needs room for
/// glyphs that overhang their advance.
const BOX_PAD_EM: f32 = 0.3;
const BARE_PAD_EM: f32 = 0.1;
/// An overlay may cover at most this many frames' worth of pixels (it may hang off the edges, but a
/// typo in `scale` must not allocate gigabytes).
const MAX_AREA_FRAMES: u64 = 4;

/// One overlay as the timeline or OVERLAY_UPDATE describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlaySpec {
    /// Replacing an overlay means showing another with the same id.
    pub id: OverlayId,
    /// Z-order: higher layers are drawn later (on top); equal layers in the order first shown.
    pub layer: i32,
    pub kind: OverlayKind,
    /// The frame edge or point the overlay is anchored to.
    pub position: Position,
    /// Distance from the anchor, pointing into the frame: for right and bottom anchors (and the lower
    /// third's bottom line) a positive offset moves left or up; for `Center` it moves right or down.
    pub offset_x: Offset,
    pub offset_y: Offset,
    /// Multiplies the rendered size: images are resampled, text is laid out at `font_size * scale`.
    pub scale: f32,
    /// 0..=1, multiplied into every pixel's alpha.
    pub opacity: f32,
    /// Alpha ramps linearly 0 → 1 over `fade_in` from [`Compositor::show`].
    pub fade_in: Duration,
    /// Alpha ramps linearly to 0 over `fade_out` from [`Compositor::hide`]; the overlay is then removed.
    pub fade_out: Duration,
}

impl OverlaySpec {
    /// A spec with the kind's default position, no offsets, scale 1, full opacity and no fades.
    #[must_use]
    pub fn new(id: OverlayId, kind: OverlayKind) -> OverlaySpec {
        OverlaySpec {
            id,
            layer: 0,
            position: kind.default_position(),
            kind,
            offset_x: Offset::Px(0),
            offset_y: Offset::Px(0),
            scale: 1.0,
            opacity: 1.0,
            fade_in: Duration::ZERO,
            fade_out: Duration::ZERO,
        }
    }

    fn validate(&self) -> Result<(), OverlayError> {
        let bad =
            |field, value: f32, expected| OverlayError::BadValue { id: self.id.to_string(), field, value, expected };
        if !(self.opacity.is_finite() && (0.0..=1.0).contains(&self.opacity)) {
            return Err(bad("opacity", self.opacity, "0..=1"));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(bad("scale", self.scale, "finite and > 0"));
        }
        for (field, offset) in [("offset_x", self.offset_x), ("offset_y", self.offset_y)] {
            if let Offset::Percent(p) = offset {
                if !p.is_finite() {
                    return Err(bad(field, p, "a finite percentage"));
                }
            }
        }
        if let OverlayKind::Text { font_size, .. } | OverlayKind::LowerThird { font_size, .. } = &self.kind {
            if !(font_size.is_finite() && *font_size > 0.0) {
                return Err(bad("font_size", *font_size, "finite and > 0"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OverlayKind {
    /// A PNG with or without alpha (RGBA, RGB, grey, palette; 16-bit is reduced to 8).
    Image { png: PathBuf },
    /// Drawn exactly like `Image`; a separate kind because the timeline contract names it.
    Logo { png: PathBuf },
    /// Text (tokens allowed, `\n` starts a new line), optionally on a box padded by 0.3 em.
    Text { text: String, font_size: f32, color: [u8; 4], background: Option<[u8; 4]> },
    /// An image with the text over its left-middle area, or, without an image, the text on a bar
    /// (`background`, else translucent black).
    LowerThird { png: Option<PathBuf>, text: String, font_size: f32, color: [u8; 4], background: Option<[u8; 4]> },
}

impl OverlayKind {
    /// `LowerThird` for lower thirds, `TopLeft` for everything else.
    pub fn default_position(&self) -> Position {
        match self {
            OverlayKind::LowerThird { .. } => Position::LowerThird,
            _ => Position::TopLeft,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Position {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
    Center,
    /// Left-aligned 5% of the width from the left edge, with its bottom at 85% of the height.
    LowerThird,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Offset {
    Px(i32),
    /// Percent (0..=100 for the whole size) of the frame's width (x) or height (y).
    Percent(f32),
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay image {path}: {source}")]
    ReadPng {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("overlay image {path} is not a usable PNG: {reason}")]
    InvalidPng { path: PathBuf, reason: String },
    #[error("font {path}: {source}")]
    ReadFont {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("font {path} is not a TrueType/OpenType font")]
    InvalidFont { path: PathBuf },
    #[error("overlay {id} has text but the font {path} could not be loaded")]
    NoFont { id: String, path: PathBuf },
    #[error("overlay {id}: {field} is {value}, expected {expected}")]
    BadValue { id: String, field: &'static str, value: f32, expected: &'static str },
    #[error(
        "overlay {id} would be {width}x{height}, more than {MAX_AREA_FRAMES}x the {frame_width}x{frame_height} frame"
    )]
    TooLarge { id: String, width: u64, height: u64, frame_width: u32, frame_height: u32 },
    #[error("frame size {width}x{height}: program frames have a non-zero even width and height")]
    BadFrameSize { width: u32, height: u32 },
}

/// An overlay whose image is read, decoded and scaled: everything slow about showing it is done.
#[derive(Debug)]
pub struct Prepared {
    spec: OverlaySpec,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// The sprite is built here too (for the frame size given to `load`): for a full-frame picture that
    /// is the other expensive step.
    Image { img: Rgba, sprite: Sprite, frame: (u32, u32) },
    /// Text and lower thirds: rendered by the compositor, which owns the font and the variables.
    Text { template: String, look: TextLook, base: Option<Rgba> },
}

/// How a text or lower-third overlay's text is drawn.
#[derive(Debug, Clone, Copy)]
struct TextLook {
    font_size: f32,
    color: [u8; 4],
    /// For a lower third without an image, the bar colour (never `None`).
    background: Option<[u8; 4]>,
}

impl Prepared {
    /// Validates the spec and loads its PNG, if any, scaled for a `frame_width` x `frame_height` program.
    /// Blocking file I/O and CPU work: keep it off the frame path (e.g. `spawn_blocking`).
    pub fn load(spec: OverlaySpec, frame_width: u32, frame_height: u32) -> Result<Prepared, OverlayError> {
        spec.validate()?;
        let load = |png: &Path| load_png(&spec, png, frame_width, frame_height);
        let source = match &spec.kind {
            OverlayKind::Image { png } | OverlayKind::Logo { png } => {
                Source::image(&spec, load(png)?, frame_width, frame_height)
            }
            &OverlayKind::Text { ref text, font_size, color, background } => {
                Source::Text { template: text.clone(), look: TextLook { font_size, color, background }, base: None }
            }
            &OverlayKind::LowerThird { ref png, ref text, font_size, color, background } => {
                let base = png.as_deref().map(load).transpose()?;
                let background = if base.is_none() { Some(background.unwrap_or(DEFAULT_BAR)) } else { background };
                Source::Text { template: text.clone(), look: TextLook { font_size, color, background }, base }
            }
        };
        Ok(Prepared { spec, source })
    }

    pub fn spec(&self) -> &OverlaySpec {
        &self.spec
    }
}

impl Source {
    fn image(spec: &OverlaySpec, img: Rgba, fw: u32, fh: u32) -> Source {
        let mut sprite = Sprite::default();
        let (x, y) = place(spec, img.w, img.h, fw, fh);
        sprite.rebuild(&img, x, y);
        Source::Image { img, sprite, frame: (fw, fh) }
    }
}

fn max_pixels(width: u32, height: u32) -> u64 {
    MAX_AREA_FRAMES * width as u64 * height as u64
}

fn too_large(spec: &OverlaySpec, (width, height): (u64, u64), frame: (u32, u32)) -> OverlayError {
    OverlayError::TooLarge { id: spec.id.to_string(), width, height, frame_width: frame.0, frame_height: frame.1 }
}

fn load_png(spec: &OverlaySpec, path: &Path, fw: u32, fh: u32) -> Result<Rgba, OverlayError> {
    let invalid = |e: raster::PngError| OverlayError::InvalidPng { path: path.to_owned(), reason: e.to_string() };
    let bytes = std::fs::read(path).map_err(|source| OverlayError::ReadPng { path: path.to_owned(), source })?;
    // Check the scaled size from the header before decoding anything.
    let (w, h) = Rgba::png_size(&bytes).map_err(invalid)?;
    let (sw, sh) = scaled(w, h, spec.scale);
    if sw * sh > max_pixels(fw, fh) as f64 {
        return Err(too_large(spec, (sw as u64, sh as u64), (fw, fh)));
    }
    Ok(Rgba::decode_png(&bytes).map_err(invalid)?.resized(sw as u32, sh as u32))
}

/// `w * scale` x `h * scale`, rounded, at least 1x1 (as f64: the caller checks the area before casting).
fn scaled(w: u32, h: u32, scale: f32) -> (f64, f64) {
    let s = scale as f64;
    ((w as f64 * s).round().max(1.0), (h as f64 * s).round().max(1.0))
}

/// Top-left corner of a `w` x `h` overlay in a `fw` x `fh` frame.
fn place(spec: &OverlaySpec, w: u32, h: u32, fw: u32, fh: u32) -> (i64, i64) {
    let resolve = |offset, size: u32| match offset {
        Offset::Px(px) => px as i64,
        // Saturating cast; validated finite.
        Offset::Percent(p) => (p as f64 / 100.0 * size as f64).round() as i64,
    };
    let (ox, oy) = (resolve(spec.offset_x, fw), resolve(spec.offset_y, fh));
    let (fw, fh, w, h) = (fw as i64, fh as i64, w as i64, h as i64);
    let (x, y) = match spec.position {
        Position::TopLeft => (ox, oy),
        Position::TopRight => (fw - w - ox, oy),
        Position::BottomLeft => (ox, fh - h - oy),
        Position::BottomRight => (fw - w - ox, fh - h - oy),
        Position::Center => ((fw - w).div_euclid(2) + ox, (fh - h).div_euclid(2) + oy),
        Position::LowerThird => ((fw as f64 * 0.05).round() as i64 + ox, (fh as f64 * 0.85).round() as i64 - h - oy),
    };
    // Far enough off-frame is all the same; bounded so the sprite's i64 maths cannot overflow.
    const FAR: i64 = 1 << 40;
    (x.clamp(-FAR, FAR), y.clamp(-FAR, FAR))
}

/// Fade state. `from` lets a fade start at the level the overlay had (a hide during a fade-in, a replace
/// during a fade-out) instead of jumping.
#[derive(Debug, Clone, Copy)]
enum Fade {
    In { start: Instant, from: f32 },
    Out { start: Instant, from: f32 },
}

impl Fade {
    fn level(&self, now: Instant, spec: &OverlaySpec) -> f32 {
        let progress = |start: Instant, over: Duration| {
            if over.is_zero() {
                1.0
            } else {
                (now.saturating_duration_since(start).as_secs_f32() / over.as_secs_f32()).min(1.0)
            }
        };
        match *self {
            Fade::In { start, from } => from + (1.0 - from) * progress(start, spec.fade_in),
            Fade::Out { start, from } => from * (1.0 - progress(start, spec.fade_out)),
        }
    }

    fn finished(&self, now: Instant, spec: &OverlaySpec) -> bool {
        matches!(self, Fade::Out { .. }) && self.level(now, spec) <= 0.0
    }
}

/// Text overlays' source and the last string they were rendered from.
#[derive(Debug)]
struct TextState {
    template: Template,
    rendered: String,
    /// Reused buffer for the next rendering, compared to `rendered` before anything is rasterised.
    scratch: String,
    /// The clock fields `rendered` was made from.
    key: ClockKey,
    /// A variable the template shows was changed.
    dirty: bool,
    look: TextLook,
    /// Scaled PNG of a lower third, kept to draw new text over.
    base: Option<Rgba>,
}

#[derive(Debug)]
struct Overlay {
    spec: OverlaySpec,
    /// Insertion order, for ties between equal layers; kept when replaced.
    seq: u64,
    fade: Fade,
    text: Option<TextState>,
    /// The RGBA the sprite was built from, kept to rebuild it if the frame size (placement) changes.
    canvas: Rgba,
    sprite: Sprite,
    /// Sprite rebuilds, so tests can check that steady-state frames rebuild nothing.
    builds: u64,
}

impl Overlay {
    fn rebuild(&mut self, fw: u32, fh: u32) {
        let (x, y) = place(&self.spec, self.canvas.w, self.canvas.h, fw, fh);
        self.sprite.rebuild(&self.canvas, x, y);
        self.builds += 1;
    }

    /// Re-renders text whose displayed string changed. Runs on the frame path, but only does real work
    /// once a second for `{{time}}` (and after `set_var`).
    fn refresh_text(&mut self, font: &FontVec, vars: &HashMap<String, String>, wall: OffsetDateTime, fw: u32, fh: u32) {
        let Some(t) = &mut self.text else { return };
        let key = t.template.clock_key(wall);
        if !t.dirty && key == t.key {
            return;
        }
        t.dirty = false;
        t.key = key;
        t.template.render_into(&mut t.scratch, vars, wall);
        if t.scratch == t.rendered {
            return;
        }
        std::mem::swap(&mut t.scratch, &mut t.rendered);
        match draw_text(font, &self.spec, t.look, t.base.as_ref(), &t.rendered, fw, fh) {
            Ok(canvas) => {
                self.canvas = canvas;
                self.rebuild(fw, fh);
            }
            // Keep showing the previous text: a frame is no place to fail, and the string will be
            // retried only when it changes again.
            Err(error) => tracing::warn!(overlay = %self.spec.id, %error, "overlay text not updated"),
        }
    }
}

/// Rasterises the text of a `Text` or `LowerThird` overlay (over `base` for a lower third with an image).
fn draw_text(
    font: &FontVec,
    spec: &OverlaySpec,
    look: TextLook,
    base: Option<&Rgba>,
    text: &str,
    fw: u32,
    fh: u32,
) -> Result<Rgba, OverlayError> {
    let pad_em = if look.background.is_some() { BOX_PAD_EM } else { BARE_PAD_EM };
    let style = TextStyle { px: look.font_size * spec.scale, color: look.color, background: look.background, pad_em };
    let rendered =
        render_text(font, text, style, max_pixels(fw, fh)).map_err(|size| too_large(spec, size, (fw, fh)))?;
    Ok(match base {
        None => rendered,
        Some(base) => {
            // Left-middle of the image, clipped to it: the image is the lower third's frame.
            let mut canvas = base.clone();
            let x = (base.w as f64 * 0.05).round() as i64;
            let y = (base.h as i64 - rendered.h as i64).div_euclid(2);
            canvas.draw_over(x, y, &rendered);
            canvas
        }
    })
}

fn load_font(path: &Path) -> Result<FontVec, OverlayError> {
    let bytes = std::fs::read(path).map_err(|source| OverlayError::ReadFont { path: path.to_owned(), source })?;
    FontVec::try_from_vec(bytes).map_err(|_| OverlayError::InvalidFont { path: path.to_owned() })
}

/// The overlays of one program and the state their text depends on.
pub struct Compositor {
    width: u32,
    height: u32,
    /// `None` only when the default font is missing: images still work, text overlays are refused.
    font: Option<FontVec>,
    font_path: PathBuf,
    vars: HashMap<String, String>,
    /// Draw order: sorted by (layer, seq).
    overlays: Vec<Overlay>,
    next_seq: u64,
    /// The wall clock of the last composed frame, so text shown between frames renders current tokens.
    last_wall: OffsetDateTime,
}

impl std::fmt::Debug for Compositor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compositor")
            .field("size", &(self.width, self.height))
            .field("font", &self.font_path)
            .field("overlays", &self.ids())
            .finish()
    }
}

impl Compositor {
    /// A compositor for `width` x `height` frames. The font is read once, here: an explicit `font` must
    /// load; without one, [`DEFAULT_FONT`] is tried and, if it is missing, only text overlays are
    /// refused (with [`OverlayError::NoFont`]) so that logos keep working on a box without fonts.
    pub fn new(width: u32, height: u32, font: Option<&Path>) -> Result<Compositor, OverlayError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(OverlayError::BadFrameSize { width, height });
        }
        let (font, font_path) = match font {
            Some(path) => (Some(load_font(path)?), path.to_owned()),
            None => {
                let path = PathBuf::from(DEFAULT_FONT);
                match load_font(&path) {
                    Ok(font) => (Some(font), path),
                    Err(error) => {
                        tracing::warn!(%error, "no default font: text overlays will be refused");
                        (None, path)
                    }
                }
            }
        };
        Ok(Compositor {
            width,
            height,
            font,
            font_path,
            vars: HashMap::new(),
            overlays: Vec::new(),
            next_seq: 0,
            last_wall: OffsetDateTime::UNIX_EPOCH,
        })
    }

    /// [`Prepared::load`] then [`Compositor::show_prepared`]: reads the PNG on the calling thread.
    pub fn show(&mut self, spec: OverlaySpec, now: Instant) -> Result<(), OverlayError> {
        let prepared = Prepared::load(spec, self.width, self.height)?;
        self.show_prepared(prepared, now)
    }

    /// Shows an overlay, fading in from `now`. An overlay with the same id is replaced in place (same
    /// stacking slot among its layer) and the fade continues from the level the old one had: updating a
    /// fully visible overlay does not blink, replacing one that is fading out brings it back. On error
    /// the old overlay, if any, stays as it was.
    pub fn show_prepared(&mut self, prepared: Prepared, now: Instant) -> Result<(), OverlayError> {
        let Prepared { spec, source } = prepared;
        spec.validate()?;
        let (fw, fh) = (self.width, self.height);
        let (canvas, text, built) = match source {
            Source::Image { img, sprite, frame } => {
                if img.w as u64 * img.h as u64 > max_pixels(fw, fh) {
                    return Err(too_large(&spec, (img.w as u64, img.h as u64), (fw, fh)));
                }
                (img, None, (frame == (fw, fh)).then_some(sprite))
            }
            Source::Text { template, look, base } => {
                let font = self
                    .font
                    .as_ref()
                    .ok_or_else(|| OverlayError::NoFont { id: spec.id.to_string(), path: self.font_path.clone() })?;
                let template = Template::parse(&template);
                let mut rendered = String::new();
                template.render_into(&mut rendered, &self.vars, self.last_wall);
                let canvas = draw_text(font, &spec, look, base.as_ref(), &rendered, fw, fh)?;
                let key = template.clock_key(self.last_wall);
                let scratch = String::new();
                (canvas, Some(TextState { template, rendered, scratch, key, dirty: false, look, base }), None)
            }
        };

        let old = self.overlays.iter().position(|o| o.spec.id == spec.id).map(|i| self.overlays.remove(i));
        let (seq, from, sprite) = match old {
            Some(old) => (old.seq, old.fade.level(now, &old.spec), old.sprite),
            None => {
                self.next_seq += 1;
                (self.next_seq, 0.0, Sprite::default())
            }
        };
        let mut overlay = Overlay { spec, seq, fade: Fade::In { start: now, from }, text, canvas, sprite, builds: 0 };
        match built {
            Some(sprite) => (overlay.sprite, overlay.builds) = (sprite, 1),
            // Text, or the program size changed since `load`.
            None => overlay.rebuild(fw, fh),
        }
        let key = (overlay.spec.layer, overlay.seq);
        let at = self.overlays.partition_point(|o| (o.spec.layer, o.seq) < key);
        self.overlays.insert(at, overlay);
        Ok(())
    }

    /// Starts the fade-out of `id` from its current level; it is removed once invisible (at once with
    /// no `fade_out`). Hiding an overlay that is already fading out does not restart its fade.
    /// False if there is no such overlay.
    pub fn hide(&mut self, id: &str, now: Instant) -> bool {
        let Some(i) = self.overlays.iter().position(|o| o.spec.id == id) else { return false };
        let o = &mut self.overlays[i];
        if let Fade::In { .. } = o.fade {
            o.fade = Fade::Out { start: now, from: o.fade.level(now, &o.spec) };
        }
        if o.fade.finished(now, &o.spec) {
            self.overlays.remove(i);
        }
        true
    }

    /// Sets `{{var:NAME}}`. Text showing it is re-rendered on the next composed frame; nothing else is.
    pub fn set_var(&mut self, name: &str, value: &str) {
        if self.vars.get(name).is_some_and(|v| v == value) {
            return;
        }
        self.vars.insert(name.to_owned(), value.to_owned());
        for text in self.overlays.iter_mut().filter_map(|o| o.text.as_mut()) {
            if text.template.uses_var(name) {
                text.dirty = true;
            }
        }
    }

    /// Removes every overlay at once, without fades.
    pub fn clear(&mut self) {
        self.overlays.clear();
    }

    /// Ids of the overlays present (fading-out ones included), bottom to top.
    pub fn ids(&self) -> Vec<String> {
        self.overlays.iter().map(|o| o.spec.id.to_string()).collect()
    }

    /// Blends every visible overlay onto the frame. `wall` is the wall-clock time for `{{time}}`
    /// (HH:MM:SS) and `{{date}}` (YYYY-MM-DD) tokens, in the local offset given; text is re-rendered only
    /// when its rendered string changes (so once a second for `{{time}}`). A frame of another size than
    /// the compositor's re-places every overlay once (the program size changed); a frame of odd size or
    /// whose buffer does not match its size is left alone.
    pub fn compose(&mut self, frame: &mut Frame, now: Instant, wall: OffsetDateTime) {
        let Some(visible) = self.prepare(frame, now, wall) else { return };
        for (i, m) in visible {
            self.overlays[i].sprite.blend(frame, m);
        }
        self.overlays.retain(|o| !o.fade.finished(now, &o.spec));
    }

    /// Composes as [`Compositor::compose`] would onto `base`, but onto a copy of only the rows the
    /// visible overlays cover: `base` with the returned band over it is the composed frame. `None`
    /// when no overlay is visible (the frame is `base` as it is).
    pub fn compose_over(&mut self, base: &Frame, now: Instant, wall: OffsetDateTime) -> Option<Band> {
        let visible = self.prepare(base, now, wall)?;
        let (fw, fh) = (base.width as i64, base.height as i64);
        let rows = visible.iter().filter_map(|&(i, _)| self.overlays[i].sprite.rows(fw, fh));
        let band = rows.reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))).map(|(top, bottom)| {
            let mut band = Band::copy_of(base, top, bottom - top);
            for &(i, m) in &visible {
                self.overlays[i].sprite.blend_band(&mut band, m);
            }
            band
        });
        self.overlays.retain(|o| !o.fade.finished(now, &o.spec));
        band
    }

    /// Brings every overlay up to date for this frame (its size, the text's tokens) and lists the
    /// visible ones in draw order, with their multipliers. `None` for a frame of odd size or whose
    /// buffer does not match its size.
    fn prepare(&mut self, frame: &Frame, now: Instant, wall: OffsetDateTime) -> Option<Vec<(usize, u32)>> {
        let (fw, fh) = (frame.width, frame.height);
        let even = |n: u32| n != 0 && n.is_multiple_of(2);
        if !even(fw) || !even(fh) || frame.data.len() != Frame::byte_len(fw, fh) {
            return None;
        }
        if (fw, fh) != (self.width, self.height) {
            (self.width, self.height) = (fw, fh);
            for o in &mut self.overlays {
                o.rebuild(fw, fh);
            }
        }
        self.last_wall = wall;
        let mut visible = Vec::new();
        for (i, o) in self.overlays.iter_mut().enumerate() {
            let m = (o.spec.opacity * o.fade.level(now, &o.spec) * 256.0).round().clamp(0.0, 256.0) as u32;
            if m == 0 {
                continue;
            }
            if let Some(font) = &self.font {
                o.refresh_text(font, &self.vars, wall, fw, fh);
            }
            visible.push((i, m));
        }
        Some(visible)
    }
}

/// Token rendering, pure: `render_tokens("Tide {{var:tide}} at {{time}}", &vars, wall)`. `{{time}}` is
/// HH:MM:SS and `{{date}}` YYYY-MM-DD of `wall` in its own offset; unknown variables render as an empty
/// string; unknown tokens and unclosed `{{` are left as written.
pub fn render_tokens(template: &str, vars: &HashMap<String, String>, wall: OffsetDateTime) -> String {
    let mut out = String::new();
    Template::parse(template).render_into(&mut out, vars, wall);
    out
}

#[cfg(test)]
mod tests;
