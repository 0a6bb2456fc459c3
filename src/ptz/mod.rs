//! PTZ presets and snapshots over ONVIF, for the cloud's `CAMERA_ACTION` `goto_preset` and `snapshot`, a
//! timeline's `show_camera {preset_id}`, and the thumbnail of a camera no program decodes.
//!
//! How it works: [`PtzClient`] talks SOAP 1.2 over HTTP or HTTPS to one camera. Before anything else it reads
//! the camera's clock (`GetSystemDateAndTime`, which ONVIF lets anyone call) and keeps its offset from ours, so
//! the WS-Security `Created` stamps it signs are in the camera's time: a camera an hour off (no NTP) still
//! accepts them. It then discovers the camera's services: `GetCapabilities` on `/onvif/device_service` gives the
//! PTZ and Media service addresses (defaults `/onvif/ptz_service`, `/onvif/media_service` when the camera does
//! not say), and `GetProfiles` the media profiles; PTZ requests use the configured profile token or else the
//! first profile that has a `PTZConfiguration`, snapshots the first profile. Both are cached for the life of
//! the client. `GotoPreset` starts a move; [`PtzClient::goto_preset_and_settle`] then polls `GetStatus` every
//! 200 ms until pan/tilt and zoom both report `IDLE`, so a cue can cut to the camera only once the picture has
//! stopped moving. [`PtzClient::snapshot`] asks `GetSnapshotUri` and fetches that JPEG.
//!
//! Authentication, as cameras want it: every request carries a WS-Security `UsernameToken` with a
//! `PasswordDigest` (never the plain password) when a username is configured. A camera that answers HTTP 401
//! with a `WWW-Authenticate: Digest` challenge gets HTTP Digest (RFC 7616, [`digest`]) on top; one that then
//! refuses the WS-Security header gets Digest alone. Whatever worked is remembered by the client, so later
//! calls go straight to it, reusing the camera's nonce with a counted `nc` (and renewing it once on
//! `stale=true`). A refusal after all that is [`PtzError::Auth`]; a WS-Security refusal that a re-read of the
//! camera's clock changes nothing about, on a camera that accepted our Digest, is [`PtzError::Clock`].
//!
//! HTTPS: an endpoint with `https` set is spoken to over TLS (rustls with the ring provider, as everywhere in
//! the agent). Cameras serve self-made certificates, so the certificate is not verified: the link is encrypted,
//! and neither WS-Security nor Digest ever sends the password itself, so a host pretending to be the camera
//! learns nothing it could log in with.
//!
//! Camera replies are untrusted: bodies are read up to [`MAX_BODY`] (snapshots up to [`MAX_SNAPSHOT`]), parsed
//! by a small tolerant scanner that matches local names (vendors use every namespace prefix imaginable) and
//! never panics, and no reply text reaches an error without being bounded and stripped of control characters.
//! Nothing secret (password, nonce, digest) is ever put in an error, a log line or `Debug` output.
//!
//! - [`client`]: the [`PtzClient`] (clock, authentication, discovery, requests, settling, snapshots).
//! - [`digest`]: `WWW-Authenticate` challenges and HTTP Digest answers.
//! - [`soap`]: envelopes, WS-Security, reply checks and the parsers of the replies we use.
//! - `xml`: the tolerant scanner the parsers read replies with.
//! - [`discover`]: finding cameras with WS-Discovery, and their models and RTSP streams.

mod client;
pub mod digest;
pub mod discover;
mod soap;
#[cfg(test)]
mod tests;
mod xml;

use std::fmt;
use std::time::Duration;

use crate::secret::Secret;

pub use client::PtzClient;

/// Per-request timeout unless [`PtzClient::with_request_timeout`] says otherwise. A camera on the LAN answers
/// in milliseconds; one that takes seconds is as good as gone, and a cue must not wait on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Cap on a camera's reply body. Real SOAP replies here are a few KiB (GetProfiles the largest, ~20 KiB on
/// multi-stream cameras); anything bigger is broken or hostile and is not read into memory.
pub const MAX_BODY: usize = 256 * 1024;
/// Cap on a snapshot JPEG. A 4K camera's full-size JPEG is 1–2 MiB.
pub const MAX_SNAPSHOT: usize = 4 * 1024 * 1024;
/// A snapshot (GetSnapshotUri and the GET of the picture, authentication included) takes at most this long.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ONVIF port that means HTTPS.
pub const HTTPS_PORT: u16 = 443;

/// Whether a camera's configured ONVIF port is spoken to over HTTPS.
#[must_use]
pub fn is_https_port(port: u16) -> bool {
    port == HTTPS_PORT
}

/// Where a camera's ONVIF device service lives and how to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnvifEndpoint {
    pub host: String,
    /// Usually 80; some models (many OEM PTZ domes) serve ONVIF on 8899 or another port.
    pub port: u16,
    /// Speak HTTPS to the device service (the certificate is not verified: cameras make their own). Cameras
    /// configured with ONVIF port [`HTTPS_PORT`] get it ([`is_https_port`]).
    pub https: bool,
    /// None: send no WS-Security header (cameras with authentication off).
    pub username: Option<String>,
    /// Ignored without a username; a username without a password uses the empty password.
    pub password: Option<Secret>,
    /// The media profile whose PTZ configuration to drive. None: the first profile the camera lists.
    pub profile_token: Option<String>,
}

/// One axis group's motion as the camera reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveState {
    Idle,
    Moving,
    /// The camera says it does not know; not treated as settled.
    Unknown,
}

/// `PTZStatus/MoveStatus` of a GetStatus reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveStatus {
    pub pan_tilt: MoveState,
    pub zoom: MoveState,
}

impl MoveStatus {
    /// Both axis groups idle: the picture has stopped moving.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.pan_tilt == MoveState::Idle && self.zoom == MoveState::Idle
    }
}

/// What went wrong talking to a camera. `camera` is `host:port`, `action` the ONVIF operation that failed.
/// No variant ever holds the password, the nonce or the digest.
#[derive(Debug, thiserror::Error)]
pub enum PtzError {
    /// No HTTP answer: connection refused, no route, or no reply within the request timeout.
    #[error("camera {camera}: {action}: unreachable ({reason})")]
    Unreachable { camera: String, action: &'static str, reason: String },
    /// HTTP 401, or a SOAP fault saying the credentials were refused.
    #[error("camera {camera}: {action}: not authorized ({detail})")]
    Auth { camera: String, action: &'static str, detail: String },
    /// The camera accepted our HTTP Digest but refused the WS-Security timestamp even corrected for its clock,
    /// or said its time is wrong.
    #[error("camera {camera}: {action}: refused our timestamp ({detail}); set the camera's clock (NTP)")]
    Clock { camera: String, action: &'static str, detail: String },
    /// None of the camera's media profiles has a PTZ configuration: it cannot move to presets.
    #[error("camera {camera}: no media profile has a PTZ configuration (not a PTZ camera?)")]
    NoPtz { camera: String },
    /// The camera has no preset with this token.
    #[error("camera {camera}: no preset {preset:?} on this camera")]
    UnknownPreset { camera: String, preset: String },
    /// Any other SOAP fault (unknown preset, no such profile, PTZ not supported…).
    #[error("camera {camera}: {action}: SOAP fault {code}: {reason}")]
    Fault { camera: String, action: &'static str, code: String, reason: String },
    /// An answer that is not the expected ONVIF reply (HTTP error without a fault, oversized, garbage).
    #[error("camera {camera}: {action}: bad response ({detail})")]
    BadResponse { camera: String, action: &'static str, detail: String },
    /// The camera accepted the preset but did not report idle within the settle timeout.
    #[error("camera {camera}: preset {preset:?} did not settle within {waited:?}")]
    Timeout { camera: String, preset: String, waited: Duration },
}

impl fmt::Display for MoveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveState::Idle => "IDLE",
            MoveState::Moving => "MOVING",
            MoveState::Unknown => "UNKNOWN",
        })
    }
}
