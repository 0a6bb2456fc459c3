//! Values checked at the boundary (DESIGN §3 "Commands", §5): every number, id and string a command
//! carries becomes one of these types before anything acts on it, so a handler can never see a
//! NaN program time, an opacity of 7 or a colour it cannot slice. Each type has one constructor
//! that checks, used by serde (`try_from`) on the socket and the cloud link, and by the CLI before
//! it sends anything; its error names the allowed range. The field is named by the caller (serde's
//! path), so the messages here say only what is wrong with the value.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::media::compositor::request::{
    Colour, FadeTime, FontSize, Layer, Offset, OffsetXY, Opacity, OverlayRequest, OverlayText, OverlayType, Scale,
    ValueError,
};

use crate::media::compositor::request::{bad, shorten};

/// Ids: 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit (the store's rule).
pub fn check_id(s: &str) -> Result<(), ValueError> {
    if crate::store::is_valid_id(s) {
        Ok(())
    } else {
        Err(bad(format!(
            "{:?} is not an id: use 1-64 letters, digits, '-' or '_', starting with a letter or digit",
            shorten(s)
        )))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, ValueError> {
                let s = s.into();
                check_id(&s)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                $name::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

id_type!(
    /// A camera of the appliance (also a show's media source id on the bus).
    CameraId
);
id_type!(
    /// A configured destination (platform + ingest + key).
    DestinationId
);
id_type!(
    /// A stored timeline.
    TimelineId
);
id_type!(
    /// An overlay on a program (showing the same id again replaces it).
    OverlayId
);
id_type!(
    /// An operator program, or `show` for the show's.
    ProgramId
);
id_type!(
    /// A cue of a timeline.
    CueId
);
id_type!(
    /// A PTZ preset of a camera, as timelines name it.
    PresetId
);
id_type!(
    /// A text token variable (`{{var:NAME}}`).
    VarName
);

/// A finite number of seconds within `0..=max`, kept as whole microseconds.
macro_rules! seconds_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(i64);

        impl $name {
            /// The largest value, seconds.
            pub const MAX_S: f64 = $max;

            pub fn from_secs(s: f64) -> Result<Self, ValueError> {
                if !s.is_finite() || !(0.0..=Self::MAX_S).contains(&s) {
                    return Err(bad(format!(
                        concat!("{} is not ", $what, ": use a number of seconds from 0 to {}"),
                        s,
                        Self::MAX_S
                    )));
                }
                Ok($name((s * 1e6).round() as i64))
            }

            pub fn us(self) -> i64 {
                self.0
            }

            pub fn secs(self) -> f64 {
                self.0 as f64 / 1e6
            }

            pub fn duration(self) -> std::time::Duration {
                std::time::Duration::from_micros(self.0 as u64)
            }
        }

        impl TryFrom<f64> for $name {
            type Error = ValueError;
            fn try_from(s: f64) -> Result<Self, ValueError> {
                $name::from_secs(s)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.secs()
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                let v: f64 = s.trim().parse().map_err(|_| bad(format!("{:?} is not a number of seconds", shorten(s))))?;
                $name::from_secs(v)
            }
        }
    };
}

seconds_type!(
    /// A program or timeline position: seconds since the program's (or the timeline's) start,
    /// up to a year.
    ProgramTime,
    31_536_000.0,
    "a program time"
);
seconds_type!(
    /// A delay from now, up to a day.
    Delay,
    86_400.0,
    "a delay"
);
pub use crate::media::FPS_ALLOWED;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Fps(u32);

impl Fps {
    pub fn new(fps: u32) -> Result<Fps, ValueError> {
        if FPS_ALLOWED.contains(&fps) {
            Ok(Fps(fps))
        } else {
            Err(bad(format!("{fps} fps is not supported: use one of {FPS_ALLOWED:?}")))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Fps {
    type Error = ValueError;
    fn try_from(v: u32) -> Result<Fps, ValueError> {
        Fps::new(v)
    }
}

impl From<Fps> for u32 {
    fn from(v: Fps) -> u32 {
        v.0
    }
}

impl std::str::FromStr for Fps {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Fps, ValueError> {
        Fps::new(s.trim().parse().map_err(|_| bad(format!("{:?} is not a frame rate", shorten(s))))?)
    }
}

/// A video bitrate in kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Kbps(u32);

impl Kbps {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 50_000;

    pub fn new(v: u32) -> Result<Kbps, ValueError> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Kbps(v))
        } else {
            Err(bad(format!("{v} kbit/s is out of range: use {} to {}", Self::MIN, Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Kbps {
    type Error = ValueError;
    fn try_from(v: u32) -> Result<Kbps, ValueError> {
        Kbps::new(v)
    }
}

impl std::str::FromStr for Kbps {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Kbps, ValueError> {
        Kbps::new(s.trim().parse().map_err(|_| bad(format!("{:?} is not a bitrate in kbit/s", shorten(s))))?)
    }
}

impl From<Kbps> for u32 {
    fn from(v: Kbps) -> u32 {
        v.0
    }
}

/// A picture size `WIDTHxHEIGHT`: even, from 64x36 to 3840x2160 (the encoder needs even sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub fn new(width: u32, height: u32) -> Result<Size, ValueError> {
        let ok = width.is_multiple_of(2)
            && height.is_multiple_of(2)
            && (64..=3840).contains(&width)
            && (36..=2160).contains(&height);
        if ok {
            Ok(Size { width, height })
        } else {
            Err(bad(format!("{width}x{height} is not a usable size: use even sizes from 64x36 to 3840x2160")))
        }
    }
}

impl std::str::FromStr for Size {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Size, ValueError> {
        let parse = |p: &str| p.trim().parse::<u32>().ok();
        match s.split_once(['x', 'X']).and_then(|(w, h)| Some((parse(w)?, parse(h)?))) {
            Some((w, h)) => Size::new(w, h),
            None => Err(bad(format!("{:?} is not a size: use WIDTHxHEIGHT, e.g. 1280x720", shorten(s)))),
        }
    }
}

impl TryFrom<String> for Size {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Size, ValueError> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        format!("{}x{}", s.width, s.height)
    }
}

/// A local file the daemon reads (an operator's overlay image or slate): an absolute path of at
/// most 4096 bytes with no NUL. Whether it exists and decodes is checked when it is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathBuf", into = "PathBuf")]
pub struct FilePath(PathBuf);

impl FilePath {
    pub fn new(p: PathBuf) -> Result<FilePath, ValueError> {
        let s = p.as_os_str();
        if s.is_empty() || s.len() > 4096 || s.as_encoded_bytes().contains(&0) {
            return Err(bad("not a usable file path"));
        }
        if !p.is_absolute() {
            return Err(bad(format!("{} is not an absolute path", shorten(&p.display().to_string()))));
        }
        Ok(FilePath(p))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl TryFrom<PathBuf> for FilePath {
    type Error = ValueError;
    fn try_from(p: PathBuf) -> Result<FilePath, ValueError> {
        FilePath::new(p)
    }
}

impl From<FilePath> for PathBuf {
    fn from(p: FilePath) -> PathBuf {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn colours_with_non_ascii_letters_are_refused_not_sliced() {
        assert!("#aébbb".parse::<Colour>().is_err());
        assert!("#ééé".parse::<Colour>().is_err());
        assert_eq!("#ff000080".parse::<Colour>().unwrap(), Colour([255, 0, 0, 128]));
        assert_eq!("00ff00".parse::<Colour>().unwrap(), Colour([0, 255, 0, 255]));
        assert!("#12345".parse::<Colour>().is_err());
    }

    #[test]
    fn program_times_are_finite_and_bounded() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let e = ProgramTime::from_secs(bad).unwrap_err();
            assert!(e.0.contains("from 0 to"), "{e}");
        }
        assert_eq!(ProgramTime::from_secs(1.5).unwrap().us(), 1_500_000);
        assert!(serde_json::from_str::<ProgramTime>("1e300").is_err());
    }

    #[test]
    fn one_fps_rule() {
        assert!(Fps::new(30).is_ok());
        for f in [0, 7, 29, 61, 1000] {
            assert!(Fps::new(f).unwrap_err().0.contains("use one of"), "{f}");
        }
    }

    #[test]
    fn offsets_take_pixels_or_percent() {
        assert_eq!(serde_json::from_str::<Offset>("12").unwrap().0, crate::media::compositor::Offset::Px(12));
        assert_eq!(
            serde_json::from_str::<Offset>("\"-5%\"").unwrap().0,
            crate::media::compositor::Offset::Percent(-5.0)
        );
        assert!(serde_json::from_str::<Offset>("1.5").is_err());
        assert!(serde_json::from_str::<Offset>("\"500%\"").is_err());
        assert!(serde_json::from_str::<Offset>("1e30").is_err());
    }

    proptest! {
        #[test]
        fn no_string_panics_any_parser(s in "\\PC{0,12}") {
            let _ = s.parse::<Colour>();
            let _ = s.parse::<Offset>();
            let _ = s.parse::<Size>();
            let _ = s.parse::<ProgramTime>();
            let _ = s.parse::<Opacity>();
            let _ = CameraId::new(s.clone());
            let _ = OverlayText::new(s);
        }

        #[test]
        fn every_accepted_number_is_in_range(v in proptest::num::f64::ANY) {
            if let Ok(o) = Opacity::new(v) { prop_assert!((0.0..=1.0).contains(&o.get())); }
            if let Ok(t) = ProgramTime::from_secs(v) { prop_assert!(t.us() >= 0 && t.secs() <= ProgramTime::MAX_S); }
            if let Ok(s) = Scale::new(v) { prop_assert!(s.get() > 0.0); }
        }
    }
}
