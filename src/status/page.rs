//! The status page: server-rendered HTML, a stylesheet and a little plain JavaScript, all served by
//! the agent itself (no build step, no CDN: it works with no internet and on a phone).
//!
//! The script only refreshes: the program thumbnail each second, the live sections every two
//! seconds (`/partial`, rendered here too), and the event list from `/api/v1/events/stream` (SSE).
//! Every value shown is escaped; the page's Content-Security-Policy allows no inline script.
//!
//! Events read as sentences in the box's local time ([`crate::events::sentence`], the same words
//! as the CLI's), each with its JSON one click away. A camera that is down or whose picture is
//! older than [`STALE_AFTER_MS`] shows its last picture greyed, with its age. The layout is one
//! column on a phone, and the destinations table becomes one card per destination there, so
//! nothing scrolls sideways at 390 px.

use std::fmt::Write as _;

use super::auth::{Flash, MIN_PASSWORD};
use super::history::{svg, Point};
use crate::events::sentence;
use crate::store::events::Event;

/// A camera picture older than this (ms) is shown as a last picture, greyed, with its age.
pub const STALE_AFTER_MS: u64 = 2000;

/// HTML-escapes text for an element's content or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A percent-encoded path segment (ids are already restricted, this keeps the URL honest).
fn seg(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("–".to_string(), |v| v.to_string())
}

fn duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A state word with its colour class: good, warn or bad.
fn badge(state: &str) -> String {
    let class = match state {
        "running" | "connected" | "live" | "playing" | "ok" | "on air" => "good",
        "starting" | "connecting" | "reconnecting" | "paused" | "idle" | "stopped" | "off air" => "warn",
        _ => "bad",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(state))
}

#[derive(serde::Serialize)]
pub struct ShowView {
    pub timeline_id: String,
    pub timeline_name: Option<String>,
    pub state: String,
    pub position_s: f64,
    pub duration_s: Option<f64>,
    pub loop_index: u64,
    pub current_cue: Option<String>,
    pub next_cue: Option<(String, f64)>,
    pub overlays: Vec<String>,
    pub pinned: Option<String>,
    pub emergency_slate: bool,
    pub late_cues: u64,
    pub cues: u64,
    pub destinations: Vec<String>,
}

#[derive(serde::Serialize)]
pub struct CameraRow {
    pub id: String,
    pub program: String,
    pub health: String,
    pub frame_age_ms: Option<u64>,
    pub fps: Option<f64>,
    pub on_air: bool,
    pub error: Option<String>,
}

pub struct DestinationRow {
    pub id: String,
    pub program: Option<String>,
    pub state: String,
    pub bitrate_kbps: Option<f64>,
    pub uptime_s: Option<f64>,
    pub reconnects: u64,
    pub error: Option<String>,
}

/// Everything the page shows, gathered by the server with a timeout per source (`None`: that
/// source did not answer in time).
pub struct PageData {
    pub device_id: String,
    pub agent_version: &'static str,
    pub uptime_s: u64,
    pub show: Option<ShowView>,
    /// The programs' ids (the show's is `show`), for the thumbnail and the controls.
    pub programs: Option<Vec<String>>,
    /// The running programs as the dispatcher reported them (`None`: not in time).
    pub program_infos: Option<Vec<crate::command::ProgramInfo>>,
    pub cameras: Vec<CameraRow>,
    pub destinations: Vec<DestinationRow>,
    pub graphs: Vec<((String, String), Vec<Point>)>,
    pub now: f64,
    pub cloud: Option<Vec<(String, String)>>,
    /// Seconds since each transport last heard from the cloud.
    pub cloud_contact: Vec<(String, f64)>,
    pub control_configured: bool,
    pub outbox: Option<(i64, i64)>,
    pub segments: Option<Vec<crate::segments::library::VersionRow>>,
    pub schedules: Option<Vec<crate::timeline::schedule::Schedule>>,
    pub timelines: Vec<(String, String)>,
    pub events: Vec<Event>,
    /// The box's time zone and the wall clock now: the events' times are shown in it.
    pub zone: jiff::tz::TimeZone,
    pub wall_now: jiff::Timestamp,
    pub system: crate::control::telemetry::System,
}

/// What the visitor may do.
pub enum Controls {
    /// No admin password is set.
    Off,
    /// `note`: why the last login failed.
    LoggedOut {
        note: Option<String>,
    },
    LoggedIn {
        csrf: String,
        flash: Option<Flash>,
    },
}

pub fn page(d: &PageData, controls: &Controls) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let on_air = d.programs.as_ref().is_some_and(|p| !p.is_empty());
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{id} · vistter-agent</title><link rel=\"stylesheet\" href=\"/static/page.css\">\
         <script src=\"/static/page.js\" defer></script></head><body>\
         <header><h1>{id}</h1><span id=\"air\">{air}</span>\
         <small>vistter-agent {v}</small></header><main>",
        id = esc(&d.device_id),
        air = badge(if on_air { "on air" } else { "off air" }),
        v = esc(d.agent_version),
    );
    let thumb = d.programs.as_ref().and_then(|p| p.first()).map(String::as_str);
    let _ = write!(h, "<section class=\"card wide\" id=\"onair\"><h2>On air now</h2>");
    match thumb {
        Some(p) => {
            let _ = write!(
                h,
                "<img id=\"program-thumb\" class=\"thumb big\" alt=\"program picture\" \
                 src=\"/thumb/{p}/program.jpg\" data-program=\"{p}\">",
                p = seg(p)
            );
        }
        None => h.push_str("<p class=\"muted\" id=\"program-thumb-none\">Nothing is on air.</p>"),
    }
    h.push_str("</section><div id=\"live\">");
    live(&mut h, d);
    h.push_str("</div>");
    events(&mut h, d);
    controls_html(&mut h, d, controls);
    h.push_str("</main></body></html>");
    h
}

/// The sections the script refreshes every two seconds.
pub fn partial(d: &PageData) -> String {
    let mut h = String::with_capacity(8 * 1024);
    live(&mut h, d);
    h
}

fn live(h: &mut String, d: &PageData) {
    // Timeline.
    h.push_str("<section class=\"card\" id=\"timeline\"><h2>Timeline</h2>");
    match &d.show {
        Some(s) => {
            let name = s.timeline_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&s.timeline_id);
            let _ = write!(h, "<p><b id=\"timeline-name\">{}</b> {}", esc(name), badge(&s.state));
            if s.emergency_slate {
                h.push_str(" <span class=\"badge bad\">emergency slate</span>");
            }
            h.push_str("</p>");
            if let Some(total) = s.duration_s.filter(|t| *t > 0.0) {
                let _ = write!(
                    h,
                    "<progress max=\"{total:.1}\" value=\"{p:.1}\"></progress><p class=\"muted\">{} of {} · loop {}</p>",
                    duration(s.position_s),
                    duration(total),
                    s.loop_index + 1,
                    p = s.position_s.min(total),
                );
            }
            let _ = write!(
                h,
                "<dl><dt>Current cue</dt><dd id=\"current-cue\">{}</dd><dt>Next cue</dt><dd id=\"next-cue\">{}</dd>",
                esc(s.current_cue.as_deref().unwrap_or("–")),
                s.next_cue.as_ref().map_or("–".to_string(), |(c, at)| format!("{} at {}", esc(c), duration(*at))),
            );
            if let Some(p) = &s.pinned {
                let _ = write!(h, "<dt>Pinned</dt><dd>{}</dd>", esc(p));
            }
            if !s.overlays.is_empty() {
                let _ = write!(h, "<dt>Overlays</dt><dd>{}</dd>", esc(&s.overlays.join(", ")));
            }
            let _ = write!(
                h,
                "<dt>Cues late</dt><dd>{} of {}</dd><dt>Destinations</dt><dd>{}</dd></dl>",
                s.late_cues,
                s.cues,
                esc(&s.destinations.join(", "))
            );
        }
        None => h.push_str("<p class=\"muted\">No show is playing.</p>"),
    }
    h.push_str("</section>");

    // Cameras.
    h.push_str("<section class=\"card\" id=\"cameras\"><h2>Cameras</h2>");
    if d.cameras.is_empty() {
        h.push_str("<p class=\"muted\">No camera is in use.</p>");
    } else {
        h.push_str("<ul class=\"tiles\">");
        for c in &d.cameras {
            camera_tile(h, c, d.now);
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>");

    // Destinations, with their graphs.
    h.push_str("<section class=\"card wide\" id=\"destinations\"><h2>Destinations</h2>");
    if d.destinations.is_empty() {
        h.push_str("<p class=\"muted\">No destination is configured.</p>");
    } else {
        h.push_str(
            "<table class=\"cards\"><thead><tr><th>Destination</th><th>State</th><th>Bitrate</th><th>Uptime</th>\
             <th>Reconnects</th></tr></thead><tbody>",
        );
        for x in &d.destinations {
            let _ = write!(
                h,
                "<tr data-destination=\"{id}\"><td>{id}{prog}</td><td data-label=\"State\">{state}{err}</td>\
                 <td data-label=\"Bitrate\">{br}</td><td data-label=\"Uptime\">{up}</td>\
                 <td data-label=\"Reconnects\">{rc}</td></tr>",
                id = esc(&x.id),
                prog = x.program.as_ref().map_or(String::new(), |p| format!(" <small>({})</small>", esc(p))),
                state = badge(&x.state),
                err =
                    x.error.as_ref().map_or(String::new(), |e| format!("<br><small class=\"err\">{}</small>", esc(e))),
                br = x.bitrate_kbps.map_or("–".to_string(), |b| format!("{b:.0} kbit/s")),
                up = x.uptime_s.map_or("–".to_string(), duration),
                rc = x.reconnects,
            );
        }
        h.push_str("</tbody></table>");
    }
    if !d.graphs.is_empty() {
        h.push_str("<h3>Up to the last hour</h3><div class=\"graphs\">");
        for ((program, dest), points) in &d.graphs {
            let series = |f: fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
                points.iter().filter_map(|p| Some((p.t, f(p)?))).collect()
            };
            let _ = write!(
                h,
                "<div class=\"graphset\" data-destination=\"{}\"><h4>{} <small>({})</small></h4>",
                esc(dest),
                esc(dest),
                esc(program)
            );
            h.push_str(&svg("bitrate", "kbit/s", d.now, &series(|p| p.bitrate_kbps)));
            h.push_str(&svg("fps", "fps", d.now, &series(|p| p.fps)));
            h.push_str(&svg("dropped frames", "per 5 s", d.now, &series(|p| p.dropped)));
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");

    // Cloud link.
    h.push_str("<section class=\"card\" id=\"cloud\"><h2>Cloud link</h2>");
    match &d.cloud {
        Some(links) if d.control_configured => {
            h.push_str("<dl>");
            for (t, state) in links {
                let heard = d
                    .cloud_contact
                    .iter()
                    .find(|(k, _)| k == t)
                    .map_or("never".to_string(), |(_, s)| format!("{} ago", duration(*s)));
                let _ = write!(
                    h,
                    "<dt>{}</dt><dd>{} <small>last contact {}</small></dd>",
                    esc(t),
                    badge(state),
                    esc(&heard)
                );
            }
            if let Some((n, bytes)) = d.outbox {
                let _ =
                    write!(h, "<dt>Outbox</dt><dd id=\"outbox\">{n} messages ({:.1} kB)</dd>", bytes as f64 / 1000.0);
            }
            h.push_str("</dl>");
        }
        _ => h.push_str("<p class=\"muted\">Not configured: the appliance runs on its own.</p>"),
    }
    h.push_str("</section>");

    // Segments and schedules.
    h.push_str("<section class=\"card\" id=\"segments\"><h2>Segments</h2>");
    match &d.segments {
        Some(v) if !v.is_empty() => {
            h.push_str("<ul>");
            for s in v {
                let _ = write!(
                    h,
                    "<li>{} v{} <small>{} · {:.1} MB · {}</small>{}</li>",
                    esc(s.segment_id.as_str()),
                    s.version,
                    esc(&s.timeline_id),
                    s.bytes as f64 / 1e6,
                    esc(&s.source),
                    if s.active { " <span class=\"badge good\">active</span>" } else { "" }
                );
            }
            h.push_str("</ul>");
        }
        Some(_) => h.push_str("<p class=\"muted\">None installed.</p>"),
        None => h.push_str("<p class=\"muted\">Not available.</p>"),
    }
    h.push_str("</section><section class=\"card\" id=\"schedules\"><h2>Schedules</h2>");
    match &d.schedules {
        Some(v) if !v.is_empty() => {
            h.push_str("<ul>");
            for s in v {
                let days: Vec<&str> = s.days_of_week.iter().map(|d| d.as_str()).collect();
                let timelines: Vec<&str> = s.timelines.iter().map(|t| t.as_str()).collect();
                let _ = write!(
                    h,
                    "<li><b>{}</b>{} <small>{} {}–{} {} · {}</small></li>",
                    esc(if s.name.is_empty() { s.id.as_str() } else { &s.name }),
                    if s.enabled { "" } else { " <span class=\"badge warn\">disabled</span>" },
                    esc(&days.join(" ")),
                    s.window_start,
                    s.window_end,
                    esc(&s.timezone),
                    esc(&timelines.join(", ")),
                );
            }
            h.push_str("</ul>");
        }
        Some(_) => h.push_str("<p class=\"muted\">None.</p>"),
        None => h.push_str("<p class=\"muted\">Not available.</p>"),
    }
    h.push_str("</section>");

    // System.
    let sys = &d.system;
    let mem_used = match (sys.memory.total_kb, sys.memory.available_kb) {
        (Some(t), Some(a)) if t > 0 => {
            let (t, a) = (t as f64, a as f64);
            Some(format!("{:.0}% of {:.1} GB", (t - a) / t * 100.0, t / 1e6))
        }
        _ => None,
    };
    let disk = match (sys.disk.free_bytes, sys.disk.total_bytes) {
        (Some(f), Some(t)) if t > 0 => Some(format!("{:.1} GB free of {:.1} GB", f as f64 / 1e9, t as f64 / 1e9)),
        _ => None,
    };
    let _ = write!(
        h,
        "<section class=\"card\" id=\"system\"><h2>System</h2><dl><dt>CPU</dt><dd>{}</dd><dt>Memory</dt><dd>{}</dd>\
         <dt>Agent memory</dt><dd>{}</dd><dt>Temperature</dt><dd>{}</dd><dt>Disk</dt><dd>{}</dd><dt>Agent uptime</dt><dd>{}</dd></dl></section>",
        sys.cpu_percent.map_or("–".to_string(), |c| format!("{c:.0}%")),
        opt(mem_used),
        sys.memory.agent_rss_kb.map_or("–".to_string(), |k| format!("{:.1} MB", k as f64 / 1000.0)),
        sys.temperature.as_ref().map_or("–".to_string(), |t| format!("{:.1} °C", t.celsius)),
        opt(disk),
        duration(d.uptime_s as f64),
    );
}

/// One event: its local time, its sentence, and its JSON behind a click.
fn event_li(h: &mut String, e: &Event, zone: &jiff::tz::TimeZone, now: jiff::Timestamp) {
    let _ = write!(
        h,
        "<li class=\"{sev}\" data-id=\"{id}\" data-type=\"{ty}\"><time datetime=\"{at}\">{local}</time> \
         <span class=\"said\">{said}</span><details><summary>JSON</summary><pre>{json}</pre></details></li>",
        sev = esc(&e.severity),
        id = e.id,
        ty = esc(&e.event_type),
        at = esc(&e.at),
        local = esc(&sentence::local_time(&e.at, zone, now)),
        said = esc(&sentence::sentence(e)),
        json = esc(&event_json(e)),
    );
}

/// The event as the page shows it behind its sentence (and as `events --json` prints it).
pub fn event_json(e: &Event) -> String {
    serde_json::to_string_pretty(e).unwrap_or_default()
}

fn events(h: &mut String, d: &PageData) {
    let last = d.events.last().map_or(0, |e| e.id);
    let _ = write!(
        h,
        "<section class=\"card wide\" id=\"events\"><h2>Recent events</h2><ul id=\"event-list\" data-last=\"{last}\">"
    );
    for e in d.events.iter().rev() {
        event_li(h, e, &d.zone, d.wall_now);
    }
    h.push_str("</ul></section>");
}

/// A camera: its picture (live, or its last one greyed with its age), its state and figures.
fn camera_tile(h: &mut String, c: &CameraRow, now: f64) {
    let stale = c.health != "running" || c.frame_age_ms.is_none_or(|ms| ms > STALE_AFTER_MS);
    let picture = match c.frame_age_ms {
        Some(_) => format!(
            "<img class=\"thumb\" loading=\"lazy\" alt=\"{id}\" src=\"/thumb/{p}/camera/{ps}.jpg?t={t}\">",
            id = esc(&c.id),
            p = seg(&c.program),
            ps = seg(&c.id),
            t = now as u64,
        ),
        None => "<div class=\"thumb none\">no picture yet</div>".to_string(),
    };
    let figures = match c.frame_age_ms {
        Some(ms) if stale => format!("<small class=\"age\">last picture {} ago</small>", ago(ms)),
        Some(ms) => format!(
            "<small>frame age {:.1} s · {} fps</small>",
            ms as f64 / 1000.0,
            c.fps.map_or("–".to_string(), |f| format!("{f:.1}"))
        ),
        None => "<small class=\"age\">no picture yet</small>".to_string(),
    };
    let _ = write!(
        h,
        "<li class=\"camera{stale}\" data-camera=\"{id}\">{picture}<div><b>{id}</b>{air} {health}<br>{figures}{err}</div></li>",
        stale = if stale { " stale" } else { "" },
        id = esc(&c.id),
        air = if c.on_air { " <span class=\"badge good\">on air</span>" } else { "" },
        health = badge(&c.health),
        err = c.error.as_ref().map_or(String::new(), |e| format!("<br><small class=\"err\">{}</small>", esc(e))),
    );
}

/// How old a picture is, for people: `4 s`, `2 min`, `1 h 5 min`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

fn hidden(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf))
}

fn controls_html(h: &mut String, d: &PageData, c: &Controls) {
    h.push_str("<section class=\"card wide\" id=\"controls\"><h2>Controls</h2>");
    match c {
        Controls::Off => {
            let _ = write!(
                h,
                "<p id=\"controls-off\">Controls are off: no admin password is set. On the appliance, run \
                 <code>sudo vistter-agent admin set-password</code> (at least {MIN_PASSWORD} characters), then reload this page.</p>"
            );
        }
        Controls::LoggedOut { note } => {
            if let Some(n) = note.as_ref().filter(|n| !n.is_empty()) {
                let _ = write!(h, "<p class=\"err\" id=\"login-note\">{}</p>", esc(n));
            }
            h.push_str(
                "<form method=\"post\" action=\"/login\" id=\"login\"><label>Admin password \
                 <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label> \
                 <button>Log in</button></form>",
            );
        }
        Controls::LoggedIn { csrf, flash } => {
            if let Some(f) = flash {
                let _ =
                    write!(h, "<p id=\"flash\" class=\"{}\">{}</p>", if f.ok { "ok" } else { "err" }, esc(&f.message));
            }
            let t = hidden(csrf);
            h.push_str("<div class=\"controls\">");
            let mut options = String::new();
            for (id, name) in &d.timelines {
                let sel = d.show.as_ref().is_some_and(|s| &s.timeline_id == id);
                let _ = write!(
                    options,
                    "<option value=\"{}\"{}>{}</option>",
                    esc(id),
                    if sel { " selected" } else { "" },
                    esc(if name.is_empty() { id } else { name })
                );
            }
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/control/go-live\">{t}<select name=\"timeline_id\" aria-label=\"timeline\">{options}</select> \
                 <button class=\"go\">Go live</button></form>\
                 <form method=\"post\" action=\"/control/stop\" data-confirm=\"Stop the show?\">{t}<button class=\"stop\">Stop</button></form>"
            );
            let mut cams = String::new();
            for c in &d.cameras {
                let _ = write!(
                    cams,
                    "<option value=\"{}|{}\">{} ({})</option>",
                    esc(&c.program),
                    esc(&c.id),
                    esc(&c.id),
                    esc(&c.program)
                );
            }
            if !cams.is_empty() {
                let _ = write!(
                    h,
                    "<form method=\"post\" action=\"/control/cut\">{t}<select name=\"target\" aria-label=\"camera\">{cams}</select> \
                     <button>Cut</button></form>"
                );
            }
            if d.show.as_ref().is_some_and(|s| s.pinned.is_some()) {
                let _ = write!(
                    h,
                    "<form method=\"post\" action=\"/control/unpin\">{t}<button>Back to the timeline</button></form>"
                );
            }
            let slate_on = d.show.as_ref().is_some_and(|s| s.emergency_slate);
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/control/slate\">{t}<input type=\"hidden\" name=\"on\" value=\"{v}\">\
                 <button class=\"slate\">{label}</button></form>\
                 <form method=\"post\" action=\"/control/clear-overlays\">{t}<button>Clear overlays</button></form>\
                 <form method=\"post\" action=\"/logout\">{t}<button class=\"quiet\">Log out</button></form>",
                v = !slate_on,
                label = if slate_on { "Slate off" } else { "Slate on" },
            );
            h.push_str("</div>");
        }
    }
    h.push_str("</section>");
}

pub const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--fg:#1b1f24;--muted:#667;--good:#127a3a;--warn:#9a6700;--bad:#b42318}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1b2027;--fg:#e6e8eb;--muted:#9aa4b2;--good:#4ac26b;--warn:#d4a72c;--bad:#f47067}}
*{box-sizing:border-box}body{margin:0;font:15px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;padding:.75rem 1rem;background:var(--card);border-bottom:1px solid #8883}
header h1{font-size:1.1rem;margin:0;word-break:break-all}header small{color:var(--muted);margin-left:auto}
main,#live{display:grid;gap:.75rem;grid-template-columns:minmax(0,1fr)}main{padding:.75rem}
@media (min-width:800px){main,#live{grid-template-columns:repeat(2,minmax(0,1fr))}.wide,#live{grid-column:1/-1}}
.card{background:var(--card);border-radius:.5rem;padding:.75rem 1rem;border:1px solid #8882;min-width:0}
h2{font-size:1rem;margin:0 0 .5rem}h3{font-size:.9rem;margin:.75rem 0 .25rem}h4{font-size:.85rem;margin:.25rem 0}
.muted,small{color:var(--muted)}.err{color:var(--bad)}.ok{color:var(--good)}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.8rem;border:1px solid currentColor}
.badge.good{color:var(--good)}.badge.warn{color:var(--warn)}.badge.bad{color:var(--bad)}
.thumb{width:160px;max-width:40vw;aspect-ratio:16/9;object-fit:cover;background:#000;border-radius:.25rem}
.thumb.big{width:100%;max-width:640px;display:block}
ul{margin:0;padding:0;list-style:none}ul.tiles li{display:flex;gap:.5rem;align-items:flex-start;margin:.25rem 0}
ul.tiles li>div{min-width:0;overflow-wrap:anywhere}
.camera.stale .thumb{filter:grayscale(1) brightness(.7);opacity:.75}.camera .age{color:var(--bad)}
.thumb.none{display:flex;flex:none;align-items:center;justify-content:center;color:#aaa;font-size:.75rem}
table{width:100%;border-collapse:collapse;font-size:.9rem}
th,td{text-align:left;padding:.2rem .3rem;border-bottom:1px solid #8882;overflow-wrap:anywhere}th,td .badge{white-space:nowrap}
@media (max-width:600px){table.cards,table.cards tbody,table.cards tr,table.cards td{display:block}
table.cards thead{display:none}table.cards tr{padding:.35rem 0;border-bottom:1px solid #8882}
table.cards td{border:0;padding:.05rem 0}table.cards td[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .75rem;margin:0}dt{color:var(--muted)}dd{margin:0;min-width:0;word-break:break-word}
progress{width:100%}
.graphs{display:grid;gap:.5rem;grid-template-columns:repeat(auto-fill,minmax(250px,1fr))}
.graph{margin:0}.graph svg{width:100%;height:48px;color:var(--good);background:#8881;border-radius:.25rem}.graph figcaption{font-size:.8rem}
#event-list li{display:flex;flex-wrap:wrap;align-items:baseline;gap:0 .4rem;padding:.15rem 0;border-bottom:1px solid #8882;font-size:.85rem}
#event-list .said{flex:1 1 12rem;min-width:0;overflow-wrap:anywhere}
#event-list li.warning .said{color:var(--warn)}#event-list li.error .said,#event-list li.critical .said{color:var(--bad)}
#event-list time{color:var(--muted);font-size:.75rem;font-variant-numeric:tabular-nums}
#event-list details{flex:none;max-width:100%}#event-list details[open]{flex-basis:100%}
#event-list summary{cursor:pointer;color:var(--muted);font-size:.75rem}
#event-list pre{margin:.25rem 0;padding:.4rem;background:#8881;border-radius:.25rem;font-size:.75rem;white-space:pre-wrap;overflow-wrap:anywhere}
#event-list{max-height:22rem;overflow:auto}
.controls{display:flex;flex-wrap:wrap;gap:.5rem}.controls form{display:flex;gap:.25rem}
button,select,input{font:inherit;padding:.35rem .7rem;border-radius:.35rem;border:1px solid #8886;background:var(--card);color:var(--fg);max-width:100%}
button{cursor:pointer}button.go{background:var(--good);color:#fff}button.stop,button.slate{background:var(--bad);color:#fff}
code{word-break:break-all}
"#;

pub const JS: &str = r#"
'use strict';
(function () {
  var thumb = document.getElementById('program-thumb');
  if (thumb) {
    var base = thumb.getAttribute('src');
    var busy = false;
    thumb.addEventListener('load', function () { busy = false; });
    thumb.addEventListener('error', function () { busy = false; });
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      thumb.src = base + '?t=' + Date.now();
    }, 1000);
  }
  var live = document.getElementById('live');
  var refreshing = false;
  setInterval(function () {
    if (refreshing || document.hidden || !live) return;
    refreshing = true;
    fetch('/partial', {cache: 'no-store', credentials: 'same-origin'})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) live.innerHTML = html; })
      .catch(function () {})
      .then(function () { refreshing = false; });
  }, 2000);
  var list = document.getElementById('event-list');
  if (list && window.EventSource) {
    var after = list.getAttribute('data-last') || '0';
    var es = new EventSource('/api/v1/events/stream?after=' + encodeURIComponent(after));
    es.addEventListener('event', function (m) {
      var e;
      try { e = JSON.parse(m.data); } catch (x) { return; }
      if (list.querySelector('li[data-id="' + Number(e.id) + '"]')) return;
      // The server's words and time (the page's and the CLI's); the JSON is the event itself.
      var li = document.createElement('li');
      li.className = String(e.severity || '');
      li.setAttribute('data-id', String(Number(e.id)));
      li.setAttribute('data-type', String(e.event_type || ''));
      var t = document.createElement('time');
      t.textContent = String(e.local_time || e.at || '');
      t.setAttribute('datetime', String(e.at || ''));
      var s = document.createElement('span');
      s.className = 'said';
      s.textContent = String(e.sentence || e.event_type || '');
      var raw = {};
      Object.keys(e).forEach(function (k) { if (k !== 'local_time' && k !== 'sentence') raw[k] = e[k]; });
      var d = document.createElement('details');
      var su = document.createElement('summary'); su.textContent = 'JSON';
      var pre = document.createElement('pre'); pre.textContent = JSON.stringify(raw, null, 2);
      d.appendChild(su); d.appendChild(pre);
      li.appendChild(t); li.appendChild(document.createTextNode(' '));
      li.appendChild(s); li.appendChild(d);
      list.insertBefore(li, list.firstChild);
      while (list.children.length > 100) list.removeChild(list.lastChild);
    });
  }
  document.querySelectorAll('form[data-confirm]').forEach(function (f) {
    f.addEventListener('submit', function (ev) {
      if (!window.confirm(f.getAttribute('data-confirm'))) ev.preventDefault();
    });
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_ids_are_escaped() {
        assert_eq!(esc("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        assert_eq!(seg("cam 1/../x"), "cam%201%2F..%2Fx");
    }

    #[test]
    fn an_event_is_its_sentence_in_local_time_with_its_json_behind_a_click() {
        let e = Event {
            id: 3,
            at: "2026-12-06T07:11:35Z".into(),
            severity: "warning".into(),
            event_type: "camera_down".into(),
            subject: Some("<img src=x onerror=alert(1)>".into()),
            scope: Some("program:show".into()),
            detail: Some("program:show/camera:x: refused\u{1b}[2J; failure 1, retry in 7.0 s".into()),
        };
        let mut h = String::new();
        let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
        event_li(&mut h, &e, &kolkata, "2026-12-06T08:00:00Z".parse().unwrap());
        assert!(h.contains("<time datetime=\"2026-12-06T07:11:35Z\">12:41:35</time>"), "{h}");
        assert!(
            h.contains("<span class=\"said\">Camera &lt;img src=x onerror=alert(1)&gt; lost: refused [2J, retrying in 7 s</span>"),
            "{h}"
        );
        assert!(h.contains("<details><summary>JSON</summary><pre>{\n  &quot;id&quot;: 3,"), "{h}");
        assert!(!h.contains("<img"), "escaped: {h}");
    }

    fn cam(health: &str, age: Option<u64>) -> CameraRow {
        CameraRow {
            id: "harbour".into(),
            program: "show".into(),
            health: health.into(),
            frame_age_ms: age,
            fps: Some(25.0),
            on_air: false,
            error: None,
        }
    }

    #[test]
    fn a_camera_that_is_down_shows_its_last_picture_greyed_with_its_age() {
        let tile = |c: CameraRow| {
            let mut h = String::new();
            camera_tile(&mut h, &c, 10.0);
            h
        };
        let down = tile(cam("backoff", Some(125_000)));
        assert!(down.contains("class=\"camera stale\"") && down.contains("last picture 2 min ago"), "{down}");
        assert!(down.contains("<img class=\"thumb\""), "the last picture is shown: {down}");
        let hung = tile(cam("running", Some(STALE_AFTER_MS + 1)));
        assert!(hung.contains("camera stale") && hung.contains("last picture 2 s ago"), "{hung}");
        let live = tile(cam("running", Some(40)));
        assert!(!live.contains("stale") && live.contains("frame age 0.0 s · 25.0 fps"), "{live}");
        let never = tile(cam("starting", None));
        assert!(never.contains("no picture yet") && !never.contains("<img"), "{never}");
        assert_eq!(ago(3_725_000), "1 h 2 min");
    }
}
