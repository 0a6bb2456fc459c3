//! `vistter-agent demo`: a show on built-in sources, for a machine with nothing configured.
//!
//! Two FFmpeg test sources stand in for cameras; the real program bus cuts between them (a fade
//! every other cut), with a logo, a live clock and a lower third naming the camera, encoded once
//! and pushed to a local FLV recording (or an RTMP URL). Everything runs in this process and stops
//! on Ctrl-C or after `--seconds`. (The timeline engine will drive this later; for now the cut
//! schedule is a loop here.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ffmpeg::registry::Registry;
use crate::media::compositor::{Offset, OverlayKind, OverlaySpec, Position, Prepared};
use crate::media::destination::{Ingest, OutputTarget};
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::probe::CameraSource;
use crate::media::program::{OverlayOp, Program, ProgramCamera, ProgramCmd, ProgramSpec};
use crate::media::MediaEnv;
use crate::secret::Secret;

pub struct DemoOptions {
    /// Where the show goes: a file path (FLV) or an rtmp(s):// URL.
    pub output: String,
    pub format: ProgramFormat,
    pub bitrate_kbps: u32,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Seconds on each source.
    pub cut_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
}

fn source(id: &str, video: &str, audio: &str) -> ProgramCamera {
    let url = format!("lavfi:{video}|{audio}");
    ProgramCamera {
        source: CameraSource {
            camera_id: id.into(),
            url: Secret::new(url),
            shown: format!("built-in {video}"),
            secrets: vec![],
        },
        backup: None,
    }
}

/// A small translucent badge for the logo slot, drawn here so the demo needs no asset files.
fn write_logo(path: &Path) -> Result<(), DemoError> {
    let (w, h) = (160u32, 60u32);
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let edge = x < 4 || y < 4 || x >= w - 4 || y >= h - 4;
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

async fn overlay(tx: &mpsc::Sender<ProgramCmd>, spec: OverlaySpec, fmt: ProgramFormat) -> Result<(), DemoError> {
    let p = Prepared::load(spec, fmt.width, fmt.height).map_err(|e| DemoError::Setup(e.to_string()))?;
    send(tx, OverlayOp::Show(Box::new(p))).await
}

async fn send(tx: &mpsc::Sender<ProgramCmd>, op: OverlayOp) -> Result<(), DemoError> {
    let (reply, rx) = oneshot::channel();
    tx.send(ProgramCmd::Overlay { op, reply }).await.map_err(|_| DemoError::Setup("program stopped".into()))?;
    rx.await.map_err(|_| DemoError::Setup("program stopped".into()))?.map_err(DemoError::Setup)
}

pub async fn run(cfg: &Config, opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let work = cfg.data_dir.join("demo");
    std::fs::create_dir_all(&work).map_err(|e| DemoError::Setup(format!("{}: {e}", work.display())))?;
    let registry =
        Registry::open(&work.join("run")).map_err(|e| DemoError::Setup(format!("{}: {e}", work.display())))?;
    registry.reap_leftovers().await;
    let (ev_tx, mut ev_rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(e) = ev_rx.recv().await {
            tracing::debug!("{e:?}");
        }
    });
    let env = MediaEnv::new(cfg, registry, ev_tx);
    let fmt = opts.format;
    let cams = vec![
        source(
            "harbour",
            &format!("testsrc2=size={}x{}:rate={}", fmt.width, fmt.height, fmt.fps),
            "sine=frequency=330:sample_rate=48000",
        ),
        source(
            "bars",
            &format!("smptehdbars=size={}x{}:rate={}", fmt.width, fmt.height, fmt.fps),
            "sine=frequency=550:sample_rate=48000",
        ),
    ];
    let output = OutputTarget {
        destination_id: "demo".into(),
        ingest: Ingest::Primary,
        url: Secret::new(opts.output.clone()),
        shown: opts.output.clone(),
        key: Secret::new(""),
        tls: None,
    };
    let spec = ProgramSpec {
        id: "demo".into(),
        cameras: cams,
        first: Some("harbour".into()),
        outputs: vec![output],
        encoder: EncoderSettings { format: fmt, bitrate_kbps: opts.bitrate_kbps, encoder: "libx264".into() },
        slate_png: None,
        switcher: env.switcher,
    };
    let program = Program::start(spec, &env).await;
    let tx = program.sender();
    let logo: PathBuf = work.join("logo.png");
    write_logo(&logo)?;
    let size = fmt.height as f32 / 18.0;
    let mut badge = OverlaySpec::new("logo", OverlayKind::Logo { png: logo });
    badge.position = Position::TopRight;
    badge.offset_x = Offset::Percent(2.0);
    badge.offset_y = Offset::Percent(3.0);
    badge.opacity = 0.9;
    overlay(&tx, badge, fmt).await?;
    let mut clock = OverlaySpec::new(
        "clock",
        OverlayKind::Text {
            text: "{{date}} {{time}} UTC".into(),
            font_size: size,
            color: [255, 255, 255, 255],
            background: Some([0, 0, 0, 140]),
        },
    );
    clock.position = Position::TopLeft;
    clock.offset_x = Offset::Percent(2.0);
    clock.offset_y = Offset::Percent(3.0);
    overlay(&tx, clock, fmt).await?;
    let mut third = OverlaySpec::new(
        "lower_third",
        OverlayKind::LowerThird {
            png: None,
            text: "VistterStream demo · {{var:camera}}".into(),
            font_size: size * 1.2,
            color: [255, 255, 255, 255],
            background: None,
        },
    );
    third.fade_in = Duration::from_millis(800);
    overlay(&tx, third, fmt).await?;
    send(&tx, OverlayOp::SetVar("camera".into(), "harbour".into())).await?;

    let started = tokio::time::Instant::now();
    let deadline = opts.duration.map(|d| started + d);
    let mut next_cut = started + opts.cut_every;
    let mut on = 0usize;
    let names = ["harbour", "bars"];
    loop {
        let wake = deadline.map_or(next_cut, |d| d.min(next_cut));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        on = (on + 1) % names.len();
        let fade = if on == 0 { Duration::from_millis(1000) } else { Duration::ZERO };
        let (reply, rx) = oneshot::channel();
        if tx.send(ProgramCmd::Cut { camera: names[on].into(), at: None, fade, reply }).await.is_err() {
            break;
        }
        let _ = rx.await;
        send(&tx, OverlayOp::SetVar("camera".into(), names[on].into())).await?;
        next_cut += opts.cut_every;
    }
    program.stop().await;
    Ok(())
}
