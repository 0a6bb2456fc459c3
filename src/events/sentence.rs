//! Events in words: the one place a row of the event table becomes the sentence a person reads
//! ("Cue c1 started on time", "Camera harbour lost: connection refused, retrying in 7 s") and its
//! time the box's clock time. The status page, `vistter-agent events` and `vistter-agent status`
//! all print these words, so the page and the terminal never disagree.
//!
//! Every kind of event the agent records has its sentence here; a kind this version does not know
//! (a newer agent's, a row from an older database) still reads as words: its type spelled out,
//! its subject, and its detail (a JSON detail as `key value` pairs), never raw JSON. A detail that
//! is not in the shape its writer gives it falls back the same way.
//!
//! Event text is untrusted in places (camera and destination names, server messages, FFmpeg's
//! stderr): control and bidirectional-override characters are removed and long text is cut, so a
//! sentence is one line that is safe in a terminal. Escaping for HTML is the page's job.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::Value;

use crate::store::events::Event;

/// The longest subject (a name) a sentence quotes, in characters.
const MAX_NAME: usize = 80;
/// The longest detail a sentence quotes, in characters (the full event is one click away).
const MAX_DETAIL: usize = 400;
/// A detail longer than this is not read as JSON (it is cut as text).
const MAX_JSON: usize = 64 * 1024;
/// How deep a JSON detail is spelled out before `…`.
const MAX_DEPTH: usize = 3;

/// The box's time zone: `TZ`, else `/etc/localtime`, else UTC.
pub fn box_zone() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

/// `at` (the table's RFC 3339 UTC stamp) as the clock time in `tz`: `12:41:35` on the day of
/// `now`, `2026-12-05 12:41:35` on another day. Text that is not a timestamp is shown cleaned.
pub fn local_time(at: &str, tz: &TimeZone, now: Timestamp) -> String {
    let Ok(t) = at.trim().parse::<Timestamp>() else { return clean(at, 40) };
    let when = t.to_zoned(tz.clone());
    if when.date() == now.to_zoned(tz.clone()).date() {
        when.strftime("%H:%M:%S").to_string()
    } else {
        when.strftime("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// The event as the terminal prints it: its local time, `[warning]` or worse (the page shows that
/// by colour), then its sentence.
pub fn line(e: &Event, tz: &TimeZone, now: Timestamp) -> String {
    let time = local_time(&e.at, tz, now);
    match e.severity.as_str() {
        "info" => format!("{time} {}", sentence(e)),
        sev => format!("{time} [{}] {}", clean(sev, 12), sentence(e)),
    }
}

/// The event as one sentence (no time): see the module doc.
pub fn sentence(e: &Event) -> String {
    let p = parts(e);
    let s = known(&p).filter(|s| !s.trim().is_empty()).unwrap_or_else(|| generic(&p));
    capitalised(s.trim())
}

fn parts(e: &Event) -> Parts<'_> {
    let raw = e.detail.as_deref().unwrap_or("");
    let json = if raw.len() <= MAX_JSON { serde_json::from_str::<Value>(raw).ok() } else { None };
    let json = json.filter(|v| v.is_object() || v.is_array());
    let detail = match &json {
        Some(v) => clean(&flat(v, 0), MAX_DETAIL),
        None => clean(raw, MAX_DETAIL),
    };
    Parts {
        kind: e.event_type.as_str(),
        warning: e.severity != "info",
        error: e.severity == "error" || e.severity == "critical",
        subject: clean(e.subject.as_deref().unwrap_or(""), MAX_NAME),
        raw: clean(raw, MAX_JSON),
        json,
        detail,
    }
}

/// What a sentence is made from, cleaned once.
struct Parts<'a> {
    kind: &'a str,
    /// Severity warning or worse.
    warning: bool,
    /// Severity error or worse.
    error: bool,
    subject: String,
    /// The detail, cleaned but not cut (for reading back a writer's shape).
    raw: String,
    /// The detail when it is a JSON object or array.
    json: Option<Value>,
    /// The detail as words: cleaned, cut, JSON spelled out.
    detail: String,
}

impl Parts<'_> {
    /// ` : detail`, or nothing when there is none.
    fn colon_detail(&self) -> String {
        if self.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", self.detail)
        }
    }

    /// The subject after a `prefix:` (`timeline:harbour` → `harbour`), or all of it.
    fn id(&self, prefix: &str) -> &str {
        self.subject.strip_prefix(prefix).and_then(|s| s.strip_prefix(':')).unwrap_or(&self.subject)
    }

    /// A number from the JSON detail.
    fn num(&self, key: &str) -> Option<f64> {
        self.json.as_ref()?.get(key)?.as_f64().filter(|x| x.is_finite())
    }

    /// A text from the JSON detail, cleaned.
    fn text(&self, key: &str) -> Option<String> {
        Some(clean(self.json.as_ref()?.get(key)?.as_str()?, MAX_NAME)).filter(|s| !s.is_empty())
    }
}

/// The sentence of a kind the agent writes, or `None` (an unknown kind, or a detail not in its
/// writer's shape where the sentence needs it).
fn known(p: &Parts) -> Option<String> {
    if let Some(s) = job(p) {
        return Some(s);
    }
    let d = p.colon_detail();
    Some(match p.kind {
        // The daemon.
        "agent_started" if p.detail.is_empty() => "The agent started".into(),
        "agent_started" => format!("The agent {} started", p.detail),
        "agent_stopped" => "The agent stopped".into(),
        "orphans_reaped" => p.detail.clone(),
        "kill_all" => format!("Emergency stop: every stream stopped and every FFmpeg killed ({})", p.detail),
        "stream_started" => format!("{} started", thing(&p.subject)),
        "stream_stopped" => format!("{} stopped", thing(&p.subject)),
        "stream_failed" => format!("{} failed{d}", thing(&p.subject)),
        "command_failed" => format!("The command {} failed{d}", p.id("command")),

        // Programs.
        "program_started" if p.detail == "ephemeral" => {
            format!("{} started (not kept over a restart)", thing(&p.subject))
        }
        "program_started" => format!("{} started", thing(&p.subject)),
        "program_stopped" => format!("{} stopped", thing(&p.subject)),
        "program_not_restored" => {
            let why = p.detail.strip_prefix("not restored: ").unwrap_or(&p.detail);
            format!("{} did not come back after the restart: {why}", thing(&p.subject))
        }
        "bitrate_capped" => format!("{}{}", p.detail, on_program(&p.subject)),
        "cut" => {
            let to = p.raw.strip_prefix("cut to ")?;
            let to = if to == "slate" { "the slate".to_string() } else { format!("camera {}", clean(to, MAX_NAME)) };
            format!("Cut to {to}{}", on_program(&p.subject))
        }
        "fallback_on" | "fallback_off" | "degraded" | "emergency_slate" | "preroll" => {
            format!("{}{}", p.detail, on_program(&p.subject))
        }
        "pin" => match p.raw.strip_prefix("pinned: ")? {
            "none" => format!("Unpinned: back to the timeline{}", on_program(&p.subject)),
            c => format!("Camera {} pinned{}", clean(c, MAX_NAME), on_program(&p.subject)),
        },
        "probe_corrected" | "probe_remembered" => format!("{}: {}", capitalised(&thing(&p.subject)), p.detail),

        // The show's cues and controls.
        "cue_started" | "cue_completed" | "overlay_hidden" => {
            let cue = p.text("cue")?;
            let late = p.num("lateness_ms")?;
            let what = match p.kind {
                "cue_started" => "started",
                "cue_completed" => "ended",
                _ => "hid its overlay",
            };
            let when = if p.warning && late > 0.0 { format!("{} late", millis(late)) } else { "on time".into() };
            format!("Cue {cue} {what} {when}")
        }
        "cue_failed" => format!("A cue of {} failed{d}", thing(&p.subject)),
        "pin_failed" => format!("Pinning a camera in {} failed{d}", thing(&p.subject)),
        "preroll_slow" | "preroll_failed" => format!("{}{}", p.detail, in_show(&p.subject)),
        "ptz_moved" | "ptz_failed" => p.detail.clone(),
        "timeline_started" => format!("{} started{}", capitalised(&thing(&p.subject)), into(&p.raw)),
        "timeline_completed" => format!("{} completed", capitalised(&thing(&p.subject))),
        "timeline_stopped" => format!("{} stopped", capitalised(&thing(&p.subject))),
        "timeline_ended" => format!("{} reached its end; the last shot holds", capitalised(&thing(&p.subject))),
        "timeline_paused" | "timeline_resumed" => {
            let at = p.raw.strip_prefix("at ").and_then(seconds_text);
            let what = if p.kind == "timeline_paused" { "paused" } else { "resumed" };
            format!("{} {what}{}", capitalised(&thing(&p.subject)), at.map_or(String::new(), |s| format!(" at {s}")))
        }
        "timeline_skip" => {
            let to = p.raw.strip_prefix("to ").and_then(seconds_text)?;
            format!("{} skipped to {to}", capitalised(&thing(&p.subject)))
        }
        "timeline_seek" => format!("{} jumped to {}", capitalised(&thing(&p.subject)), seek_target(&p.raw)?),
        "timeline_update_pending" => p.detail.clone(),
        "timeline_updated" => {
            let at = p.num("at_s").map_or(String::new(), |s| format!(" at {}", seconds(s)));
            let lp = p.num("replaced_loop").map_or(String::new(), |l| format!(", from loop {}", l as u64 + 1));
            format!("The new version of {} took over{at}{lp}", thing(&p.subject))
        }

        // The director and the scheduler.
        "show_started" => {
            let by = p.raw.split(" at ").next().filter(|b| b.starts_with("by the ")).map(|b| format!(" {b}"));
            format!("Show {} started{}{}", p.id("timeline"), by.unwrap_or_default(), into(&p.raw))
        }
        "show_stopped" => format!("Show {} stopped", p.id("timeline")),
        "show_updated" => format!("Show {} updated{d}", p.id("timeline")),
        "show_update_deferred" => format!("The update of show {} waits{d}", p.id("timeline")),
        "show_update_failed" => format!("The update of show {} failed{d}", p.id("timeline")),
        "show_resume_failed" => format!("The show that played before the restart could not resume{d}"),
        "operator_override" => {
            let (control, origin) = p.raw.rsplit_once(" by the ")?;
            format!("Show {} {} by the {}", p.id("timeline"), control_words(control)?, clean(origin, MAX_NAME))
        }
        "preflight_warning" => format!("Pre-flight check of {}{d}", thing(&p.subject)),
        "preflight_failed" => format!("{} cannot start{d}", capitalised(&thing(&p.subject))),
        "schedule_failed" => format!("Schedule {} could not start the show{d}", p.id("schedule")),

        // Segment packages.
        "segment_installed" | "segment_activated" | "segment_removed" => p.detail.clone(),
        "segment_rejected" => format!("A segment package was refused{d}"),
        _ => return None,
    })
}

/// The events of a supervised job (`camera_down`, `destination_up`, `encoder_degraded`…), as
/// [`super::row`] writes them.
fn job(p: &Parts) -> Option<String> {
    let (what, how) = p.kind.split_once('_')?;
    let backup = p.raw.starts_with("backup ingest: ");
    let noun = match what {
        "camera" => format!("Camera {}", p.subject),
        "destination" if backup => format!("Destination {} (backup ingest)", p.subject),
        "destination" => format!("Destination {}", p.subject),
        "encoder" => format!("The encoder of {}", thing(&p.subject)),
        _ => return None,
    };
    let encoder = what == "encoder";
    Some(match how {
        "up" if encoder => format!("{noun} is running"),
        "up" => format!("{noun} is live"),
        "recovered" => format!("{noun} recovered"),
        "degraded" => match super::degraded_failures(&p.raw) {
            Some(n) => format!("{noun} keeps failing ({n} failures in a row); still retrying"),
            None => format!("{noun} keeps failing{}", p.colon_detail()),
        },
        "down" => match super::down_detail(&p.raw) {
            Some(d) => {
                let reason = clean(d.reason, MAX_DETAIL);
                let again = seconds(d.retry_in_s);
                let count = if d.failures > 1 { format!(" (failure {})", d.failures) } else { String::new() };
                if p.error {
                    format!("{noun} failed: {reason}; next try in {again}{count}")
                } else if encoder {
                    format!("{noun} stopped: {reason}, restarting in {again}{count}")
                } else {
                    format!("{noun} lost: {reason}, retrying in {again}{count}")
                }
            }
            None => format!("{noun} lost{}", p.colon_detail()),
        },
        _ => return None,
    })
}

/// An unknown kind: its type in words, its subject, its detail.
fn generic(p: &Parts) -> String {
    let words: String = clean(p.kind, MAX_NAME).chars().map(|c| if c == '_' || c == '-' { ' ' } else { c }).collect();
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s = if words.is_empty() { "Event".to_string() } else { words };
    if !p.subject.is_empty() {
        let _ = write!(s, " ({})", p.subject);
    }
    s.push_str(&p.colon_detail());
    s
}

/// A subject as words: `program:show` → `program show`, `relay:r1/ingest` → `the camera of relay
/// r1`, `program:show/camera:c1` → `camera c1`, `agent` → `the agent`.
fn thing(subject: &str) -> String {
    if subject.is_empty() || subject == "agent" {
        return "the agent".into();
    }
    if let Some((_, cam)) = subject.rsplit_once("/camera:") {
        return format!("camera {cam}");
    }
    if let Some(relay) = subject.strip_prefix("relay:").and_then(|r| r.strip_suffix("/ingest")) {
        return format!("the camera of relay {relay}");
    }
    match subject.split_once(':') {
        Some((kind, id)) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase()) => format!("{kind} {id}"),
        _ => subject.to_string(),
    }
}

/// ` on program p1` for an operator's program; nothing for the show's own program.
fn on_program(subject: &str) -> String {
    match subject.strip_prefix("program:") {
        Some("show") => String::new(),
        Some(p) => format!(" (program {p})"),
        None if subject.is_empty() => String::new(),
        None => format!(" ({subject})"),
    }
}

/// ` (timeline t1)` after a show's note.
fn in_show(subject: &str) -> String {
    if subject.is_empty() {
        String::new()
    } else {
        format!(" ({})", thing(subject))
    }
}

/// ` at 32 s into the timeline` from a detail ending in `at 32.000 s`; nothing at its start.
fn into(raw: &str) -> String {
    match raw.rsplit_once(" at ").and_then(|(_, s)| s.trim().trim_end_matches('s').trim().parse::<f64>().ok()) {
        Some(x) if x.is_finite() && x >= 0.5 => format!(" at {} into the timeline", seconds(x)),
        _ => String::new(),
    }
}

/// A control of an `operator_override` (its `Debug` form) in words; `None` if not one.
fn control_words(c: &str) -> Option<String> {
    let quoted = || c.split('"').nth(1).map(|s| clean(s, MAX_NAME));
    Some(match c.split([' ', '{']).next()? {
        "Pause" => "paused".into(),
        "Resume" => "resumed".into(),
        "Skip" => "skipped to the next cue".into(),
        "Unpin" => "unpinned (back to the timeline)".into(),
        "ClearOverlays" => "overlays cleared".into(),
        "Pin" => format!("pinned to camera {}", quoted()?),
        "EmergencySlate" => format!("emergency slate {}", if c.contains("true") { "on" } else { "off" }),
        "Seek" => format!("jumped to {}", seek_target(c)?),
        _ => return None,
    })
}

/// A seek's target from its `Debug` form: a quoted cue id, or seconds.
fn seek_target(s: &str) -> Option<String> {
    if let Some(cue) = s.split('"').nth(1) {
        return Some(format!("cue {}", clean(cue, MAX_NAME)));
    }
    let n: String = s
        .rsplit(['(', ':'])
        .find_map(|part| {
            let t = part.trim().trim_end_matches([')', '}', ' ']).trim_start_matches("Some(");
            t.parse::<f64>().ok().map(|_| t.to_string())
        })?
        .to_string();
    seconds_text(&n)
}

/// `"12.340 s"` or `"12.34"` → `12.3 s`.
fn seconds_text(s: &str) -> Option<String> {
    let x: f64 = s.trim().trim_end_matches('s').trim().parse().ok()?;
    x.is_finite().then(|| seconds(x))
}

/// A time span for people: `0.4 s`, `7 s`, `3 min`, `2 h 5 min`.
fn seconds(x: f64) -> String {
    let x = if x.is_finite() { x.max(0.0) } else { 0.0 };
    if x < 1.0 {
        format!("{x:.1} s")
    } else if x < 90.0 {
        format!("{x:.0} s")
    } else if x < 5400.0 {
        format!("{:.0} min", x / 60.0)
    } else {
        let m = (x / 60.0).round() as u64;
        format!("{} h {} min", m / 60, m % 60)
    }
}

/// Lateness for people: `35 ms`, `1.2 s`.
fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// A JSON detail as words: `cue c1, actual s 32.04`.
fn flat(v: &Value, depth: usize) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                let s = format!("{f:.3}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        _ if depth >= MAX_DEPTH => "…".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().take(20).map(|x| flat(x, depth + 1)).collect();
            let s = items.join(", ");
            if depth == 0 {
                s
            } else {
                format!("({s})")
            }
        }
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .take(20)
                .map(|(k, x)| format!("{} {}", k.replace(['_', '-'], " "), flat(x, depth + 1)))
                .collect();
            let s = items.join(", ");
            if depth == 0 {
                s
            } else {
                format!("({s})")
            }
        }
    }
}

/// Text fit for one line: control characters become spaces (runs of them one space),
/// bidirectional overrides go, and more than `max` characters are cut with `…`.
pub fn clean(s: &str, max: usize) -> String {
    let mut o = String::with_capacity(s.len().min(max * 4));
    let mut n = 0;
    let mut space = false;
    for c in s.chars() {
        if n >= max {
            o.push('…');
            break;
        }
        let c = if c.is_control() || c.is_whitespace() { ' ' } else { c };
        if matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if c == ' ' {
            if space || o.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        o.push(c);
        n += 1;
    }
    let trimmed = o.trim_end().len();
    o.truncate(trimmed);
    o
}

/// The first letter in upper case.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
