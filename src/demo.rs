//! `vistter-agent demo`: a show on built-in sources, for a machine with nothing configured.
//!
//! Two FFmpeg test sources stand in for cameras (`demo-a`: testsrc2, `demo-b`: SMPTE bars), and the
//! timeline engine drives the show exactly as it drives a real one. The demo writes its
//! timeline in code as the same JSON an operator would load: a loop of video cues alternating the
//! two sources (a crossfade into `demo-a`, a hard cut into `demo-b`), and overlay tracks for a
//! logo (a PNG drawn here, so no asset files are needed), a live clock and a lower third naming
//! the source of each cue. That document passes the same checks as any timeline
//! ([`check_value`] against an inventory of the two sources and the asset directory), then the
//! show actor plays it on a program bus: it pre-rolls the sources, hands each cue to the bus with
//! its program time, and the bus applies it on the frame due then. The show is encoded once and
//! goes to a local FLV recording (or an RTMP URL). Everything runs in this process and stops on
//! Ctrl-C or after `--seconds`: the show first, then the program.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ffmpeg::job::JobEvent;
use crate::ffmpeg::registry::Registry;
use crate::media::destination::{Ingest, OutputTarget, Publisher};
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::{CameraSource, SourceKind};
use crate::media::program::{Program, ProgramCamera, ProgramSpec};
use crate::media::MediaEnv;
use crate::secret::Secret;
use crate::timeline::actor::{self, ShowSpec};
use crate::timeline::model::{check_value, Inventory, Timeline, TimelineErrors, FPS_ALLOWED};
use crate::values::{CameraId, DestinationId, SourceId};

/// The demo timeline's id (it shows up in the log as `timeline=vistter-demo`).
pub const TIMELINE_ID: &str = "vistter-demo";
/// The logo's file name under the asset directory (the timeline refers to it relative to that).
const LOGO: &str = "logo.png";
/// Longest crossfade and lower-third fades; shorter when `--cut-every` leaves less room.
const FADE_S: f64 = 1.0;
const THIRD_FADE_IN_S: f64 = 0.8;
const THIRD_FADE_OUT_S: f64 = 0.4;

/// A built-in source standing in for a camera.
struct BuiltIn {
    camera_id: &'static str,
    /// The lavfi video source (it is also what the lower third calls it).
    pattern: &'static str,
    /// A tone, so each source is recognisable by ear too.
    tone_hz: u32,
    /// Whether the cut into this source is a crossfade (else a hard cut).
    fade: bool,
}

/// In cue order: the timeline starts on the first.
const SOURCES: [BuiltIn; 2] = [
    BuiltIn { camera_id: "demo-a", pattern: "testsrc2", tone_hz: 330, fade: true },
    BuiltIn { camera_id: "demo-b", pattern: "smptehdbars", tone_hz: 550, fade: false },
];

pub struct DemoOptions {
    /// Where the show goes: a file path (FLV) or an rtmp(s):// URL.
    pub output: String,
    pub format: ProgramFormat,
    pub bitrate_kbps: u32,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Seconds on each source (the length of each video cue).
    pub cut_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    /// A timeline runs on a frame rate whose audio frames are whole samples; so does the demo.
    #[error("--fps {0} cannot drive a timeline: use one of {allowed:?}", allowed = FPS_ALLOWED)]
    Fps(u32),
    /// The generated timeline failed the checks every timeline must pass (a bug in the demo, or
    /// `--cut-every` out of the contract's range).
    #[error("the demo timeline was refused: {0}")]
    Timeline(#[from] TimelineErrors),
}

fn program_camera(src: &BuiltIn, fmt: ProgramFormat) -> ProgramCamera {
    let video = format!("{}=size={}x{}:rate={}", src.pattern, fmt.width, fmt.height, fmt.fps);
    let audio = format!("sine=frequency={}:sample_rate=48000", src.tone_hz);
    ProgramCamera {
        source: CameraSource {
            camera_id: SourceId::new(src.camera_id).expect("a valid id"),
            kind: SourceKind::Lavfi { video, audio: Some(audio) },
            shown: format!("built-in {}", src.pattern),
        },
        backup: None,
    }
}

/// The demo's timeline, as the JSON an operator would load (`schemas/timeline.v1.json`): `fmt`'s fps and size, one
/// video cue of `cut_every` per built-in source, looping; a logo and a clock for the whole loop; a
/// lower third naming the source over each video cue.
pub fn timeline_doc(fmt: ProgramFormat, cut_every: Duration) -> Value {
    let cut = cut_every.as_secs_f64();
    let font = (fmt.height as f64 / 18.0).round().max(8.0);
    let mut video = Vec::new();
    let mut thirds = Vec::new();
    for (i, src) in SOURCES.iter().enumerate() {
        let start = i as f64 * cut;
        let params = if src.fade {
            json!({"camera_id": src.camera_id, "transition": "fade", "transition_duration": FADE_S.min(cut / 2.0)})
        } else {
            json!({"camera_id": src.camera_id, "transition": "cut"})
        };
        let tag = src.camera_id.trim_start_matches("demo-");
        video.push(json!({"id": format!("shot-{tag}"), "start_time": start, "duration": cut,
                          "action": "show_camera", "params": params}));
        let text = format!("VistterStream demo · {} ({})", src.camera_id, src.pattern);
        thirds.push(json!({"id": format!("third-{tag}"), "start_time": start, "duration": cut,
            "action": "show_overlay",
            "params": {"type": "lower_third", "text": text, "position": "lower_third", "opacity": 1.0,
                       "font_size": (font * 1.2).round(), "color": "#FFFFFF",
                       "fade_in": THIRD_FADE_IN_S.min(cut / 4.0), "fade_out": THIRD_FADE_OUT_S.min(cut / 4.0)}}));
    }
    let duration = SOURCES.len() as f64 * cut;
    // Logo and clock span the whole loop; with no fades they stay put across the loop boundary.
    let whole = |id: &str, params: Value| {
        json!({"id": id, "start_time": 0, "duration": duration,
               "action": "show_overlay", "params": params})
    };
    let logo = whole(
        "logo",
        json!({"type": "logo", "image": LOGO, "position": "top_right", "offset": {"x": "2%", "y": "3%"},
               "opacity": 0.9}),
    );
    let clock = whole(
        "clock",
        json!({"type": "text", "text": "{{date}} {{time}}", "position": "top_left",
               "offset": {"x": "2%", "y": "3%"}, "opacity": 1.0, "font_size": font, "color": "#FFFFFF",
               "background": "#0000008C"}),
    );
    json!({
        "id": TIMELINE_ID, "name": "VistterStream demo", "duration": duration, "fps": fmt.fps,
        "resolution": format!("{}x{}", fmt.width, fmt.height), "loop": true,
        "tracks": {
            "video": {"cues": video},
            "overlays": [
                {"layer": 1, "cues": [logo]},
                {"layer": 2, "cues": [clock]},
                {"layer": 3, "cues": thirds},
            ],
        },
    })
}

/// What the demo timeline is checked against: the two built-in sources (no PTZ presets) and the
/// directory holding the logo.
fn inventory(asset_root: &Path) -> Inventory {
    Inventory {
        cameras: SOURCES.iter().map(|s| (CameraId::new(s.camera_id).expect("a valid id"), HashSet::new())).collect(),
        asset_root: Some(asset_root.to_path_buf()),
    }
}

/// Writes the logo under `asset_root` and checks the demo timeline against it.
pub fn checked_timeline(fmt: ProgramFormat, cut_every: Duration, asset_root: &Path) -> Result<Timeline, DemoError> {
    if !FPS_ALLOWED.contains(&fmt.fps) {
        return Err(DemoError::Fps(fmt.fps));
    }
    std::fs::create_dir_all(asset_root).map_err(|e| DemoError::Setup(format!("{}: {e}", asset_root.display())))?;
    write_logo(&asset_root.join(LOGO), fmt)?;
    Ok(check_value(&timeline_doc(fmt, cut_every), &inventory(asset_root))?)
}

/// A small translucent badge for the logo slot (an eighth of the frame's width), drawn here so the
/// demo needs no asset files.
fn write_logo(path: &Path, fmt: ProgramFormat) -> Result<(), DemoError> {
    let w = (fmt.width / 8).max(16);
    let h = (w * 3 / 8).max(6);
    let border = (w / 40).max(1);
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let edge = x < border || y < border || x >= w - border || y >= h - border;
            rgba.extend_from_slice(if edge { &[255, 255, 255, 255] } else { &[20, 90, 200, 200] });
        }
    }
    let f = std::fs::File::create(path).map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().map_err(|e| DemoError::Setup(e.to_string()))?;
    wr.write_image_data(&rgba).map_err(|e| DemoError::Setup(e.to_string()))
}

/// Drains the events of the media jobs and of the show so their channel never fills. The actor
/// and the jobs already log what matters (cue lateness, failures) as it happens; the full stream
/// is kept at debug level.
fn log_events(mut rx: mpsc::Receiver<JobEvent>) {
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            tracing::debug!(target: "vistter_agent::demo", "{e:?}");
        }
    });
}

pub async fn run(cfg: &Config, opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let fmt = opts.format;
    let work = cfg.data_dir.join("demo");
    let assets: PathBuf = work.join("assets");
    let timeline = Arc::new(checked_timeline(fmt, opts.cut_every, &assets)?);
    println!(
        "  timeline \"{}\": {} video cues of {} s on a {} s loop, played by the timeline engine",
        timeline.id,
        timeline.video.len(),
        opts.cut_every.as_secs_f64(),
        timeline.duration as f64 / 1e6
    );
    let registry =
        Registry::open(&work.join("run")).map_err(|e| DemoError::Setup(format!("{}: {e}", work.display())))?;
    registry.reap_leftovers().await;
    let (ev_tx, ev_rx) = mpsc::channel(256);
    log_events(ev_rx);
    let env = MediaEnv::new(cfg, registry, ev_tx.clone());
    let sources: HashMap<SourceId, ProgramCamera> =
        SOURCES.iter().map(|s| program_camera(s, fmt)).map(|pc| (pc.source.camera_id.clone(), pc)).collect();
    let output = OutputTarget {
        destination_id: DestinationId::new("demo").expect("a valid id"),
        ingest: Ingest::Primary,
        url: Secret::new(opts.output.clone()),
        shown: opts.output.clone(),
        key: Secret::new(""),
        tls: None,
        ingest_url: opts.output.clone(),
        // The demo's output is a file: only FFmpeg writes those.
        publisher: Publisher::Ffmpeg,
    };
    let spec = ProgramSpec {
        id: crate::values::ProgramId::new("demo").expect("a valid id"),
        cameras: SOURCES.iter().map(|s| sources[s.camera_id].clone()).collect(),
        first: timeline.video.first().and_then(|c| actor::bus_id(&c.source)),
        outputs: vec![output],
        encoder: EncoderSettings { format: fmt, bitrate_kbps: opts.bitrate_kbps, encoder: "libx264".into() },
        slate_png: None,
        switcher: env.switcher,
    };
    let program = Program::start(spec, &env).await;
    let show = actor::spawn(
        ShowSpec {
            timeline: timeline.clone(),
            asset_root: assets,
            sources,
            ptz: HashMap::new(),
            preroll_lead: Duration::from_secs(2),
            hot_inputs: true,
            start_pos: 0,
            wall_anchor_us: None,
            paused: false,
            pinned: None,
            emergency_slate: false,
            execution_id: None,
        },
        program.handle(),
        ev_tx,
        None,
    );

    let stop_after = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = stop_after => {}
    }
    let status = show.status();
    show.stop().await;
    program.stop().await;
    if let Some(st) = status {
        let l = &st.lateness;
        println!(
            "  timeline \"{}\": {} cues on air (loop {}), worst {:.0} ms off their frame time, {} over a frame late",
            st.timeline_id, l.cues, st.engine.loop_index, l.max_ms, l.late_over_1_frame
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::model::{OverlayType, Us, VideoSource};

    fn fmt(fps: u32) -> ProgramFormat {
        ProgramFormat { width: 320, height: 180, fps }
    }

    #[test]
    fn the_demo_timeline_passes_the_checks_of_any_timeline() {
        let dir = tempfile::tempdir().unwrap();
        for (fps, cut) in [(25, 3), (30, 8), (60, 1), (10, 2)] {
            let tl = checked_timeline(fmt(fps), Duration::from_secs(cut), dir.path())
                .unwrap_or_else(|e| panic!("fps {fps}, cut every {cut} s: {e}"));
            let cut = cut as i64 * 1_000_000;
            assert_eq!((tl.id.as_str(), tl.fps, tl.width, tl.height), (TIMELINE_ID, fps, 320, 180));
            assert!(tl.looping);
            assert_eq!(tl.duration, 2 * cut, "two cues of --cut-every");
            let shots: Vec<(Us, &str, Us)> = tl
                .video
                .iter()
                .map(|c| match &c.source {
                    VideoSource::Camera { camera_id, preset_id: None } => (c.start, camera_id.as_str(), c.fade),
                    other => panic!("a built-in camera, not {other:?}"),
                })
                .collect();
            let fade = (cut / 2).min(1_000_000);
            assert_eq!(shots, vec![(0, "demo-a", fade), (cut, "demo-b", 0)], "alternating, a fade into demo-a");
            let kinds: Vec<Vec<OverlayType>> =
                tl.overlays.iter().map(|t| t.cues.iter().map(|c| c.params.kind).collect()).collect();
            use OverlayType::*;
            assert_eq!(kinds, vec![vec![Logo], vec![Text], vec![LowerThird, LowerThird]]);
            assert_eq!(tl.overlays[1].cues[0].params.text.as_deref(), Some("{{date}} {{time}}"));
            for (shot, third) in tl.video.iter().zip(&tl.overlays[2].cues) {
                assert_eq!((third.start, third.duration), (shot.start, shot.duration), "one lower third per cue");
                let VideoSource::Camera { camera_id, .. } = &shot.source else { unreachable!() };
                assert!(third.params.text.as_deref().unwrap().contains(camera_id.as_str()), "names its source");
            }
            assert_eq!(tl.assets(), vec![LOGO.to_string()]);
        }
    }

    #[test]
    fn the_logo_must_exist_like_any_asset() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_value(&timeline_doc(fmt(25), Duration::from_secs(3)), &inventory(dir.path())).unwrap_err();
        assert!(e.to_string().contains("overlay layer 1 cue \"logo\": asset \"logo.png\" is missing"), "{e}");
    }

    #[test]
    fn a_frame_rate_a_timeline_cannot_run_at_is_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let e = checked_timeline(fmt(8), Duration::from_secs(3), &dir.path().join("assets")).unwrap_err();
        assert!(matches!(e, DemoError::Fps(8)), "{e}");
        assert!(e.to_string().contains("--fps 8") && e.to_string().contains("25, 30"), "{e}");
        assert!(!dir.path().join("assets").exists(), "nothing written");
    }

    #[test]
    fn a_cut_every_past_the_contract_is_refused_by_the_checks() {
        // 4 days per cue: the loop passes the schema's one-week maximum.
        let dir = tempfile::tempdir().unwrap();
        let e = checked_timeline(fmt(25), Duration::from_secs(4 * 86_400), dir.path()).unwrap_err();
        assert!(matches!(e, DemoError::Timeline(_)), "{e}");
    }
}
