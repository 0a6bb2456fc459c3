//! `CAMERA_ACTION` `discover`: the cameras on the device's LAN, found with WS-Discovery
//! ([`crate::ptz::discover`]), answered in RESULT `output` (`{kind: "cameras", cameras, ignored_answers}`).
//!
//! Its own command type beside [`CameraAction`](super::CameraAction): it names no camera, changes nothing and
//! carries only the probe's settings, so the wire form `{"action": "discover", "discover": {…}}` is read
//! into [`CameraDiscover`] by [`from_parts`](super::from_parts) when `action` is `discover`. The optional
//! password travels sealed like a camera's; the cloud inbox opens it into `opened_password` once every
//! check passed. It only ever goes into WS-Security digests sent to the cameras that answered.

use std::net::SocketAddrV4;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ErrorCode, Output, Refusal, SealedField};
use crate::config::Config;
use crate::ptz::discover::{self, Credentials, ProbeOptions};
use crate::secret::Secret;

/// Shortest and longest wait the cloud may ask for, ms.
pub const MIN_WAIT_MS: u64 = 100;
pub const MAX_WAIT_MS: u64 = 10_000;
/// Longest username.
pub const MAX_USERNAME: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverVerb {
    Discover,
}

/// `CAMERA_ACTION` `{action: "discover", discover?: {wait_ms?, username?, password?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraDiscover {
    pub action: DiscoverVerb,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover: Option<DiscoverSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSpec {
    /// How long to collect answers (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The login to ask each camera for its model and stream URLs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SealedField>,
    /// The password once the control plane opened it. Never read from or written to the wire.
    #[serde(skip)]
    pub opened_password: Option<Secret>,
}

impl CameraDiscover {
    /// The checks the schema makes on values, with the field named.
    pub fn check(&self) -> Result<(), Refusal> {
        let Some(d) = &self.discover else { return Ok(()) };
        if let Some(w) = d.wait_ms.filter(|w| !(MIN_WAIT_MS..=MAX_WAIT_MS).contains(w)) {
            return Err(Refusal::field(
                "payload.discover.wait_ms",
                format!("{w} is out of range: {MIN_WAIT_MS} to {MAX_WAIT_MS} ms"),
            ));
        }
        if let Some(u) = &d.username {
            if u.is_empty() || u.chars().count() > MAX_USERNAME || u.chars().any(char::is_control) {
                return Err(Refusal::field(
                    "payload.discover.username",
                    format!("a username is 1 to {MAX_USERNAME} characters, no control characters"),
                ));
            }
        }
        Ok(())
    }
}

/// Probes from the configured interfaces and describes what answered.
pub async fn run(cfg: &Config, d: CameraDiscover) -> Result<Output, Refusal> {
    d.check()?;
    let spec = d.discover.unwrap_or_default();
    if spec.password.is_some() && spec.opened_password.is_none() {
        return Err(Refusal::field(
            "payload.discover.password",
            "sealed secrets are opened by the cloud link; on the appliance use `vistter-agent camera discover`",
        ));
    }
    let creds = spec.username.map(|username| Credentials {
        username,
        // A username without a password is the empty password, as `camera add` takes it.
        password: spec.opened_password.unwrap_or_default(),
    });
    let opts = ProbeOptions {
        wait: Duration::from_millis(spec.wait_ms.unwrap_or(discover::DEFAULT_WAIT.as_millis() as u64)),
        target: SocketAddrV4::new(*discover::WS_DISCOVERY.ip(), cfg.discovery.port),
        interfaces: cfg.discovery.interfaces.clone(),
    };
    let found = discover::discover(&opts, creds.as_ref())
        .await
        .map_err(|e| Refusal::new(ErrorCode::Failed, format!("camera discovery: {e}")))?;
    Ok(Output::Cameras { cameras: found.cameras, ignored_answers: found.ignored_answers })
}
