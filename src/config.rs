//! Agent configuration: built-in defaults ← TOML file ← `VISTTER_*` environment ← command-line flags.
//!
//! Every key is optional, so `vistter-agent run` works with no file at all. Unknown keys are rejected
//! with the key and its source named (a typo in a config file must not silently fall back to a
//! default). Nested keys come from the environment with `__`: `VISTTER_FFMPEG__PATH=/opt/ffmpeg`.
//! Nothing secret lives here: stream keys and camera passwords are in the encrypted store.
//!
//! Configuration sits low in the module graph (above logging and the FFmpeg supervisor), so what
//! it checks lives here or below: the package size limits ([`Limits`], read by `segments`), the
//! host-name rule of `[status] allowed_hosts` ([`host_name`], also used by `status`), and ids
//! checked with `values`. `log_format` and `[log]` are the logging module's own types, re-exported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::ffmpeg::backoff::BackoffPolicy;
pub use crate::logging::{LogConfig, LogFormat};

pub mod host_name;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vistter-agent/config.toml";
/// The largest `control.max_skew_s` (a day): the dedupe store keeps replies longer than this.
pub const MAX_SKEW_S: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, the device key, the pid registry and caches live.
    pub data_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `vistter_agent=debug`.
    pub log_level: String,
    /// Log format: `auto` (the daemon: JSON lines on stdout when stdout is not a terminal, else
    /// text on stderr), `json` or `text`. One-shot commands always log to stderr.
    pub log_format: LogFormat,
    /// `[log]`: an optional bounded log file.
    pub log: LogConfig,
    /// How often the daemon compares desired state with what runs, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// The venue's IANA time zone, for `{{time}}`/`{{date}}` overlays and the slate's clock
    /// (empty: the system's zone; schedules carry their own zone).
    pub timezone: String,
    /// The cloud link, the store, the status server and the commands without any media: no
    /// FFmpeg is started, no show is resumed or scheduled, and commands that need a camera or a
    /// program are refused with `failed`. For fleet trials on one machine and cloud development.
    pub control_plane_only: bool,
    pub ffmpeg: FfmpegConfig,
    pub relay: RelayConfig,
    pub program: ProgramConfig,
    pub timeline: TimelineConfig,
    pub control: ControlConfig,
    pub segments: SegmentsConfig,
    pub status: StatusConfig,
    pub discovery: DiscoveryConfig,
}

/// `[discovery]`: where `camera discover` and the cloud's `CAMERA_ACTION discover` look for cameras
/// (WS-Discovery multicast).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// IPv4 addresses of the interfaces to probe from; empty: every interface that is up and not
    /// loopback. A box whose uplink is not the camera network names the camera network's address.
    pub interfaces: Vec<std::net::Ipv4Addr>,
    /// The UDP port of the probes: 3702, WS-Discovery's (tests use one of their own on loopback).
    pub port: u16,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig { interfaces: Vec::new(), port: 3702 }
    }
}

/// `[status]`: the local read-only HTTP status server (health, readiness, metrics, status JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Off: no HTTP server at all.
    pub enabled: bool,
    /// `HOST:PORT` to listen on. Keep it on loopback or a management network: it is not authenticated.
    pub listen: String,
    /// Host names (no port) the server answers to besides IP literals, `localhost` and the
    /// machine's own names; any other `Host` is refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig { enabled: true, listen: "127.0.0.1:8787".into(), allowed_hosts: Vec::new() }
    }
}

/// `[segments]`: signed segment packages (a timeline and its assets): size limits, USB drop
/// folders, downloads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// `[segments.limits]`: package size limits.
    pub limits: Limits,
    /// Folders watched for `.vseg` files (globs, e.g. `/media/*/vistter`); empty: none.
    pub drop_folders: Vec<String>,
    /// How often drop folders are scanned again, whatever inotify reports, in seconds.
    pub rescan_s: u64,
    /// A private CA (PEM) trusted for `TIMELINE_LOAD` downloads, besides the public roots.
    pub download_ca_file: Option<PathBuf>,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig { limits: Limits::default(), drop_folders: Vec::new(), rescan_s: 10, download_ca_file: None }
    }
}

/// How big a package may be. Checked while reading, before anything is written past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The `.vseg` file itself.
    pub max_compressed_bytes: u64,
    /// All its files together, uncompressed.
    pub max_uncompressed_bytes: u64,
    pub max_file_bytes: u64,
    /// Tar entries (the manifest and its signature included).
    pub max_entries: u64,
    /// The largest zstd window accepted, as a power of two (the contract's ceiling is 27).
    pub max_window_log: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_compressed_bytes: 4 << 30,
            max_uncompressed_bytes: 8 << 30,
            max_file_bytes: 4 << 30,
            max_entries: 10_000,
            max_window_log: 27,
        }
    }
}

/// `[control]`: the cloud link: this device's id, the topics, the freshness window of commands,
/// the trust store, the telemetry outbox, and the MQTT and WebSocket links (both outbound, mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// This device's id in topics and envelopes (empty: the host name up to its first dot).
    pub device_id: String,
    pub topic_prefix: String,
    /// How far a command's `timestamp` may be from the device's clock, in seconds.
    pub max_skew_s: u64,
    /// The trust store (empty: `<data_dir>/trust.json`).
    pub trust_store: PathBuf,
    /// Messages larger than this are refused (`invalid_envelope`).
    pub max_message_bytes: usize,
    /// How often METRICS are sent, in seconds.
    pub metrics_interval_s: u64,
    /// The telemetry outbox's bounds: the oldest messages go first when either is passed.
    pub outbox_max_messages: u64,
    pub outbox_max_bytes: u64,
    /// The MQTT link; absent: MQTT off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    /// The WebSocket link; absent: WebSocket off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<WsConfig>,
}

/// `[control.ws]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// `wss://host[:port]/v1/devices/{device_id}/channel` (`{device_id}` is filled in).
    pub url: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ping_s: u64,
    pub reconnect_max_s: u64,
    pub drop_delay_max_s: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            url: String::new(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ping_s: 20,
            reconnect_max_s: 120,
            drop_delay_max_s: 30,
        }
    }
}

/// `[control.mqtt]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtts://host:port`; `mqtt://` only with `allow_insecure = true` (loopback tests).
    pub url: String,
    pub allow_insecure: bool,
    /// The private CA that signed the broker's certificate, and this device's client certificate
    /// and key (PEM). Required for `mqtts://`; re-read when they change.
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub keepalive_s: u64,
    /// Reconnect backoff ceiling (full jitter from 1 s), and the longest random delay after an
    /// established connection drops (so a fleet does not stampede a recovering broker).
    pub reconnect_max_s: u64,
    pub drop_delay_max_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            allow_insecure: false,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            keepalive_s: 30,
            reconnect_max_s: 120,
            drop_delay_max_s: 30,
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            device_id: String::new(),
            topic_prefix: "vistter/v1".into(),
            max_skew_s: 300,
            trust_store: PathBuf::new(),
            max_message_bytes: 256 * 1024,
            metrics_interval_s: 10,
            outbox_max_messages: 10_000,
            outbox_max_bytes: 20 << 20,
            mqtt: None,
            ws: None,
        }
    }
}

/// `[timeline]`: how shows are played: camera preroll, PTZ preset moves, the show's bitrate, hot
/// inputs and how early a scheduled show is prepared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimelineConfig {
    /// How long before its cue a camera is started and moved to its preset.
    pub preroll_lead_ms: u64,
    /// How long a PTZ preset move may take before the cut goes ahead anyway (per camera:
    /// `camera ptz --settle-ms`).
    pub ptz_settle_ms: u64,
    /// Default ONVIF port when a camera has a host but no port.
    pub onvif_port: u16,
    /// The show's video bitrate when none is given, kbit/s (0: by resolution).
    pub bitrate_kbps: u32,
    /// Decode every camera of the show from its start, as a vision mixer keeps its inputs hot, so
    /// a seek, a skip or a pin to any camera is instant. Off: each camera starts only
    /// `preroll_lead_ms` before its first cue (less CPU with many cameras; a jump to a camera
    /// not yet started then shows the held shot or the slate for a few seconds).
    pub hot_inputs: bool,
    /// How long before a schedule's window opens its show is prepared (pre-flight, cameras,
    /// encoder; no destination yet). Cameras that take long to deliver want more.
    pub prepare_lead_ms: u64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            preroll_lead_ms: 5000,
            ptz_settle_ms: 8000,
            onvif_port: 80,
            bitrate_kbps: 0,
            hot_inputs: true,
            prepare_lead_ms: 10_000,
        }
    }
}

/// `[program]`: when the program bus gives up on a stalled camera (hold the last frame, then the
/// backup camera or the slate) and when the encoder steps its quality down under overload and back up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramConfig {
    /// No fresh frame for this long: hold the last frame.
    pub stall_ms: u64,
    /// No fresh frame for this long: backup camera or slate. 900, not a round 1000: measured from
    /// the camera's last frame, 1000 ms plus a frame tick and the decoder's latency put the slate
    /// on air 1.03–1.08 s after a camera dies, past the promise of a replacement within 1 s.
    pub fallback_ms: u64,
    /// A recovered camera must deliver steadily this long before it is back on air.
    pub recover_ms: u64,
    /// Encoder speed below this (for `degrade_window_s`) counts as overload.
    pub degrade_slow_speed: f64,
    pub degrade_window_s: u64,
    /// Steps that restart the encoder are at least this far apart.
    pub degrade_step_interval_s: u64,
    /// Calm this long before stepping back up.
    pub degrade_stable_s: u64,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        ProgramConfig {
            stall_ms: 500,
            fallback_ms: 900,
            recover_ms: 3000,
            degrade_slow_speed: 0.95,
            degrade_window_s: 10,
            degrade_step_interval_s: 300,
            degrade_stable_s: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FfmpegConfig {
    /// The ffmpeg binary (a name looked up on PATH, or a path).
    pub path: PathBuf,
    /// The ffprobe binary.
    pub ffprobe: PathBuf,
    /// A pusher or encoder whose `out_time` has not advanced for this long is restarted.
    pub stale_s: u64,
    /// The same for camera ingests: shorter, so a hung camera is noticed quickly.
    pub ingest_stale_s: u64,
    /// How long a freshly started process may take to produce its first progress (slow cameras).
    pub first_progress_timeout_s: u64,
    /// RTSP socket timeout handed to FFmpeg (`-timeout`, microseconds in FFmpeg 5.x).
    pub rtsp_timeout_s: u64,
    /// Restart backoff: first delay cap, in milliseconds (full jitter: a random delay up to the cap).
    pub backoff_initial_ms: u64,
    /// Restart backoff: the largest delay cap, in milliseconds.
    pub backoff_max_ms: u64,
    /// A process that ran healthily this long resets its backoff and failure count.
    pub healthy_reset_s: u64,
    /// After this many consecutive failures a job reports `degraded` (and keeps retrying).
    pub degraded_after: u32,
    /// Grace between SIGINT and SIGTERM when stopping, in seconds.
    pub stop_grace_s: u64,
    /// How many stderr lines are kept per job for reports.
    pub stderr_lines: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Per-destination queue budget in bytes; on overflow the queue drops to the next keyframe.
    pub queue_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            log: LogConfig::default(),
            reconcile_interval_ms: 500,
            timezone: String::new(),
            control_plane_only: false,
            ffmpeg: FfmpegConfig::default(),
            relay: RelayConfig::default(),
            program: ProgramConfig::default(),
            timeline: TimelineConfig::default(),
            control: ControlConfig::default(),
            segments: SegmentsConfig::default(),
            status: StatusConfig::default(),
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl Default for FfmpegConfig {
    fn default() -> Self {
        FfmpegConfig {
            path: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            stale_s: 10,
            ingest_stale_s: 5,
            first_progress_timeout_s: 20,
            rtsp_timeout_s: 5,
            backoff_initial_ms: 2_000,
            backoff_max_ms: 60_000,
            healthy_reset_s: 60,
            degraded_after: 10,
            stop_grace_s: 5,
            stderr_lines: 50,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { queue_bytes: 8 * 1024 * 1024 }
    }
}

/// `/var/lib/vistter-agent` for root (the appliance), `~/.local/share/vistter-agent` otherwise.
fn default_data_dir() -> PathBuf {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    match std::env::var_os("HOME") {
        Some(home) if !root => PathBuf::from(home).join(".local/share/vistter-agent"),
        _ => PathBuf::from("/var/lib/vistter-agent"),
    }
}

/// Values given as command-line flags; they win over file and environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// Where configuration comes from; tests pass their own environment instead of the process's.
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    /// `(name, value)` pairs; normally `std::env::vars()`.
    pub env: Vec<(String, String)>,
    pub overrides: Overrides,
}

impl Config {
    /// Loads from the process environment, `--config` (or the default path if it exists) and flags.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        Config::load_from(Sources { file, env: std::env::vars().collect(), overrides })
    }

    pub fn load_from(src: Sources<'_>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match src.file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_path_buf())),
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_PATH)),
            None => {}
        }
        // Only VISTTER_* variables; VISTTER_CONFIG names the file itself and is not a key.
        let mut env = figment::value::Dict::new();
        for (name, value) in src.env {
            let Some(key) = name.strip_prefix("VISTTER_") else {
                continue;
            };
            if key == "CONFIG" || key.is_empty() {
                continue;
            }
            let path: Vec<String> = key.to_lowercase().split("__").map(str::to_string).collect();
            insert_path(&mut env, &path, value.parse().expect("figment values parse infallibly"));
        }
        fig = fig.merge(Serialized::defaults(env)).merge(Serialized::defaults(src.overrides));
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Invalid(describe(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.ffmpeg;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if f.stale_s == 0 || f.ingest_stale_s == 0 {
            return bad("ffmpeg.stale_s and ffmpeg.ingest_stale_s must be at least 1");
        }
        if f.stderr_lines == 0 || f.stderr_lines > 10_000 {
            return bad("ffmpeg.stderr_lines must be between 1 and 10000");
        }
        if let Some(file) = &self.log.file {
            if !file.is_absolute() || file.file_name().is_none() {
                return bad("log.file must be an absolute path to a file");
            }
        }
        if self.log.max_bytes < 64 * 1024 || self.log.max_bytes > 1 << 30 {
            return bad("log.max_bytes must be between 65536 and 1073741824");
        }
        if self.relay.queue_bytes < 64 * 1024 {
            return bad("relay.queue_bytes must be at least 65536");
        }
        if self.reconcile_interval_ms < 50 {
            return bad("reconcile_interval_ms must be at least 50");
        }
        let p = &self.program;
        if p.stall_ms == 0 || p.fallback_ms < p.stall_ms {
            return bad("program.fallback_ms must be at least program.stall_ms (> 0)");
        }
        if !(p.degrade_slow_speed.is_finite() && p.degrade_slow_speed > 0.0) || p.degrade_window_s == 0 {
            return bad("program.degrade_slow_speed must be > 0 and program.degrade_window_s at least 1");
        }
        self.backoff()?;
        self.time_zone()?;
        self.device_id()?;
        let c = &self.control;
        if c.max_skew_s == 0 || c.max_skew_s > MAX_SKEW_S {
            return bad("control.max_skew_s must be between 1 and 86400");
        }
        if c.max_message_bytes < 4096 || c.max_message_bytes > 16 << 20 {
            return bad("control.max_message_bytes must be between 4096 and 16777216");
        }
        if c.topic_prefix.is_empty() || c.topic_prefix.contains(['#', '+']) || c.topic_prefix.ends_with('/') {
            return bad("control.topic_prefix must be non-empty, without MQTT wildcards or a trailing '/'");
        }
        // The broker and the studio know the device by its client certificate; a user or password in
        // the URL would be silently unused. (The URL itself is not repeated: it holds the password.)
        let with_userinfo = |u: &str| {
            url::Url::parse(&u.replace("{device_id}", "d"))
                .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
        };
        for (key, url) in [("mqtt", c.mqtt.as_ref().map(|m| &m.url)), ("ws", c.ws.as_ref().map(|w| &w.url))] {
            if url.is_some_and(|u| with_userinfo(u)) {
                return Err(ConfigError::Invalid(format!(
                    "control.{key}.url must not carry a user or password: the device signs in with its client \
                     certificate (cert_file, key_file)"
                )));
            }
        }
        if let Some(m) = &c.mqtt {
            match m.url.split_once("://").map(|(s, _)| s) {
                Some("mqtt") if m.allow_insecure => {}
                Some("mqtt") => {
                    return bad("control.mqtt.url: mqtt:// (no TLS) needs control.mqtt.allow_insecure = true")
                }
                Some("mqtts") => {
                    if m.ca_file.as_os_str().is_empty()
                        || m.cert_file.as_os_str().is_empty()
                        || m.key_file.as_os_str().is_empty()
                    {
                        return bad("control.mqtt: mqtts:// needs ca_file, cert_file and key_file (mutual TLS)");
                    }
                }
                _ => return bad("control.mqtt.url must be mqtt://HOST:PORT or mqtts://HOST:PORT"),
            }
            if m.keepalive_s < 5 || m.keepalive_s > 3600 || m.reconnect_max_s == 0 {
                return bad("control.mqtt.keepalive_s must be 5..3600 and reconnect_max_s at least 1");
            }
        }
        if let Some(w) = &c.ws {
            if !w.url.starts_with("wss://") || url::Url::parse(&w.url.replace("{device_id}", "d")).is_err() {
                return bad("control.ws.url must be wss://HOST[:PORT]/v1/devices/{device_id}/channel");
            }
            if w.ca_file.as_os_str().is_empty()
                || w.cert_file.as_os_str().is_empty()
                || w.key_file.as_os_str().is_empty()
            {
                return bad("control.ws needs ca_file, cert_file and key_file (mutual TLS)");
            }
            if w.ping_s == 0 || w.ping_s > 3600 || w.reconnect_max_s == 0 {
                return bad("control.ws.ping_s must be 1..3600 and reconnect_max_s at least 1");
            }
        }
        if self.status.enabled && self.status.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("status.listen must be HOST:PORT with an IP address, e.g. 127.0.0.1:8787");
        }
        for name in &self.status.allowed_hosts {
            host_name::check_name(name).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if c.metrics_interval_s == 0 || c.outbox_max_messages == 0 || c.outbox_max_bytes < 64 * 1024 {
            return bad("control.metrics_interval_s and outbox_max_messages must be at least 1, outbox_max_bytes at least 65536");
        }
        Ok(())
    }

    /// `control.device_id`, or the host name up to its first dot.
    pub fn device_id(&self) -> Result<crate::values::DeviceId, ConfigError> {
        let id = if self.control.device_id.is_empty() {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
            host.split('.').next().unwrap_or_default().to_string()
        } else {
            self.control.device_id.clone()
        };
        crate::values::DeviceId::new(id.clone()).map_err(|_| {
            ConfigError::Invalid(format!(
                "control.device_id {:?} is not valid (1-64 letters, digits, '-', '_'; set it when the host name is not)",
                crate::values::shorten(&id)
            ))
        })
    }

    /// Where the trust store lives.
    pub fn trust_store_path(&self) -> PathBuf {
        if self.control.trust_store.as_os_str().is_empty() {
            self.data_dir.join("trust.json")
        } else {
            self.control.trust_store.clone()
        }
    }

    /// The zone of `timezone` (the system's when empty; UTC if the system has none).
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, ConfigError> {
        if self.timezone.is_empty() {
            return Ok(jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC));
        }
        jiff::tz::TimeZone::get(&self.timezone)
            .map_err(|_| ConfigError::Invalid(format!("timezone: unknown IANA time zone {:?}", self.timezone)))
    }

    /// The restart backoff of FFmpeg jobs, from the `ffmpeg.backoff_*` and `healthy_reset_s` keys.
    pub fn backoff(&self) -> Result<BackoffPolicy, ConfigError> {
        BackoffPolicy::new(
            Duration::from_millis(self.ffmpeg.backoff_initial_ms),
            Duration::from_millis(self.ffmpeg.backoff_max_ms),
            Duration::from_secs(self.ffmpeg.healthy_reset_s),
        )
        .map_err(|e| ConfigError::Invalid(format!("ffmpeg backoff: {e}")))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// figment's errors name the key and the source; flatten them to one readable line each.
fn describe(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_from(Sources {
            file,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            overrides: Overrides::default(),
        })
    }

    #[test]
    fn the_control_section_is_checked() {
        let c = load(None, &[("VISTTER_CONTROL__DEVICE_ID", "vs-marina-01")]).unwrap();
        assert_eq!(c.device_id().unwrap(), "vs-marina-01");
        assert_eq!(c.trust_store_path(), c.data_dir.join("trust.json"));
        assert_eq!((c.control.max_skew_s, c.control.topic_prefix.as_str()), (300, "vistter/v1"));
        let err = load(None, &[("VISTTER_CONTROL__DEVICE_ID", "a/b#")]).unwrap_err().to_string();
        assert!(err.contains("control.device_id"), "{err}");
        let err = load(None, &[("VISTTER_CONTROL__TOPIC_PREFIX", "v/#")]).unwrap_err().to_string();
        assert!(err.contains("control.topic_prefix"), "{err}");
        let err = load(None, &[("VISTTER_CONTROL__MAX_SKEW_S", "0")]).unwrap_err().to_string();
        assert!(err.contains("control.max_skew_s"), "{err}");
    }

    /// The broker knows the device by its client certificate; a user or password written into a control
    /// URL would be silently unused (and a password sits in a world-readable file). Refused, naming the key
    /// and never repeating the password.
    #[test]
    fn a_user_or_password_in_a_control_url_is_refused_without_repeating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let tls = "ca_file = \"/etc/ca.pem\"\ncert_file = \"/etc/c.pem\"\nkey_file = \"/etc/k.pem\"\n";
        for (section, url) in [
            ("mqtt", "mqtts://device:Hunter2-secret@broker.example:8883"),
            ("mqtt", "mqtts://device@broker.example:8883"),
            ("ws", "wss://device:Hunter2-secret@studio.example/v1/devices/{device_id}/channel"),
        ] {
            std::fs::write(&path, format!("[control.{section}]\nurl = \"{url}\"\n{tls}")).unwrap();
            let err = load(Some(&path), &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("control.{section}.url")) && err.contains("client certificate"), "{err}");
            assert!(!err.contains("Hunter2-secret"), "{err}");
        }
        std::fs::write(&path, format!("[control.mqtt]\nurl = \"mqtts://broker.example:8883\"\n{tls}")).unwrap();
        load(Some(&path), &[]).expect("a URL without credentials is fine");
    }

    #[test]
    fn the_status_section_has_defaults_and_is_checked() {
        let c = load(None, &[]).unwrap();
        assert!(c.status.enabled);
        assert_eq!(c.status.listen, "127.0.0.1:8787");
        let e = load(None, &[("VISTTER_STATUS__LISTEN", "nowhere")]).unwrap_err().to_string();
        assert!(e.contains("status.listen"), "{e}");
        let c = load(None, &[("VISTTER_STATUS__ENABLED", "false"), ("VISTTER_STATUS__LISTEN", "nowhere")]).unwrap();
        assert!(!c.status.enabled, "a disabled server's address is not checked");
        let e = load(None, &[("VISTTER_STATUS__PORT", "1")]).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn status_allowed_hosts_are_names_without_ports() {
        assert!(load(None, &[]).unwrap().status.allowed_hosts.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[status]\nallowed_hosts = [\"Status.Venue.Example\", \"pi-7.lan.\"]\n").unwrap();
        let c = load(Some(&p), &[]).unwrap();
        assert_eq!(c.status.allowed_hosts, ["Status.Venue.Example", "pi-7.lan."]);
        let text = toml::to_string_pretty(&c).unwrap();
        assert!(text.contains("allowed_hosts") && text.contains("Status.Venue.Example"), "check-config: {text}");
        let c = load(None, &[("VISTTER_STATUS__ALLOWED_HOSTS", "[a.example, b]")]).unwrap();
        assert_eq!(c.status.allowed_hosts, ["a.example", "b"]);
        for bad in ["host.example:8787", "http://host.example", "two words", "", "*.example"] {
            std::fs::write(&p, format!("[status]\nallowed_hosts = [\"ok.example\", {bad:?}]\n")).unwrap();
            let e = load(Some(&p), &[]).unwrap_err().to_string();
            assert!(e.contains("status.allowed_hosts") && e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_log_section_has_defaults_and_is_checked() {
        let c = load(None, &[]).unwrap();
        assert_eq!((c.log_format, c.log.file.as_ref(), c.log.max_bytes), (LogFormat::Auto, None, 10 << 20));
        let c = load(None, &[("VISTTER_LOG_FORMAT", "json"), ("VISTTER_LOG__FILE", "/var/log/va/agent.log")]).unwrap();
        assert_eq!((c.log_format, c.log.file.as_deref()), (LogFormat::Json, Some(Path::new("/var/log/va/agent.log"))));
        let e = load(None, &[("VISTTER_LOG__FILE", "agent.log")]).unwrap_err().to_string();
        assert!(e.contains("log.file"), "{e}");
        let e = load(None, &[("VISTTER_LOG__MAX_BYTES", "100")]).unwrap_err().to_string();
        assert!(e.contains("log.max_bytes"), "{e}");
        let e = load(None, &[("VISTTER_LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(e.contains("log_format"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "log_format = \"text\"\n[log]\nfile = \"/tmp/a.log\"\nmax_bytes = 65536\n").unwrap();
        let c = load(Some(&p), &[]).unwrap();
        assert_eq!((c.log_format, c.log.max_bytes), (LogFormat::Text, 65536));
        let text = toml::to_string_pretty(&c).unwrap();
        assert!(text.contains("[log]") && text.contains("/tmp/a.log"), "check-config shows it: {text}");
    }

    #[test]
    fn defaults_without_file() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.ffmpeg.stale_s, 10);
        assert_eq!(c.ffmpeg.backoff_initial_ms, 2000);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "data_dir = \"/a\"\n[ffmpeg]\nstale_s = 7\npath = \"/x/ffmpeg\"\n").unwrap();
        let c = load(Some(&p), &[("VISTTER_FFMPEG__STALE_S", "9")]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/a"));
        assert_eq!(c.ffmpeg.stale_s, 9);
        assert_eq!(c.ffmpeg.path, PathBuf::from("/x/ffmpeg"));
        let c = Config::load_from(Sources {
            file: Some(&p),
            env: vec![],
            overrides: Overrides { data_dir: Some("/b".into()), log_level: None },
        })
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/b"));
    }

    #[test]
    fn the_venue_time_zone_is_checked() {
        let c = load(None, &[("VISTTER_TIMEZONE", "Europe/London")]).unwrap();
        let summer = "2026-07-01T12:00:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(c.time_zone().unwrap().to_offset(summer).seconds(), 3600, "BST in July");
        let e = load(None, &[("VISTTER_TIMEZONE", "Mars/Base")]).unwrap_err().to_string();
        assert!(e.contains("unknown IANA time zone \"Mars/Base\""), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[ffmpeg]\nstale_seconds = 7\n").unwrap();
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("stale_seconds"), "{e}");
        let e = load(None, &[("VISTTER_BOGUS", "1")]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn missing_explicit_file_and_bad_values() {
        assert!(matches!(load(Some(Path::new("/nonexistent.toml")), &[]), Err(ConfigError::Missing(_))));
        let e = load(None, &[("VISTTER_FFMPEG__BACKOFF_INITIAL_MS", "90000")]).unwrap_err();
        assert!(e.to_string().contains("backoff"), "{e}");
        let e = load(None, &[("VISTTER_FFMPEG__STALE_S", "soon")]).unwrap_err();
        assert!(e.to_string().contains("stale_s"), "{e}");
    }
}
