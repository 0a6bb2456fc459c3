//! SOAP for ONVIF: the WS-Security header, turning a reply into Ok or the error it means, and
//! reading the few replies the client uses (faults, capabilities, profiles, move status).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use super::xml;
use super::{MoveState, MoveStatus, PtzError};

/// Longest piece of camera-supplied text (fault reason) that goes into an error.
pub(super) const MAX_DETAIL: usize = 200;
/// A wall clock before this year has not been set (no RTC, no NTP yet); cameras reject the resulting
/// `Created` stamps, so an auth failure says so.
const CLOCK_FLOOR_YEAR: i32 = 2024;

const WSSE_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const WSSE_BASE64: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// The WS-Security header of one request. Debug is deliberately not derived: it holds the digest and nonce,
/// which (with Created) can be replayed against cameras that do not remember nonces.
pub(super) struct SecurityHeader {
    pub(super) xml: String,
    pub(super) nonce_b64: String,
    pub(super) digest_b64: String,
}

impl SecurityHeader {
    pub(super) fn new(user: &str, password: &str, nonce: &[u8], created: &str) -> SecurityHeader {
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
    pub(super) fn scrub(&self, text: &str) -> String {
        text.replace(&self.digest_b64, "***").replace(&self.nonce_b64, "***")
    }
}

/// WS-Security UsernameToken PasswordDigest: base64(SHA-1(nonce ‖ created ‖ password)).
pub(super) fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    BASE64.encode(h.finalize())
}

/// `Created` as whole-second RFC 3339 UTC (`2026-11-24T12:00:00Z`): some cameras reject fractional seconds.
pub(super) fn created_stamp(t: time::OffsetDateTime) -> String {
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
pub(super) fn check_reply(
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
pub(super) fn auth_detail(reason: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    if now.year() < CLOCK_FLOOR_YEAR {
        format!("{reason}; this device's clock reads {}, which cameras reject: is NTP synced?", created_stamp(now))
    } else {
        reason.to_string()
    }
}

/// A SOAP 1.2 (or 1.1) fault: code values joined by `/`, local names only (`Sender/NotAuthorized`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) code: String,
    pub(super) reason: String,
}

impl Fault {
    pub(super) fn is_auth(&self) -> bool {
        // ONVIF's ter:NotAuthorized, and WS-Security's own wsse:FailedAuthentication some stacks send instead.
        self.code.split('/').any(|c| c == "NotAuthorized" || c == "FailedAuthentication")
    }
}

pub(super) fn parse_fault(doc: &xml::Doc) -> Option<Fault> {
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
pub(super) struct Capabilities {
    pub(super) ptz: Option<String>,
    pub(super) media: Option<String>,
}

/// `Capabilities/PTZ/XAddr` and `Capabilities/Media/XAddr` of a GetCapabilities reply.
pub(super) fn parse_capabilities(doc: &xml::Doc) -> Capabilities {
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

/// One media profile of a GetProfiles reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Profile {
    pub(super) token: String,
    /// It has a `PTZConfiguration`: PTZ requests may name it.
    pub(super) ptz: bool,
    /// Width × height of its video encoder, when it says: snapshots ask the smallest profile.
    pub(super) pixels: Option<u64>,
}

/// The profiles of a GetProfiles reply that have a token, in the camera's order.
pub(super) fn profiles(doc: &xml::Doc) -> Vec<Profile> {
    let Some(resp) = doc.find("GetProfilesResponse") else { return Vec::new() };
    doc.descendants(resp)
        .filter(|&i| doc.local(i) == "Profiles")
        .filter_map(|i| {
            let token = doc.attr(i, "token").filter(|t| !t.trim().is_empty())?;
            let pixels =
                doc.child(i, "VideoEncoderConfiguration").and_then(|v| doc.child(v, "Resolution")).and_then(|r| {
                    let dim = |n: &str| doc.child(r, n).and_then(|x| doc.text(x).trim().parse::<u32>().ok());
                    Some(u64::from(dim("Width")?) * u64::from(dim("Height")?))
                });
            Some(Profile { token, ptz: doc.child(i, "PTZConfiguration").is_some(), pixels })
        })
        .collect()
}

/// `MediaUri/Uri` of a GetSnapshotUri reply.
pub(super) fn parse_snapshot_uri(doc: &xml::Doc) -> Option<String> {
    let resp = doc.find("GetSnapshotUriResponse")?;
    let media = doc.descendants(resp).find(|&i| doc.local(i) == "MediaUri")?;
    doc.child(media, "Uri").map(|u| doc.text(u).trim().to_string()).filter(|u| !u.is_empty())
}

/// The camera's UTC clock from a GetSystemDateAndTime reply (`SystemDateAndTime/UTCDateTime/{Date,Time}`).
/// None when it is missing or not a real date (cameras without a set clock send zeros).
pub(super) fn parse_system_time(doc: &xml::Doc) -> Option<time::OffsetDateTime> {
    let resp = doc.find("GetSystemDateAndTimeResponse")?;
    let utc = doc.descendants(resp).find(|&i| doc.local(i) == "UTCDateTime")?;
    let num = |parent: &str, name: &str| -> Option<i64> {
        let p = doc.child(utc, parent)?;
        doc.text(doc.child(p, name)?).trim().parse::<i64>().ok()
    };
    let month = time::Month::try_from(u8::try_from(num("Date", "Month")?).ok()?).ok()?;
    let year = i32::try_from(num("Date", "Year")?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(num("Date", "Day")?).ok()?).ok()?;
    let t = time::Time::from_hms(
        u8::try_from(num("Time", "Hour")?).ok()?,
        u8::try_from(num("Time", "Minute")?).ok()?,
        // A leap second (60) reads as 59.
        u8::try_from(num("Time", "Second")?.min(59)).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// `PTZStatus/MoveStatus/{PanTilt,Zoom}` of a GetStatus reply; None if it is not one. A missing MoveStatus or
/// axis element counts as idle (cameras that cannot tell omit it); so does ONVIF 1.x's bare
/// `<MoveStatus>IDLE</MoveStatus>`, which applies to both.
pub(super) fn parse_status(doc: &xml::Doc) -> Option<MoveStatus> {
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

pub(super) fn move_state(s: &str) -> MoveState {
    match s.trim() {
        s if s.eq_ignore_ascii_case("IDLE") => MoveState::Idle,
        s if s.eq_ignore_ascii_case("MOVING") => MoveState::Moving,
        _ => MoveState::Unknown,
    }
}

/// `ter:NotAuthorized` → `NotAuthorized`.
pub(super) fn local_name(qname: &str) -> &str {
    qname.trim().rsplit(':').next().unwrap_or("")
}

/// `host:port`, bracketing IPv6 literals.
pub(super) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Camera-supplied text fit for an error: at most [`MAX_DETAIL`] characters, control characters (which could
/// forge log lines) replaced.
pub(super) fn bounded(s: &str) -> String {
    let mut out: String = s.trim().chars().take(MAX_DETAIL).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.trim().chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// Escapes text for an XML element body, so a preset or profile token cannot rewrite the request.
pub(super) fn escape(s: &str) -> String {
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
