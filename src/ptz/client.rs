//! The ONVIF client: the camera's clock, authentication (WS-Security, HTTP Digest, or both, as the camera
//! wants), service discovery, SOAP requests with bounded replies, waiting for a move to settle, and snapshots.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore as _;
use tokio::time::Instant;

use super::digest::{self, Challenge, DigestChallenge, DigestSession};
use super::soap::{
    authority, bounded, check_reply, created_stamp, escape, parse_capabilities, parse_snapshot_uri, parse_status,
    parse_system_time, profiles, Capabilities, Profile, SecurityHeader,
};
use super::xml;
use super::{MoveStatus, OnvifEndpoint, PtzError, DEFAULT_REQUEST_TIMEOUT, MAX_BODY, MAX_SNAPSHOT, SNAPSHOT_TIMEOUT};

/// GetStatus polling period while waiting for a move to settle.
const POLL_PERIOD: Duration = Duration::from_millis(200);
/// Tries of one SOAP call while learning how the camera authenticates (Digest challenge, stale nonce, clock
/// re-read, WS-Security dropped): each kind at most once, so this bound is never the one that stops it.
const MAX_ATTEMPTS: usize = 6;
/// A camera clock within this of ours needs no correction; a re-read that moves the offset by no more than
/// this has changed nothing.
const CLOCK_SLACK_S: i64 = 2;

const DEVICE_PATH: &str = "/onvif/device_service";
pub(super) const PTZ_PATH: &str = "/onvif/ptz_service";
const MEDIA_PATH: &str = "/onvif/media_service";

const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";

/// What discovery learns, once per client.
#[derive(Clone, Debug)]
struct Services {
    ptz_url: String,
    media_url: String,
    /// GetProfiles' answer; empty when a profile token is configured (then it is not asked).
    profiles: Vec<Profile>,
}

/// How this camera wants to be spoken to, as learned by the calls so far. `Debug` is safe: a
/// [`DigestSession`] shows neither its nonce nor anything computed.
#[derive(Debug)]
struct AuthState {
    /// The camera's clock minus ours, in seconds, applied to WS-Security `Created`.
    clock_offset_s: i64,
    /// GetSystemDateAndTime has been asked (whether or not the camera answered).
    clock_read: bool,
    /// Sign SOAP requests with WS-Security. Turned off for a camera that takes Digest and refuses the header.
    wsse: bool,
    /// The camera's Digest challenge, answered on every SOAP request once it asked for it.
    digest: Option<DigestSession>,
    /// The same for the snapshot URI, which is often served by another web server on the camera.
    snapshot_digest: Option<DigestSession>,
    /// The snapshot URI asked for HTTP Basic only.
    snapshot_basic: bool,
}

/// One HTTP answer, read and bounded.
struct Reply {
    status: u16,
    challenges: Vec<Challenge>,
    /// Why a `WWW-Authenticate` could not be read, if one could not.
    challenge_error: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn digest(&self) -> Option<&DigestChallenge> {
        self.challenges.iter().find_map(|c| match c {
            Challenge::Digest(d) => Some(d),
            _ => None,
        })
    }

    fn asks_basic(&self) -> bool {
        self.challenges.iter().any(|c| matches!(c, Challenge::Basic { .. }))
    }

    /// Why a 401 could not be answered, in words for an error.
    fn refusal(&self, sent_digest: bool, has_user: bool) -> String {
        if !has_user {
            return "the camera requires a username and password and none are configured".into();
        }
        if sent_digest {
            return "the camera refused our HTTP Digest credentials".into();
        }
        if let Some(e) = &self.challenge_error {
            return format!("the camera's authentication challenge is unreadable: {e}");
        }
        match self.challenges.iter().find_map(|c| match c {
            Challenge::Other { scheme, why } => Some(format!("{scheme}: {why}")),
            _ => None,
        }) {
            Some(other) => format!("the camera asks for authentication we cannot give ({other})"),
            None => "HTTP 401".into(),
        }
    }
}

/// An async ONVIF client for one camera. Not `Clone`: it caches discovery and what it learned about the camera's
/// authentication, so share it behind the camera's own task rather than copying it around.
#[derive(Debug)]
pub struct PtzClient {
    /// No proxy, no redirects: requests go to the camera and nowhere else.
    http: reqwest::Client,
    /// Applied to each request as a whole (connect + send + reading the body).
    request_timeout: Duration,
    endpoint: OnvifEndpoint,
    /// `host:port`, as errors and logs name the camera.
    camera: String,
    /// Filled by the first successful discovery.
    services: Option<Services>,
    auth: AuthState,
}

impl PtzClient {
    pub fn new(endpoint: OnvifEndpoint) -> PtzClient {
        let http = reqwest::Client::builder()
            // Cameras sit on the LAN: an HTTP(S)_PROXY meant for the cloud link must not capture them.
            .no_proxy()
            // A redirect would carry our signed request to a host we never configured.
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(camera_tls())
            .build()
            // Fails only if the TLS backend cannot initialise, which is a broken build, not something a camera
            // or a config can cause.
            .expect("building the HTTP client for ONVIF");
        let camera = authority(&endpoint.host, endpoint.port);
        PtzClient {
            http,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            endpoint,
            camera,
            services: None,
            auth: AuthState {
                clock_offset_s: 0,
                clock_read: false,
                wsse: true,
                digest: None,
                snapshot_digest: None,
                snapshot_basic: false,
            },
        }
    }

    #[must_use]
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// `host:port` of the camera, as it appears in errors.
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &OnvifEndpoint {
        &self.endpoint
    }

    /// The camera's clock minus ours, in whole seconds, as last read (0 until read or if it would not say).
    pub fn clock_offset(&self) -> i64 {
        self.auth.clock_offset_s
    }

    /// How the client has learned to authenticate, for logs and tests: `"ws-security"`, `"digest"`,
    /// `"digest+ws-security"` or `"none"`.
    pub fn auth_method(&self) -> &'static str {
        match (self.endpoint.username.is_some(), self.auth.digest.is_some(), self.auth.wsse) {
            (false, _, _) => "none",
            (true, false, _) => "ws-security",
            (true, true, true) => "digest+ws-security",
            (true, true, false) => "digest",
        }
    }

    /// Starts a move to `preset` and returns as soon as the camera accepted it (the move goes on).
    pub async fn goto_preset(&mut self, preset: &str) -> Result<(), PtzError> {
        let svc = self.services().await?;
        let profile = self.ptz_profile(&svc)?;
        let body = format!(
            "<tptz:GotoPreset xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken>\
             <tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
            escape(&profile),
            escape(preset)
        );
        let doc = match self.call(&svc.ptz_url, "GotoPreset", &body).await {
            // ONVIF's answer to a preset token the camera does not have (env:Sender/ter:InvalidArgVal/ter:NoToken).
            Err(PtzError::Fault { code, .. }) if code.split('/').any(|c| c == "NoToken") => {
                return Err(PtzError::UnknownPreset { camera: self.camera.clone(), preset: bounded(preset) });
            }
            r => r?,
        };
        // Anything but the response element means we are not talking to an ONVIF PTZ service at all.
        doc.find("GotoPresetResponse").ok_or_else(|| self.bad("GotoPreset", "no GotoPresetResponse element"))?;
        tracing::debug!(camera = %self.camera, preset, auth = self.auth_method(), "PTZ GotoPreset accepted");
        Ok(())
    }

    /// The camera's current pan/tilt and zoom motion.
    pub async fn status(&mut self) -> Result<MoveStatus, PtzError> {
        let svc = self.services().await?;
        let profile = self.ptz_profile(&svc)?;
        let body = format!(
            "<tptz:GetStatus xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
            escape(&profile)
        );
        let doc = self.call(&svc.ptz_url, "GetStatus", &body).await?;
        parse_status(&doc).ok_or_else(|| self.bad("GetStatus", "no GetStatusResponse element"))
    }

    /// GotoPreset, then GetStatus every 200 ms until both pan/tilt and zoom are idle or `settle_timeout` has
    /// passed. Ok(elapsed) when idle; Err(PtzError::Timeout{..}) on timeout.
    ///
    /// `elapsed` and the timeout both count from before the GotoPreset request (discovery included), so the
    /// caller's budget is the whole operation. The first poll waits one period: right after GotoPreset many
    /// cameras still report the IDLE of before the move.
    pub async fn goto_preset_and_settle(
        &mut self,
        preset: &str,
        settle_timeout: Duration,
    ) -> Result<Duration, PtzError> {
        let start = Instant::now();
        let deadline = start + settle_timeout;
        let timeout = |camera: &str| PtzError::Timeout {
            camera: camera.to_string(),
            preset: preset.to_string(),
            waited: settle_timeout,
        };
        match tokio::time::timeout_at(deadline, self.goto_preset(preset)).await {
            Ok(r) => r?,
            Err(_) => return Err(timeout(&self.camera)),
        }
        let mut next_poll = start + POLL_PERIOD;
        loop {
            // Never sleep past the deadline: the caller is waiting on us to cut to this camera.
            tokio::time::sleep_until(next_poll.min(deadline)).await;
            if Instant::now() >= deadline {
                return Err(timeout(&self.camera));
            }
            // A slow GetStatus must not overrun the settle budget either.
            let st = match tokio::time::timeout_at(deadline, self.status()).await {
                Ok(r) => r?,
                Err(_) => return Err(timeout(&self.camera)),
            };
            if st.is_idle() {
                let elapsed = start.elapsed();
                tracing::debug!(camera = %self.camera, preset, ?elapsed, "PTZ settled");
                return Ok(elapsed);
            }
            // Fixed cadence from the start, not from each reply, so slow replies do not stretch the period.
            next_poll += POLL_PERIOD;
            let now = Instant::now();
            if next_poll < now {
                next_poll = now;
            }
        }
    }

    /// The camera's current picture: `GetSnapshotUri` on the Media service (the configured profile, else the one
    /// with the smallest video resolution), then a GET of that URI (HTTP Digest
    /// or Basic as the camera asks), at most [`MAX_SNAPSHOT`] bytes, all within [`SNAPSHOT_TIMEOUT`]. Only a
    /// JPEG is accepted.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, PtzError> {
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.snapshot_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(PtzError::Unreachable {
                camera: self.camera.clone(),
                action: "snapshot",
                reason: format!("no snapshot within {SNAPSHOT_TIMEOUT:?}"),
            }),
        }
    }

    async fn snapshot_unbounded(&mut self) -> Result<Vec<u8>, PtzError> {
        let svc = self.services().await?;
        // The smallest picture the camera offers (its sub-stream, usually): a thumbnail needs no more, and the
        // cloud's RESULT carries at most 200 KiB.
        let smallest = svc.profiles.iter().min_by_key(|p| p.pixels.unwrap_or(u64::MAX));
        let profile = match (&self.endpoint.profile_token, smallest) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.token.clone(),
            (None, None) => return Err(self.bad("GetProfiles", "no profile with a token")),
        };
        let body = format!(
            "<trt:GetSnapshotUri xmlns:trt=\"{NS_TRT}\"><trt:ProfileToken>{}</trt:ProfileToken></trt:GetSnapshotUri>",
            escape(&profile)
        );
        let doc = self.call(&svc.media_url, "GetSnapshotUri", &body).await?;
        let uri = parse_snapshot_uri(&doc).ok_or_else(|| self.bad("GetSnapshotUri", "no MediaUri/Uri in the reply"))?;
        let url =
            self.snapshot_url(&uri).ok_or_else(|| self.bad("GetSnapshotUri", "the snapshot URI is not http(s)"))?;
        let jpeg = self.fetch_snapshot(&url).await?;
        tracing::debug!(camera = %self.camera, bytes = jpeg.len(), "camera snapshot fetched");
        Ok(jpeg)
    }

    /// The snapshot URI on the camera we were configured with: its scheme, port, path and query, our host. The
    /// port is kept because cameras often serve snapshots from another web server than ONVIF's.
    pub(super) fn snapshot_url(&self, uri: &str) -> Option<String> {
        let u = url::Url::parse(uri.trim()).ok()?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return None;
        }
        let port = u.port_or_known_default()?;
        let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
        Some(format!("{}://{}{}{query}", u.scheme(), authority(&self.endpoint.host, port), u.path()))
    }

    /// GET of a snapshot URI, answering a Digest or (only when it is all the camera offers) a Basic challenge.
    async fn fetch_snapshot(&mut self, url: &str) -> Result<Vec<u8>, PtzError> {
        const ACTION: &str = "snapshot";
        let target = request_target(url);
        let mut stale_retried = false;
        let mut challenged = false;
        for _ in 0..MAX_ATTEMPTS {
            let (user, password) = self.credentials();
            let authorization = match (&mut self.auth.snapshot_digest, user.as_deref()) {
                (Some(d), Some(u)) => Some(d.authorize("GET", &target, u, &password, b"")),
                (None, Some(u)) if self.auth.snapshot_basic => Some(digest::basic(u, &password)),
                _ => None,
            };
            let sent_auth = authorization.is_some();
            let mut req = self.http.get(url).timeout(SNAPSHOT_TIMEOUT);
            if let Some(a) = authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let reply = self.send(req, ACTION, MAX_SNAPSHOT).await?;
            if reply.status == 401 && user.is_some() {
                if let Some(c) = reply.digest().filter(|c| !challenged || (c.stale && !stale_retried)) {
                    stale_retried |= challenged;
                    challenged = true;
                    self.auth.snapshot_digest = Some(DigestSession::new(c));
                    self.auth.snapshot_basic = false;
                    continue;
                }
                if reply.digest().is_none() && reply.asks_basic() && !challenged {
                    challenged = true;
                    self.auth.snapshot_basic = true;
                    continue;
                }
            }
            if reply.status == 401 || reply.status == 403 {
                self.auth.snapshot_digest = None;
                self.auth.snapshot_basic = false;
                let detail = reply.refusal(sent_auth, user.is_some());
                return Err(PtzError::Auth { camera: self.camera.clone(), action: ACTION, detail });
            }
            if !(200..300).contains(&reply.status) {
                return Err(self.bad(ACTION, &format!("HTTP {}", reply.status)));
            }
            // Every JPEG starts with SOI and a marker (FF D8 FF); an HTML error page does not.
            if !reply.body.starts_with(&[0xFF, 0xD8, 0xFF]) {
                return Err(self.bad(ACTION, "the snapshot is not a JPEG"));
            }
            return Ok(reply.body);
        }
        Err(PtzError::Auth { camera: self.camera.clone(), action: ACTION, detail: "too many challenges".into() })
    }

    /// Cached service addresses and profiles, discovering them on first use.
    async fn services(&mut self) -> Result<Services, PtzError> {
        if let Some(s) = &self.services {
            return Ok(s.clone());
        }
        let s = self.discover().await?;
        tracing::debug!(
            camera = %self.camera, ptz = %s.ptz_url, media = %s.media_url, profiles = s.profiles.len(),
            auth = self.auth_method(), clock_offset_s = self.auth.clock_offset_s,
            "ONVIF services discovered"
        );
        self.services = Some(s.clone());
        Ok(s)
    }

    async fn discover(&mut self) -> Result<Services, PtzError> {
        let device_url = format!("{}{DEVICE_PATH}", self.base());
        let body = format!(
            "<tds:GetCapabilities xmlns:tds=\"{NS_TDS}\"><tds:Category>All</tds:Category></tds:GetCapabilities>"
        );
        let caps = match self.call(&device_url, "GetCapabilities", &body).await {
            Ok(doc) => parse_capabilities(&doc),
            // Some cameras only implement GetServices; the well-known paths work on nearly all of them.
            Err(PtzError::Fault { code, .. }) => {
                tracing::debug!(
                    camera = %self.camera, %code,
                    "GetCapabilities refused; using the default service paths"
                );
                Capabilities::default()
            }
            Err(e) => return Err(e),
        };
        let ptz_url = self.service_url(caps.ptz.as_deref(), PTZ_PATH);
        let media_url = self.service_url(caps.media.as_deref(), MEDIA_PATH);
        let profiles = match &self.endpoint.profile_token {
            Some(_) => Vec::new(),
            None => {
                let body = format!("<trt:GetProfiles xmlns:trt=\"{NS_TRT}\"/>");
                let doc = self.call(&media_url, "GetProfiles", &body).await?;
                let p = profiles(&doc);
                if p.is_empty() {
                    return Err(self.bad("GetProfiles", "no profile with a token"));
                }
                p
            }
        };
        Ok(Services { ptz_url, media_url, profiles })
    }

    /// The profile PTZ requests name: the configured one, else the first that has a PTZ configuration.
    fn ptz_profile(&self, svc: &Services) -> Result<String, PtzError> {
        if let Some(t) = &self.endpoint.profile_token {
            return Ok(t.clone());
        }
        svc.profiles
            .iter()
            .find(|p| p.ptz)
            .map(|p| p.token.clone())
            .ok_or_else(|| PtzError::NoPtz { camera: self.camera.clone() })
    }

    /// `http://host:port` or `https://host:port`, as configured.
    fn base(&self) -> String {
        let scheme = if self.endpoint.https { "https" } else { "http" };
        format!("{scheme}://{}", self.camera)
    }

    /// The URL for a service: the path (and query) of the camera's XAddr, on the scheme and host:port we were
    /// configured with. Cameras behind NAT or port forwarding advertise their private address
    /// (`http://192.168.1.64/…`), and following an XAddr to another host would hand that host a signed request.
    pub(super) fn service_url(&self, xaddr: Option<&str>, default_path: &str) -> String {
        let path = xaddr
            .and_then(|x| url::Url::parse(x.trim()).ok())
            .filter(|u| u.scheme() == "http" || u.scheme() == "https")
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .filter(|p| p.starts_with('/') && p.len() > 1)
            .unwrap_or_else(|| default_path.to_string());
        format!("{}{path}", self.base())
    }

    /// Reads the camera's clock (unauthenticated, as ONVIF requires cameras to allow) and returns its offset
    /// from ours in whole seconds, or None if the camera would not say. Err only when it did not answer at all
    /// (then no other call would get an answer either).
    async fn camera_clock_offset(&self) -> Result<Option<i64>, PtzError> {
        let url = format!("{}{DEVICE_PATH}", self.base());
        let envelope = envelope(None, &format!("<tds:GetSystemDateAndTime xmlns:tds=\"{NS_TDS}\"/>"));
        let before = time::OffsetDateTime::now_utc();
        let req = self.soap_request(&url, envelope, None);
        let reply = match self.send(req, "GetSystemDateAndTime", MAX_BODY).await {
            Ok(r) if (200..300).contains(&r.status) => r,
            Ok(r) => {
                tracing::debug!(camera = %self.camera, status = r.status, "GetSystemDateAndTime refused");
                return Ok(None);
            }
            Err(e @ PtzError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(camera = %self.camera, error = %e, "GetSystemDateAndTime failed");
                return Ok(None);
            }
        };
        let after = time::OffsetDateTime::now_utc();
        let Some(cam) = parse_system_time(&xml::Doc::parse(&String::from_utf8_lossy(&reply.body))) else {
            return Ok(None);
        };
        let ours = before + (after - before) / 2;
        let offset: time::Duration = cam - ours;
        let offset = offset.whole_seconds();
        Ok(Some(if offset.abs() <= CLOCK_SLACK_S { 0 } else { offset }))
    }

    /// Reads the camera's clock the first time a call needs it. A camera that does not answer at all is
    /// Unreachable, and asked again next time.
    async fn ensure_clock(&mut self) -> Result<(), PtzError> {
        if self.auth.clock_read {
            return Ok(());
        }
        let read = self.camera_clock_offset().await?;
        self.auth.clock_read = true;
        if let Some(offset) = read {
            if offset != 0 {
                tracing::info!(camera = %self.camera, offset_s = offset, "camera clock differs from ours; correcting");
            }
            self.auth.clock_offset_s = offset;
        }
        Ok(())
    }

    /// Reads the clock again after a WS-Security refusal: true if the offset moved (worth a retry).
    async fn clock_moved(&mut self) -> bool {
        match self.camera_clock_offset().await {
            Ok(Some(offset)) if (offset - self.auth.clock_offset_s).abs() > CLOCK_SLACK_S => {
                tracing::info!(
                    camera = %self.camera, was_s = self.auth.clock_offset_s, now_s = offset,
                    "camera clock moved; retrying with the new offset"
                );
                self.auth.clock_offset_s = offset;
                true
            }
            _ => false,
        }
    }

    /// Username (None: authentication off) and password (empty when none is configured).
    fn credentials(&self) -> (Option<String>, String) {
        let password = self.endpoint.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        (self.endpoint.username.clone(), password)
    }

    /// One SOAP call to any service of this camera (discovery's GetDeviceInformation, GetProfiles,
    /// GetStreamUri), authenticated the way the camera turns out to want, as PTZ calls are.
    pub(super) async fn soap(&mut self, url: &str, action: &'static str, body: &str) -> Result<xml::Doc, PtzError> {
        self.call(url, action, body).await
    }

    /// POSTs one SOAP request and returns the parsed reply, or the error it amounts to. Learns, on the way, how
    /// the camera authenticates: a Digest challenge is answered and the request retried; a `stale` nonce renewed
    /// once; a WS-Security refusal retried once after re-reading the camera's clock and, when Digest was
    /// accepted, once without the header. What worked stays for the next call.
    async fn call(&mut self, url: &str, action: &'static str, body: &str) -> Result<xml::Doc, PtzError> {
        self.ensure_clock().await?;
        let target = request_target(url);
        let mut stale_retried = false;
        let mut clock_retried = false;
        let mut dropped_wsse = false;
        for _ in 0..MAX_ATTEMPTS {
            let security = if self.auth.wsse { self.security_header() } else { None };
            let envelope = envelope(security.as_ref(), body);
            let (user, password) = self.credentials();
            let authorization = match (&mut self.auth.digest, user.as_deref()) {
                (Some(d), Some(u)) => Some(d.authorize("POST", &target, u, &password, envelope.as_bytes())),
                _ => None,
            };
            let sent_digest = authorization.is_some();
            let req = self.soap_request(url, envelope, authorization);
            let reply = self.send(req, action, MAX_BODY).await?;
            // A 401 without any challenge is the SOAP layer's refusal (some cameras send their NotAuthorized
            // fault with 401): it is handled below like one.
            let challenged = !reply.challenges.is_empty() || reply.challenge_error.is_some();
            if reply.status == 401 && (challenged || security.is_none()) {
                // HTTP-level refusal: a Digest challenge we have not answered yet, or a stale nonce.
                if let Some(c) = reply.digest().filter(|_| user.is_some()) {
                    if !sent_digest || (c.stale && !stale_retried) {
                        stale_retried |= sent_digest;
                        self.auth.digest = Some(DigestSession::new(c));
                        continue;
                    }
                }
                if dropped_wsse {
                    self.auth.wsse = true;
                }
                let detail = reply.refusal(sent_digest, user.is_some());
                return Err(PtzError::Auth { camera: self.camera.clone(), action, detail });
            }
            let doc = xml::Doc::parse(&String::from_utf8_lossy(&reply.body));
            let err = match check_reply(&self.camera, action, reply.status, &doc, security.as_ref()) {
                Ok(()) => return Ok(doc),
                Err(e @ PtzError::Auth { .. }) => e,
                Err(e) => return Err(e),
            };
            // A SOAP-level refusal: WS-Security (a stale Created, or a camera that wants Digest alone), or the
            // credentials themselves.
            if security.is_some() && !clock_retried {
                clock_retried = true;
                if self.clock_moved().await {
                    continue;
                }
            }
            if security.is_some() && sent_digest && !dropped_wsse {
                dropped_wsse = true;
                self.auth.wsse = false;
                tracing::debug!(camera = %self.camera, action, "WS-Security refused beside Digest; trying Digest alone");
                continue;
            }
            if dropped_wsse {
                // Digest alone was refused too, and the camera took our Digest (no 401): the password is right and
                // what it refuses is the WS-Security timestamp.
                self.auth.wsse = true;
                let offset = self.auth.clock_offset_s;
                let detail = format!(
                    "the camera accepted our HTTP Digest but refused WS-Security signed in its own time \
                     (its clock is {offset} s from ours)"
                );
                return Err(PtzError::Clock { camera: self.camera.clone(), action, detail });
            }
            return Err(self.clock_or_auth(err));
        }
        Err(PtzError::Auth { camera: self.camera.clone(), action, detail: "too many authentication rounds".into() })
    }

    /// A refusal whose words are about time is a clock problem; any other stays an auth error, with the clock
    /// offset we corrected for when there was one (a hint for the operator).
    fn clock_or_auth(&self, err: PtzError) -> PtzError {
        let PtzError::Auth { camera, action, detail } = err else { return err };
        let lower = detail.to_ascii_lowercase();
        if ["clock", "time", "expired", "created"].iter().any(|w| lower.contains(w)) {
            return PtzError::Clock { camera, action, detail };
        }
        let offset = self.auth.clock_offset_s;
        let detail = if offset != 0 {
            format!("{detail}; the camera's clock is {offset} s from ours, corrected for")
        } else {
            detail
        };
        PtzError::Auth { camera, action, detail }
    }

    fn soap_request(&self, url: &str, envelope: String, authorization: Option<String>) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(url)
            .timeout(self.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")
            .body(envelope);
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req
    }

    /// Sends a request and reads the answer: status, challenges, and a body of at most `max` bytes.
    async fn send(&self, req: reqwest::RequestBuilder, action: &'static str, max: usize) -> Result<Reply, PtzError> {
        let resp = req.send().await.map_err(|e| self.unreachable(action, e))?;
        let status = resp.status().as_u16();
        let mut challenges = Vec::new();
        let mut challenge_error = None;
        for v in resp.headers().get_all(reqwest::header::WWW_AUTHENTICATE) {
            match v
                .to_str()
                .map_err(|_| "not text".to_string())
                .and_then(|s| digest::parse_challenges(s).map_err(|e| e.to_string()))
            {
                Ok(c) => challenges.extend(c),
                Err(e) => challenge_error = Some(e),
            }
        }
        let body = self.read_bounded(resp, action, max).await?;
        Ok(Reply { status, challenges, challenge_error, body })
    }

    /// Reads a reply body, refusing to hold more than `max` of it.
    async fn read_bounded(
        &self,
        mut resp: reqwest::Response,
        action: &'static str,
        max: usize,
    ) -> Result<Vec<u8>, PtzError> {
        let too_big = || self.bad(action, &format!("reply larger than {} KiB", max / 1024));
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(action, e))? {
            if buf.len() + chunk.len() > max {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// A fresh WS-Security header stamped in the camera's time, or None without a username.
    fn security_header(&self) -> Option<SecurityHeader> {
        let user = self.endpoint.username.as_deref()?;
        let password = self.endpoint.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let now = time::OffsetDateTime::now_utc();
        let created = created_stamp(now.saturating_add(time::Duration::seconds(self.auth.clock_offset_s)));
        Some(SecurityHeader::new(user, password, &nonce, &created))
    }

    fn unreachable(&self, action: &'static str, e: reqwest::Error) -> PtzError {
        PtzError::Unreachable { camera: self.camera.clone(), action, reason: request_failure(&e, self.request_timeout) }
    }

    fn bad(&self, action: &'static str, detail: &str) -> PtzError {
        PtzError::BadResponse { camera: self.camera.clone(), action, detail: detail.to_string() }
    }
}

/// A SOAP 1.2 envelope around `body`, with the WS-Security header when there is one.
fn envelope(security: Option<&SecurityHeader>, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{}<s:Body>{body}</s:Body></s:Envelope>",
        security.map(|s| s.xml.as_str()).unwrap_or("")
    )
}

/// The request target of a URL (path and query), which Digest's `uri` must repeat.
fn request_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => "/".into(),
    }
}

/// TLS for cameras: rustls with the ring provider, as everywhere in the agent, and no certificate verification
/// (cameras make their own certificates; see the module doc for why that gives nothing away).
fn camera_tls() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; failing here is a broken build.
        .expect("TLS versions of the ring provider")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::media::rtmp::NoVerify(provider)))
        .with_no_client_auth()
}

/// Why a request to a camera got no answer, in a few words: a timeout, else the innermost cause
/// ("Connection refused", "No route to host") without the URL reqwest adds.
pub(crate) fn request_failure(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    bounded(&cause.to_string())
}
