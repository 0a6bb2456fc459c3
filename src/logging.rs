//! Where log lines go, and in what shape.
//!
//! The daemon (`run`) writes one flat JSON object per line to stdout when stdout is not a terminal
//! (journald and balena capture stdout and add their own timestamps, so these lines carry none);
//! on a terminal it writes human text to stderr. `log_format = "json" | "text"` overrides the
//! choice. One-shot commands never log to stdout, whose bytes belong to their output
//! (`status --json` prints only JSON): they log to stderr, text unless `log_format = "json"`.
//!
//! A JSON line holds `level`, `target`, `message`, the event's fields and the fields of every span
//! it happened in, flattened (outermost span first, inner ones and the event win a name clash).
//! That is how correlation travels: the cloud inbox runs a command inside a `command` span with its
//! `message_id`, an FFmpeg job's task runs inside a span with its `job` name, so every line logged
//! on their behalf, however deep, names them. Those spans are made at the ERROR level: a span only
//! carries context, and at that level it is enabled whenever any event can be, so `log_level =
//! "warn"` keeps the `message_id` on the warnings, which are the lines that matter then.
//!
//! The daemon also keeps its last [`RING_LINES`] lines in memory (with a timestamp, each value
//! capped, URL passwords masked) for `vistter-agent diag`, and, with `[log] file`, appends them
//! to a file that is rotated once to `<file>.1` at `max_bytes` (at most two files on disk).
//!
//! The ring is process-wide because the subscriber that feeds it is: the dispatcher reads it
//! through [`recent`], with no handle threaded through the daemon.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines the daemon keeps in memory for the diagnostics bundle.
pub const RING_LINES: usize = 500;
/// Longest string value kept in a ring line (a 200 KB filter graph in a debug line stays out).
const RING_VALUE_BYTES: usize = 1024;
/// Longest ring line; a longer one keeps only its level, target and message.
const RING_LINE_BYTES: usize = 8 * 1024;

/// The shape of log lines (`log_format`): `auto` (the daemon: JSON lines on stdout when stdout is
/// not a terminal, else text on stderr), `json` or `text`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// `[log]`: besides stdout/stderr, the daemon may append its JSON lines (with timestamps) to a
/// file, renamed to `<file>.1` when it would pass `max_bytes`: at most two files on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The log file (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Size at which the file is rotated, in bytes.
    pub max_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { file: None, max_bytes: 10 << 20 }
    }
}

/// Sets up logging for this process: `level` is a tracing filter (`log_level`), `daemon` is true
/// for `run`.
pub fn init(level: &str, format: LogFormat, log: &LogConfig, daemon: bool) {
    use std::io::IsTerminal;
    // One-shot commands only speak up about problems; the daemon logs at the configured level.
    let level = if daemon || level != "info" { level.to_string() } else { "warn".into() };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout_tty = std::io::stdout().is_terminal();
    let stderr_tty = std::io::stderr().is_terminal();
    let json_out = match format {
        LogFormat::Json if daemon => Some(Output::stdout()),
        LogFormat::Auto if daemon && !stdout_tty => Some(Output::stdout()),
        LogFormat::Json => Some(Output::stderr()),
        LogFormat::Auto | LogFormat::Text => None,
    };
    let text = json_out.is_none();
    let mut outputs: Vec<Output> = json_out.into_iter().collect();
    if daemon {
        outputs.push(Output::ring(RING.get_or_init(|| LogRing::new(RING_LINES))));
        if let Some(path) = &log.file {
            match RotatingFile::open(path, log.max_bytes) {
                Ok(f) => outputs.push(Output::file(Arc::new(f))),
                Err(e) => eprintln!("vistter-agent: log file {}: {e}; logging without it", path.display()),
            }
        }
    }
    let text_layer = text
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(stderr_tty).with_target(true));
    let json_layer = (!outputs.is_empty()).then(|| JsonLayer::new(outputs));
    let _ = tracing_subscriber::registry().with(filter).with(text_layer).with(json_layer).try_init();
}

/// The daemon's last log lines (JSON, oldest first); empty outside the daemon.
pub fn recent() -> Vec<String> {
    RING.get().map(LogRing::lines).unwrap_or_default()
}

static RING: OnceLock<LogRing> = OnceLock::new();

/// A bounded ring of log lines.
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing { lines: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == self.capacity {
            l.pop_front();
        }
        l.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// A log file that is renamed to `<file>.1` (replacing the previous one) before a line would take
/// it past `max_bytes`: at most two files, `2 × max_bytes` on disk.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    state: Mutex<(Option<std::fs::File>, u64)>,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = Self::open_file(path)?;
        let size = f.metadata()?.len();
        Ok(RotatingFile { path: path.to_path_buf(), max_bytes, state: Mutex::new((Some(f), size)) })
    }

    fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)
    }

    /// The rotated file's path: `<file>.1`.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Appends one line (a newline is added). Errors are dropped: logging must not fail the agent,
    /// and there is nowhere left to report them.
    pub fn write_line(&self, line: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = line.len() as u64 + 1;
        if st.1 > 0 && st.1 + len > self.max_bytes {
            st.0 = None;
            let _ = std::fs::rename(&self.path, Self::rotated_path(&self.path));
            st.0 = Self::open_file(&self.path).ok();
            st.1 = st.0.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        }
        if let Some(f) = st.0.as_mut() {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if f.write_all(&buf).is_ok() {
                st.1 += len;
            }
        }
    }
}

/// One destination of JSON lines.
pub struct Output {
    /// Prefix the line with `"ts"` (RFC 3339, UTC): the file and the ring; stdout's reader adds its own.
    timestamps: bool,
    /// Cap values and mask URL passwords (the ring, which leaves the process in a diag bundle).
    capped: bool,
    write: Box<dyn Fn(String) + Send + Sync>,
}

impl Output {
    fn stdout() -> Output {
        Output::new(false, false, |l| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(l.as_bytes()).and_then(|_| out.write_all(b"\n"));
        })
    }

    fn stderr() -> Output {
        Output::new(false, false, |l| {
            let mut out = std::io::stderr().lock();
            let _ = out.write_all(l.as_bytes()).and_then(|_| out.write_all(b"\n"));
        })
    }

    fn ring(ring: &'static LogRing) -> Output {
        Output::new(true, true, move |l| ring.push(l))
    }

    fn file(f: Arc<RotatingFile>) -> Output {
        Output::new(true, false, move |l| f.write_line(&l))
    }

    /// Any writer of lines (tests capture them).
    pub fn new(timestamps: bool, capped: bool, write: impl Fn(String) + Send + Sync + 'static) -> Output {
        Output { timestamps, capped, write: Box::new(write) }
    }
}

/// The layer that turns events into flat JSON lines for its outputs.
pub struct JsonLayer {
    outputs: Vec<Output>,
}

impl JsonLayer {
    pub fn new(outputs: Vec<Output>) -> JsonLayer {
        JsonLayer { outputs }
    }
}

/// A span's fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_string(), Value::String(value.to_string()));
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut Visitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut Visitor(&mut fields));
        let meta = event.metadata();
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let level = meta.level().as_str().to_ascii_lowercase();
        let ts = || jiff::Timestamp::now().to_string();
        for out in &self.outputs {
            let line = if out.capped {
                ring_line(&ts(), &level, meta.target(), &message, &fields)
            } else {
                line(out.timestamps.then(ts).as_deref(), &level, meta.target(), &message, &fields)
            };
            (out.write)(line);
        }
    }
}

/// One JSON object: `ts` (if given), `level`, `target`, `message`, then the fields by name.
fn line(ts: Option<&str>, level: &str, target: &str, message: &str, fields: &Map<String, Value>) -> String {
    let mut s = String::with_capacity(128);
    let mut put = |k: &str, v: &Value| {
        s.push(if s.is_empty() { '{' } else { ',' });
        s.push_str(&serde_json::to_string(k).expect("a string serializes"));
        s.push(':');
        s.push_str(&serde_json::to_string(v).expect("a value serializes"));
    };
    if let Some(ts) = ts {
        put("ts", &ts.into());
    }
    put("level", &level.into());
    put("target", &target.into());
    put("message", &message.into());
    // The fixed keys first, for people reading the raw lines; a field named like one is dropped.
    for (k, v) in fields {
        if !matches!(k.as_str(), "ts" | "level" | "target" | "message") {
            put(k, v);
        }
    }
    s.push('}');
    s
}

/// A ring line: every string capped and its URL passwords masked, the whole line bounded.
fn ring_line(ts: &str, level: &str, target: &str, message: &str, fields: &Map<String, Value>) -> String {
    let clean = |s: &str| mask_url_passwords(cap(s, RING_VALUE_BYTES));
    let fields: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(clean(s)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    let message = clean(message);
    let l = line(Some(ts), level, target, &message, &fields);
    if l.len() <= RING_LINE_BYTES {
        return l;
    }
    line(Some(ts), level, target, &message, &Map::new())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `scheme://user:password@host` → `scheme://user:***@host`, wherever a URL appears in the text.
/// (Known secrets are masked by their type already; this catches a URL that was built by hand.)
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the path, the query, whitespace or a quote.
        let end = tail.find(['/', '?', '#', ' ', '\t', '\n', '"', '\'', '\\', '>']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Instrument;

    /// A subscriber whose JSON lines (without timestamps) land in the returned buffer.
    fn capture() -> (impl Subscriber + Send + Sync, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let layer = JsonLayer::new(vec![Output::new(false, false, move |s| l.lock().unwrap().push(s))]);
        (tracing_subscriber::registry().with(EnvFilter::new("info")).with(layer), lines)
    }

    #[test]
    fn a_line_is_one_flat_object_with_the_command_span_s_message_id() {
        let (sub, lines) = capture();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        tracing::subscriber::with_default(sub, || {
            let work = async {
                tracing::info!(destination = "d1", "starting \"it\"\nnow");
                let job = tracing::error_span!("ffmpeg", job = "relay:r1/ingest");
                job.in_scope(|| tracing::warn!(failures = 3u64, "ffmpeg job failed"));
            };
            let span = tracing::error_span!("command", message_id = %"5f0c-1", command = "PING");
            rt.block_on(work.instrument(span));
            tracing::info!("outside");
        });
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for l in &lines {
            assert!(!l.contains('\n') && !l.contains('\u{1b}'), "one line, no ANSI: {l:?}");
        }
        let v: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        assert_eq!(v[0]["level"], "info");
        assert_eq!(v[0]["message"], "starting \"it\"\nnow");
        assert_eq!(v[0]["message_id"], "5f0c-1", "a nested event carries the command's message_id");
        assert_eq!(v[0]["command"], "PING");
        assert_eq!(v[0]["destination"], "d1");
        assert_eq!(v[0]["target"], module_path!());
        assert!(v[0].get("ts").is_none(), "stdout's reader adds the time");
        assert_eq!((v[1]["message_id"].as_str(), v[1]["job"].as_str()), (Some("5f0c-1"), Some("relay:r1/ingest")));
        assert_eq!((v[1]["level"].as_str(), v[1]["failures"].as_u64()), (Some("warn"), Some(3)));
        assert!(v[2].get("message_id").is_none(), "outside the span: {}", lines[2]);
        assert!(lines[0].starts_with(r#"{"level":"info","target":"#), "fixed keys first: {}", lines[0]);
    }

    #[test]
    fn ring_lines_are_capped_masked_and_timestamped() {
        let ring: &'static LogRing = Box::leak(Box::new(LogRing::new(2)));
        let sub = tracing_subscriber::registry().with(JsonLayer::new(vec![Output::ring(ring)]));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(url = "rtsp://admin:hunter22@10.0.0.5:554/s1", "opening");
            tracing::info!(big = %"é".repeat(5000), "big");
            tracing::info!("third");
        });
        let lines = ring.lines();
        assert_eq!(lines.len(), 2, "bounded");
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["big"].as_str().unwrap().len(), RING_VALUE_BYTES, "capped at a character boundary");
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            mask_url_passwords("open rtsp://admin:hunter22@10.0.0.5:554/s1 and rtmp://h/app/k"),
            "open rtsp://admin:***@10.0.0.5:554/s1 and rtmp://h/app/k"
        );
        assert_eq!(mask_url_passwords("mailto me@x: a://b@c ok"), "mailto me@x: a://b@c ok");
    }

    #[test]
    fn the_file_sink_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/agent.log");
        let f = RotatingFile::open(&p, 100).unwrap();
        for i in 0..30 {
            f.write_line(&format!("line {i:04} {}", "x".repeat(20)));
        }
        let cur = std::fs::read_to_string(&p).unwrap();
        let old = std::fs::read_to_string(RotatingFile::rotated_path(&p)).unwrap();
        assert!(cur.len() <= 100 && old.len() <= 100, "{} {}", cur.len(), old.len());
        assert!(cur.ends_with(&format!("line 0029 {}\n", "x".repeat(20))), "{cur}");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 2, "at most two files");
    }
}
