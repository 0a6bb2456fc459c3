//! The `vistter-agent` command line (clap). Every subcommand has `--help`.
//!
//! Management commands write desired state to the store; the daemon (`run`) picks changes up within
//! `reconcile_interval_ms`. Output is for people (masked secrets, tables) or `--json` for scripts.

/// `println!` for the command's answers (see [`out`]).
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*), true) };
}

/// `print!` for the command's answers (see [`out`]).
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*), false) };
}

mod admin;
mod control;
mod diag;
mod discover;
mod doctor;
mod out;
mod program;
mod segment;
mod setup;
mod studio;
mod timeline;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::command::configure::{self, Configure};
use crate::command::values::*;
use crate::command::{self as cmd, Output, ProgramCommand, ProgramVerb};
use crate::config::{Config, ConfigError, Overrides};
use crate::error::*;
use crate::media::destination::{DestinationInput, Platform};
use crate::media::probe::{probe_camera, CameraSource};
use crate::secret::Secret;
use crate::store::{Store, StoreError};
pub use setup::{DestinationAdd, DestinationCmd};

/// VistterStream edge agent: turns IP cameras into a 24/7 live show.
///
/// Exit codes: 0 ok · 1 failure · 2 usage or invalid value · 3 not found · 4 conflict ·
/// 69 camera/peer unreachable · 78 configuration error.
#[derive(Parser, Debug)]
#[command(name = "vistter-agent", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: /etc/vistter-agent/config.toml if it exists.
    #[arg(long, global = true, env = "VISTTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (database, device key, pid registry). Overrides the config file.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `vistter_agent=debug`. Overrides the config file.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent daemon (keeps desired streams live until stopped with SIGTERM/SIGINT).
    Run,
    /// A demo show on two built-in sources (cuts, logo, clock, lower third) to a local recording or
    /// an RTMP URL. Needs no configuration; Ctrl-C stops it.
    Demo {
        /// Recording to write (FLV). Ignored with --rtmp.
        #[arg(long, default_value = "vistter-demo.flv")]
        out: PathBuf,
        /// Push to this RTMP(S) URL (stream key included) instead of a file.
        #[arg(long)]
        rtmp: Option<String>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long, default_value = "1280x720")]
        size: Size,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Video bitrate, kbit/s.
        #[arg(long, default_value_t = 2500)]
        bitrate: u32,
        /// Seconds on each source before the next cut.
        #[arg(long, default_value_t = 8)]
        cut_every: u64,
    },
    /// Validate the configuration and print the effective values.
    CheckConfig,
    /// Manage cameras.
    #[command(subcommand)]
    Camera(CameraCmd),
    /// Manage streaming destinations (YouTube, Facebook, Twitch, custom RTMP/RTMPS).
    #[command(subcommand)]
    Destination(DestinationCmd),
    /// Manage relay streams (one camera copied to one or more destinations).
    #[command(subcommand)]
    Stream(StreamCmd),
    /// Control a live program (camera cuts, slate, pin) in the running daemon.
    #[command(subcommand)]
    Program(ProgramCmdArgs),
    /// Live overlays on a program: show, hide, set variables, clear.
    #[command(subcommand)]
    Overlay(OverlayCmdArgs),
    /// Timelines: load, check, play, and control the show (pause, seek, skip, pin...).
    #[command(subcommand)]
    Timeline(timeline::TimelineCmd),
    /// Schedules: when shows play, by local time in a time zone, with no cloud needed.
    #[command(subcommand)]
    Schedule(timeline::ScheduleCmd),
    /// The local event log (newest last): cameras, destinations, cues, overrides.
    Events {
        /// Only events whose subject starts with this, e.g. `timeline:` or `program:show`.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Emergency stop: every stream is set to stopped and every FFmpeg this agent owns is killed.
    KillAll,
    /// This device's id and public keys (for enrolling it in VistterStudio).
    #[command(subcommand)]
    Device(control::DeviceCmd),
    /// The keys this device trusts: who may command it, sign its packages, change this list.
    #[command(subcommand)]
    Trust(control::TrustCmd),
    /// What the box is doing: the show, cameras, pushes, schedules and the machine (from the
    /// running daemon's status server), the cloud links, the outbox and the installed segments.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// A reference cloud client: studio keys, signed commands, telemetry, a WebSocket endpoint.
    #[command(subcommand)]
    Studio(studio::StudioCmd),
    /// Signed segment packages (.vseg): make, check, install, list, roll back, play.
    #[command(subcommand)]
    Segment(segment::SegmentCmd),
    /// The status page's admin password, which guards its controls (there is no default).
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Write a diagnostics bundle (.tar.zst) for support: configuration, versions, hardware probe,
    /// database summary, events and, from the running daemon, recent logs and FFmpeg output.
    /// Stream keys, camera passwords and device keys are never in it.
    Diag {
        /// The bundle to write (mode 0600), e.g. vistter-diag.tar.zst.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
        /// How many of the newest events to include.
        #[arg(long, default_value_t = 1000)]
        events: i64,
    },
    /// Check the box and say how to fix what is wrong: FFmpeg, fonts, the data dir, the daemon,
    /// file owners and modes, the status page, the cameras, the cloud link. Changes nothing.
    /// Exit codes: 0 all ok (or only warnings without --strict), 1 a warning with --strict,
    /// 2 a check failed.
    Doctor(doctor::DoctorArgs),
    /// Show the hardware encoder probe (cached per FFmpeg version).
    Hwaccel {
        /// Probe again instead of using the cache.
        #[arg(long)]
        refresh: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CameraCmd {
    /// Add a camera. Credentials may be in the URL or given apart; they are stored encrypted.
    Add(CameraAdd),
    /// List cameras (passwords are never shown).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Find the ONVIF cameras on the LAN (WS-Discovery): address, model, ONVIF endpoint and, with
    /// --username, stream URLs and the `camera add` line to paste. Changes nothing.
    Discover(discover::CameraDiscover),
    /// Connect to a camera and report what it sends.
    Probe {
        /// A camera id, or use --url.
        id: Option<String>,
        /// Probe a URL without adding it.
        #[arg(long, conflicts_with = "id")]
        url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a camera (refused while a stream uses it).
    Remove { id: String },
    /// PTZ presets: map the ids timelines use to the camera's ONVIF preset tokens.
    #[command(subcommand)]
    Preset(timeline::PresetCmd),
    /// PTZ settings: ONVIF media profile token and how long a preset move may take.
    Ptz {
        id: String,
        /// ONVIF media profile token (default: the camera's first profile with a PTZ configuration).
        #[arg(long)]
        profile: Option<String>,
        /// Longest preset move before the cut goes ahead anyway, ms.
        #[arg(long)]
        settle_ms: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct CameraAdd {
    /// Camera id (letters, digits, '-', '_').
    pub id: String,
    /// RTSP URL, e.g. rtsp://192.168.1.20:554/stream1
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub username: Option<String>,
    /// Camera password (prefer --password-stdin: command lines are visible to other users).
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// A camera to use when this one fails (program mode).
    #[arg(long)]
    pub backup: Option<String>,
    #[arg(long)]
    pub onvif_host: Option<String>,
    /// ONVIF port (some models use 8899).
    #[arg(long)]
    pub onvif_port: Option<u16>,
    /// Probe the camera first and refuse to add it if it does not answer.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Subcommand, Debug)]
pub enum StreamCmd {
    /// Create or update a relay stream and set it live.
    Start {
        id: String,
        /// Camera id (required when creating).
        #[arg(long)]
        camera: Option<String>,
        /// Destination id; repeat for several. Replaces the stream's destinations when given.
        #[arg(long = "destination")]
        destinations: Vec<String>,
    },
    /// Set a stream to stopped.
    Stop { id: String },
    /// Delete a stream.
    Remove { id: String },
    /// Add a destination to a stream (while live: the others are not disturbed).
    Attach { id: String, destination: String },
    /// Remove a destination from a stream (while live: the others are not disturbed).
    Detach { id: String, destination: String },
    /// Show what the daemon reports for one stream (or all), with recent events.
    Status {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List streams.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProgramCmdArgs {
    /// Start a program: the cameras are pre-rolled, the first goes on air.
    Start {
        /// Camera id; repeat for each camera the show may cut to (backups are added automatically).
        #[arg(long = "camera", required = true)]
        cameras: Vec<CameraId>,
        /// Destination id; repeat for several.
        #[arg(long = "destination")]
        destinations: Vec<DestinationId>,
        #[arg(long, value_enum)]
        profile: Option<crate::media::encoder::Profile>,
        /// Override the profile's size, e.g. 640x360.
        #[arg(long)]
        size: Option<Size>,
        /// Override the profile's frame rate: 10, 12, 15, 16, 20, 24, 25, 30, 40, 48, 50 or 60.
        #[arg(long)]
        fps: Option<Fps>,
        /// Override the profile's video bitrate, kbit/s (100 to 50000).
        #[arg(long)]
        bitrate: Option<Kbps>,
        /// Slate image (PNG); default: a generated card.
        #[arg(long)]
        slate: Option<PathBuf>,
        /// Do not store the program: it is not started again after a restart. (By default it
        /// is, on the same cameras and destinations, until `program stop`.)
        #[arg(long)]
        ephemeral: bool,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Cut to a camera now, at a program time (--at SECONDS) or after a delay (--in SECONDS).
    Cut {
        camera: CameraId,
        /// Program time, seconds.
        #[arg(long, conflicts_with = "after")]
        at: Option<ProgramTime>,
        /// Seconds from now.
        #[arg(long = "in")]
        after: Option<Delay>,
        /// Crossfade duration in milliseconds (0: hard cut).
        #[arg(long, default_value_t = 0)]
        fade: u64,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Emergency slate on or off (overrides everything).
    Slate {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Pin a camera: cuts are ignored until unpinned.
    Pin {
        camera: CameraId,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    Unpin {
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Start decoding a camera ahead of a cut to it, so the cut is instant.
    Preroll {
        camera: CameraId,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Add a destination to the live program (the others are not disturbed).
    Attach {
        destination: DestinationId,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Remove a destination from the live program.
    Detach {
        destination: DestinationId,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// What is on air, camera and encoder health, destinations.
    Status {
        #[arg(long)]
        json: bool,
        /// One program (default: all); `--id` is the older name.
        #[arg(long = "program", alias = "id")]
        id: Option<ProgramId>,
    },
    Stop {
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
    /// Save the latest thumbnail (JPEG, refreshed every second) of the program or of a camera.
    Thumbnail {
        /// A camera of the program (default: the program output).
        #[arg(long)]
        source: Option<CameraId>,
        #[arg(long)]
        out: PathBuf,
        /// The program (`main` unless several run); `--id` is the older name.
        #[arg(long = "program", alias = "id", default_value = "main")]
        id: ProgramId,
    },
}

#[derive(Subcommand, Debug)]
pub enum OverlayCmdArgs {
    /// Show (or replace) an overlay. Text may hold {{time}}, {{date}} and {{var:NAME}}.
    Show {
        #[command(flatten)]
        overlay: Box<OverlayArgs>,
        #[arg(long, default_value = "main")]
        program: ProgramId,
    },
    /// Hide an overlay (with its fade-out).
    Hide {
        overlay: OverlayId,
        #[arg(long, default_value = "main")]
        program: ProgramId,
    },
    /// Set a {{var:NAME}} value; text using it changes on the next frame.
    SetVar {
        name: VarName,
        value: OverlayText,
        #[arg(long, default_value = "main")]
        program: ProgramId,
    },
    /// Remove every overlay at once.
    Clear {
        #[arg(long, default_value = "main")]
        program: ProgramId,
    },
}

/// An overlay as the operator gives it; every value is checked as it is read.
#[derive(Args, Debug, Clone)]
pub struct OverlayArgs {
    /// Overlay id (showing the same id again replaces it).
    pub id: OverlayId,
    /// Default: text if there is text, else image.
    #[arg(long = "type", value_enum)]
    pub kind: Option<OverlayType>,
    /// Text; may hold {{time}}, {{date}} and {{var:NAME}}.
    #[arg(long)]
    pub text: Option<OverlayText>,
    /// PNG file.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub position: Option<crate::media::compositor::Position>,
    /// Pixels ("12") or percent of the frame ("5%").
    #[arg(long, allow_hyphen_values = true)]
    pub offset_x: Option<Offset>,
    #[arg(long, allow_hyphen_values = true)]
    pub offset_y: Option<Offset>,
    /// 0.05 to 10.
    #[arg(long)]
    pub scale: Option<Scale>,
    /// 0 to 1.
    #[arg(long)]
    pub opacity: Option<Opacity>,
    /// Z-order: higher is on top (-1000 to 1000).
    #[arg(long, allow_hyphen_values = true)]
    pub layer: Option<Layer>,
    /// Pixels, 4 to 400.
    #[arg(long)]
    pub font_size: Option<FontSize>,
    /// "#rrggbb" or "#rrggbbaa".
    #[arg(long)]
    pub color: Option<Colour>,
    #[arg(long)]
    pub background: Option<Colour>,
    /// Fade-in, ms (up to 60000).
    #[arg(long = "fade-in")]
    pub fade_in_ms: Option<u64>,
    /// Fade-out when hidden, ms (up to 60000).
    #[arg(long = "fade-out")]
    pub fade_out_ms: Option<u64>,
}

impl OverlayArgs {
    fn request(self) -> Result<OverlayRequest, CliError> {
        let fade = |flag: &str, ms: Option<u64>| {
            ms.map(FadeTime::from_millis).transpose().map_err(|e| CliError::Invalid(format!("{flag}: {e}")))
        };
        Ok(OverlayRequest {
            kind: self.kind,
            text: self.text,
            // The daemon may run in another directory.
            image: self.image.map(|p| std::path::absolute(&p).unwrap_or(p)),
            position: self.position,
            offset: Some(OffsetXY { x: self.offset_x, y: self.offset_y }),
            scale: self.scale,
            opacity: self.opacity,
            font_size: self.font_size,
            color: self.color,
            background: self.background,
            fade_in: fade("--fade-in", self.fade_in_ms)?,
            fade_out: fade("--fade-out", self.fade_out_ms)?,
            layer: self.layer,
        })
    }
}

/// A failure of a command, carrying its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    #[error("{1}")]
    Coded(i32, String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::Store(StoreError::NotFound { .. }) => EXIT_NOT_FOUND,
            CliError::Store(
                StoreError::Exists { .. } | StoreError::Conflict(_) | StoreError::OwnedBySegment { .. },
            ) => EXIT_CONFLICT,
            CliError::Store(StoreError::Invalid(_)) | CliError::Invalid(_) => EXIT_USAGE,
            CliError::Unavailable(_) => EXIT_UNAVAILABLE,
            CliError::Store(_) | CliError::Failed(_) => EXIT_FAILURE,
            CliError::Coded(c, _) => *c,
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub async fn execute(cli: Cli) -> i32 {
    let overrides = Overrides { data_dir: cli.data_dir.clone(), log_level: cli.log_level.clone() };
    let loaded = Config::load(cli.config.as_deref(), overrides);
    // A missing or broken configuration is one of doctor's findings, not the end of it.
    if let Command::Doctor(args) = cli.command {
        return doctor::doctor(args, cli.config.as_deref(), loaded).await;
    }
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vistter-agent: {e}");
            return EXIT_CONFIG;
        }
    };
    crate::logging::init(&cfg.log_level, cfg.log_format, &cfg.log, matches!(cli.command, Command::Run));
    let data_dir = cfg.data_dir.clone();
    let result = dispatch(cli.command, cfg).await;
    // `sudo vistter-agent …` on the appliance: what it made in the data dir is the service's.
    if let Err(e) = crate::ownership::hand_over(&data_dir) {
        eprintln!(
            "vistter-agent: {}: files made by this command could not be given to its owner: {e}",
            data_dir.display()
        );
    }
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("vistter-agent: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(cmd: Command, cfg: Config) -> Result<(), CliError> {
    match cmd {
        Command::Run => run_daemon(cfg).await,
        Command::Demo { out, rtmp, seconds, size, fps, bitrate, cut_every } => {
            demo(cfg, out, rtmp, seconds, size, fps, bitrate, cut_every).await
        }
        Command::CheckConfig => {
            let text = toml::to_string_pretty(&cfg).map_err(|e| CliError::Failed(e.to_string()))?;
            outln!("# configuration is valid; effective values:\n{text}");
            Ok(())
        }
        Command::Camera(c) => setup::camera(c, &cfg).await,
        Command::Destination(d) => setup::destination(d, &cfg).await,
        Command::Stream(s) => setup::stream(s, &cfg).await,
        Command::KillAll => kill_all(&cfg).await,
        Command::Device(d) => control::device(d, &cfg),
        Command::Trust(t) => control::trust(t, &cfg).await,
        Command::Studio(s) => studio::studio(s).await,
        Command::Status { json } => control::status(&cfg, json).await,
        Command::Program(p) => program::program(p, &cfg).await,
        Command::Overlay(o) => program::overlay(o, &cfg).await,
        Command::Timeline(t) => timeline::timeline(t, &cfg).await,
        Command::Segment(s) => segment::segment(s, &cfg).await,
        Command::Admin(a) => admin::admin(a, &cfg).await,
        Command::Schedule(s) => timeline::schedule(s, &cfg).await,
        Command::Events { subject, limit, json } => {
            let events = Store::open(&cfg.data_dir).await?.events(subject.as_deref(), limit).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&events).expect("serializes"));
            } else {
                // The status page's words, in the box's local time (`--json` has the rows).
                let (zone, now) = (crate::events::sentence::box_zone(), jiff::Timestamp::now());
                for e in events {
                    outln!("{}", crate::events::sentence::line(&e, &zone, now));
                }
            }
            Ok(())
        }
        Command::Diag { out, events } => diag::diag(&cfg, &out, events).await,
        Command::Doctor(_) => unreachable!("doctor runs in `execute`, before the configuration is checked"),
        Command::Hwaccel { refresh, json } => {
            std::fs::create_dir_all(&cfg.data_dir).map_err(|e| CliError::Failed(e.to_string()))?;
            let v = crate::media::hwaccel::cached(&cfg.ffmpeg.path, &cfg.data_dir.join("hwaccel.json"), refresh)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                outln!("{}", v.ffmpeg_version);
                for c in &v.candidates {
                    let verdict = if c.works { "works".to_string() } else { c.error.clone().unwrap_or_default() };
                    outln!("  {:<18} {}", c.encoder, verdict);
                }
                outln!("chosen: {}", v.chosen);
                if let Some(note) =
                    v.board.as_deref().and_then(|m| crate::media::hwaccel::board_note(m, Some(&v.chosen)))
                {
                    outln!("board: {}", note.1);
                }
            }
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn demo(
    cfg: Config,
    out: PathBuf,
    rtmp: Option<String>,
    seconds: Option<u64>,
    size: Size,
    fps: u32,
    bitrate: u32,
    cut_every: u64,
) -> Result<(), CliError> {
    let fps = Fps::new(fps).map_err(|e| CliError::Invalid(format!("--fps {fps} cannot drive a timeline: {e}")))?.get();
    let to_file = rtmp.is_none();
    let (output, shown) = match rtmp {
        Some(u) if u.starts_with("rtmp://") || u.starts_with("rtmps://") => {
            let shown = match u.rfind('/') {
                Some(i) if i > "rtmps://".len() => format!("{}/***", &u[..i]),
                _ => u.clone(),
            };
            (u, shown)
        }
        Some(u) => return Err(CliError::Invalid(format!("--rtmp {u:?}: only rtmp:// and rtmps:// URLs"))),
        None => {
            let p = std::path::absolute(&out).unwrap_or(out);
            (p.display().to_string(), p.display().to_string())
        }
    };
    // The demo's recording is written fresh each run (FFmpeg would refuse to write over the last
    // one and the show would record nothing); a path that is not a file is left alone.
    let replaces = to_file && demo_output_exists(Path::new(&output))?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| CliError::Failed(format!("{}: {e}", cfg.data_dir.display())))?;
    outln!(
        "vistter-agent demo: two built-in sources, a cut every {cut_every} s, logo, clock and lower third, {}x{} at {fps} fps\n  → {shown}{}\n  Ctrl-C to stop.",
        size.width,
        size.height,
        if shown.starts_with("rtmp") { String::new() } else { format!("\n  watch it with: ffplay {shown}   (or open it in VLC)") }
    );
    if replaces {
        std::fs::remove_file(&output).map_err(|e| CliError::Failed(format!("{shown}: {e}")))?;
        outln!("  (this recording replaces the earlier recording at {shown})");
    }
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        t.cancel();
    });
    let opts = crate::demo::DemoOptions {
        output,
        format: crate::media::ingest::ProgramFormat { width: size.width, height: size.height, fps },
        bitrate_kbps: bitrate,
        duration: seconds.map(Duration::from_secs),
        cut_every: Duration::from_secs(cut_every.max(1)),
    };
    crate::demo::run(&cfg, opts, token).await.map_err(|e| CliError::Failed(e.to_string()))?;
    outln!("demo stopped");
    Ok(())
}

/// Whether the demo's `--out` holds an earlier recording (a file, or a link, which is replaced,
/// not followed); anything else there is refused.
fn demo_output_exists(path: &Path) -> Result<bool, CliError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => Ok(true),
        Ok(_) => Err(CliError::Invalid(format!("--out {}: not a file; name the recording to write", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::Failed(format!("--out {}: {e}", path.display()))),
    }
}

async fn run_daemon(cfg: Config) -> Result<(), CliError> {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received");
        t.cancel();
    });
    crate::daemon::run(cfg, token).await.map_err(|e| match e {
        crate::daemon::DaemonError::Store(s) => CliError::Store(s),
        other => CliError::Failed(other.to_string()),
    })
}

fn read_stdin_secret(what: &str) -> Result<Secret, CliError> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| CliError::Invalid(format!("reading the {what}: {e}")))?;
    Ok(Secret::new(s.trim_end_matches(['\n', '\r'])))
}

fn print_json<T: serde::Serialize>(v: &T) {
    outln!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

async fn kill_all(cfg: &Config) -> Result<(), CliError> {
    let store = Store::open(&cfg.data_dir).await?;
    let n = store.stop_all_relays().await?;
    outln!("{n} stream(s) set to stopped");
    // The show too, and it must not come back after a restart.
    store.set_desired_show(None).await?;
    let kill = cmd::Command::StreamControl(cmd::StreamControl::new(cmd::StreamCommand::KillAll));
    if let Ok(Output::KilledAll { show, programs }) = ask_daemon(cfg, &kill).await {
        outln!("show {} and {programs} program(s) stopped", if show { "was" } else { "not running:" });
    }
    let _ = store.add_event(crate::store::Severity::Warning, "kill_all", "agent", &format!("{n} stream(s)")).await;
    // Give a running daemon the chance to stop its jobs cleanly, then kill whatever is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.ffmpeg.stop_grace_s + 5);
    let reg = crate::ffmpeg::registry::Registry::open(&crate::daemon::registry_dir(cfg))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    while tokio::time::Instant::now() < deadline && !reg.records().is_empty() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let killed = reg.reap_leftovers().await;
    outln!("{} FFmpeg process(es) killed", killed.len());
    Ok(())
}

/// A configuration change: through the running daemon's dispatcher (one door, with what is on
/// air now), or, when no daemon runs, straight to the store through the same function and rules,
/// checked against what the store will resume at the next start.
pub(crate) async fn configure_change(cfg: &Config, change: Configure) -> Result<(), CliError> {
    let refused = |r: cmd::Refusal| CliError::Coded(crate::local_api::exit_code(&r), r.to_string());
    let command = cmd::Command::Configure(change.clone());
    let out = match crate::local_api::call(&cfg.data_dir, &command).await {
        Ok(reply) => reply.into_result().map_err(refused)?,
        Err(crate::local_api::CallError::Connect { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            let store = Store::open(&cfg.data_dir).await?;
            let result = match cmd::on_air::OnAir::stored(&store).await {
                Ok(on_air) => configure::apply(&store, cfg, &on_air, change).await,
                Err(e) => Err(e.into()),
            };
            store.close().await;
            result.map_err(refused)?
        }
        Err(e) => return Err(CliError::Coded(EXIT_UNAVAILABLE, e.to_string())),
    };
    match out {
        Output::Configured { summary } => {
            outln!("{summary}");
            Ok(())
        }
        o => Err(unexpected(&o)),
    }
}

/// One command to the running daemon; a refusal carries its exit code and names the field.
pub(crate) async fn ask_daemon(cfg: &Config, command: &cmd::Command) -> Result<Output, CliError> {
    let reply = crate::local_api::call(&cfg.data_dir, command)
        .await
        .map_err(|e| CliError::Coded(EXIT_UNAVAILABLE, e.to_string()))?;
    reply.into_result().map_err(|r| CliError::Coded(crate::local_api::exit_code(&r), r.to_string()))
}

/// An id given on the command line.
fn parse_id<T: std::str::FromStr<Err = ValueError>>(what: &str, s: &str) -> Result<T, CliError> {
    s.parse().map_err(|e| CliError::Invalid(format!("{what}: {e}")))
}

/// Output the command did not expect: the agent and the CLI disagree.
fn unexpected(o: &Output) -> CliError {
    CliError::Failed(format!("unexpected answer from the agent: {o:?}"))
}
