//! The status page's routes: the page and its live sections, thumbnails, the event stream (SSE),
//! login and the controls. Rendering is in [`super::page`], sessions in [`super::auth`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::Stream;
use serde_json::Value;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::auth::{self, Flash, Login};
use super::page::{self, CameraRow, Controls, DestinationRow, PageData, ShowView};
use super::{outbox, programs, segments, Shared, SOURCE_TIMEOUT};
use crate::command::{Command, ProgramInfo, Reply};
use crate::control::telemetry;
use crate::events::sentence;
use crate::media::switcher::Visual;
use crate::timeline::actor::Origin;

/// The largest form body a control or login may send.
pub const MAX_FORM: usize = 16 * 1024;
/// How many event streams may be open at once (a page each).
pub const MAX_STREAMS: usize = 16;
/// How often an event stream looks for new events.
const EVENT_POLL: Duration = Duration::from_millis(500);
/// How long a control may take (a go-live's pre-flight probes cameras).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(index))
        .route("/partial", get(partial))
        .route("/static/page.css", get(|| async { asset("text/css; charset=utf-8", page::CSS) }))
        .route("/static/page.js", get(|| async { asset("text/javascript; charset=utf-8", page::JS) }))
        .route("/thumb/:program/program.jpg", get(program_thumb))
        .route("/thumb/:program/camera/:file", get(camera_thumb))
        .route("/api/v1/events/stream", get(events_stream))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/control/:action", post(control))
}

/// Samples the graphs and the CPU every [`super::history::SAMPLE_EVERY`] until `stop`.
pub(super) async fn sample(s: Arc<Shared>, stop: CancellationToken) {
    let mut cpu = telemetry::CpuSampler::default();
    let mut tick = tokio::time::interval(super::history::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(p) = programs(&s.dispatcher).await {
            s.history.sample(&p);
        }
        let c = cpu.sample();
        *s.cpu_percent.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// An HTML response with the page's security headers: no framing, no inline script, no caching.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    auth::session_cookie(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()))
}

/// A form post from another site is refused: its `Origin` (or `Sec-Fetch-Site`) must be this
/// page's. Requests without either header (scripts, old browsers) still need the CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    // `Origin: null` (a privacy setting, a sandboxed frame) says nothing: Sec-Fetch-Site decides.
    if let Some(origin) = headers.get(header::ORIGIN).filter(|o| o.as_bytes() != b"null") {
        let Ok(origin) = origin.to_str() else { return false };
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        return authority.is_some() && authority == host;
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

use super::form::{field, ControlError};

async fn timed<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    timeout(SOURCE_TIMEOUT, f).await.ok()?.ok()
}

/// Whether an admin password is set (`None`: the store did not answer). A changed or removed
/// password ends every session.
async fn password_set(s: &Shared) -> Option<bool> {
    let p = timed(s.store.admin_password()).await?;
    s.auth.password_is(p.as_deref());
    Some(p.is_some())
}

async fn controls(s: &Shared, headers: &HeaderMap, note: Option<String>) -> Controls {
    match password_set(s).await {
        Some(true) => {}
        _ => return Controls::Off,
    }
    let v = s.auth.visitor(cookie(headers));
    match v.csrf {
        Some(csrf) => Controls::LoggedIn { csrf, flash: v.flash },
        None => Controls::LoggedOut { note },
    }
}

async fn index(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (data, controls) = tokio::join!(gathered(&s), controls(&s, &headers, None));
    html(StatusCode::OK, page::page(&data, &controls))
}

async fn partial(State(s): State<Arc<Shared>>) -> Response {
    html(StatusCode::OK, page::partial(&*gathered(&s).await))
}

fn jpeg(j: Option<Arc<Vec<u8>>>) -> Response {
    match j {
        Some(j) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], j.to_vec()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no thumbnail yet\n").into_response(),
    }
}

/// A thumbnail: encoded off the server's threads, and for a camera not on air its first snapshot
/// waited for (see `Dispatcher::thumbnail_waiting`).
async fn thumbnail(s: &Shared, program: String, name: String) -> Response {
    jpeg(s.dispatcher.thumbnail_waiting(program, name).await)
}

async fn program_thumb(State(s): State<Arc<Shared>>, Path(program): Path<String>) -> Response {
    thumbnail(&s, program, "program".into()).await
}

async fn camera_thumb(State(s): State<Arc<Shared>>, Path((program, file)): Path<(String, String)>) -> Response {
    match file.strip_suffix(".jpg").filter(|c| !c.is_empty() && *c != "program") {
        Some(camera) => thumbnail(&s, program, camera.to_string()).await,
        None => (StatusCode::NOT_FOUND, "no such thumbnail\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct After {
    after: Option<i64>,
}

/// New events as they are recorded (`event: event`, data: the event as JSON with its
/// `local_time` and `sentence`), from `after` (or from now). Ends when the agent stops; at most [`MAX_STREAMS`] at once.
async fn events_stream(State(s): State<Arc<Shared>>, Query(q): Query<After>) -> Response {
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams are open\n").into_response();
    };
    let after = match q.after {
        Some(a) => a.max(0),
        None => timed(s.store.last_event_id()).await.unwrap_or(0),
    };
    let state = (s, after, VecDeque::<crate::store::events::Event>::new(), permit);
    let zone = sentence::box_zone();
    let stream = futures_util::stream::unfold(state, move |(s, mut after, mut queue, permit)| {
        let zone = zone.clone();
        async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    let told = Told {
                        local_time: sentence::local_time(&e.at, &zone, jiff::Timestamp::now()),
                        sentence: sentence::sentence(&e),
                        event: &e,
                    };
                    let data = serde_json::to_string(&told).unwrap_or_default();
                    let ev = SseEvent::default().event("event").id(e.id.to_string()).data(data);
                    return Some((Ok::<_, Infallible>(ev), (s, after, queue, permit)));
                }
                tokio::select! {
                    _ = s.stop.cancelled() => return None,
                    _ = tokio::time::sleep(EVENT_POLL) => {}
                }
                if let Some(v) = timed(s.store.events_after(after, 100)).await {
                    if let Some(last) = v.last() {
                        after = last.id;
                    }
                    queue.extend(v);
                }
            }
        }
    });
    sse(stream)
}

/// An event on the event stream: the event, with its time and sentence as the page shows them.
#[derive(serde::Serialize)]
struct Told<'a> {
    #[serde(flatten)]
    event: &'a crate::store::events::Event,
    local_time: String,
    sentence: String,
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    let mut r = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn login(
    State(s): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    let phc = match timeout(SOURCE_TIMEOUT, s.store.admin_password()).await {
        Ok(Ok(p)) => p,
        _ => return (StatusCode::SERVICE_UNAVAILABLE, "the store did not answer; try again\n").into_response(),
    };
    let password = field(&form, "password").unwrap_or_default();
    let (status, note, retry) = match s.auth.login(addr.ip(), password, phc).await {
        Login::Ok(token) => {
            tracing::info!(client = %addr.ip(), "status page: admin logged in");
            let c = format!(
                "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_MAX.as_secs()
            );
            let mut r = Redirect::to("/#controls").into_response();
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
        Login::Wrong => {
            tracing::warn!(client = %addr.ip(), "status page: wrong admin password");
            (StatusCode::UNAUTHORIZED, "Wrong password.".to_string(), None)
        }
        Login::Locked(wait) => {
            let secs = wait.as_secs() + 1;
            (StatusCode::TOO_MANY_REQUESTS, format!("Too many wrong passwords: try again in {secs} s."), Some(secs))
        }
        Login::Off => (StatusCode::FORBIDDEN, String::new(), None),
    };
    let (data, controls) = tokio::join!(gathered(&s), controls(&s, &headers, Some(note)));
    let mut r = html(status, page::page(&data, &controls));
    if let Some(secs) = retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

async fn logout(State(s): State<Arc<Shared>>, headers: HeaderMap, Form(form): Form<Vec<(String, String)>>) -> Response {
    if same_origin(&headers) && s.auth.allowed(cookie(&headers), field(&form, "csrf").unwrap_or_default()) {
        s.auth.logout(cookie(&headers));
    }
    let mut r = Redirect::to("/").into_response();
    let c = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A control from the page: a logged-in session, its CSRF token, then the same command types,
/// checks and dispatcher as the CLI and the cloud, as the local operator.
async fn control(
    State(s): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    match password_set(&s).await {
        Some(true) => {}
        Some(false) => {
            return (StatusCode::FORBIDDEN, "controls are off: no admin password is set\n").into_response();
        }
        None => return (StatusCode::SERVICE_UNAVAILABLE, "the store did not answer; try again\n").into_response(),
    }
    let c = cookie(&headers);
    if !s.auth.allowed(c, field(&form, "csrf").unwrap_or_default()) {
        return (StatusCode::FORBIDDEN, "log in first (or reload the page: the form had expired)\n").into_response();
    }
    let cmd = match control_command(&s, &action, &form).await {
        Ok(cmd) => cmd,
        Err(ControlError::Unknown) => return (StatusCode::NOT_FOUND, "no such control\n").into_response(),
        Err(ControlError::Refused(r)) => {
            s.auth.flash(c, Flash { ok: false, message: format!("{action}: {r}") });
            return Redirect::to("/#controls").into_response();
        }
    };
    tracing::info!(control = %action, command = cmd.type_name(), "status page control");
    let flash = match timeout(CONTROL_TIMEOUT, s.dispatcher.dispatch(Origin::Operator, cmd)).await {
        Ok(Reply::Done { .. }) => Flash { ok: true, message: format!("{action}: done") },
        Ok(Reply::Refused { refusal }) => Flash { ok: false, message: format!("{action}: {refusal}") },
        Err(_) => {
            Flash { ok: false, message: format!("{action}: still running after {} s", CONTROL_TIMEOUT.as_secs()) }
        }
    };
    s.auth.flash(c, flash);
    Redirect::to("/#controls").into_response()
}

/// The command a control stands for, read through the same typed front door as a socket line.
async fn control_command(s: &Shared, action: &str, form: &[(String, String)]) -> Result<Command, ControlError> {
    let enabled: Vec<String> = if super::form::needs_enabled(action, form) {
        let all = timed(s.store.destinations()).await.unwrap_or_default();
        all.into_iter().filter(|d| d.enabled).map(|d| d.id.to_string()).collect()
    } else {
        Vec::new()
    };
    super::form::command(action, form, &enabled)
}

/// The stored timeline's cues, kept while its row is unchanged (`loaded_at`).
pub(super) struct CueList {
    id: String,
    loaded_at: String,
    name: String,
    duration_s: Option<f64>,
    looping: bool,
    /// (cue id, start s), by start.
    cues: Vec<(String, f64)>,
}

async fn cue_list(s: &Shared, id: &str) -> Option<Arc<CueList>> {
    let timeline_id = crate::values::TimelineId::new(id).ok()?;
    let loaded_at = timed(s.store.timeline_loaded_at(&timeline_id)).await??;
    {
        let c = s.cues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = c.as_ref().filter(|c| c.id == id && c.loaded_at == loaded_at) {
            return Some(c.clone());
        }
    }
    let row = timed(s.store.timeline(&timeline_id)).await?;
    let doc: Value = serde_json::from_str(&row.json).ok()?;
    let mut cues: Vec<(String, f64)> = doc["tracks"]["video"]["cues"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| Some((c["id"].as_str()?.to_string(), c["start_time"].as_f64()?))).collect())
        .unwrap_or_default();
    cues.sort_by(|a, b| a.1.total_cmp(&b.1));
    let list = Arc::new(CueList {
        id: id.to_string(),
        loaded_at,
        name: row.name,
        duration_s: doc["duration"].as_f64(),
        looping: doc["loop"].as_bool().unwrap_or(false),
        cues,
    });
    *s.cues.lock().unwrap_or_else(|e| e.into_inner()) = Some(list.clone());
    Some(list)
}

fn next_cue(list: &CueList, current: Option<&str>) -> Option<(String, f64)> {
    let i = list.cues.iter().position(|c| Some(c.0.as_str()) == current)?;
    match list.cues.get(i + 1) {
        Some(n) => Some(n.clone()),
        None if list.looping => list.cues.first().cloned(),
        None => None,
    }
}

fn phase(p: &crate::ffmpeg::job::Phase) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn job_error(j: &crate::ffmpeg::job::JobStatus) -> Option<String> {
    if j.phase == crate::ffmpeg::job::Phase::Running {
        return None;
    }
    j.permanent_error.clone().or_else(|| j.last_error.clone())
}

/// How long one gathering serves every request (many clients at once cost one gathering).
pub(super) const GATHER_TTL: Duration = Duration::from_millis(250);

/// [`gather`], shared: requests within [`GATHER_TTL`] of the last gathering get its result, and
/// concurrent requests wait for one gathering instead of each making their own.
pub(super) async fn gathered(s: &Shared) -> Arc<PageData> {
    let mut last = s.gathered.lock().await;
    if let Some((at, d)) = last.as_ref() {
        if at.elapsed() < GATHER_TTL {
            return d.clone();
        }
    }
    let d = Arc::new(gather(s).await);
    *last = Some((tokio::time::Instant::now(), d.clone()));
    d
}

/// Everything the page shows, each source under [`SOURCE_TIMEOUT`].
async fn gather(s: &Shared) -> PageData {
    let (programs, outbox, segments, events, schedules, timelines, destinations) = tokio::join!(
        programs(&s.dispatcher),
        outbox(&s.store),
        segments(&s.library),
        timed(s.store.events(None, 30)),
        timed(s.store.schedules()),
        timed(s.store.timeline_names()),
        timed(s.store.destinations()),
    );
    let view = s.dispatcher.director().watch().borrow().clone();
    let show = match (view.desired.as_ref(), view.status()) {
        (Some(desired), Some(st)) => {
            let list = cue_list(s, st.timeline_id.as_str()).await;
            let current = st.engine.video_cue.as_ref().map(ToString::to_string);
            Some(ShowView {
                timeline_name: list.as_ref().map(|l| l.name.clone()),
                state: format!("{:?}", st.engine.state).to_lowercase(),
                position_s: st.engine.position_s,
                duration_s: list.as_ref().and_then(|l| l.duration_s),
                loop_index: st.engine.loop_index,
                next_cue: list.as_ref().and_then(|l| next_cue(l, current.as_deref())),
                current_cue: current,
                overlays: st.engine.overlays.iter().map(ToString::to_string).collect(),
                pinned: st.engine.pinned.as_ref().map(ToString::to_string),
                emergency_slate: st.emergency_slate,
                late_cues: st.lateness.late_over_1_frame,
                cues: st.lateness.cues,
                destinations: desired.destinations.iter().map(ToString::to_string).collect(),
                timeline_id: st.timeline_id.to_string(),
            })
        }
        _ => None,
    };
    let now = s.history.now();
    let mut cameras = Vec::new();
    let mut dests = Vec::new();
    for info in programs.iter().flatten() {
        let st = &info.status;
        for c in &st.cameras {
            let fps = c.ingest.progress.as_ref().and_then(|p| match (p.frame, p.out_time_us) {
                (Some(f), Some(us)) if us > 0 => Some(f as f64 * 1e6 / us as f64),
                _ => None,
            });
            cameras.push(CameraRow {
                id: c.camera.to_string(),
                program: st.id.to_string(),
                health: phase(&c.ingest.phase),
                frame_age_ms: c.frame_age_ms,
                fps,
                on_air: st.on_air == Visual::Camera(c.camera.clone()),
                error: job_error(&c.ingest),
            });
        }
        for o in &st.outputs {
            let key = (st.id.to_string(), o.destination.to_string());
            dests.push(DestinationRow {
                id: o.destination.to_string(),
                program: Some(st.id.to_string()),
                state: phase(&o.job.phase),
                bitrate_kbps: o.job.progress.as_ref().and_then(|p| p.bitrate_kbps),
                uptime_s: s.history.uptime(&key),
                reconnects: o.job.starts.saturating_sub(1),
                error: job_error(&o.job),
            });
        }
    }
    for d in destinations.iter().flatten() {
        if !dests.iter().any(|x| x.id == d.id.as_str()) {
            dests.push(DestinationRow {
                id: d.id.to_string(),
                program: None,
                state: if d.enabled { "idle" } else { "disabled" }.into(),
                bitrate_kbps: None,
                uptime_s: None,
                reconnects: 0,
                error: None,
            });
        }
    }
    let cpu = *s.cpu_percent.lock().unwrap_or_else(|e| e.into_inner());
    let system = telemetry::System::now(cpu, &s.data_dir);
    PageData {
        device_id: if s.device_id.is_empty() { "vistter-agent".into() } else { s.device_id.clone() },
        agent_version: env!("CARGO_PKG_VERSION"),
        uptime_s: s.started.elapsed().as_secs(),
        show,
        programs: programs.as_ref().map(|p| p.iter().map(|i: &ProgramInfo| i.status.id.to_string()).collect()),
        program_infos: programs,
        cameras,
        destinations: dests,
        graphs: s.history.snapshot(),
        now,
        cloud: s.links.as_ref().map(|l| l.snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        cloud_contact: s
            .links
            .as_ref()
            .map(|l| l.last_contact_s().into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            .unwrap_or_default(),
        control_configured: s.control_configured,
        outbox,
        segments,
        // Stored schedules were checked when they were saved.
        schedules: schedules.map(|v| v.into_iter().filter_map(|(_, j)| serde_json::from_str(&j).ok()).collect()),
        timelines: timelines.unwrap_or_default(),
        events: events.unwrap_or_default(),
        zone: sentence::box_zone(),
        wall_now: jiff::Timestamp::now(),
        system,
    }
}

/// The last timeline's cue list, shared by requests.
pub(super) type CueCache = Mutex<Option<Arc<CueList>>>;
