//! The timeline contract (the JSON published as `schemas/timeline.v1.json`) and its checks.
//!
//! A timeline arrives as JSON from an operator, a segment package or the cloud: untrusted. It is
//! checked twice before anything can play it:
//! 1. against `schemas/timeline.v1.json` (JSON Schema 2020-12, the published contract), so a client
//!    in any language gets the same verdict on shape;
//! 2. semantically, against this appliance: overlapping cues in a track, cues past the timeline's
//!    end, fades longer than their cue, unknown cameras, presets and assets, duplicate cue ids.
//!
//! Every error names the track and the cue. Only a [`Timeline`] that passed both exists in typed
//! form; the engine never sees raw JSON. Times become integer microseconds here, so the engine's
//! arithmetic is exact (a cue at 1/3 s stays at 333 333 µs on every loop).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::media::compositor::request::OverlayRequest;
use crate::media::compositor::{OverlaySpec, Position};
use crate::values::{CameraId, CueId, OverlayId, PresetId, Size, TimelineId};

/// Microseconds: timeline positions and program times.
pub type Us = i64;

pub const US_PER_S: Us = 1_000_000;

/// The published schema, compiled into the binary so validation never depends on files at run time.
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/timeline.v1.json");

pub use crate::media::FPS_ALLOWED;

// ---------------------------------------------------------------------------------------------
// Wire shape (exactly the published schema; unknown members are rejected by the schema and by serde)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimelineDoc {
    pub id: TimelineId,
    pub name: String,
    /// Seconds.
    pub duration: f64,
    pub fps: u32,
    /// "WIDTHxHEIGHT", e.g. "1280x720".
    pub resolution: String,
    #[serde(rename = "loop", default)]
    pub looping: bool,
    pub tracks: TracksDoc,
    #[serde(default)]
    pub fallback: FallbackDoc,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracksDoc {
    pub video: VideoTrackDoc,
    #[serde(default)]
    pub overlays: Vec<OverlayTrackDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoTrackDoc {
    pub cues: Vec<CueDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverlayTrackDoc {
    pub layer: i32,
    pub cues: Vec<CueDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CueDoc {
    pub id: CueId,
    /// Seconds from the timeline's start.
    pub start_time: f64,
    /// Seconds.
    pub duration: f64,
    pub action: String,
    #[serde(default)]
    pub params: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FallbackDoc {
    /// A PNG asset shown instead of the generated card.
    pub slate: Option<String>,
    /// Stands in for any camera of the show that fails (a camera's own backup comes first).
    pub backup_camera_id: Option<CameraId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ShowCameraParams {
    camera_id: CameraId,
    preset_id: Option<PresetId>,
    #[serde(default)]
    transition: TransitionKind,
    /// Seconds.
    #[serde(default)]
    transition_duration: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TransitionKind {
    #[default]
    Cut,
    Fade,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ShowMediaParams {
    asset: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `show_overlay` params, as on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverlayParams {
    #[serde(rename = "type")]
    pub kind: OverlayType,
    pub text: Option<String>,
    /// An image asset (package-relative path).
    pub image: Option<String>,
    pub position: String,
    pub offset: Option<OffsetDoc>,
    pub scale: Option<f32>,
    pub opacity: f32,
    pub font_size: Option<f32>,
    pub color: Option<String>,
    pub background: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub fade_in: f64,
    /// Seconds; the fade-out ends when the cue ends.
    #[serde(default)]
    pub fade_out: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OverlayType {
    Text,
    Image,
    Logo,
    LowerThird,
}

/// Pixels (a number) or percent of the frame ("5%").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OffsetDoc {
    #[serde(default)]
    pub x: Option<Value>,
    #[serde(default)]
    pub y: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Checked, typed form
// ---------------------------------------------------------------------------------------------

/// A timeline that passed the schema and the semantic checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub id: TimelineId,
    pub name: String,
    pub duration: Us,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub looping: bool,
    /// Sorted by start; never overlapping.
    pub video: Vec<VideoCue>,
    /// Each track's cues sorted by start, never overlapping.
    pub overlays: Vec<OverlayTrack>,
    pub fallback: Fallback,
    /// The document it came from (stored and shown as is).
    pub doc: TimelineDoc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoCue {
    pub id: CueId,
    pub start: Us,
    pub duration: Us,
    pub source: VideoSource,
    /// Crossfade length; zero is a hard cut.
    pub fade: Us,
}

impl VideoCue {
    pub fn end(&self) -> Us {
        self.start + self.duration
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VideoSource {
    Camera { camera_id: CameraId, preset_id: Option<PresetId> },
    Media { asset: String },
    Slate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OverlayTrack {
    pub layer: i32,
    pub cues: Vec<OverlayCue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OverlayCue {
    pub id: CueId,
    pub layer: i32,
    pub start: Us,
    pub duration: Us,
    pub fade_in: Us,
    pub fade_out: Us,
    pub params: OverlayParams,
}

impl OverlayCue {
    pub fn end(&self) -> Us {
        self.start + self.duration
    }
    /// When the hide is issued: early enough for the fade-out to finish at the cue's end.
    pub fn hide_at(&self) -> Us {
        self.end() - self.fade_out
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fallback {
    pub slate: Option<String>,
    pub backup_camera_id: Option<CameraId>,
}

impl Timeline {
    /// Every camera the show may put on air (cues and the fallback), in first-use order.
    pub fn cameras(&self) -> Vec<CameraId> {
        let mut out: Vec<CameraId> = Vec::new();
        let cues = self.video.iter().filter_map(|c| match &c.source {
            VideoSource::Camera { camera_id, .. } => Some(camera_id.clone()),
            _ => None,
        });
        for c in cues.chain(self.fallback.backup_camera_id.clone()) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// Every media asset of video cues.
    pub fn media(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.video {
            if let VideoSource::Media { asset } = &c.source {
                if !out.contains(asset) {
                    out.push(asset.clone());
                }
            }
        }
        out
    }

    /// Every asset the timeline refers to (media, images, slate).
    pub fn assets(&self) -> Vec<String> {
        let mut out = self.media();
        let images = self.overlays.iter().flat_map(|t| t.cues.iter()).filter_map(|c| c.params.image.clone());
        for a in images.chain(self.fallback.slate.clone()) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// A cue's start by id, if it exists (video or overlay).
    pub fn cue_start(&self, id: &str) -> Option<Us> {
        self.video
            .iter()
            .find(|c| c.id.as_str() == id)
            .map(|c| c.start)
            .or_else(|| self.overlays.iter().flat_map(|t| t.cues.iter()).find(|c| c.id.as_str() == id).map(|c| c.start))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem, located: which track and which cue (or "timeline" for top-level fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineError {
    /// e.g. `video cue "c4"`, `overlay layer 2 cue "logo"`, `timeline`.
    pub at: String,
    /// JSON pointer of the offending value, when it comes from the document.
    pub pointer: Option<String>,
    pub message: String,
}

impl fmt::Display for TimelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)?;
        if let Some(p) = &self.pointer {
            write!(f, " (at {p})")?;
        }
        Ok(())
    }
}

/// All the problems of a rejected timeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TimelineErrors(pub Vec<TimelineError>);

impl fmt::Display for TimelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid timeline: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What is wrong with one value of a timeline; the caller names the track and the cue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("asset path {0:?} must be relative to the package")]
    AssetNotRelative(String),
    #[error("asset path {0:?} must stay inside the package (no '..')")]
    AssetOutside(String),
    #[error("asset {0:?} is missing")]
    AssetMissing(String),
    #[error("camera {:?} is not configured on this appliance", .0.as_str())]
    UnknownCamera(CameraId),
    #[error("camera {:?} has no preset {:?}", camera.as_str(), preset.as_str())]
    UnknownPreset { camera: CameraId, preset: PresetId },
    /// An overlay parameter out of its range (the operator's overlays follow the same rules).
    #[error("{field}: {message}")]
    OverlayParam { field: &'static str, message: String },
    /// The compositor refuses the overlay (its message).
    #[error("{0}")]
    Overlay(String),
}

/// What the appliance has, for the semantic checks.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Camera id → its preset ids.
    pub cameras: HashMap<CameraId, HashSet<PresetId>>,
    /// Where package-relative assets live (None: assets are not checked for presence).
    pub asset_root: Option<PathBuf>,
}

fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA_JSON).expect("the bundled timeline schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the bundled timeline schema compiles")
    })
}

/// Names the track and cue a JSON pointer falls in, reading the ids from the document.
fn locate(doc: &Value, pointer: &str) -> String {
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    let cue_id = |cue: &Value| cue.get("id").and_then(Value::as_str).map(|s| format!("{s:?}"));
    match parts.as_slice() {
        ["tracks", "video", "cues", i, ..] => {
            let cue = doc.pointer(&format!("/tracks/video/cues/{i}")).unwrap_or(&Value::Null);
            format!("video cue {}", cue_id(cue).unwrap_or_else(|| format!("#{i}")))
        }
        ["tracks", "overlays", t, "cues", i, ..] => {
            let track = doc.pointer(&format!("/tracks/overlays/{t}")).unwrap_or(&Value::Null);
            let layer = track.get("layer").map(|l| format!("layer {l}")).unwrap_or_else(|| format!("track #{t}"));
            let cue = doc.pointer(&format!("/tracks/overlays/{t}/cues/{i}")).unwrap_or(&Value::Null);
            format!("overlay {layer} cue {}", cue_id(cue).unwrap_or_else(|| format!("#{i}")))
        }
        ["tracks", "overlays", t, ..] => format!("overlay track #{t}"),
        ["tracks", "video", ..] => "video track".into(),
        ["fallback", ..] => "fallback".into(),
        _ => "timeline".into(),
    }
}

/// Checks a timeline's JSON and returns it typed, or every problem found.
pub fn parse(json: &str, inv: &Inventory) -> Result<Timeline, TimelineErrors> {
    let doc: Value = serde_json::from_str(json).map_err(|e| {
        TimelineErrors(vec![TimelineError { at: "timeline".into(), pointer: None, message: format!("not JSON: {e}") }])
    })?;
    check_value(&doc, inv)
}

/// A timeline this appliance stored after [`parse`] accepted it (`timeline load` is the only
/// writer): the typed and semantic checks again, since cameras, presets and assets may have
/// changed since, but not the JSON Schema, whose verdict on a stored document's shape is settled.
/// Anything that arrives from outside goes through [`parse`] or [`check_value`].
pub fn parse_stored(json: &str, inv: &Inventory) -> Result<Timeline, TimelineErrors> {
    let doc: Value = serde_json::from_str(json).map_err(|e| {
        TimelineErrors(vec![TimelineError { at: "timeline".into(), pointer: None, message: format!("not JSON: {e}") }])
    })?;
    semantic(typed(&doc)?, inv)
}

/// As [`parse`], from a parsed JSON value.
pub fn check_value(doc: &Value, inv: &Inventory) -> Result<Timeline, TimelineErrors> {
    let mut errs: Vec<TimelineError> = schema()
        .iter_errors(doc)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            TimelineError { at: locate(doc, &pointer), pointer: Some(pointer), message: e.to_string() }
        })
        .collect();
    if !errs.is_empty() {
        errs.truncate(20);
        return Err(TimelineErrors(errs));
    }
    semantic(typed(doc)?, inv)
}

/// The document in its wire types. A value they refuse (an id that breaks the id rule) is named
/// by its JSON pointer and located like a schema error.
fn typed(doc: &Value) -> Result<TimelineDoc, TimelineErrors> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let mut pointer = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                serde_path_to_error::Segment::Map { key } => pointer.push_str(&format!("/{key}")),
                serde_path_to_error::Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
                serde_path_to_error::Segment::Unknown => pointer.push_str("/?"),
            }
        }
        let at = locate(doc, &pointer);
        let pointer = (!pointer.is_empty()).then_some(pointer);
        TimelineErrors(vec![TimelineError { at, pointer, message: e.inner().to_string() }])
    })
}

fn us(seconds: f64) -> Us {
    (seconds * US_PER_S as f64).round() as Us
}

/// A package-relative path that cannot leave its root.
pub fn safe_rel_path(p: &str) -> Result<PathBuf, ModelError> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return Err(ModelError::AssetNotRelative(p.to_string()));
    }
    for c in path.components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => return Err(ModelError::AssetOutside(p.to_string())),
        }
    }
    Ok(path.to_path_buf())
}

fn semantic(d: TimelineDoc, inv: &Inventory) -> Result<Timeline, TimelineErrors> {
    let mut errs = Vec::new();
    let mut err = |at: String, message: String| errs.push(TimelineError { at, pointer: None, message });
    let duration = us(d.duration);
    if duration <= 0 {
        err("timeline".into(), "duration must be positive".into());
    }
    if !FPS_ALLOWED.contains(&d.fps) {
        err("timeline".into(), format!("fps {} is not one of {FPS_ALLOWED:?}", d.fps));
    }
    // The picture size rule of the commands ([`Size`]), so a timeline and a command agree.
    let (width, height) = match d.resolution.split_once('x').map(|(w, h)| (w.parse::<u32>(), h.parse::<u32>())) {
        Some((Ok(w), Ok(h))) => match Size::new(w, h) {
            Ok(s) => (s.width, s.height),
            Err(e) => {
                err("timeline".into(), format!("resolution {:?}: {e}", d.resolution));
                (0, 0)
            }
        },
        _ => {
            err("timeline".into(), format!("resolution {:?}: use WIDTHxHEIGHT, e.g. 1280x720", d.resolution));
            (0, 0)
        }
    };
    let mut ids: HashSet<&str> = HashSet::new();
    let check_asset = |p: &str| -> Result<(), ModelError> {
        let rel = safe_rel_path(p)?;
        if let Some(root) = &inv.asset_root {
            if !root.join(&rel).is_file() {
                return Err(ModelError::AssetMissing(p.to_string()));
            }
        }
        Ok(())
    };
    let check_camera = |cam: &CameraId, preset: Option<&PresetId>| -> Result<(), ModelError> {
        match inv.cameras.get(cam) {
            None => Err(ModelError::UnknownCamera(cam.clone())),
            Some(presets) => match preset {
                Some(p) if !presets.contains(p) => {
                    Err(ModelError::UnknownPreset { camera: cam.clone(), preset: p.clone() })
                }
                _ => Ok(()),
            },
        }
    };
    let span = |at: &str, start: Us, dur: Us, errs: &mut Vec<(String, String)>| {
        if start < 0 {
            errs.push((at.to_string(), "start_time must not be negative".into()));
        }
        if dur <= 0 {
            errs.push((at.to_string(), "duration must be positive".into()));
        }
        if duration > 0 && start + dur > duration {
            errs.push((
                at.to_string(),
                format!(
                    "ends at {:.3} s, past the timeline's duration of {:.3} s",
                    (start + dur) as f64 / 1e6,
                    duration as f64 / 1e6
                ),
            ));
        }
    };
    let mut located: Vec<(String, String)> = Vec::new();

    let mut video = Vec::new();
    for c in &d.tracks.video.cues {
        let at = format!("video cue {:?}", c.id.as_str());
        if !ids.insert(c.id.as_str()) {
            located.push((at.clone(), "duplicate cue id".into()));
        }
        let (start, dur) = (us(c.start_time), us(c.duration));
        span(&at, start, dur, &mut located);
        let (source, fade) = match c.action.as_str() {
            "show_camera" => match serde_json::from_value::<ShowCameraParams>(c.params.clone()) {
                Ok(p) => {
                    if let Err(e) = check_camera(&p.camera_id, p.preset_id.as_ref()) {
                        located.push((at.clone(), e.to_string()));
                    }
                    let fade = match p.transition {
                        TransitionKind::Cut => 0,
                        TransitionKind::Fade => us(p.transition_duration),
                    };
                    if fade < 0 || (fade > dur && dur > 0) {
                        located
                            .push((at.clone(), "transition_duration must be between 0 and the cue's duration".into()));
                    }
                    (VideoSource::Camera { camera_id: p.camera_id, preset_id: p.preset_id }, fade.max(0))
                }
                Err(e) => {
                    located.push((at.clone(), format!("params: {e}")));
                    continue;
                }
            },
            "show_media" => match serde_json::from_value::<ShowMediaParams>(c.params.clone()) {
                Ok(p) => {
                    if let Err(e) = check_asset(&p.asset) {
                        located.push((at.clone(), e.to_string()));
                    }
                    (VideoSource::Media { asset: p.asset }, 0)
                }
                Err(e) => {
                    located.push((at.clone(), format!("params: {e}")));
                    continue;
                }
            },
            "show_slate" => {
                let empty = c.params.is_null() || serde_json::from_value::<NoParams>(c.params.clone()).is_ok();
                if !empty {
                    located.push((at.clone(), "show_slate takes no params".into()));
                }
                (VideoSource::Slate, 0)
            }
            other => {
                located.push((at.clone(), format!("unknown video action {other:?}")));
                continue;
            }
        };
        video.push(VideoCue { id: c.id.clone(), start, duration: dur, source, fade });
    }
    video.sort_by_key(|c| c.start);
    for w in video.windows(2) {
        if w[1].start < w[0].end() {
            located.push((
                format!("video cue {:?}", w[1].id.as_str()),
                format!("overlaps cue {:?} in the same track", w[0].id.as_str()),
            ));
        }
    }

    let mut overlays = Vec::new();
    let mut layers = HashSet::new();
    for t in &d.tracks.overlays {
        if !layers.insert(t.layer) {
            located.push((format!("overlay layer {}", t.layer), "two overlay tracks use this layer".into()));
        }
        let mut cues = Vec::new();
        for c in &t.cues {
            let at = format!("overlay layer {} cue {:?}", t.layer, c.id.as_str());
            if !ids.insert(c.id.as_str()) {
                located.push((at.clone(), "duplicate cue id".into()));
            }
            let (start, dur) = (us(c.start_time), us(c.duration));
            span(&at, start, dur, &mut located);
            if c.action != "show_overlay" {
                located.push((at.clone(), format!("unknown overlay action {:?}", c.action)));
                continue;
            }
            let p = match serde_json::from_value::<OverlayParams>(c.params.clone()) {
                Ok(p) => p,
                Err(e) => {
                    located.push((at.clone(), format!("params: {e}")));
                    continue;
                }
            };
            match p.kind {
                OverlayType::Text | OverlayType::LowerThird if p.text.as_deref().is_none_or(str::is_empty) => {
                    located.push((at.clone(), "a text overlay needs text".into()))
                }
                OverlayType::Image | OverlayType::Logo if p.image.is_none() => {
                    located.push((at.clone(), "an image overlay needs an image asset".into()))
                }
                _ => {}
            }
            if let Some(img) = &p.image {
                if let Err(e) = check_asset(img) {
                    located.push((at.clone(), e.to_string()));
                }
            }
            if !(0.0..=1.0).contains(&p.opacity) {
                located.push((at.clone(), "opacity must be between 0 and 1".into()));
            }
            let (fi, fo) = (us(p.fade_in), us(p.fade_out));
            if fi < 0 || fo < 0 || (dur > 0 && (fi + fo > dur || fo >= dur)) {
                located.push((at.clone(), "fade_in + fade_out must fit in the cue's duration".into()));
            }
            // Reuse the operator path's checks (position, offsets, colours) so both agree.
            if let Err(e) = to_overlay_request(&c.id, t.layer, &p, Path::new(".")).to_spec() {
                located.push((at.clone(), e.to_string()));
            }
            cues.push(OverlayCue {
                id: c.id.clone(),
                layer: t.layer,
                start,
                duration: dur,
                fade_in: fi,
                fade_out: fo,
                params: p,
            });
        }
        cues.sort_by_key(|c| c.start);
        for w in cues.windows(2) {
            if w[1].start < w[0].end() {
                located.push((
                    format!("overlay layer {} cue {:?}", t.layer, w[1].id.as_str()),
                    format!("overlaps cue {:?} in the same track", w[0].id.as_str()),
                ));
            }
        }
        overlays.push(OverlayTrack { layer: t.layer, cues });
    }
    overlays.sort_by_key(|t| t.layer);

    if let Some(b) = &d.fallback.backup_camera_id {
        if let Err(e) = check_camera(b, None) {
            located.push(("fallback".into(), e.to_string()));
        }
    }
    if let Some(s) = &d.fallback.slate {
        if let Err(e) = check_asset(s) {
            located.push(("fallback".into(), e.to_string()));
        }
    }
    for (at, message) in located {
        err(at, message);
    }
    if !errs.is_empty() {
        return Err(TimelineErrors(errs));
    }
    Ok(Timeline {
        id: d.id.clone(),
        name: d.name.clone(),
        duration,
        fps: d.fps,
        width,
        height,
        looping: d.looping,
        video,
        overlays,
        fallback: Fallback { slate: d.fallback.slate.clone(), backup_camera_id: d.fallback.backup_camera_id.clone() },
        doc: d,
    })
}

/// A timeline overlay cue as the compositor's [`OverlayRequest`] (one code path for the timeline,
/// OVERLAY_UPDATE and the operator), with image assets resolved under `asset_root`. The
/// compositor id is the cue id, so consecutive cues on one layer never hide each other.
pub fn to_overlay_request(cue_id: &CueId, layer: i32, p: &OverlayParams, asset_root: &Path) -> CueOverlay {
    CueOverlay { id: cue_id.clone(), root: asset_root.to_path_buf(), req: overlay_request(layer, p) }
}

/// An overlay cue ready to become the compositor's spec (its values already checked).
pub struct CueOverlay {
    id: CueId,
    root: PathBuf,
    req: Result<OverlayRequest, ModelError>,
}

impl CueOverlay {
    pub fn to_spec(&self) -> Result<OverlaySpec, ModelError> {
        let req = self.req.as_ref().map_err(Clone::clone)?;
        req.to_spec(&OverlayId::from(&self.id), Some(&self.root)).map_err(|e| ModelError::Overlay(e.to_string()))
    }
}

fn overlay_request(layer: i32, p: &OverlayParams) -> Result<OverlayRequest, ModelError> {
    use crate::media::compositor::request as r;
    let field = |field: &'static str, e: r::ValueError| ModelError::OverlayParam { field, message: e.to_string() };
    let off = |name: &'static str, v: &Option<Value>| -> Result<Option<r::Offset>, ModelError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                r::Offset::px(n.as_f64().unwrap_or(f64::NAN)).map(Some).map_err(|e| field(name, e))
            }
            Some(Value::String(s)) => s.parse().map(Some).map_err(|e| field(name, e)),
            Some(_) => Err(ModelError::OverlayParam { field: name, message: "pixels or a percentage".into() }),
        }
    };
    let position: Position =
        serde_json::from_value(Value::String(p.position.clone())).map_err(|_| ModelError::OverlayParam {
            field: "position",
            message: format!("unknown position {:?}", r::shorten(&p.position)),
        })?;
    Ok(OverlayRequest {
        kind: Some(match p.kind {
            OverlayType::Text => r::OverlayType::Text,
            OverlayType::Image => r::OverlayType::Image,
            OverlayType::Logo => r::OverlayType::Logo,
            OverlayType::LowerThird => r::OverlayType::LowerThird,
        }),
        text: p.text.clone().map(r::OverlayText::new).transpose().map_err(|e| field("text", e))?,
        image: p.image.as_ref().map(PathBuf::from),
        position: Some(position),
        offset: Some(r::OffsetXY {
            x: off("offset.x", &p.offset.as_ref().and_then(|o| o.x.clone()))?,
            y: off("offset.y", &p.offset.as_ref().and_then(|o| o.y.clone()))?,
        }),
        scale: p.scale.map(|s| r::Scale::new(s as f64)).transpose().map_err(|e| field("scale", e))?,
        opacity: Some(r::Opacity::new(p.opacity as f64).map_err(|e| field("opacity", e))?),
        font_size: p.font_size.map(|s| r::FontSize::new(s as f64)).transpose().map_err(|e| field("font_size", e))?,
        color: p.color.as_deref().map(str::parse).transpose().map_err(|e| field("color", e))?,
        background: p.background.as_deref().map(str::parse).transpose().map_err(|e| field("background", e))?,
        fade_in: Some(r::FadeTime::from_secs(p.fade_in).map_err(|e| field("fade_in", e))?),
        fade_out: Some(r::FadeTime::from_secs(p.fade_out).map_err(|e| field("fade_out", e))?),
        layer: Some(r::Layer::new(layer as i64).map_err(|e| field("layer", e))?),
    })
}

#[cfg(test)]
mod tests;
