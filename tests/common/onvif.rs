//! `FakeOnvif`: an ONVIF PTZ camera on 127.0.0.1, in-process (axum), for testing the real client over real HTTP.
//!
//! It is strict where cameras are strict: every request must be a SOAP envelope with a known action on the right
//! service path, and (when a username is configured) a WS-Security UsernameToken whose PasswordDigest it
//! recomputes from the Nonce and Created it received and the password it knows, with a fresh nonce and a Created
//! within 5 minutes of its clock. A bad digest gets HTTP 400 with a `ter:NotAuthorized` fault, as the ONVIF core
//! spec prescribes. Moves take `move_duration` of real time (`std::time::Instant`: the fake runs beside the real
//! client, not under a paused clock). Every request and move is recorded for the test to assert on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

const DEVICE: &str = "/onvif/device_service";
const PTZ: &str = "/onvif/ptz_service";
const MEDIA: &str = "/onvif/media_service";
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
    /// The one media profile's token; requests naming another get a `ter:NoProfile` fault.
    pub profile_token: String,
}

impl Default for FakeOnvifOptions {
    fn default() -> Self {
        FakeOnvifOptions {
            username: "admin".into(),
            password: "c4m-Pa55word!".into(),
            move_duration: Duration::from_secs(2),
            presets: vec!["1".into(), "2".into(), "dock".into()],
            profile_token: "Profile_000".into(),
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
    let auth_ok = opts.username.is_empty() || check_auth(&elems, opts, &mut rec.nonces);
    rec.requests.push(OnvifRequest {
        path: path.clone(),
        action: action.clone(),
        profile_token: profile_token.clone(),
        preset_token: preset_token.clone(),
        auth_ok,
        has_security,
        at: now,
    });

    let soap = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !soap.starts_with("application/soap+xml") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "SOAP 1.2 expected").into_response();
    }
    if !elems.iter().any(|e| e.local == "Envelope") || action.is_empty() {
        return fault(StatusCode::BAD_REQUEST, "env:Sender", "ter:WellFormed", "not a SOAP envelope");
    }
    if !auth_ok {
        return fault(StatusCode::BAD_REQUEST, "env:Sender", "ter:NotAuthorized", "Sender not Authorized");
    }
    let wrong_profile = profile_token.as_deref() != Some(opts.profile_token.as_str());
    match (path.as_str(), action.as_str()) {
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
        (MEDIA, "GetProfiles") => ok(&format!(
            "<trt:GetProfilesResponse><trt:Profiles fixed=\"true\" token=\"{}\"><tt:Name>mainStream</tt:Name>\
             <tt:PTZConfiguration token=\"PTZToken\"><tt:Name>PTZ</tt:Name></tt:PTZConfiguration>\
             </trt:Profiles></trt:GetProfilesResponse>",
            escape(&opts.profile_token)
        )),
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
    let skew = (jiff::Timestamp::now().as_second() - stamp.as_second()).abs();
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
