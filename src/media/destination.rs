//! Streaming destinations: platform presets and validated output targets.
//!
//! A destination is stored once (platform, ingest URL, stream key) and referenced by id. The key is
//! appended to the ingest URL only when a pusher is spawned; everywhere else the URL is shown with
//! `***` in place of the key.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::values::DestinationId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Youtube,
    Facebook,
    Twitch,
    Custom,
}

impl Platform {
    /// The platform's primary ingest (None for custom: the operator gives it).
    pub fn ingest_url(self) -> Option<&'static str> {
        match self {
            Platform::Youtube => Some("rtmp://a.rtmp.youtube.com/live2"),
            Platform::Facebook => Some("rtmps://live-api-s.facebook.com:443/rtmp/"),
            Platform::Twitch => Some("rtmp://live.twitch.tv/app"),
            Platform::Custom => None,
        }
    }

    /// YouTube's backup ingest, used when a destination asks for it.
    pub fn backup_url(self) -> Option<&'static str> {
        match self {
            Platform::Youtube => Some("rtmp://b.rtmp.youtube.com/live2?backup=1"),
            _ => None,
        }
    }

    /// The highest video bitrate the platform accepts for a 1080p30 stream, in kbit/s
    /// (the encoder clamps to it; a relayed camera above it is reported).
    pub fn max_bitrate_kbps(self) -> Option<u32> {
        match self {
            Platform::Youtube => Some(9_000),
            Platform::Facebook => Some(8_000),
            Platform::Twitch => Some(6_000),
            Platform::Custom => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Youtube => "youtube",
            Platform::Facebook => "facebook",
            Platform::Twitch => "twitch",
            Platform::Custom => "custom",
        }
    }
}

/// Keyframe interval every platform asks for, in seconds.
pub const KEYFRAME_INTERVAL_S: u32 = 2;

impl FromStr for Platform {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "youtube" => Ok(Platform::Youtube),
            "facebook" => Ok(Platform::Facebook),
            "twitch" => Ok(Platform::Twitch),
            "custom" => Ok(Platform::Custom),
            _ => Err(DestinationError::UnknownPlatform(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("unknown platform {0:?} (expected youtube, facebook, twitch or custom)")]
    UnknownPlatform(String),
    #[error("the stream key is empty")]
    EmptyKey,
    #[error("the stream key contains whitespace, '/' or control characters")]
    BadKey,
    #[error("a custom destination needs --url rtmp://… or rtmps://…")]
    MissingUrl,
    #[error("invalid ingest URL: {0}")]
    BadUrl(String),
    #[error("unsupported URL scheme {0:?}: only rtmp:// and rtmps:// are accepted")]
    BadScheme(String),
    #[error("the ingest URL must not contain credentials; give the key with --key")]
    CredentialsInUrl,
    #[error("--url is only for custom destinations ({0} has a fixed ingest)")]
    UrlNotAllowed(Platform),
    #[error("a CA file only applies to rtmps:// ingests")]
    CaWithoutTls,
    #[error("CA file {0} is not readable")]
    CaUnreadable(PathBuf),
    #[error("a backup ingest exists only for YouTube")]
    NoBackup,
    #[error("unknown publisher {0:?} (expected native or ffmpeg)")]
    UnknownPublisher(String),
}

/// What sends a destination's stream to its ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publisher {
    /// The agent's own RTMP(S) client: a task, not a process, and the server's exact answers.
    #[default]
    Native,
    /// An FFmpeg process (`-c copy -f flv`), for an ingest the native client cannot serve.
    Ffmpeg,
}

impl Publisher {
    pub fn as_str(self) -> &'static str {
        match self {
            Publisher::Native => "native",
            Publisher::Ffmpeg => "ffmpeg",
        }
    }
}

impl FromStr for Publisher {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Publisher::Native),
            "ffmpeg" => Ok(Publisher::Ffmpeg),
            _ => Err(DestinationError::UnknownPublisher(s.to_string())),
        }
    }
}

impl fmt::Display for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination's settings as entered, before validation.
#[derive(Debug, Clone)]
pub struct DestinationInput {
    pub platform: Platform,
    pub url: Option<String>,
    pub key: Secret,
    pub backup_ingest: bool,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub publisher: Publisher,
}

/// A validated destination: what the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSettings {
    pub platform: Platform,
    /// The ingest URL without the key.
    pub url: String,
    pub key: Secret,
    pub backup_ingest: bool,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub publisher: Publisher,
}

impl DestinationInput {
    pub fn validate(self) -> Result<DestinationSettings, DestinationError> {
        let key = self.key.expose().trim().to_string();
        if key.is_empty() {
            return Err(DestinationError::EmptyKey);
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(DestinationError::BadKey);
        }
        let url = match (self.platform.ingest_url(), self.url) {
            (Some(_), Some(_)) => return Err(DestinationError::UrlNotAllowed(self.platform)),
            (Some(u), None) => u.to_string(),
            (None, None) => return Err(DestinationError::MissingUrl),
            (None, Some(u)) => u.trim().to_string(),
        };
        let parsed = url::Url::parse(&url).map_err(|e| DestinationError::BadUrl(e.to_string()))?;
        match parsed.scheme() {
            "rtmp" | "rtmps" => {}
            s => return Err(DestinationError::BadScheme(s.to_string())),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(DestinationError::BadUrl("no host".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(DestinationError::CredentialsInUrl);
        }
        if self.backup_ingest && self.platform.backup_url().is_none() {
            return Err(DestinationError::NoBackup);
        }
        if let Some(ca) = &self.ca_file {
            if parsed.scheme() != "rtmps" {
                return Err(DestinationError::CaWithoutTls);
            }
            if std::fs::File::open(ca).is_err() {
                return Err(DestinationError::CaUnreadable(ca.clone()));
            }
        }
        Ok(DestinationSettings {
            platform: self.platform,
            url: url.trim_end_matches('/').to_string(),
            key: Secret::new(key),
            backup_ingest: self.backup_ingest,
            ca_file: self.ca_file,
            tls_verify: self.tls_verify,
            publisher: self.publisher,
        })
    }
}

/// Which ingest of a destination a pusher feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ingest {
    Primary,
    Backup,
}

/// One pusher's target: a destination's ingest with the key appended.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTarget {
    pub destination_id: DestinationId,
    pub ingest: Ingest,
    /// Full URL including the key.
    pub url: Secret,
    /// The URL with the key masked.
    pub shown: String,
    pub key: Secret,
    pub tls: Option<TlsOptions>,
    /// The ingest URL without the key (what the native publisher connects to).
    pub ingest_url: String,
    pub publisher: Publisher,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
}

/// The system CA bundle used to verify public RTMPS ingests (Debian's ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl DestinationSettings {
    /// The outputs of this destination: its primary ingest, plus YouTube's backup when asked for.
    pub fn outputs(&self, destination_id: &DestinationId) -> Vec<OutputTarget> {
        let mut v = vec![self.output(destination_id, Ingest::Primary, &self.url)];
        if let (true, Some(b)) = (self.backup_ingest, self.platform.backup_url()) {
            v.push(self.output(destination_id, Ingest::Backup, b));
        }
        v
    }

    fn output(&self, id: &DestinationId, ingest: Ingest, base: &str) -> OutputTarget {
        let base = base.trim_end_matches('/');
        let tls = base.starts_with("rtmps://").then(|| TlsOptions {
            verify: self.tls_verify,
            ca_file: self
                .ca_file
                .clone()
                .or_else(|| std::path::Path::new(SYSTEM_CA_BUNDLE).exists().then(|| SYSTEM_CA_BUNDLE.into())),
        });
        OutputTarget {
            destination_id: id.clone(),
            ingest,
            url: Secret::new(format!("{base}/{}", self.key.expose())),
            shown: format!("{base}/***"),
            key: self.key.clone(),
            tls,
            ingest_url: base.to_string(),
            publisher: self.publisher,
        }
    }

    /// The ingest URL as shown to people.
    pub fn shown_url(&self) -> String {
        format!("{}/***", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(platform: Platform, url: Option<&str>, key: &str) -> DestinationInput {
        DestinationInput {
            platform,
            url: url.map(str::to_string),
            key: Secret::new(key),
            backup_ingest: false,
            ca_file: None,
            tls_verify: true,
            publisher: Publisher::Native,
        }
    }

    #[test]
    fn presets_build_the_platform_urls() {
        let d = input(Platform::Youtube, None, "aaaa-bbbb-cccc").validate().unwrap();
        let o = d.outputs(&DestinationId::new("yt").unwrap());
        assert_eq!(o[0].url.expose(), "rtmp://a.rtmp.youtube.com/live2/aaaa-bbbb-cccc");
        assert_eq!(o[0].shown, "rtmp://a.rtmp.youtube.com/live2/***");
        let mut i = input(Platform::Youtube, None, "k123");
        i.backup_ingest = true;
        let o = i.validate().unwrap().outputs(&DestinationId::new("yt").unwrap());
        assert_eq!(o[1].url.expose(), "rtmp://b.rtmp.youtube.com/live2?backup=1/k123");
        let fb =
            input(Platform::Facebook, None, "FB-1").validate().unwrap().outputs(&DestinationId::new("fb").unwrap());
        assert_eq!(fb[0].url.expose(), "rtmps://live-api-s.facebook.com:443/rtmp/FB-1");
        assert!(fb[0].tls.as_ref().unwrap().verify);
        let tw =
            input(Platform::Twitch, None, "live_1").validate().unwrap().outputs(&DestinationId::new("tw").unwrap());
        assert_eq!(tw[0].url.expose(), "rtmp://live.twitch.tv/app/live_1");
        assert!(tw[0].tls.is_none());
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(input(Platform::Youtube, None, "  ").validate(), Err(DestinationError::EmptyKey));
        assert_eq!(input(Platform::Youtube, None, "a b").validate(), Err(DestinationError::BadKey));
        assert_eq!(input(Platform::Custom, None, "k").validate(), Err(DestinationError::MissingUrl));
        assert_eq!(
            input(Platform::Custom, Some("http://x/app"), "k123").validate(),
            Err(DestinationError::BadScheme("http".into()))
        );
        assert_eq!(
            input(Platform::Custom, Some("srt://x:9000"), "k123").validate(),
            Err(DestinationError::BadScheme("srt".into()))
        );
        assert!(matches!(
            input(Platform::Custom, Some("rtmp//x"), "k123").validate(),
            Err(DestinationError::BadUrl(_))
        ));
        assert_eq!(
            input(Platform::Custom, Some("rtmp://u:p@x/app"), "k123").validate(),
            Err(DestinationError::CredentialsInUrl)
        );
        assert_eq!(
            input(Platform::Twitch, Some("rtmp://x/app"), "k123").validate(),
            Err(DestinationError::UrlNotAllowed(Platform::Twitch))
        );
        assert!(matches!("myspace".parse::<Platform>(), Err(DestinationError::UnknownPlatform(_))));
        let mut i = input(Platform::Custom, Some("rtmp://x/app"), "k123");
        i.ca_file = Some("/etc/hostname".into());
        assert_eq!(i.validate(), Err(DestinationError::CaWithoutTls));
    }
}
