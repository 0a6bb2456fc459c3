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

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore as _;
use sha1::{Digest as _, Sha1};
use tokio::time::Instant;

use crate::secret::Secret;

/// Per-request timeout unless [`PtzClient::with_request_timeout`] says otherwise. A camera on the LAN answers
/// in milliseconds; one that takes seconds is as good as gone, and a cue must not wait on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Cap on a camera's reply body. Real SOAP replies here are a few KiB (GetProfiles the largest, ~20 KiB on
/// multi-stream cameras); anything bigger is broken or hostile and is not read into memory.
pub const MAX_BODY: usize = 256 * 1024;
/// GetStatus polling period while waiting for a move to settle.
const POLL_PERIOD: Duration = Duration::from_millis(200);
/// Longest piece of camera-supplied text (fault reason) that goes into an error.
const MAX_DETAIL: usize = 200;
/// A wall clock before this year has not been set (no RTC, no NTP yet); cameras reject the resulting
/// `Created` stamps, so an auth failure says so.
const CLOCK_FLOOR_YEAR: i32 = 2024;

const DEVICE_PATH: &str = "/onvif/device_service";
const PTZ_PATH: &str = "/onvif/ptz_service";
const MEDIA_PATH: &str = "/onvif/media_service";

const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
const WSSE_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const WSSE_BASE64: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

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

/// What discovery learns, once per client. The media service is only needed for GetProfiles during discovery,
/// so its address is not kept.
#[derive(Clone, Debug)]
struct Services {
    ptz_url: String,
    profile_token: String,
}

/// An async ONVIF PTZ client for one camera. Not `Clone`: it caches discovery, so share it behind the camera's
/// own task rather than copying it around.
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
}

impl PtzClient {
    pub fn new(endpoint: OnvifEndpoint) -> PtzClient {
        let http = reqwest::Client::builder()
            // Cameras sit on the LAN: an HTTP(S)_PROXY meant for the cloud link must not capture them.
            .no_proxy()
            // A redirect would carry our signed request to a host we never configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Fails only if the TLS backend cannot initialise, which with bundled webpki roots is a broken
            // build, not something a camera or a config can cause.
            .expect("building the HTTP client for ONVIF");
        let camera = authority(&endpoint.host, endpoint.port);
        PtzClient { http, request_timeout: DEFAULT_REQUEST_TIMEOUT, endpoint, camera, services: None }
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

    /// Starts a move to `preset` and returns as soon as the camera accepted it (the move goes on).
    pub async fn goto_preset(&mut self, preset: &str) -> Result<(), PtzError> {
        let svc = self.services().await?;
        let body = format!(
            "<tptz:GotoPreset xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken>\
             <tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
            escape(&svc.profile_token),
            escape(preset)
        );
        let doc = self.call(&svc.ptz_url, "GotoPreset", &body).await?;
        // Anything but the response element means we are not talking to an ONVIF PTZ service at all.
        doc.find("GotoPresetResponse").ok_or_else(|| self.bad("GotoPreset", "no GotoPresetResponse element"))?;
        tracing::debug!(camera = %self.camera, preset, "PTZ GotoPreset accepted");
        Ok(())
    }

    /// The camera's current pan/tilt and zoom motion.
    pub async fn status(&mut self) -> Result<MoveStatus, PtzError> {
        let svc = self.services().await?;
        let body = format!(
            "<tptz:GetStatus xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
            escape(&svc.profile_token)
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

    /// Cached service addresses and profile token, discovering them on first use.
    async fn services(&mut self) -> Result<Services, PtzError> {
        if let Some(s) = &self.services {
            return Ok(s.clone());
        }
        let s = self.discover().await?;
        tracing::debug!(
            camera = %self.camera, ptz = %s.ptz_url, profile = %s.profile_token,
            "ONVIF services discovered"
        );
        self.services = Some(s.clone());
        Ok(s)
    }

    async fn discover(&self) -> Result<Services, PtzError> {
        let device_url = format!("http://{}{DEVICE_PATH}", self.camera);
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
        let profile_token = match &self.endpoint.profile_token {
            Some(t) => t.clone(),
            None => {
                let body = format!("<trt:GetProfiles xmlns:trt=\"{NS_TRT}\"/>");
                let doc = self.call(&media_url, "GetProfiles", &body).await?;
                first_profile_token(&doc).ok_or_else(|| self.bad("GetProfiles", "no profile with a token"))?
            }
        };
        Ok(Services { ptz_url, profile_token })
    }

    /// The URL for a service: the path (and query) of the camera's XAddr, on the host:port we were configured
    /// with. Cameras behind NAT or port forwarding advertise their private address (`http://192.168.1.64/…`),
    /// and following an XAddr to another host would hand that host a signed request.
    fn service_url(&self, xaddr: Option<&str>, default_path: &str) -> String {
        let path = xaddr
            .and_then(|x| url::Url::parse(x.trim()).ok())
            .filter(|u| u.scheme() == "http" || u.scheme() == "https")
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .filter(|p| p.starts_with('/') && p.len() > 1)
            .unwrap_or_else(|| default_path.to_string());
        format!("http://{}{path}", self.camera)
    }

    /// POSTs one SOAP request and returns the parsed reply, or the error it amounts to.
    async fn call(&self, url: &str, action: &'static str, body: &str) -> Result<xml::Doc, PtzError> {
        let security = self.security_header();
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{}<s:Body>{body}</s:Body></s:Envelope>",
            security.as_ref().map(|s| s.xml.as_str()).unwrap_or("")
        );
        let resp = self
            .http
            .post(url)
            .timeout(self.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")
            .body(envelope)
            .send()
            .await
            .map_err(|e| self.unreachable(action, e))?;
        let status = resp.status().as_u16();
        let bytes = self.read_bounded(resp, action).await?;
        let text = String::from_utf8_lossy(&bytes);
        let doc = xml::Doc::parse(&text);
        check_reply(&self.camera, action, status, &doc, security.as_ref())?;
        Ok(doc)
    }

    /// Reads a reply body, refusing to hold more than [`MAX_BODY`] of it.
    async fn read_bounded(&self, mut resp: reqwest::Response, action: &'static str) -> Result<Vec<u8>, PtzError> {
        let too_big = || self.bad(action, &format!("reply larger than {} KiB", MAX_BODY / 1024));
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(action, e))? {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// A fresh WS-Security header, or None without a username.
    fn security_header(&self) -> Option<SecurityHeader> {
        let user = self.endpoint.username.as_deref()?;
        let password = self.endpoint.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let created = created_stamp(time::OffsetDateTime::now_utc());
        Some(SecurityHeader::new(user, password, &nonce, &created))
    }

    fn unreachable(&self, action: &'static str, e: reqwest::Error) -> PtzError {
        let reason = if e.is_timeout() {
            format!("no answer within {:?}", self.request_timeout)
        } else {
            // The innermost cause ("Connection refused", "No route to host"), without the URL reqwest adds.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            bounded(&cause.to_string())
        };
        PtzError::Unreachable { camera: self.camera.clone(), action, reason }
    }

    fn bad(&self, action: &'static str, detail: &str) -> PtzError {
        PtzError::BadResponse { camera: self.camera.clone(), action, detail: detail.to_string() }
    }
}

/// The WS-Security header of one request. Debug is deliberately not derived: it holds the digest and nonce,
/// which (with Created) can be replayed against cameras that do not remember nonces.
struct SecurityHeader {
    xml: String,
    nonce_b64: String,
    digest_b64: String,
}

impl SecurityHeader {
    fn new(user: &str, password: &str, nonce: &[u8], created: &str) -> SecurityHeader {
        let nonce_b64 = BASE64.encode(nonce);
        let digest_b64 = password_digest(nonce, created, password);
        let xml = format!(
            "<s:Header><wsse:Security s:mustUnderstand=\"1\" \
             xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\" \
             xmlns:wsu=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd\">\
             <wsse:UsernameToken><wsse:Username>{}</wsse:Username>\
             <wsse:Password Type=\"{WSSE_DIGEST}\">{digest_b64}</wsse:Password>\
             <wsse:Nonce EncodingType=\"{WSSE_BASE64}\">{nonce_b64}</wsse:Nonce>\
             <wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>",
            escape(user)
        );
        SecurityHeader { xml, nonce_b64, digest_b64 }
    }

    /// Masks our nonce and digest should a camera echo them back in a fault.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.digest_b64, "***").replace(&self.nonce_b64, "***")
    }
}

/// WS-Security UsernameToken PasswordDigest: base64(SHA-1(nonce ‖ created ‖ password)).
fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    BASE64.encode(h.finalize())
}

/// `Created` as whole-second RFC 3339 UTC (`2026-11-24T12:00:00Z`): some cameras reject fractional seconds.
fn created_stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Turns an HTTP status and a parsed body into Ok or the error they mean. A SOAP fault decides over the status
/// code (cameras send faults with 400, 401 or 500 alike); a 401 without a fault is still an auth failure.
fn check_reply(
    camera: &str,
    action: &'static str,
    status: u16,
    doc: &xml::Doc,
    security: Option<&SecurityHeader>,
) -> Result<(), PtzError> {
    let scrub = |s: &str| bounded(&security.map(|h| h.scrub(s)).unwrap_or_else(|| s.to_string()));
    if let Some(f) = parse_fault(doc) {
        let (code, reason) = (scrub(&f.code), scrub(&f.reason));
        if f.is_auth() || status == 401 {
            return Err(PtzError::Auth { camera: camera.to_string(), action, detail: auth_detail(&reason) });
        }
        return Err(PtzError::Fault { camera: camera.to_string(), action, code, reason });
    }
    if status == 401 || status == 403 {
        return Err(PtzError::Auth {
            camera: camera.to_string(),
            action,
            detail: auth_detail(&format!("HTTP {status}")),
        });
    }
    if !(200..300).contains(&status) {
        return Err(PtzError::BadResponse { camera: camera.to_string(), action, detail: format!("HTTP {status}") });
    }
    Ok(())
}

/// The camera's words, plus a hint when our own clock is plainly unset (cameras refuse stale `Created`).
fn auth_detail(reason: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    if now.year() < CLOCK_FLOOR_YEAR {
        format!("{reason}; this device's clock reads {}, which cameras reject: is NTP synced?", created_stamp(now))
    } else {
        reason.to_string()
    }
}

/// A SOAP 1.2 (or 1.1) fault: code values joined by `/`, local names only (`Sender/NotAuthorized`).
#[derive(Debug, PartialEq, Eq)]
struct Fault {
    code: String,
    reason: String,
}

impl Fault {
    fn is_auth(&self) -> bool {
        // ONVIF's ter:NotAuthorized, and WS-Security's own wsse:FailedAuthentication some stacks send instead.
        self.code.split('/').any(|c| c == "NotAuthorized" || c == "FailedAuthentication")
    }
}

fn parse_fault(doc: &xml::Doc) -> Option<Fault> {
    let f = doc.find("Fault")?;
    let code_values: Vec<String> = match doc.child(f, "Code") {
        // SOAP 1.2: Code/Value, Code/Subcode/Value, Code/Subcode/Subcode/Value…
        Some(code) => doc
            .descendants(code)
            .filter(|&i| doc.local(i) == "Value")
            .map(|i| local_name(doc.text(i)).to_string())
            .filter(|v| !v.is_empty())
            .collect(),
        // SOAP 1.1: faultcode.
        None => doc.child(f, "faultcode").map(|i| local_name(doc.text(i)).to_string()).into_iter().collect(),
    };
    let reason = doc
        .child(f, "Reason")
        .and_then(|r| doc.descendants(r).find(|&i| doc.local(i) == "Text"))
        .or_else(|| doc.child(f, "faultstring"))
        .map(|i| doc.text(i).to_string())
        .unwrap_or_default();
    let code = if code_values.is_empty() { "unknown".to_string() } else { code_values.join("/") };
    Some(Fault { code, reason })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Capabilities {
    ptz: Option<String>,
    media: Option<String>,
}

/// `Capabilities/PTZ/XAddr` and `Capabilities/Media/XAddr` of a GetCapabilities reply.
fn parse_capabilities(doc: &xml::Doc) -> Capabilities {
    let xaddr = |service: &str| {
        let caps = doc.find("Capabilities")?;
        doc.descendants(caps)
            .filter(|&i| doc.local(i) == service)
            .find_map(|s| doc.child(s, "XAddr"))
            .map(|x| doc.text(x).to_string())
            .filter(|x| !x.is_empty())
    };
    Capabilities { ptz: xaddr("PTZ"), media: xaddr("Media") }
}

/// The `token` attribute of the first `Profiles` element of a GetProfiles reply.
fn first_profile_token(doc: &xml::Doc) -> Option<String> {
    let resp = doc.find("GetProfilesResponse")?;
    doc.descendants(resp)
        .filter(|&i| doc.local(i) == "Profiles")
        .find_map(|i| doc.attr(i, "token"))
        .filter(|t| !t.trim().is_empty())
}

/// `PTZStatus/MoveStatus/{PanTilt,Zoom}` of a GetStatus reply; None if it is not one. A missing MoveStatus or
/// axis element counts as idle (cameras that cannot tell omit it); so does ONVIF 1.x's bare
/// `<MoveStatus>IDLE</MoveStatus>`, which applies to both.
fn parse_status(doc: &xml::Doc) -> Option<MoveStatus> {
    let resp = doc.find("GetStatusResponse")?;
    let Some(ms) = doc.descendants(resp).find(|&i| doc.local(i) == "MoveStatus") else {
        return Some(MoveStatus { pan_tilt: MoveState::Idle, zoom: MoveState::Idle });
    };
    let bare = move_state(doc.text(ms));
    let axis = |name: &str| match doc.child(ms, name) {
        Some(i) => move_state(doc.text(i)),
        None if !doc.text(ms).is_empty() => bare,
        None => MoveState::Idle,
    };
    Some(MoveStatus { pan_tilt: axis("PanTilt"), zoom: axis("Zoom") })
}

fn move_state(s: &str) -> MoveState {
    match s.trim() {
        s if s.eq_ignore_ascii_case("IDLE") => MoveState::Idle,
        s if s.eq_ignore_ascii_case("MOVING") => MoveState::Moving,
        _ => MoveState::Unknown,
    }
}

/// `ter:NotAuthorized` → `NotAuthorized`.
fn local_name(qname: &str) -> &str {
    qname.trim().rsplit(':').next().unwrap_or("")
}

/// `host:port`, bracketing IPv6 literals.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Camera-supplied text fit for an error: at most [`MAX_DETAIL`] characters, control characters (which could
/// forge log lines) replaced.
fn bounded(s: &str) -> String {
    let mut out: String = s.trim().chars().take(MAX_DETAIL).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.trim().chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// Escapes text for an XML element body, so a preset or profile token cannot rewrite the request.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
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

/// Just enough XML for SOAP replies: elements (by local name), their attributes and direct text. No DTDs, no
/// validation, no namespace resolution. Malformed input yields a partial tree, never a panic: the callers then
/// find what they need or report a bad response.
mod xml {
    /// One element.
    #[derive(Debug)]
    struct Elem {
        /// Name without its prefix.
        local: String,
        parent: Option<usize>,
        /// The raw attribute text of the start tag.
        attrs: String,
        /// Direct character data (entities decoded), trimmed on read.
        text: String,
    }

    /// A parsed document: elements in document order.
    #[derive(Debug, Default)]
    pub(super) struct Doc {
        elems: Vec<Elem>,
    }

    impl Doc {
        pub(super) fn parse(src: &str) -> Doc {
            let mut elems: Vec<Elem> = Vec::new();
            let mut open: Vec<usize> = Vec::new();
            let mut rest = src;
            while !rest.is_empty() {
                let Some(lt) = rest.find('<') else {
                    append_text(&mut elems, &open, rest, true);
                    break;
                };
                append_text(&mut elems, &open, &rest[..lt], true);
                rest = &rest[lt..];
                if let Some(r) = rest.strip_prefix("<![CDATA[") {
                    let end = r.find("]]>").unwrap_or(r.len());
                    append_text(&mut elems, &open, &r[..end], false);
                    rest = r.get(end + 3..).unwrap_or("");
                } else if let Some(r) = rest.strip_prefix("<!--") {
                    rest = r.find("-->").and_then(|e| r.get(e + 3..)).unwrap_or("");
                } else if let Some(r) = rest.strip_prefix("<?") {
                    rest = r.find("?>").and_then(|e| r.get(e + 2..)).unwrap_or("");
                } else if let Some(r) = rest.strip_prefix("<!") {
                    rest = r.find('>').and_then(|e| r.get(e + 1..)).unwrap_or("");
                } else if let Some(r) = rest.strip_prefix("</") {
                    let Some(gt) = r.find('>') else { break };
                    let name = local(r[..gt].trim());
                    // Close the innermost element of that name; a stray end tag is ignored.
                    if let Some(pos) = open.iter().rposition(|&i| elems[i].local == name) {
                        open.truncate(pos);
                    }
                    rest = &r[gt + 1..];
                } else {
                    let r = &rest[1..];
                    let Some(gt) = tag_end(r) else { break };
                    let tag = &r[..gt];
                    let self_closing = tag.ends_with('/');
                    let tag = tag.strip_suffix('/').unwrap_or(tag);
                    let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
                    let name = local(&tag[..name_end]);
                    rest = &r[gt + 1..];
                    if name.is_empty() {
                        continue;
                    }
                    elems.push(Elem {
                        local: name.to_string(),
                        parent: open.last().copied(),
                        attrs: tag[name_end..].to_string(),
                        text: String::new(),
                    });
                    if !self_closing {
                        open.push(elems.len() - 1);
                    }
                }
            }
            Doc { elems }
        }

        /// The first element named `local`, in document order.
        pub(super) fn find(&self, local: &str) -> Option<usize> {
            self.elems.iter().position(|e| e.local == local)
        }

        /// The first direct child of `parent` named `local`.
        pub(super) fn child(&self, parent: usize, local: &str) -> Option<usize> {
            self.elems
                .iter()
                .enumerate()
                .skip(parent + 1)
                .find_map(|(i, e)| (e.parent == Some(parent) && e.local == local).then_some(i))
        }

        /// Every element below `root`, in document order.
        pub(super) fn descendants(&self, root: usize) -> impl Iterator<Item = usize> + '_ {
            // In document order a subtree is contiguous: it ends at the first element not under `root`.
            (root + 1..self.elems.len()).take_while(move |&i| self.is_under(i, root))
        }

        pub(super) fn local(&self, i: usize) -> &str {
            self.elems.get(i).map(|e| e.local.as_str()).unwrap_or("")
        }

        /// Direct text of an element, trimmed.
        pub(super) fn text(&self, i: usize) -> &str {
            self.elems.get(i).map(|e| e.text.trim()).unwrap_or("")
        }

        /// The decoded value of attribute `name` (matched on its local name) of element `i`.
        pub(super) fn attr(&self, i: usize, name: &str) -> Option<String> {
            let mut rest = self.elems.get(i)?.attrs.as_str();
            loop {
                rest = rest.trim_start();
                let eq = rest.find('=')?;
                let key = rest[..eq].trim();
                rest = rest[eq + 1..].trim_start();
                let quote = rest.chars().next().filter(|&q| q == '"' || q == '\'')?;
                let body = &rest[1..];
                let end = body.find(quote)?;
                if !key.starts_with("xmlns") && local(key) == name {
                    return Some(decode(&body[..end]));
                }
                rest = &body[end + 1..];
            }
        }

        fn is_under(&self, mut i: usize, root: usize) -> bool {
            while let Some(p) = self.elems.get(i).and_then(|e| e.parent) {
                if p == root {
                    return true;
                }
                i = p;
            }
            false
        }
    }

    fn append_text(elems: &mut [Elem], open: &[usize], raw: &str, entities: bool) {
        if let Some(&i) = open.last() {
            if entities {
                elems[i].text.push_str(&decode(raw));
            } else {
                elems[i].text.push_str(raw);
            }
        }
    }

    /// End of a start tag: the first `>` outside a quoted attribute value.
    fn tag_end(s: &str) -> Option<usize> {
        let mut quote = None;
        for (i, c) in s.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return Some(i),
                _ => {}
            }
        }
        None
    }

    fn local(qname: &str) -> &str {
        qname.rsplit(':').next().unwrap_or("")
    }

    /// Decodes the five predefined entities and numeric character references; anything else stays as written.
    pub(super) fn decode(s: &str) -> String {
        if !s.contains('&') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            rest = &rest[amp..];
            let semi = rest.find(';').filter(|&i| i <= 12);
            let decoded = semi.and_then(|semi| {
                let ent = &rest[1..semi];
                let c = match ent {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => ent
                        .strip_prefix("#x")
                        .or_else(|| ent.strip_prefix("#X"))
                        .map(|h| u32::from_str_radix(h, 16))
                        .or_else(|| ent.strip_prefix('#').map(|d| d.parse::<u32>()))
                        .and_then(|r| r.ok())
                        .and_then(char::from_u32),
                };
                c.map(|c| (c, semi))
            });
            match decoded {
                Some((c, semi)) => {
                    out.push(c);
                    rest = &rest[semi + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> xml::Doc {
        xml::Doc::parse(s)
    }

    /// Expected value computed outside Rust: Python's hashlib over bytes 0..16 ‖ created ‖ password.
    #[test]
    fn password_digest_matches_an_independently_computed_vector() {
        let nonce: Vec<u8> = (0u8..16).collect();
        assert_eq!(BASE64.encode(&nonce), "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(password_digest(&nonce, "2026-11-24T12:00:00Z", "Tr0ub4dor&3"), "nWob7FSAK9DRj3bkKzbkj7LDtCQ=");
    }

    #[test]
    fn security_header_carries_digest_nonce_created_but_never_the_password() {
        let nonce: Vec<u8> = (0u8..16).collect();
        let h = SecurityHeader::new("ad<min", "Tr0ub4dor&3", &nonce, "2026-11-24T12:00:00Z");
        assert!(h.xml.contains("#PasswordDigest\">nWob7FSAK9DRj3bkKzbkj7LDtCQ=</wsse:Password>"), "{}", h.xml);
        assert!(h.xml.contains(">AAECAwQFBgcICQoLDA0ODw==</wsse:Nonce>"));
        assert!(h.xml.contains("<wsu:Created>2026-11-24T12:00:00Z</wsu:Created>"));
        assert!(h.xml.contains("<wsse:Username>ad&lt;min</wsse:Username>"));
        assert!(!h.xml.contains("Tr0ub4dor"));
    }

    #[test]
    fn created_is_whole_second_utc() {
        let t = time::macros::datetime!(2026-11-24 13:00:00.987654 +01:00);
        assert_eq!(created_stamp(t), "2026-11-24T12:00:00Z");
    }

    #[test]
    fn endpoint_debug_masks_the_password() {
        let ep = OnvifEndpoint {
            host: "cam".into(),
            port: 80,
            username: Some("admin".into()),
            password: Some(Secret::new("hunter2-long")),
            profile_token: None,
        };
        let client = PtzClient::new(ep.clone());
        assert!(!format!("{ep:?}").contains("hunter2"));
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    #[test]
    fn get_status_parses_whatever_the_prefixes() {
        let cases = [
            // ONVIF's own prefixes, with a Position block whose PanTilt/Zoom must not be mistaken for MoveStatus.
            r#"<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>
               <tptz:GetStatusResponse><tptz:PTZStatus><tt:Position><tt:PanTilt x="0.1" y="0.2"/>
               <tt:Zoom x="0"/></tt:Position><tt:MoveStatus><tt:PanTilt>MOVING</tt:PanTilt>
               <tt:Zoom>IDLE</tt:Zoom></tt:MoveStatus></tptz:PTZStatus></tptz:GetStatusResponse></env:Body>
               </env:Envelope>"#,
            // Generated prefixes (gSOAP style) and no prefix at all on the inner elements.
            r#"<SOAP-ENV:Envelope><SOAP-ENV:Body><ns5:GetStatusResponse><ns5:PTZStatus><MoveStatus>
               <PanTilt> MOVING </PanTilt><Zoom>IDLE</Zoom></MoveStatus></ns5:PTZStatus></ns5:GetStatusResponse>
               </SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        ];
        for c in cases {
            assert_eq!(
                parse_status(&doc(c)),
                Some(MoveStatus { pan_tilt: MoveState::Moving, zoom: MoveState::Idle }),
                "{c}"
            );
        }
    }

    #[test]
    fn get_status_missing_elements_count_as_idle_and_odd_values_as_unknown() {
        let no_move = "<s:Envelope><s:Body><a:GetStatusResponse><a:PTZStatus><b:Position/></a:PTZStatus>\
                       </a:GetStatusResponse></s:Body></s:Envelope>";
        assert!(parse_status(&doc(no_move)).is_some_and(|s| s.is_idle()));
        let no_zoom = "<GetStatusResponse><PTZStatus><MoveStatus><PanTilt>IDLE</PanTilt></MoveStatus></PTZStatus>\
                       </GetStatusResponse>";
        assert!(parse_status(&doc(no_zoom)).is_some_and(|s| s.is_idle()));
        let bare =
            "<GetStatusResponse><PTZStatus><tt:MoveStatus>MOVING</tt:MoveStatus></PTZStatus></GetStatusResponse>";
        assert_eq!(parse_status(&doc(bare)), Some(MoveStatus { pan_tilt: MoveState::Moving, zoom: MoveState::Moving }));
        let odd = "<GetStatusResponse><MoveStatus><PanTilt>UNKNOWN</PanTilt><Zoom>spinning</Zoom></MoveStatus>\
                   </GetStatusResponse>";
        let st = parse_status(&doc(odd)).expect("a status");
        assert_eq!((st.pan_tilt, st.zoom), (MoveState::Unknown, MoveState::Unknown));
        assert!(!st.is_idle());
    }

    #[test]
    fn garbage_bodies_parse_to_nothing_without_panicking() {
        let bodies = [
            "",
            "<",
            "<<<>>>",
            "</GetStatusResponse>",
            "<html><body>404 Not Found</body></html>",
            "<GetStatusResponse attr=\"unterminated><MoveStatus>",
            "<![CDATA[",
            "<!--",
            "&&&;&#xFFFFFFFF;&#99999999999;&#;<a>&#x1F600;</a>",
            "<a b='>' c=\"x\" d=e f></a>",
            "\u{0}\u{ffff}<é:ü>ö</é:ü>",
        ];
        for b in bodies {
            let d = doc(b);
            let _ = (parse_fault(&d), parse_capabilities(&d), first_profile_token(&d));
            assert_eq!(parse_status(&d), None, "{b:?}");
        }
        // Arbitrary bytes, lossily decoded as a camera reply would be.
        const ALPHABET: &[u8] = b"<>/=:\"'&;#x![CDATA-? aZ\xc3\xa9";
        let mut state = 0x9E37_79B9u32;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    ALPHABET[state as usize % ALPHABET.len()]
                })
                .collect();
            let d = doc(&String::from_utf8_lossy(&bytes));
            let _ = (parse_status(&d), parse_fault(&d), parse_capabilities(&d), first_profile_token(&d));
        }
    }

    #[test]
    fn capabilities_give_ptz_and_media_xaddrs() {
        let body = r#"<env:Envelope><env:Body><tds:GetCapabilitiesResponse><tds:Capabilities>
            <tt:Analytics><tt:XAddr>http://10.0.0.5/onvif/analytics</tt:XAddr></tt:Analytics>
            <tt:Device><tt:XAddr>http://10.0.0.5/onvif/device_service</tt:XAddr></tt:Device>
            <tt:Media><tt:XAddr>http://10.0.0.5/onvif/Media</tt:XAddr><tt:StreamingCapabilities/></tt:Media>
            <tt:PTZ><tt:XAddr> http://10.0.0.5:8899/onvif/PTZ </tt:XAddr></tt:PTZ>
            </tds:Capabilities></tds:GetCapabilitiesResponse></env:Body></env:Envelope>"#;
        let caps = parse_capabilities(&doc(body));
        assert_eq!(caps.ptz.as_deref(), Some("http://10.0.0.5:8899/onvif/PTZ"));
        assert_eq!(caps.media.as_deref(), Some("http://10.0.0.5/onvif/Media"));
        let no_ptz = "<Envelope><Body><GetCapabilitiesResponse><Capabilities><Media><XAddr>http://h/m</XAddr>\
                      </Media></Capabilities></GetCapabilitiesResponse></Body></Envelope>";
        assert_eq!(parse_capabilities(&doc(no_ptz)), Capabilities { ptz: None, media: Some("http://h/m".into()) });
    }

    #[test]
    fn service_urls_keep_the_xaddr_path_but_stay_on_the_configured_camera() {
        let client = PtzClient::new(OnvifEndpoint {
            host: "cam.example".into(),
            port: 8899,
            username: None,
            password: None,
            profile_token: None,
        });
        // A camera behind port forwarding advertises its private address; an evil one another host entirely.
        assert_eq!(
            client.service_url(Some("http://192.168.1.64/onvif/PTZ"), PTZ_PATH),
            "http://cam.example:8899/onvif/PTZ"
        );
        assert_eq!(client.service_url(Some("http://evil.example:80/x?y=1"), PTZ_PATH), "http://cam.example:8899/x?y=1");
        for junk in [None, Some(""), Some("not a url"), Some("ftp://h/p"), Some("http://h")] {
            assert_eq!(client.service_url(junk, PTZ_PATH), "http://cam.example:8899/onvif/ptz_service", "{junk:?}");
        }
        assert_eq!(authority("fe80::1", 80), "[fe80::1]:80");
    }

    #[test]
    fn profiles_give_the_first_token() {
        let body = r#"<s:Envelope><s:Body><trt:GetProfilesResponse>
            <trt:Profiles fixed="true" token="Profile&amp;1"><tt:Name>main</tt:Name>
            <tt:PTZConfiguration token="ptz0"/></trt:Profiles>
            <trt:Profiles token='Profile_2'><tt:Name>sub</tt:Name></trt:Profiles>
            </trt:GetProfilesResponse></s:Body></s:Envelope>"#;
        assert_eq!(first_profile_token(&doc(body)).as_deref(), Some("Profile&1"));
        let none = "<GetProfilesResponse><Profiles fixed=\"true\"/></GetProfilesResponse>";
        assert_eq!(first_profile_token(&doc(none)), None);
    }

    #[test]
    fn faults_are_classified_auth_or_other() {
        let fault = |code: &str, reason: &str| {
            format!(
                "<env:Envelope><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode>\
                 <env:Value>{code}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">\
                 {reason}</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"
            )
        };
        let auth =
            check_reply("cam:80", "GetStatus", 400, &doc(&fault("ter:NotAuthorized", "Sender not authorized")), None);
        assert!(matches!(auth, Err(PtzError::Auth { .. })), "{auth:?}");
        let wsse = check_reply("cam:80", "GetStatus", 500, &doc(&fault("wsse:FailedAuthentication", "no")), None);
        assert!(matches!(wsse, Err(PtzError::Auth { .. })), "{wsse:?}");
        match check_reply("cam:80", "GotoPreset", 500, &doc(&fault("ter:InvalidArgVal", "No &lt;preset&gt;")), None) {
            Err(PtzError::Fault { code, reason, camera, action }) => {
                assert_eq!((code.as_str(), reason.as_str()), ("Sender/InvalidArgVal", "No <preset>"));
                assert_eq!((camera.as_str(), action), ("cam:80", "GotoPreset"));
            }
            other => panic!("{other:?}"),
        }
        let soap11 = "<Envelope><Body><Fault><faultcode>SOAP-ENV:Client</faultcode><faultstring>bad</faultstring>\
                      </Fault></Body></Envelope>";
        assert!(matches!(
            check_reply("c:1", "GetStatus", 500, &doc(soap11), None),
            Err(PtzError::Fault { code, .. }) if code == "Client"
        ));
        assert!(matches!(check_reply("c:1", "GetStatus", 401, &doc(""), None), Err(PtzError::Auth { .. })));
        assert!(matches!(
            check_reply("c:1", "GetStatus", 404, &doc("<html/>"), None),
            Err(PtzError::BadResponse { .. })
        ));
        assert!(check_reply("c:1", "GetStatus", 200, &doc("<x/>"), None).is_ok());
    }

    #[test]
    fn a_fault_echoing_our_digest_or_nonce_does_not_leak_them() {
        let nonce = [7u8; 16];
        let h = SecurityHeader::new("admin", "pw", &nonce, "2026-11-24T12:00:00Z");
        let reason = format!("bad token {} nonce {}\nforged log line", h.digest_b64, h.nonce_b64);
        let body = format!(
            "<Envelope><Body><Fault><faultcode>X</faultcode><faultstring>{reason}</faultstring></Fault></Body>\
             </Envelope>"
        );
        let err = check_reply("c:1", "GetStatus", 500, &doc(&body), Some(&h)).expect_err("a fault");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&h.digest_b64) && !shown.contains(&h.nonce_b64), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn long_camera_text_is_cut() {
        let long = "x".repeat(10_000);
        assert!(bounded(&long).chars().count() <= MAX_DETAIL + 1);
    }

    #[test]
    fn tokens_cannot_inject_xml() {
        assert_eq!(escape("1</tptz:PresetToken><x>&"), "1&lt;/tptz:PresetToken&gt;&lt;x&gt;&amp;");
        assert_eq!(xml::decode(&escape("a<b>&\"'")), "a<b>&\"'");
    }
}
