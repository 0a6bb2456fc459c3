//! The one front door: every command the agent takes, whoever sends it
//! (the local operator's socket, the scheduler, later the cloud), is one of these types, read by
//! [`parse`] and routed by the [`Dispatcher`](dispatch::Dispatcher) with its [`Origin`].
//!
//! A command goes through three steps, each its own place:
//! 1. **type**: the payload struct, read with serde into checked values ([`values`]): a NaN, an
//!    opacity of 7 or a non-ASCII colour never gets past it, and the refusal names the field
//!    (`payload.overlay.color: "#aébbb" is not a colour: use #rrggbb or #rrggbbaa`);
//! 2. **check**: `check()` turns the flat wire form (`{action, …optional fields}`) into an
//!    action enum whose variants hold exactly what they need, or refuses naming the missing field;
//! 3. **handler**: one `match` arm in the dispatcher.
//!
//! A refusal changes nothing. Replies are typed ([`Reply`], [`Output`]) on the socket too, so the
//! CLI prints from types.
//!
//! Wire form on the local socket: one JSON object per line, `{"type": "TIMELINE_EXECUTE",
//! "payload": {…}}`, the `type` and `payload` members of the cloud envelope.

pub mod configure;
pub mod device_config;
pub mod discover;
pub mod dispatch;
pub mod on_air;
pub mod programs;
mod reply;
pub mod timeline_load;
pub mod values;
pub mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media::encoder::Profile;
use crate::media::program::ProgramStatus;
pub use crate::timeline::actor::Origin;
use crate::timeline::actor::ShowStatus;
use crate::timeline::director::DesiredShow;
use crate::timeline::preflight::Preflight;
use values::*;

pub use reply::*;

/// At most this many destinations in one command.
pub const MAX_DESTINATIONS: usize = 16;
/// At most this many cameras in one program.
pub const MAX_CAMERAS: usize = 16;
/// At most this many variables in one `set_vars`.
pub const MAX_VARS: usize = 64;

/// Every command, tagged as in the envelope (`type` + `payload`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    Ping(Ping),
    StreamControl(StreamControl),
    TimelineExecute(TimelineExecute),
    OverlayUpdate(OverlayUpdate),
    CameraAction(CameraAction),
    /// `CAMERA_ACTION` `discover` (it names no camera): the cameras on the LAN.
    #[serde(rename = "CAMERA_ACTION")]
    CameraDiscover(discover::CameraDiscover),
    DeviceConfig(DeviceConfig),
    TimelineLoad(TimelineLoad),
    /// Local operator: programs driven by hand.
    Program(ProgramCommand),
    /// Local operator: what the show is doing, and its pre-flight.
    ShowQuery(ShowQuery),
    /// Local operator: recent logs and FFmpeg output, for `vistter-agent diag`.
    Diagnostics(Diagnostics),
    /// Local operator: a change to the stored configuration (cameras, destinations, streams).
    Configure(configure::Configure),
}

impl Command {
    /// The wire name of the command's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::Ping(_) => "PING",
            Command::StreamControl(_) => "STREAM_CONTROL",
            Command::TimelineExecute(_) => "TIMELINE_EXECUTE",
            Command::OverlayUpdate(_) => "OVERLAY_UPDATE",
            Command::CameraAction(_) | Command::CameraDiscover(_) => "CAMERA_ACTION",
            Command::DeviceConfig(_) => "DEVICE_CONFIG",
            Command::TimelineLoad(_) => "TIMELINE_LOAD",
            Command::Program(_) => "PROGRAM",
            Command::ShowQuery(_) => "SHOW_QUERY",
            Command::Diagnostics(_) => "DIAGNOSTICS",
            Command::Configure(_) => "CONFIGURE",
        }
    }

    /// Whether it starts, steers or reads cameras and programs (refused by a control-plane-only
    /// agent). `kill_all` is not: stopping everything is always answered.
    pub fn needs_media(&self) -> bool {
        match self {
            Command::StreamControl(s) => s.command != StreamCommand::KillAll,
            Command::TimelineExecute(_) | Command::CameraAction(_) | Command::Program(_) => true,
            _ => false,
        }
    }

    /// Emergencies are never refused for priority and never wait behind other work.
    pub fn is_emergency(&self) -> bool {
        match self {
            Command::StreamControl(s) => {
                matches!(s.command, StreamCommand::KillAll | StreamCommand::EmergencySlate)
            }
            Command::OverlayUpdate(o) => o.action == OverlayAction::ClearAll && o.program_id.is_none(),
            _ => false,
        }
    }
}

/// Reads a command from `type` and `payload` (a socket line, an envelope). Any refusal names the
/// field (`payload.…`) and has the code `schema_violation` (or `unsupported_type`).
pub fn from_parts(ty: &str, payload: serde_json::Value) -> Result<Command, Refusal> {
    fn read<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Refusal> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "payload".to_string() } else { format!("payload.{path}") };
            Refusal::field(field, e.into_inner().to_string())
        })
    }
    Ok(match ty {
        "PING" => Command::Ping(read(payload)?),
        "STREAM_CONTROL" => Command::StreamControl(read(payload)?),
        "TIMELINE_EXECUTE" => Command::TimelineExecute(read(payload)?),
        "OVERLAY_UPDATE" => Command::OverlayUpdate(read(payload)?),
        "CAMERA_ACTION" if payload.get("action").and_then(|a| a.as_str()) == Some("discover") => {
            let d: discover::CameraDiscover = read(payload)?;
            d.check()?;
            Command::CameraDiscover(d)
        }
        "CAMERA_ACTION" => Command::CameraAction(read(payload)?),
        "DEVICE_CONFIG" => Command::DeviceConfig(read(payload)?),
        "TIMELINE_LOAD" => {
            let t: TimelineLoad = read(payload)?;
            t.source()?;
            Command::TimelineLoad(t)
        }
        "PROGRAM" => Command::Program(read(payload)?),
        "SHOW_QUERY" => Command::ShowQuery(read(payload)?),
        "DIAGNOSTICS" => Command::Diagnostics(read(payload)?),
        "CONFIGURE" => Command::Configure(read(payload)?),
        other => {
            return Err(Refusal {
                code: ErrorCode::UnsupportedType,
                field: Some("type".into()),
                message: format!("unknown command type {:?}", crate::media::compositor::request::shorten(other)),
            })
        }
    })
}

/// Reads one socket line: `{"type": …, "payload": …}`.
pub fn parse(line: &str) -> Result<Command, Refusal> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        #[serde(rename = "type")]
        ty: String,
        #[serde(default)]
        payload: serde_json::Value,
    }
    let l: Line = serde_json::from_str(line).map_err(|e| Refusal::field("request", format!("not a command: {e}")))?;
    let payload = if l.payload.is_null() { serde_json::json!({}) } else { l.payload };
    from_parts(&l.ty, payload)
}

// ---------------------------------------------------------------------------------------------
// Payloads (the `payload` of each command type in `schemas/`)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamCommand {
    GoLive,
    Stop,
    AddDestination,
    RemoveDestination,
    EmergencySlate,
    KillAll,
    SetEncoder,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<Kbps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// `STREAM_CONTROL`: the show's outputs; emergency actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamControl {
    pub command: StreamCommand,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_id: Option<TimelineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ids: Option<Vec<DestinationId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<DestinationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderChange>,
}

impl StreamControl {
    pub fn new(command: StreamCommand) -> StreamControl {
        StreamControl {
            command,
            timeline_id: None,
            destination_ids: None,
            destination_id: None,
            on: None,
            encoder: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineAction {
    Play,
    Pause,
    Resume,
    Stop,
    Seek,
    Skip,
    PinCamera,
    Unpin,
}

/// `TIMELINE_EXECUTE`: playback control (`seek` takes `cue_id` or `position_s`; `play` may take
/// `position_s` to start from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineExecute {
    pub action: TimelineAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_id: Option<TimelineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ids: Option<Vec<DestinationId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cue_id: Option<CueId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_s: Option<ProgramTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_id: Option<CameraId>,
}

impl TimelineExecute {
    pub fn new(action: TimelineAction) -> TimelineExecute {
        TimelineExecute {
            action,
            timeline_id: None,
            destination_ids: None,
            cue_id: None,
            position_s: None,
            camera_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlayAction {
    SetVars,
    Show,
    Hide,
    ClearAll,
}

/// `OVERLAY_UPDATE`: live overlays, no restart. Aimed at the show; the local operator may aim it
/// at one of its programs with `program_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayUpdate {
    pub action: OverlayAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<BTreeMap<VarName, OverlayText>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_id: Option<OverlayId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<ProgramId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraVerb {
    Add,
    Update,
    Remove,
    Probe,
    GotoPreset,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifAddress {
    pub host: String,
    pub port: u16,
}

/// A camera as `CAMERA_ACTION add|update` describes it. The password travels sealed from the cloud
/// (`{"sealed": "…"}`); sealed secrets are opened by the control plane, not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SealedField>,
    /// The password once the control plane opened it (after every check passed). Never read
    /// from or written to the wire: no other origin can set it.
    #[serde(skip)]
    pub opened_password: Option<crate::secret::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_camera_id: Option<CameraId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif: Option<OnvifAddress>,
}

/// A secret as it crosses a broker: a libsodium sealed box to the device's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedField {
    pub sealed: String,
}

/// `CAMERA_ACTION`: cameras; `snapshot` answers with the camera's current JPEG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraAction {
    pub action: CameraVerb,
    pub camera_id: CameraId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<CameraSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset_id: Option<PresetId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigMode {
    Merge,
    Replace,
}

/// `DEVICE_CONFIG`: declarative state. Its secrets are sealed and its trust changes signed, so only
/// the cloud link sends it: the cloud inbox opens its secrets ([`device_config::Opened`]) and the
/// dispatcher applies it ([`device_config`]); other origins are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub mode: ConfigMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cameras: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<serde_json::Value>,
    /// Set by the cloud inbox only (its sealed secrets opened, the trust store lent).
    #[serde(skip)]
    pub opened: Option<device_config::Opened>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramVerb {
    Start,
    Stop,
    Status,
    Cut,
    Slate,
    Pin,
    Unpin,
    Preroll,
    Attach,
    Detach,
    Thumbnail,
}

/// `PROGRAM` (local operator): a program driven by hand, or the show's (`program_id: "show"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramCommand {
    pub action: ProgramVerb,
    /// Required but for `status` (all programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<ProgramId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_ids: Option<Vec<CameraId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ids: Option<Vec<DestinationId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<Fps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<Kbps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slate_image: Option<FilePath>,
    /// `start`: not stored, so not started again after a restart (by default a program is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// `cut`, `pin`, `preroll`; `thumbnail` of a camera (default: the program picture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_id: Option<CameraId>,
    /// `cut` at a program time, or after a delay from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_s: Option<ProgramTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_s: Option<Delay>,
    /// `cut`: crossfade length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fade_s: Option<FadeTime>,
    /// `slate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// `attach`, `detach`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<DestinationId>,
}

impl ProgramCommand {
    pub fn new(action: ProgramVerb, program_id: Option<ProgramId>) -> ProgramCommand {
        ProgramCommand {
            action,
            program_id,
            camera_ids: None,
            destination_ids: None,
            profile: None,
            size: None,
            fps: None,
            bitrate_kbps: None,
            slate_image: None,
            ephemeral: None,
            camera_id: None,
            at_s: None,
            after_s: None,
            fade_s: None,
            on: None,
            destination_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowQueryKind {
    Status,
    Preflight,
}

/// `SHOW_QUERY` (local operator): the show's state, or a pre-flight of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    pub query: ShowQueryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_id: Option<TimelineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ids: Option<Vec<DestinationId>>,
}

/// The most FFmpeg stderr lines per job a `DIAGNOSTICS` request may ask for.
pub const MAX_DIAG_STDERR_LINES: u32 = 1000;

/// `DIAGNOSTICS` (local operator, read-only): the daemon's recent log lines and each FFmpeg job's
/// last stderr lines, redacted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// Stderr lines per job (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_lines: Option<u32>,
}

impl Diagnostics {
    /// How many stderr lines per job.
    pub fn check(&self) -> Result<usize, Refusal> {
        match self.stderr_lines.unwrap_or(50) {
            n @ 1..=MAX_DIAG_STDERR_LINES => Ok(n as usize),
            n => Err(Refusal::field("payload.stderr_lines", format!("{n} lines: use 1 to {MAX_DIAG_STDERR_LINES}"))),
        }
    }
}

/// What `DIAGNOSTICS` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticsReport {
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's last log lines (JSON, oldest first).
    pub logs: Vec<String>,
    /// Each FFmpeg job's last stderr lines: running jobs, then recently ended ones.
    pub jobs: Vec<crate::ffmpeg::ring::JobTail>,
}

// ---------------------------------------------------------------------------------------------
// Checks: the flat wire form → what each action needs
// ---------------------------------------------------------------------------------------------

pub(crate) fn need<T: Clone>(v: &Option<T>, field: &str, action: &str) -> Result<T, Refusal> {
    v.clone().ok_or_else(|| Refusal::field(format!("payload.{field}"), format!("required for {action}")))
}

pub(crate) fn destinations(v: &Option<Vec<DestinationId>>, action: &str) -> Result<Vec<DestinationId>, Refusal> {
    let list = need(v, "destination_ids", action)?;
    if list.is_empty() || list.len() > MAX_DESTINATIONS {
        return Err(Refusal::field(
            "payload.destination_ids",
            format!("{} destinations: use 1 to {MAX_DESTINATIONS}", list.len()),
        ));
    }
    Ok(dedup(list))
}

pub(crate) fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Where a seek goes.
#[derive(Debug, Clone, PartialEq)]
pub enum SeekTo {
    Cue(CueId),
    Position(ProgramTime),
}

/// A show to start.
#[derive(Debug, Clone, PartialEq)]
pub struct GoLive {
    pub timeline: TimelineId,
    pub destinations: Vec<DestinationId>,
    pub from: Option<ProgramTime>,
    pub bitrate: Option<Kbps>,
}

/// What a show command does, with exactly what it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum ShowAction {
    GoLive(GoLive),
    Stop,
    AddDestination(DestinationId),
    RemoveDestination(DestinationId),
    EmergencySlate(bool),
    KillAll,
    SetEncoder(EncoderChange),
    Pause,
    Resume,
    Seek(SeekTo),
    Skip,
    Pin(CameraId),
    Unpin,
}

impl StreamControl {
    pub fn check(&self) -> Result<ShowAction, Refusal> {
        Ok(match self.command {
            StreamCommand::GoLive => ShowAction::GoLive(GoLive {
                timeline: need(&self.timeline_id, "timeline_id", "go_live")?,
                destinations: destinations(&self.destination_ids, "go_live")?,
                from: None,
                bitrate: self.encoder.as_ref().and_then(|e| e.bitrate_kbps),
            }),
            StreamCommand::Stop => ShowAction::Stop,
            StreamCommand::AddDestination => {
                ShowAction::AddDestination(need(&self.destination_id, "destination_id", "add_destination")?)
            }
            StreamCommand::RemoveDestination => {
                ShowAction::RemoveDestination(need(&self.destination_id, "destination_id", "remove_destination")?)
            }
            StreamCommand::EmergencySlate => ShowAction::EmergencySlate(self.on.unwrap_or(true)),
            StreamCommand::KillAll => ShowAction::KillAll,
            StreamCommand::SetEncoder => {
                let e = need(&self.encoder, "encoder", "set_encoder")?;
                if e.bitrate_kbps.is_none() && e.profile.is_none() {
                    return Err(Refusal::field("payload.encoder", "set_encoder needs bitrate_kbps or profile"));
                }
                ShowAction::SetEncoder(e)
            }
        })
    }
}

impl TimelineExecute {
    pub fn check(&self) -> Result<ShowAction, Refusal> {
        Ok(match self.action {
            TimelineAction::Play => ShowAction::GoLive(GoLive {
                timeline: need(&self.timeline_id, "timeline_id", "play")?,
                destinations: destinations(&self.destination_ids, "play")?,
                from: self.position_s,
                bitrate: None,
            }),
            TimelineAction::Pause => ShowAction::Pause,
            TimelineAction::Resume => ShowAction::Resume,
            TimelineAction::Stop => ShowAction::Stop,
            TimelineAction::Seek => match (&self.cue_id, self.position_s) {
                (Some(c), None) => ShowAction::Seek(SeekTo::Cue(c.clone())),
                (None, Some(p)) => ShowAction::Seek(SeekTo::Position(p)),
                _ => return Err(Refusal::field("payload.cue_id", "seek takes either cue_id or position_s")),
            },
            TimelineAction::Skip => ShowAction::Skip,
            TimelineAction::PinCamera => ShowAction::Pin(need(&self.camera_id, "camera_id", "pin_camera")?),
            TimelineAction::Unpin => ShowAction::Unpin,
        })
    }
}

/// What an overlay command does.
#[derive(Debug, Clone, PartialEq)]
pub enum OverlayChange {
    SetVars(BTreeMap<VarName, OverlayText>),
    Show(OverlayId, Box<OverlayRequest>),
    Hide(OverlayId),
    ClearAll,
}

impl OverlayUpdate {
    pub fn check(&self) -> Result<OverlayChange, Refusal> {
        Ok(match self.action {
            OverlayAction::SetVars => {
                let vars = need(&self.vars, "vars", "set_vars")?;
                if vars.is_empty() || vars.len() > MAX_VARS {
                    return Err(Refusal::field(
                        "payload.vars",
                        format!("{} variables: use 1 to {MAX_VARS}", vars.len()),
                    ));
                }
                OverlayChange::SetVars(vars)
            }
            OverlayAction::Show => {
                let id = need(&self.overlay_id, "overlay_id", "show")?;
                let req = need(&self.overlay, "overlay", "show")?;
                // The parts a kind needs, checked now (the image itself when it is loaded).
                req.to_spec(&id, None).map_err(overlay_refusal)?;
                OverlayChange::Show(id, Box::new(req))
            }
            OverlayAction::Hide => OverlayChange::Hide(need(&self.overlay_id, "overlay_id", "hide")?),
            OverlayAction::ClearAll => OverlayChange::ClearAll,
        })
    }
}

/// An overlay that cannot be built, naming the part at fault.
pub(crate) fn overlay_refusal(e: crate::media::compositor::request::RequestError) -> Refusal {
    use crate::media::compositor::request::RequestError as E;
    let field = match &e {
        E::Missing { field, .. } | E::Unused { field, .. } => format!("payload.overlay.{field}"),
        E::Image(_) => "payload.overlay.image".to_string(),
    };
    let message = e.to_string();
    let message = message.split_once(": ").map_or(message.clone(), |(_, m)| m.to_string());
    Refusal::field(field, message)
}

/// `TIMELINE_LOAD`: a segment package to download and install, or an inline timeline. Only the
/// cloud link sends it (the inbox lends it [`timeline_load::FromCloud`]); the dispatcher downloads,
/// reports progress and installs ([`timeline_load`]); other origins are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineLoad {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate: Option<bool>,
    /// Set by the cloud inbox only (the trust store, the trusted time, progress reports).
    #[serde(skip)]
    pub from_cloud: Option<timeline_load::FromCloud>,
}

/// What a `TIMELINE_LOAD` carries, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadSource {
    Package(crate::segments::download::Wanted),
    Inline(serde_json::Value),
}

impl TimelineLoad {
    /// The package (an `https://` URL, its SHA-256 and size) or the inline timeline, never both.
    pub fn source(&self) -> Result<LoadSource, Refusal> {
        match (&self.package_url, &self.timeline) {
            (Some(_), Some(_)) => Err(Refusal::field("payload.timeline", "give package_url or timeline, not both")),
            (None, Some(t)) => {
                if self.sha256.is_some() || self.size.is_some() {
                    return Err(Refusal::field("payload.sha256", "sha256 and size go with package_url"));
                }
                Ok(LoadSource::Inline(t.clone()))
            }
            (None, None) => Err(Refusal::field("payload", "give package_url (with sha256 and size) or timeline")),
            (Some(u), None) => {
                let url = url::Url::parse(u)
                    .ok()
                    .filter(|u| u.scheme() == "https" && u.host_str().is_some() && u.as_str().len() <= 2048)
                    .ok_or_else(|| Refusal::field("payload.package_url", "an https:// URL of at most 2048 bytes"))?;
                let sha256 = self
                    .sha256
                    .as_deref()
                    .ok_or_else(|| Refusal::field("payload.sha256", "required with package_url"))
                    .and_then(|s| {
                        crate::segments::manifest::Sha256Hex::new(s)
                            .map_err(|m| Refusal::field("payload.sha256", m.to_string()))
                    })?;
                let size = self.size.filter(|s| *s >= 1).ok_or_else(|| {
                    Refusal::field("payload.size", "required with package_url: the package's bytes, at least 1")
                })?;
                Ok(LoadSource::Package(crate::segments::download::Wanted { url, sha256, size }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
