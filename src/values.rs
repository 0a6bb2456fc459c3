//! The values every layer shares, checked where they enter: ids, program times, frame rates,
//! bitrates, picture sizes, file paths, who asked ([`Origin`]) and what is wrong with a value
//! ([`ValueError`]). This module depends on nothing else in the crate, so the store, the media
//! core, the timeline, the commands and the CLI all speak in these types.
//!
//! Each type has one constructor that checks, used by serde (`try_from`) on the socket and the
//! cloud link, and by the CLI before it sends anything; its error names the allowed range. The
//! field is named by the caller (serde's path), so the messages here say only what is wrong with
//! the value.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What is wrong with one value; the field is named by whoever knows it (serde's path, a flag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

pub fn bad(msg: impl Into<String>) -> ValueError {
    ValueError(msg.into())
}

/// A value quoted in an error, cut to a readable length on a character boundary.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// Ids are chosen by operators and appear in commands, logs and file names: keep them plain.
/// The one rule for ids: 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Who asked for a show. Higher wins: cloud > schedule > local operator; emergency
/// actions are not subject to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Operator,
    Schedule,
    Cloud,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Operator => "operator",
            Origin::Schedule => "schedule",
            Origin::Cloud => "cloud",
        }
    }
}

/// Ids: 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit (the store's rule).
pub fn check_id(s: &str) -> Result<(), ValueError> {
    if is_valid_id(s) {
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
        id_type!(@check check_id, $(#[$doc])* $name);
    };
    (@check $check:path, $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, ValueError> {
                let s = s.into();
                $check(&s)?;
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

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Maps keyed by the id answer lookups by `&str` (the derived hash is the string's).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
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
    /// A stored schedule.
    ScheduleId
);
id_type!(
    /// A relay stream (one camera pushed as it is to destinations).
    StreamId
);
id_type!(
    /// A text token variable (`{{var:NAME}}`).
    VarName
);

id_type!(
    /// A key of the trust store (`key_id` of a signature).
    KeyId
);
id_type!(
    /// This appliance, as the cloud and package targeting know it (`[control] device_id`, or the
    /// host name).
    DeviceId
);
id_type!(@check check_source_id,
    /// A source on a program's bus: a camera's id, or `media-…` for a timeline's media file
    /// (named after its path, so it may be longer than an id).
    SourceId
);

/// A timeline's overlay cue shows its overlay under the cue's id.
impl From<&CueId> for OverlayId {
    fn from(c: &CueId) -> OverlayId {
        OverlayId(c.0.clone())
    }
}

/// Bus source ids: 1-1024 ASCII letters, digits, '-' or '_', starting with a letter or digit.
pub fn check_source_id(s: &str) -> Result<(), ValueError> {
    let plain = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !s.is_empty() && s.len() <= 1024 && plain && s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(bad(format!("{:?} is not a source id", shorten(s))))
    }
}

impl From<CameraId> for SourceId {
    fn from(c: CameraId) -> SourceId {
        SourceId(c.0)
    }
}

impl From<&CameraId> for SourceId {
    fn from(c: &CameraId) -> SourceId {
        SourceId(c.0.clone())
    }
}

impl SourceId {
    /// The source of a timeline's media file, named after its path.
    pub fn media(asset: &str) -> SourceId {
        let safe: String =
            asset.chars().take(1000).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        SourceId(format!("media-{safe}"))
    }
}

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
/// The frame rates a program, a timeline or the demo may run at (one rule for all of them).
pub const FPS_ALLOWED: [u32; 12] = [10, 12, 15, 16, 20, 24, 25, 30, 40, 48, 50, 60];

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
