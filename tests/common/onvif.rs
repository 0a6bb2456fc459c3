//! `FakeOnvif`: an ONVIF PTZ camera on 127.0.0.1, in-process (axum), for testing the real client over real HTTP.
//!
//! It is strict where cameras are strict: every request must be a SOAP envelope with a known action on the right
//! service path. Authentication is what the options ask for, checked for real:
//! - WS-Security (`require_wsse`, the default when a username is set): a UsernameToken whose PasswordDigest it
//!   recomputes from the Nonce and Created it received and the password it knows, with a fresh nonce and a
//!   Created within 5 minutes of *its* clock (`clock_offset_s` from ours: a camera that never saw NTP). A bad
//!   one gets HTTP 400 with a `ter:NotAuthorized` fault, as the ONVIF core spec prescribes.
//! - HTTP Digest (`digest`: MD5 or SHA-256, `qop="auth"`): a request without a valid `Authorization` gets 401
//!   with a challenge carrying a fresh nonce; the response is recomputed independently (md-5/sha2 here, the
//!   client uses the `digest_auth` crate), the uri must be the request's, `nc` must rise on each use of a nonce,
//!   and after `nonce_uses` requests the nonce is refused with `stale=true`.
//! - Both, in that order (HTTP first), like cameras whose web server and ONVIF stack each check; and
//!   `reject_wsse_with_digest` for a camera that takes Digest and refuses any WS-Security header.
//!
//! `GetSystemDateAndTime` needs no authentication (ONVIF requires that) and answers in the camera's clock.
//! `GetSnapshotUri` points at `/snapshot.jpg` on the same port, guarded by Digest, Basic or nothing
//! (`snapshot_auth`). Moves take `move_duration` of real time (`std::time::Instant`: the fake runs beside the real
//! client, not under a paused clock). Every request and move is recorded for the test to assert on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use md5::Md5;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;

const DEVICE: &str = "/onvif/device_service";
const PTZ: &str = "/onvif/ptz_service";
const MEDIA: &str = "/onvif/media_service";
const SNAPSHOT: &str = "/snapshot.jpg";
const REALM: &str = "IP Camera(FAKE1)";
/// How far a request's Created may be from the camera's clock (cameras use a few seconds to minutes).
const CREATED_WINDOW_S: i64 = 300;

#[derive(Clone, Debug)]
pub struct FakeOnvifOptions {
    /// Empty: authentication off (any or no security header is accepted).
    pub username: String,
    pub password: String,
    /// How long a GotoPreset keeps the camera MOVING.
    pub move_duration: Duration,
    /// Known preset tokens; any other gets a `ter:NoToken` fault.
    pub presets: Vec<String>,
    /// The PTZ media profile's token; PTZ requests naming another get a `ter:NoProfile` fault.
    pub profile_token: String,
    /// Profiles without PTZ listed before the PTZ one (a camera whose first profile cannot move).
    pub non_ptz_profiles: Vec<String>,
    /// Require a WS-Security UsernameToken (with a username set).
    pub require_wsse: bool,
    /// Require HTTP Digest with this algorithm (with a username set).
    pub digest: Option<DigestAlg>,
    /// Refuse a Digest-authenticated request that also carries WS-Security.
    pub reject_wsse_with_digest: bool,
    /// Requests one Digest nonce is good for before it is refused as `stale`.
    pub nonce_uses: u32,
    /// The camera's clock minus ours, in seconds.
    pub clock_offset_s: i64,
    /// GetSystemDateAndTime says our time while WS-Security is checked against `clock_offset_s` (broken
    /// firmware: no client can get the timestamp right).
    pub misreports_clock: bool,
    /// The main profile has a PTZ configuration (false: a fixed camera).
    pub ptz: bool,
    /// The HTTP status of a WS-Security refusal: 400 as the ONVIF core spec says, 401 as some cameras send
    /// (without a challenge).
    pub wsse_refusal_status: u16,
    /// How `/snapshot.jpg` is guarded.
    pub snapshot_auth: SnapshotAuth,
    /// What `/snapshot.jpg` serves.
    pub snapshot: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlg {
    Md5,
    Sha256,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAuth {
    None,
    Basic,
    /// With the camera's Digest algorithm (MD5 when it has none).
    Digest,
}

/// A tiny but real JPEG (SOI, APP0, EOI): what a camera's snapshot starts and ends like.
pub const FAKE_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
    0x00, 0xFF, 0xD9,
];

impl Default for FakeOnvifOptions {
    fn default() -> Self {
        FakeOnvifOptions {
            username: "admin".into(),
            password: "c4m-Pa55word!".into(),
            move_duration: Duration::from_secs(2),
            presets: vec!["1".into(), "2".into(), "dock".into()],
            profile_token: "Profile_000".into(),
            non_ptz_profiles: Vec::new(),
            require_wsse: true,
            digest: None,
            reject_wsse_with_digest: false,
            nonce_uses: u32::MAX,
            clock_offset_s: 0,
            misreports_clock: false,
            ptz: true,
            wsse_refusal_status: 400,
            snapshot_auth: SnapshotAuth::Digest,
            snapshot: FAKE_JPEG.to_vec(),
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct OnvifRequest {
    /// The service path it was posted to.
    pub path: String,
    /// Local name of the Body's first element (`GotoPreset`), empty if there was none.
    pub action: String,
    pub profile_token: Option<String>,
    pub preset_token: Option<String>,
    /// The credentials checked out (always true with authentication off).
    pub auth_ok: bool,
    /// A wsse:Security header was present at all.
    pub has_security: bool,
    /// An `Authorization` header was present, and its scheme (`Digest`, `Basic`).
    pub http_auth: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    pub at: Instant,
}

/// A fake ONVIF camera at http://127.0.0.1:port/onvif/…; stops on drop.
pub struct FakeOnvif {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Shared {
    opts: FakeOnvifOptions,
    port: u16,
    state: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    requests: Vec<OnvifRequest>,
    moves: Vec<(String, Instant, Instant)>,
    /// Nonces already used: a replayed request is refused, as careful cameras do.
    nonces: HashSet<String>,
    /// Digest nonces issued: uses so far and the highest nc seen.
    digest_nonces: std::collections::HashMap<String, (u32, u32)>,
    /// Every raw header and body received, for tests that look for a leaked secret.
    raw: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeOnvif {
    pub async fn start(opts: FakeOnvifOptions) -> FakeOnvif {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared { opts, port, state: Mutex::new(Recorded::default()) });
        let app = Router::new()
            .route(DEVICE, post(handle))
            .route(PTZ, post(handle))
            .route(MEDIA, post(handle))
            .route(SNAPSHOT, get(snapshot))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeOnvif { port, shared, stop: Some(stop) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn requests(&self) -> Vec<OnvifRequest> {
        self.shared.lock().requests.clone()
    }

    /// (preset, start, end) of every move; a move cut short by the next GotoPreset ends when that one came.
    pub fn moves(&self) -> Vec<(String, Instant, Instant)> {
        self.shared.lock().moves.clone()
    }

    /// The actions received, in order.
    pub fn actions(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.action).collect()
    }

    /// The actions received, without the clock reads (`GetSystemDateAndTime`) the client makes first.
    pub fn ptz_actions(&self) -> Vec<String> {
        self.actions().into_iter().filter(|a| a != "GetSystemDateAndTime").collect()
    }

    /// Every header and body the camera received, as text.
    pub fn raw(&self) -> String {
        self.shared.lock().raw.join("\n")
    }
}

impl Drop for FakeOnvif {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let now = Instant::now();
    let path = uri.path().to_string();
    let target = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| path.clone());
    let elems = elements(&body);
    let action = elems
        .iter()
        .position(|e| e.local == "Body")
        .and_then(|b| elems.get(b + 1))
        .map(|e| e.local.clone())
        .unwrap_or_default();
    let text_of = |local: &str| elems.iter().find(|e| e.local == local).map(|e| e.text.clone());
    let profile_token = text_of("ProfileToken");
    let preset_token = text_of("PresetToken");
    let has_security = elems.iter().any(|e| e.local == "Security");

    let opts = &shared.opts;
    let mut rec = shared.lock();
    rec.raw.push(format!("{headers:?}\n{body}"));
    let auth_on = !opts.username.is_empty();
    // ONVIF lets anyone read the clock: a client needs it before it can sign anything.
    let open = action == "GetSystemDateAndTime";
    let digest = match opts.digest {
        Some(alg) if auth_on && !open => check_digest(&headers, "POST", &target, opts, alg, &mut rec.digest_nonces),
        _ => DigestCheck::Ok,
    };
    let wsse_ok = digest != DigestCheck::Ok
        || !auth_on
        || open
        || !opts.require_wsse
        || check_auth(&elems, opts, &mut rec.nonces);
    let refuses_both = auth_on && !open && opts.digest.is_some() && opts.reject_wsse_with_digest && has_security;
    let auth_ok = digest == DigestCheck::Ok && wsse_ok && !refuses_both;
    rec.requests.push(OnvifRequest {
        path: path.clone(),
        action: action.clone(),
        profile_token: profile_token.clone(),
        preset_token: preset_token.clone(),
        auth_ok,
        has_security,
        http_auth: http_auth_scheme(&headers),
        status: 0,
        at: now,
    });
    let resp = answer(&shared, &mut rec, now, &headers, &path, &action, &elems, digest, auth_ok);
    if let Some(r) = rec.requests.last_mut() {
        r.status = resp.status().as_u16();
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn answer(
    shared: &Shared,
    rec: &mut Recorded,
    now: Instant,
    headers: &HeaderMap,
    path: &str,
    action: &str,
    elems: &[Elem],
    digest: DigestCheck,
    auth_ok: bool,
) -> Response {
    let opts = &shared.opts;
    let text_of = |local: &str| elems.iter().find(|e| e.local == local).map(|e| e.text.clone());
    let profile_token = text_of("ProfileToken");
    let preset_token = text_of("PresetToken");
    let soap = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !soap.starts_with("application/soap+xml") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "SOAP 1.2 expected").into_response();
    }
    if !elems.iter().any(|e| e.local == "Envelope") || action.is_empty() {
        return fault(StatusCode::BAD_REQUEST, "env:Sender", "ter:WellFormed", "not a SOAP envelope");
    }
    if digest != DigestCheck::Ok {
        return challenge(opts, rec, digest == DigestCheck::Stale);
    }
    if !auth_ok {
        let status = StatusCode::from_u16(opts.wsse_refusal_status).unwrap_or(StatusCode::BAD_REQUEST);
        return fault(status, "env:Sender", "ter:NotAuthorized", "Sender not Authorized");
    }
    let wrong_profile = profile_token.as_deref() != Some(opts.profile_token.as_str());
    match (path, action) {
        (DEVICE, "GetSystemDateAndTime") => {
            let t = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(if opts.misreports_clock {
                    0
                } else {
                    opts.clock_offset_s
                }))
                .expect("a clock offset within range")
                .to_zoned(jiff::tz::TimeZone::UTC);
            ok(&system_date_and_time(&t, "Manual"))
        }
        (DEVICE, "GetCapabilities") => {
            let base = format!("http://127.0.0.1:{}", shared.port);
            ok(&format!(
                "<tds:GetCapabilitiesResponse><tds:Capabilities>\
                 <tt:Device><tt:XAddr>{base}{DEVICE}</tt:XAddr></tt:Device>\
                 <tt:Media><tt:XAddr>{base}{MEDIA}</tt:XAddr><tt:StreamingCapabilities>\
                 <tt:RTPMulticast>false</tt:RTPMulticast></tt:StreamingCapabilities></tt:Media>\
                 <tt:PTZ><tt:XAddr>{base}{PTZ}</tt:XAddr></tt:PTZ>\
                 </tds:Capabilities></tds:GetCapabilitiesResponse>"
            ))
        }
        (MEDIA, "GetProfiles") => {
            let mut profiles = String::new();
            for t in &opts.non_ptz_profiles {
                profiles.push_str(&format!(
                    "<trt:Profiles fixed=\"true\" token=\"{}\"><tt:Name>subStream</tt:Name>\
                     <tt:VideoEncoderConfiguration token=\"v{0}\"><tt:Resolution><tt:Width>640</tt:Width>\
                     <tt:Height>360</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>",
                    escape(t)
                ));
            }
            profiles.push_str(&format!(
                "<trt:Profiles fixed=\"true\" token=\"{}\"><tt:Name>mainStream</tt:Name>\
                 <tt:VideoEncoderConfiguration token=\"vmain\"><tt:Resolution><tt:Width>1920</tt:Width>\
                 <tt:Height>1080</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration>\
                 {}</trt:Profiles>",
                escape(&opts.profile_token),
                if opts.ptz {
                    "<tt:PTZConfiguration token=\"PTZToken\"><tt:Name>PTZ</tt:Name></tt:PTZConfiguration>"
                } else {
                    ""
                }
            ));
            ok(&format!("<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"))
        }
        (MEDIA, "GetSnapshotUri") => {
            let known =
                profile_token.as_ref().is_some_and(|t| *t == opts.profile_token || opts.non_ptz_profiles.contains(t));
            if !known {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "env:Sender",
                    "ter:NoProfile",
                    "The requested profile does not exist",
                );
            }
            ok(&format!(
                "<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>http://127.0.0.1:{}{SNAPSHOT}</tt:Uri>\
                 <tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false\
                 </tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>",
                shared.port
            ))
        }
        (PTZ, "GotoPreset" | "GetStatus") if wrong_profile => {
            fault(StatusCode::BAD_REQUEST, "env:Sender", "ter:NoProfile", "The requested profile does not exist")
        }
        (PTZ, "GotoPreset") => {
            let Some(preset) = preset_token.filter(|p| opts.presets.contains(p)) else {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "env:Sender",
                    "ter:NoToken",
                    "The requested preset does not exist",
                );
            };
            // A new move cuts the one in progress short.
            if let Some(last) = rec.moves.last_mut() {
                if last.2 > now {
                    last.2 = now;
                }
            }
            rec.moves.push((preset, now, now + opts.move_duration));
            ok("<tptz:GotoPresetResponse/>")
        }
        (PTZ, "GetStatus") => {
            let moving = rec.moves.last().is_some_and(|m| now < m.2);
            let state = if moving { "MOVING" } else { "IDLE" };
            let utc = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
            ok(&format!(
                "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>\
                 <tt:PanTilt x=\"0.5\" y=\"0.1\"/><tt:Zoom x=\"0.2\"/>\
                 </tt:Position><tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>{state}</tt:Zoom>\
                 </tt:MoveStatus><tt:UtcTime>{utc}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
            ))
        }
        _ => {
            fault(StatusCode::BAD_REQUEST, "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented")
        }
    }
}

/// `GET /snapshot.jpg`, guarded as `snapshot_auth` says.
async fn snapshot(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let opts = &shared.opts;
    let target = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let mut rec = shared.lock();
    rec.raw.push(format!("{headers:?}"));
    let auth_on = !opts.username.is_empty();
    let alg = opts.digest.unwrap_or(DigestAlg::Md5);
    let check = match opts.snapshot_auth {
        _ if !auth_on => DigestCheck::Ok,
        SnapshotAuth::None => DigestCheck::Ok,
        SnapshotAuth::Digest => check_digest(&headers, "GET", &target, opts, alg, &mut rec.digest_nonces),
        SnapshotAuth::Basic => {
            let want = format!("Basic {}", BASE64.encode(format!("{}:{}", opts.username, opts.password)));
            let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if got == Some(want.as_str()) {
                DigestCheck::Ok
            } else {
                DigestCheck::Refused
            }
        }
    };
    let resp = match (check, opts.snapshot_auth) {
        (DigestCheck::Ok, _) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "image/jpeg")], opts.snapshot.clone()).into_response()
        }
        (_, SnapshotAuth::Basic) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\""))],
            "<html><body>401 Unauthorized</body></html>",
        )
            .into_response(),
        (c, _) => challenge_with(alg, &mut rec.digest_nonces, c == DigestCheck::Stale),
    };
    rec.requests.push(OnvifRequest {
        path: SNAPSHOT.into(),
        action: "snapshot".into(),
        profile_token: None,
        preset_token: None,
        auth_ok: check == DigestCheck::Ok,
        has_security: false,
        http_auth: http_auth_scheme(&headers),
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}

fn http_auth_scheme(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(v.split_whitespace().next().unwrap_or("").to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DigestCheck {
    Ok,
    /// Missing, malformed or wrong.
    Refused,
    /// Right, but on a nonce that has been used up.
    Stale,
}

/// A 401 with a Digest challenge on a new nonce.
fn challenge(opts: &FakeOnvifOptions, rec: &mut Recorded, stale: bool) -> Response {
    challenge_with(opts.digest.unwrap_or(DigestAlg::Md5), &mut rec.digest_nonces, stale)
}

fn challenge_with(alg: DigestAlg, nonces: &mut std::collections::HashMap<String, (u32, u32)>, stale: bool) -> Response {
    let nonce = format!("{:032x}", rand::random::<u128>());
    nonces.insert(nonce.clone(), (0, 0));
    let alg = match alg {
        DigestAlg::Md5 => "MD5",
        DigestAlg::Sha256 => "SHA-256",
    };
    let stale = if stale { ", stale=true" } else { "" };
    let value =
        format!("Digest realm=\"{REALM}\", qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\", opaque=\"0a1b2c\"{stale}");
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)], "<html><body>401 Unauthorized</body></html>")
        .into_response()
}

/// Checks an `Authorization: Digest` header the way RFC 7616 says a server does, computing independently.
fn check_digest(
    headers: &HeaderMap,
    method: &str,
    target: &str,
    opts: &FakeOnvifOptions,
    alg: DigestAlg,
    nonces: &mut std::collections::HashMap<String, (u32, u32)>,
) -> DigestCheck {
    let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return DigestCheck::Refused;
    };
    let Some(rest) = v.strip_prefix("Digest ") else { return DigestCheck::Refused };
    let params = auth_params(rest);
    let p = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response), Some(qop), Some(nc), Some(cnonce)) =
        (p("username"), p("realm"), p("nonce"), p("uri"), p("response"), p("qop"), p("nc"), p("cnonce"))
    else {
        return DigestCheck::Refused;
    };
    let alg_name = match alg {
        DigestAlg::Md5 => "MD5",
        DigestAlg::Sha256 => "SHA-256",
    };
    let Ok(nc_n) = u32::from_str_radix(nc, 16) else { return DigestCheck::Refused };
    if user != opts.username
        || realm != REALM
        || uri != target
        || qop != "auth"
        || cnonce.is_empty()
        || p("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case(alg_name))
    {
        return DigestCheck::Refused;
    }
    let h = |s: String| match alg {
        DigestAlg::Md5 => hex::encode(Md5::digest(s.as_bytes())),
        DigestAlg::Sha256 => hex::encode(Sha256::digest(s.as_bytes())),
    };
    let ha1 = h(format!("{user}:{realm}:{}", opts.password));
    let ha2 = h(format!("{method}:{uri}"));
    if h(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")) != response {
        return DigestCheck::Refused;
    }
    let Some((uses, last_nc)) = nonces.get_mut(nonce) else { return DigestCheck::Refused };
    if *uses >= opts.nonce_uses {
        return DigestCheck::Stale;
    }
    // A replayed (or out-of-order) nc is refused, as RFC 7616 lets a server do.
    if nc_n <= *last_nc {
        return DigestCheck::Refused;
    }
    *uses += 1;
    *last_nc = nc_n;
    DigestCheck::Ok
}

/// `k=v, k="quoted, with \"escapes\""` pairs of an Authorization header (the client's; well-formed).
pub fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
}

/// The UsernameToken checks a careful camera makes. False on anything missing, stale, replayed or wrong.
fn check_auth(elems: &[Elem], opts: &FakeOnvifOptions, seen: &mut HashSet<String>) -> bool {
    let find = |local: &str| elems.iter().find(|e| e.local == local);
    let (Some(user), Some(pw), Some(nonce), Some(created)) =
        (find("Username"), find("Password"), find("Nonce"), find("Created"))
    else {
        return false;
    };
    if user.text != opts.username || !pw.attr("Type").is_some_and(|t| t.ends_with("#PasswordDigest")) {
        return false;
    }
    let Ok(nonce_bytes) = BASE64.decode(nonce.text.trim()) else { return false };
    let Ok(stamp) = created.text.trim().parse::<jiff::Timestamp>() else { return false };
    let skew = (jiff::Timestamp::now().as_second() + opts.clock_offset_s - stamp.as_second()).abs();
    if nonce_bytes.len() != 16 || skew > CREATED_WINDOW_S {
        return false;
    }
    let mut h = Sha1::new();
    h.update(&nonce_bytes);
    h.update(created.text.trim().as_bytes());
    h.update(opts.password.as_bytes());
    if BASE64.encode(h.finalize()) != pw.text.trim() {
        return false;
    }
    // Only a request that passed every other check spends its nonce.
    seen.insert(nonce.text.trim().to_string())
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:tt=\"http://www.onvif.org/ver10/schema\" xmlns:tds=\"http://www.onvif.org/ver10/device/wsdl\" \
         xmlns:trt=\"http://www.onvif.org/ver10/media/wsdl\" xmlns:tptz=\"http://www.onvif.org/ver20/ptz/wsdl\" \
         xmlns:ter=\"http://www.onvif.org/ver10/error\"><env:Body>{body}</env:Body></env:Envelope>"
    )
}

fn ok(body: &str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")], envelope(body)).into_response()
}

fn fault(status: StatusCode, code: &str, subcode: &str, reason: &str) -> Response {
    let body = format!(
        "<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>{subcode}</env:Value>\
         </env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason></env:Fault>"
    );
    (status, [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")], envelope(&body)).into_response()
}

/// One start tag of a request: local name, raw attributes, and the text right after it.
#[derive(Debug)]
struct Elem {
    local: String,
    attrs: String,
    text: String,
}

impl Elem {
    fn attr(&self, name: &str) -> Option<String> {
        let at = self.attrs.find(&format!("{name}=\""))? + name.len() + 2;
        let len = self.attrs[at..].find('"')?;
        Some(unescape(&self.attrs[at..at + len]))
    }
}

/// The start tags of a request in document order. Enough for the well-formed XML a client sends; the fake
/// does not have to survive hostile input, the client does.
fn elements(body: &str) -> Vec<Elem> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with(['/', '?', '!']) {
            continue;
        }
        let tag = tag.strip_suffix('/').unwrap_or(tag);
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let local = tag[..name_end].rsplit(':').next().unwrap_or("").to_string();
        let text = unescape(&rest[..rest.find('<').unwrap_or(rest.len())]);
        out.push(Elem { local, attrs: tag[name_end..].to_string(), text });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The body of a GetSystemDateAndTime answer saying `t` (UTC); `kind` is `Manual` or `NTP`.
pub fn system_date_and_time(t: &jiff::Zoned, kind: &str) -> String {
    format!(
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>{kind}</tt:DateTimeType>\
         <tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour>\
         <tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{}</tt:Year>\
         <tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime>\
         </tds:GetSystemDateAndTimeResponse>",
        t.hour(),
        t.minute(),
        t.second(),
        t.year(),
        t.month(),
        t.day()
    )
}
