//! PTZ presets over ONVIF, for the cloud's `CAMERA_ACTION` `goto_preset` and a timeline's
//! `show_camera {preset_id}`.
//!
//! How it works: [`PtzClient`] talks SOAP 1.2 over plain HTTP to one camera. On first use it discovers the
//! camera's services: `GetCapabilities` on `http://host:port/onvif/device_service` gives the PTZ and Media
//! service addresses (defaults `/onvif/ptz_service`, `/onvif/media_service` when the camera does not say), and,
//! when no profile token is configured, `GetProfiles` gives the first media profile's token. Both are cached for
//! the life of the client. `GotoPreset` starts a move; [`PtzClient::goto_preset_and_settle`] then polls
//! `GetStatus` every 200 ms until pan/tilt and zoom both report `IDLE`, so a cue can cut to the camera only once
//! the picture has stopped moving.
//!
//! Every request carries a WS-Security `UsernameToken` with a `PasswordDigest` (never the plain password) when a
//! username is configured. Camera replies are untrusted: bodies are read up to [`MAX_BODY`], parsed by a small
//! tolerant scanner that matches local names (vendors use every namespace prefix imaginable) and never panics,
//! and no reply text reaches an error without being bounded and stripped of control characters. Nothing secret
//! (password, nonce, digest) is ever put in an error, a log line or `Debug` output.
//!
//! - [`client`]: the [`PtzClient`] (discovery, requests, settling).
//! - [`soap`]: envelopes, WS-Security, reply checks and the parsers of the replies we use.
//! - `xml`: the tolerant scanner the parsers read replies with.
//! - [`discover`]: finding cameras with WS-Discovery, and their models and RTSP streams.

mod client;
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

/// Where a camera's ONVIF device service lives and how to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnvifEndpoint {
    pub host: String,
    /// Usually 80; some models (many OEM PTZ domes) serve ONVIF on 8899 or another port.
    pub port: u16,
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
