//! The local status server (`[status]`): read-only HTTP for load balancers, Prometheus and people.
//!
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /readyz`: 200 when the store, the media side and the control plane answer; else 503
//!   with a JSON body naming what is not.
//! - `GET /metrics`: Prometheus text format 0.0.4.
//! - `GET /api/v1/status`: the device at a glance (JSON; `schemas/openapi.yaml`).
//! - `GET /`: the status page for people at the venue ([`page`]); `GET /partial` its live
//!   sections, `GET /thumb/…` thumbnails, `GET /api/v1/events/stream` new events (SSE).
//! - `POST /login`, `/logout`, `/control/{go-live,stop,cut,unpin,slate,clear-overlays}`: the
//!   page's few controls, behind the admin password ([`auth`]); they go through the same
//!   dispatcher and checks as every other command.
//!
//! Apart from the controls it only reads: every figure comes through a handle (the dispatcher, the store's pool, the links'
//! watch) under a timeout, so a slow owner loop makes a request slow or partial, never the show.
//! A bind error is logged and the show goes on without it.
//!
//! Every route answers only to a `Host` this machine knows ([`host`]): an unknown one gets 421
//! before any handler runs, so a web page cannot reach the server by DNS rebinding.

pub mod auth;
pub mod form;
pub mod history;
pub mod host;
pub mod page;
mod web;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::command::dispatch::Dispatcher;
use crate::command::ProgramInfo;
use crate::config::Config;
use crate::control::link::Links;
use crate::media::switcher::Visual;
use crate::segments::library::{Library, VersionRow};
use crate::store::Store;

/// How long any one source may take before a request answers without it.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The Prometheus text exposition format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Shared {
    store: Store,
    data_dir: PathBuf,
    auth: auth::Auth,
    history: history::History,
    /// CPU use of the whole machine, %, from the sampler (`None` until its second sample).
    cpu_percent: Mutex<Option<f64>>,
    cues: web::CueCache,
    /// The last gathering of the page's figures and when (see [`web::gathered`]).
    gathered: tokio::sync::Mutex<Option<(Instant, Arc<page::PageData>)>>,
    /// Event streams open now (at most [`web::MAX_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
    /// Open event streams end when the agent stops (graceful shutdown waits for them).
    stop: CancellationToken,
    dispatcher: Dispatcher,
    library: Library,
    /// `None`: no cloud link is configured.
    links: Option<Links>,
    control_configured: bool,
    device_id: String,
    started: Instant,
}

/// Starts the server when `[status]` is enabled; it stops with `stop`. Bind errors are logged.
pub fn spawn(
    cfg: &Config,
    store: Store,
    dispatcher: Dispatcher,
    links: Option<Links>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !cfg.status.enabled {
        return None;
    }
    let shared = Arc::new(Shared {
        library: Library::new(store.clone(), &cfg.data_dir),
        data_dir: cfg.data_dir.clone(),
        auth: auth::Auth::default(),
        history: history::History::default(),
        cpu_percent: Mutex::new(None),
        cues: Mutex::new(None),
        gathered: tokio::sync::Mutex::new(None),
        streams: Arc::new(tokio::sync::Semaphore::new(web::MAX_STREAMS)),
        stop: stop.clone(),
        store,
        dispatcher,
        links,
        control_configured: cfg.control.mqtt.is_some() || cfg.control.ws.is_some(),
        device_id: cfg.device_id().map(String::from).unwrap_or_default(),
        started: Instant::now(),
    });
    let hosts = Arc::new(host::AllowedHosts::of_this_machine(&cfg.status.allowed_hosts));
    let listen = cfg.status.listen.clone();
    tokio::spawn(web::sample(shared.clone(), stop.clone()));
    Some(tokio::spawn(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("status server: cannot listen on {listen}: {e}; running without it");
                return;
            }
        };
        tracing::info!("status server listening on http://{listen}");
        let app = router(shared, hosts).into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!("status server: {e}");
        }
    }))
}

fn router(shared: Arc<Shared>, hosts: Arc<host::AllowedHosts>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .merge(web::routes())
        .layer(axum::extract::DefaultBodyLimit::max(web::MAX_FORM))
        // Outermost, so an unknown Host is refused before any extractor reads the request.
        .layer(axum::middleware::from_fn_with_state(hosts, host::check))
        .with_state(shared)
}

async fn store_answers(store: &Store) -> bool {
    let q = sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(store.pool());
    matches!(timeout(SOURCE_TIMEOUT, q).await, Ok(Ok(1)))
}

/// The director (the show's owner loop) and the operator programs' task are alive. Read from
/// their channels: a probe never goes through the command path.
async fn media_answers(d: &Dispatcher) -> bool {
    d.alive()
}

/// The running programs (the show's included), from the dispatcher's typed view.
async fn programs(d: &Dispatcher) -> Option<Vec<ProgramInfo>> {
    Some(d.programs_view())
}

async fn outbox(store: &Store) -> Option<(i64, i64)> {
    timeout(SOURCE_TIMEOUT, store.outbox_depth()).await.ok()?.ok()
}

async fn segments(library: &Library) -> Option<Vec<VersionRow>> {
    timeout(SOURCE_TIMEOUT, library.list()).await.ok()?.ok()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let (store, media) = tokio::join!(store_answers(&s.store), media_answers(&s.dispatcher));
    let control = !s.control_configured || s.links.is_some();
    let not_ready: Vec<&str> = [("store", store), ("media", media), ("control", control)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "not_ready": not_ready}))).into_response()
    }
}

/// On air is not what the program wants: a backup camera or the slate stands in.
fn fallback_active(p: &ProgramInfo) -> bool {
    let s = &p.status;
    s.emergency_slate
        || match (&s.wanted_camera, &s.on_air) {
            (Some(want), Visual::Camera(on)) => want != on,
            (Some(_), Visual::Slate) => true,
            (None, _) => false,
        }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let (d, events) = tokio::join!(web::gathered(&s), async {
        timeout(SOURCE_TIMEOUT, s.store.last_event_id()).await.ok().and_then(Result::ok)
    });
    let (programs, outbox, segments) = (&d.program_infos, d.outbox, &d.segments);
    let mut m = Metrics::default();
    m.family("vistter_build_info", "gauge", "The agent's version (always 1).");
    m.sample("vistter_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    m.family("vistter_up", "gauge", "1 while the agent serves.");
    m.sample("vistter_up", &[], 1.0);
    m.family("vistter_uptime_seconds", "gauge", "Seconds since the status server started with the daemon.");
    m.sample("vistter_uptime_seconds", &[], s.started.elapsed().as_secs_f64().floor());
    if let Some((messages, bytes)) = outbox {
        m.family("vistter_outbox_depth", "gauge", "Messages waiting in the cloud outbox.");
        m.sample("vistter_outbox_depth", &[], messages as f64);
        m.family("vistter_outbox_bytes", "gauge", "Bytes waiting in the cloud outbox.");
        m.sample("vistter_outbox_bytes", &[], bytes as f64);
    }
    if let Some(n) = events {
        m.family("vistter_events_total", "counter", "Events recorded in the local event log (its highest id).");
        m.sample("vistter_events_total", &[], n as f64);
    }
    if let Some(segments) = segments {
        m.family("vistter_segments_installed", "gauge", "Installed segment package versions.");
        m.sample("vistter_segments_installed", &[], segments.len() as f64);
    }
    if let Some(programs) = programs {
        let (p, d) = crate::command::view::figures(programs);
        m.family("vistter_programs", "gauge", "Running programs (the show's included).");
        m.sample("vistter_programs", &[], programs.len() as f64);
        m.family("vistter_program_fps", "gauge", "Frames per second of program time since the program started.");
        for x in &p {
            m.sample("vistter_program_fps", &[("program", x.id.as_str())], x.fps);
        }
        m.family("vistter_program_dropped_frames_total", "counter", "Frames the program's encoder could not take.");
        for x in &p {
            m.sample("vistter_program_dropped_frames_total", &[("program", x.id.as_str())], x.dropped_frames as f64);
        }
        m.family("vistter_fallback_active", "gauge", "1 while a backup camera or the slate stands in on a program.");
        for info in programs {
            let v = if fallback_active(info) { 1.0 } else { 0.0 };
            m.sample("vistter_fallback_active", &[("program", info.status.id.as_str())], v);
        }
        m.family("vistter_destination_up", "gauge", "1 while a program's push to a destination is running.");
        for x in &d {
            let v = if x.state == crate::ffmpeg::job::Phase::Running { 1.0 } else { 0.0 };
            m.sample(
                "vistter_destination_up",
                &[("destination", x.id.as_str()), ("program", x.program_id.as_str())],
                v,
            );
        }
    }
    if let Some(programs) = programs {
        m.family("vistter_ingest_frame_age_seconds", "gauge", "Age of a program camera's newest frame.");
        for info in programs {
            for c in &info.status.cameras {
                if let Some(ms) = c.frame_age_ms {
                    let labels = [("camera", c.camera.as_str()), ("program", info.status.id.as_str())];
                    m.sample("vistter_ingest_frame_age_seconds", &labels, ms as f64 / 1000.0);
                }
            }
        }
        m.family(
            "vistter_ffmpeg_restarts_total",
            "counter",
            "FFmpeg restarts of the running programs' jobs, by role (camera ingest, encoder, pusher).",
        );
        let (mut camera, mut encoder, mut pusher) = (0u64, 0u64, 0u64);
        for info in programs {
            let st = &info.status;
            camera += st.cameras.iter().map(|c| c.ingest.starts.saturating_sub(1)).sum::<u64>();
            encoder += st.encoder.starts.saturating_sub(1);
            pusher += st.outputs.iter().map(|o| o.job.starts.saturating_sub(1)).sum::<u64>();
        }
        for (role, n) in [("camera", camera), ("encoder", encoder), ("pusher", pusher)] {
            m.sample("vistter_ffmpeg_restarts_total", &[("role", role)], n as f64);
        }
    }
    if let Some(show) = s.dispatcher.director().watch().borrow().status() {
        let l = &show.lateness;
        let t = [("timeline", show.timeline_id.as_str())];
        m.family("vistter_cues_total", "counter", "Cues the playing show has put on air.");
        m.sample("vistter_cues_total", &t, l.cues as f64);
        m.family("vistter_cues_late_total", "counter", "Cues that went on air more than one frame late.");
        m.sample("vistter_cues_late_total", &t, l.late_over_1_frame as f64);
        m.family("vistter_cue_lateness_max_seconds", "gauge", "The largest cue lateness of the playing show.");
        m.sample("vistter_cue_lateness_max_seconds", &t, l.max_ms / 1000.0);
        m.family("vistter_cue_lateness_mean_seconds", "gauge", "Mean cue lateness of the playing show.");
        m.sample("vistter_cue_lateness_mean_seconds", &t, l.mean_ms / 1000.0);
    }
    m.family(
        "vistter_commands_total",
        "counter",
        "Commands answered since start, by type and result (ok, or the refusal's code); every origin.",
    );
    for ((ty, result), n) in s.dispatcher.command_counts() {
        m.sample("vistter_commands_total", &[("type", ty), ("result", result)], n as f64);
    }
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], m.out).into_response()
}

/// The cloud links as the status API shows them.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum CloudLinks {
    /// Link → its state.
    Links(std::collections::BTreeMap<&'static str, String>),
    /// `"not configured"`.
    None(&'static str),
}

#[derive(serde::Serialize)]
struct OutboxDepth {
    messages: i64,
    bytes: i64,
}

/// A schedule as the status API summarises it.
#[derive(serde::Serialize)]
struct ScheduleSummary {
    id: String,
    name: String,
    enabled: bool,
    timezone: String,
    days_of_week: Vec<crate::timeline::schedule::Weekday>,
    window_start: crate::timeline::schedule::LocalTime,
    window_end: crate::timeline::schedule::LocalTime,
}

/// `GET /api/v1/status` (schema: `schemas/openapi.yaml`), built as a type and serialised once.
#[derive(serde::Serialize)]
struct StatusBody<'a> {
    device_id: &'a str,
    agent_version: &'static str,
    uptime_s: u64,
    cloud_links: CloudLinks,
    cloud_last_contact_s: Option<std::collections::BTreeMap<&'static str, f64>>,
    outbox: Option<OutboxDepth>,
    show: &'a Option<page::ShowView>,
    programs: Option<Vec<crate::command::view::ProgramFigures>>,
    cameras: &'a [page::CameraRow],
    destinations: Option<Vec<crate::command::view::DestinationFigures>>,
    segments: &'a Option<Vec<crate::segments::library::VersionRow>>,
    schedules: Option<Vec<ScheduleSummary>>,
    recent_events: Vec<&'a crate::store::events::Event>,
    system: &'a crate::control::telemetry::System,
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let d = web::gathered(&s).await;
    let (programs, destinations) = match &d.program_infos {
        Some(list) => {
            let (p, d) = crate::command::view::figures(list);
            (Some(p), Some(d))
        }
        None => (None, None),
    };
    let body = StatusBody {
        device_id: &s.device_id,
        agent_version: env!("CARGO_PKG_VERSION"),
        uptime_s: s.started.elapsed().as_secs(),
        cloud_links: match &s.links {
            Some(l) => CloudLinks::Links(l.snapshot()),
            None => CloudLinks::None("not configured"),
        },
        cloud_last_contact_s: s.links.as_ref().map(|l| l.last_contact_s()),
        outbox: d.outbox.map(|(messages, bytes)| OutboxDepth { messages, bytes }),
        show: &d.show,
        programs,
        cameras: &d.cameras,
        destinations,
        segments: &d.segments,
        schedules: d.schedules.as_ref().map(|v| {
            v.iter()
                .map(|s| ScheduleSummary {
                    id: s.id.to_string(),
                    name: s.name.clone(),
                    enabled: s.enabled,
                    timezone: s.timezone.clone(),
                    days_of_week: s.days_of_week.clone(),
                    window_start: s.window_start,
                    window_end: s.window_end,
                })
                .collect()
        }),
        recent_events: d.events.iter().rev().take(10).collect(),
        system: &d.system,
    };
    Json(body).into_response()
}

/// Prometheus text format 0.0.4, written as it goes.
#[derive(Default)]
struct Metrics {
    out: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
            let _ = write!(self.out, "{{{}}}", l.join(","));
        }
        let v = if value.is_nan() {
            "NaN".to_string()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        } else {
            value.to_string()
        };
        let _ = writeln!(self.out, " {v}");
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut m = Metrics::default();
        m.family("x", "gauge", "a\\b\nc");
        m.sample("x", &[("destination", "a\"b\\c\nd")], 1.5);
        m.sample("x", &[], f64::NAN);
        assert_eq!(m.out, "# HELP x a\\\\b\\nc\n# TYPE x gauge\nx{destination=\"a\\\"b\\\\c\\nd\"} 1.5\nx NaN\n");
    }
}
