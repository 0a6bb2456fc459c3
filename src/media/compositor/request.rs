//! An overlay as a command or a timeline cue describes it (the `show_overlay` params of the timeline contract),
//! with every value checked when it is read: colours, offsets, opacity, scale, font size, fades and
//! layer are types that cannot hold a wrong value. [`OverlayRequest::to_spec`] turns one into the
//! compositor's [`OverlaySpec`]; the timeline's overlay cues, OVERLAY_UPDATE and the operator's
//! `overlay show` all come through here, so they agree on every rule.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{OverlayKind, OverlaySpec, Position};
use crate::values::OverlayId;

pub use crate::values::{bad, shorten, ValueError};

/// A colour `#rrggbb` or `#rrggbbaa` (ASCII hex digits only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Colour(pub [u8; 4]);

impl std::str::FromStr for Colour {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Colour, ValueError> {
        let refuse = || bad(format!("{:?} is not a colour: use #rrggbb or #rrggbbaa", shorten(s)));
        let h = s.strip_prefix('#').unwrap_or(s);
        // Checked before any slicing: every byte is an ASCII hex digit, so byte indexes are
        // character boundaries.
        if !(h.len() == 6 || h.len() == 8) || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse());
        }
        let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| refuse());
        let alpha = if h.len() == 8 { byte(6)? } else { 255 };
        Ok(Colour([byte(0)?, byte(2)?, byte(4)?, alpha]))
    }
}

impl TryFrom<String> for Colour {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Colour, ValueError> {
        s.parse()
    }
}

impl From<Colour> for String {
    fn from(c: Colour) -> String {
        let [r, g, b, a] = c.0;
        if a == 255 {
            format!("#{r:02x}{g:02x}{b:02x}")
        } else {
            format!("#{r:02x}{g:02x}{b:02x}{a:02x}")
        }
    }
}

macro_rules! bounded_f32 {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f32);

        impl $name {
            pub const MIN: f32 = $min;
            pub const MAX: f32 = $max;

            pub fn new(v: f64) -> Result<Self, ValueError> {
                if v.is_finite() && (Self::MIN as f64..=Self::MAX as f64).contains(&v) {
                    Ok($name(v as f32))
                } else {
                    Err(bad(format!(concat!("{} is not ", $what, ": use {} to {}"), v, Self::MIN, Self::MAX)))
                }
            }

            pub fn get(self) -> f32 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = ValueError;
            fn try_from(v: f64) -> Result<Self, ValueError> {
                $name::new(v)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0 as f64
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                $name::new(s.trim().parse().map_err(|_| bad(format!("{:?} is not a number", shorten(s))))?)
            }
        }
    };
}

bounded_f32!(
    /// True opacity, multiplied into every pixel's alpha.
    Opacity,
    0.0,
    1.0,
    "an opacity"
);
bounded_f32!(
    /// A size multiplier for images and text.
    Scale,
    0.05,
    10.0,
    "a scale"
);
bounded_f32!(
    /// Text size in pixels (before scale).
    FontSize,
    4.0,
    400.0,
    "a font size"
);

/// A distance from an overlay's anchor: pixels (a JSON number or `"12"`) or a percentage of the
/// frame (`"5%"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OffsetRepr", into = "OffsetRepr")]
pub struct Offset(pub super::Offset);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OffsetRepr {
    Number(f64),
    Text(String),
}

impl Offset {
    pub const MAX_PX: i32 = 8192;

    pub fn px(v: f64) -> Result<Offset, ValueError> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() <= Self::MAX_PX as f64 {
            Ok(Offset(super::Offset::Px(v as i32)))
        } else {
            Err(bad(format!("{v} is not an offset: use whole pixels from -{0} to {0}, or a percentage", Self::MAX_PX)))
        }
    }

    pub fn percent(v: f64) -> Result<Offset, ValueError> {
        if v.is_finite() && (-100.0..=100.0).contains(&v) {
            Ok(Offset(super::Offset::Percent(v as f32)))
        } else {
            Err(bad(format!("{v}% is not an offset: use -100% to 100%")))
        }
    }
}

impl std::str::FromStr for Offset {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Offset, ValueError> {
        let refuse = || bad(format!("{:?} is not an offset: use pixels (\"12\") or a percentage (\"5%\")", shorten(s)));
        match s.trim().strip_suffix('%') {
            Some(p) => Offset::percent(p.trim().parse().map_err(|_| refuse())?),
            None => Offset::px(s.trim().parse().map_err(|_| refuse())?),
        }
    }
}

impl TryFrom<OffsetRepr> for Offset {
    type Error = ValueError;
    fn try_from(r: OffsetRepr) -> Result<Offset, ValueError> {
        match r {
            OffsetRepr::Number(n) => Offset::px(n),
            OffsetRepr::Text(s) => s.parse(),
        }
    }
}

impl From<Offset> for OffsetRepr {
    fn from(o: Offset) -> OffsetRepr {
        match o.0 {
            super::Offset::Px(p) => OffsetRepr::Number(p as f64),
            super::Offset::Percent(p) => OffsetRepr::Text(format!("{p}%")),
        }
    }
}

/// A fade or transition: up to a minute, in seconds on the wire (the timeline contract's unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct FadeTime(Duration);

impl FadeTime {
    pub const MAX_S: f64 = 60.0;

    pub fn from_secs(s: f64) -> Result<FadeTime, ValueError> {
        if s.is_finite() && (0.0..=Self::MAX_S).contains(&s) {
            Ok(FadeTime(Duration::from_micros((s * 1e6).round() as u64)))
        } else {
            Err(bad(format!("{s} is not a fade time: use 0 to {} seconds", Self::MAX_S)))
        }
    }

    pub fn from_millis(ms: u64) -> Result<FadeTime, ValueError> {
        FadeTime::from_secs(ms as f64 / 1000.0)
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<f64> for FadeTime {
    type Error = ValueError;
    fn try_from(s: f64) -> Result<FadeTime, ValueError> {
        FadeTime::from_secs(s)
    }
}

impl From<FadeTime> for f64 {
    fn from(f: FadeTime) -> f64 {
        f.0.as_secs_f64()
    }
}

/// Z-order of an overlay: higher is on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Layer(i32);

impl Layer {
    pub const MAX: i32 = 1000;

    pub fn new(v: i64) -> Result<Layer, ValueError> {
        if v.abs() <= Self::MAX as i64 {
            Ok(Layer(v as i32))
        } else {
            Err(bad(format!("{v} is not a layer: use -{0} to {0}", Self::MAX)))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Layer {
    type Error = ValueError;
    fn try_from(v: i64) -> Result<Layer, ValueError> {
        Layer::new(v)
    }
}

impl From<Layer> for i64 {
    fn from(l: Layer) -> i64 {
        l.0 as i64
    }
}

impl std::str::FromStr for Layer {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Layer, ValueError> {
        Layer::new(s.trim().parse().map_err(|_| bad(format!("{:?} is not a layer", shorten(s))))?)
    }
}

/// Overlay text: at most `MAX` characters, no control characters but the newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OverlayText(String);

impl OverlayText {
    pub const MAX: usize = 500;

    pub fn new(s: impl Into<String>) -> Result<OverlayText, ValueError> {
        let s = s.into();
        let n = s.chars().count();
        if n > Self::MAX {
            return Err(bad(format!("text of {n} characters is too long: at most {}", Self::MAX)));
        }
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("text holds a control character (only newlines are allowed)"));
        }
        Ok(OverlayText(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OverlayText {
    type Error = ValueError;
    fn try_from(s: String) -> Result<OverlayText, ValueError> {
        OverlayText::new(s)
    }
}

impl From<OverlayText> for String {
    fn from(t: OverlayText) -> String {
        t.0
    }
}

impl std::str::FromStr for OverlayText {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<OverlayText, ValueError> {
        OverlayText::new(s)
    }
}

/// What kind of overlay (the timeline contract's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum OverlayType {
    Text,
    Image,
    Logo,
    LowerThird,
}

/// `offset: {x, y}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetXY {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<Offset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<Offset>,
}

/// An overlay to show: the `show_overlay` params (plus its `layer`), every value checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayRequest {
    /// Default: text if there is text, else image.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OverlayType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<OverlayText>,
    /// A PNG: absolute, or relative to the asset root it is resolved against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<OffsetXY>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opacity: Option<Opacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub font_size: Option<FontSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Colour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Colour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fade_in: Option<FadeTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fade_out: Option<FadeTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
}

/// An overlay request that cannot become an overlay (a missing part, a path that is not usable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{field}: a {kind} overlay needs {field}")]
    Missing { kind: &'static str, field: &'static str },
    #[error("image: {0}")]
    Image(String),
    #[error("{field}: a {kind} overlay takes no {field}")]
    Unused { kind: &'static str, field: &'static str },
}

impl fmt::Display for OverlayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverlayType::Text => "text",
            OverlayType::Image => "image",
            OverlayType::Logo => "logo",
            OverlayType::LowerThird => "lower_third",
        })
    }
}

impl OverlayRequest {
    /// The compositor's spec for overlay `id`; a relative image is resolved under `asset_root`
    /// (and must stay inside it), an image without a root must be absolute.
    pub fn to_spec(&self, id: &OverlayId, asset_root: Option<&Path>) -> Result<OverlaySpec, RequestError> {
        let ty = self.kind.unwrap_or(if self.text.is_some() { OverlayType::Text } else { OverlayType::Image });
        let kind_name = match ty {
            OverlayType::Text => "text",
            OverlayType::Image => "image",
            OverlayType::Logo => "logo",
            OverlayType::LowerThird => "lower_third",
        };
        let text =
            || self.text.clone().map(String::from).ok_or(RequestError::Missing { kind: kind_name, field: "text" });
        let image = || -> Result<PathBuf, RequestError> {
            let p = self.image.as_ref().ok_or(RequestError::Missing { kind: kind_name, field: "image" })?;
            resolve(p, asset_root)
        };
        let font_size = self.font_size.map_or(32.0, FontSize::get);
        let color = self.color.map_or([255, 255, 255, 255], |c| c.0);
        let background = self.background.map(|c| c.0);
        // A part the kind does not use is a mistake worth saying (a typo'd type, a wrong file).
        match ty {
            OverlayType::Text if self.image.is_some() => {
                return Err(RequestError::Unused { kind: kind_name, field: "image" })
            }
            OverlayType::Image | OverlayType::Logo if self.text.is_some() => {
                return Err(RequestError::Unused { kind: kind_name, field: "text" })
            }
            _ => {}
        }
        let kind = match ty {
            OverlayType::Text => OverlayKind::Text { text: text()?, font_size, color, background },
            OverlayType::Image => OverlayKind::Image { png: image()? },
            OverlayType::Logo => OverlayKind::Logo { png: image()? },
            OverlayType::LowerThird => OverlayKind::LowerThird {
                png: self.image.as_ref().map(|p| resolve(p, asset_root)).transpose()?,
                text: text()?,
                font_size,
                color,
                background,
            },
        };
        let mut spec = OverlaySpec::new(id.clone(), kind);
        if let Some(p) = self.position {
            spec.position = p;
        }
        if let Some(o) = self.offset {
            if let Some(x) = o.x {
                spec.offset_x = x.0;
            }
            if let Some(y) = o.y {
                spec.offset_y = y.0;
            }
        }
        spec.scale = self.scale.map_or(1.0, Scale::get);
        spec.opacity = self.opacity.map_or(1.0, Opacity::get);
        spec.layer = self.layer.map_or(0, Layer::get);
        spec.fade_in = self.fade_in.map_or(Duration::ZERO, FadeTime::get);
        spec.fade_out = self.fade_out.map_or(Duration::ZERO, FadeTime::get);
        Ok(spec)
    }
}

fn resolve(p: &Path, root: Option<&Path>) -> Result<PathBuf, RequestError> {
    use std::path::Component;
    let s = p.as_os_str();
    if s.is_empty() || s.len() > 4096 || s.as_encoded_bytes().contains(&0) {
        return Err(RequestError::Image("not a usable file path".into()));
    }
    match root {
        _ if p.is_absolute() => Ok(p.to_path_buf()),
        Some(root) if p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) => Ok(root.join(p)),
        Some(_) => Err(RequestError::Image(format!("{} leaves the asset folder", shorten(&p.display().to_string())))),
        None => Err(RequestError::Image(format!("{} is not an absolute path", shorten(&p.display().to_string())))),
    }
}
