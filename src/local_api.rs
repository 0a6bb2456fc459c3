//! The local operator API: a Unix socket in the data dir (`agent.sock`, mode 0600) through which
//! the CLI talks to the running daemon, for actions that must take effect within a frame or two
//! (cuts, slate, pin, overlays). One JSON request per line, one JSON reply per line. Only the
//! socket's owner (root on the appliance) can connect; nothing listens on the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::media::compositor::{Offset, OverlayKind, OverlaySpec, Position};
use crate::media::encoder::Profile;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    ProgramStart {
        id: String,
        cameras: Vec<String>,
        destinations: Vec<String>,
        profile: Option<Profile>,
        /// Overrides of the profile: WxH, fps, kbit/s.
        size: Option<(u32, u32)>,
        fps: Option<u32>,
        bitrate_kbps: Option<u32>,
        first: Option<String>,
        slate: Option<PathBuf>,
    },
    ProgramStop {
        id: String,
    },
    ProgramStatus {
        id: Option<String>,
    },
    Cut {
        id: String,
        camera: String,
        /// Program time in seconds.
        at: Option<f64>,
        /// Seconds from now.
        after: Option<f64>,
        fade_ms: u64,
    },
    Slate {
        id: String,
        on: bool,
    },
    Pin {
        id: String,
        camera: Option<String>,
    },
    Attach {
        id: String,
        destination: String,
    },
    Detach {
        id: String,
        destination: String,
    },
    OverlayShow {
        id: String,
        overlay: OverlayRequest,
    },
    OverlayHide {
        id: String,
        overlay: String,
    },
    OverlaySetVar {
        id: String,
        name: String,
        value: String,
    },
    OverlayClear {
        id: String,
    },
    /// Start decoding a camera ahead of a cut to it (its backup too).
    Preroll {
        id: String,
        camera: String,
    },
    /// The latest JPEG of the program, or of one of its cameras; answered as base64.
    Thumbnail {
        id: String,
        source: Option<String>,
    },
    /// Play a stored timeline as the show (replacing the operator's current show).
    TimelinePlay {
        timeline: String,
        destinations: Vec<String>,
        /// Seconds into the timeline to start at.
        from: Option<f64>,
        bitrate_kbps: Option<u32>,
    },
    TimelineStop,
    TimelineControl {
        control: crate::timeline::actor::Control,
    },
    TimelineStatus,
    Preflight {
        timeline: String,
        destinations: Vec<String>,
    },
    /// Stop every show and program now (emergency; never refused).
    KillAll,
}

/// An overlay as an operator (or, later, the timeline's `show_overlay`) describes it; also the
/// `overlay show` command line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct OverlayRequest {
    /// Overlay id (showing the same id again replaces it).
    pub id: String,
    /// text · image · logo · lower_third (default: text if there is text, else image).
    #[serde(rename = "type", default)]
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Text; may hold {{time}}, {{date}} and {{var:NAME}}.
    #[arg(long)]
    pub text: Option<String>,
    /// PNG file.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// top_left · top_right · bottom_left · bottom_right · center · lower_third
    #[arg(long)]
    pub position: Option<String>,
    /// Pixels ("12") or percent of the frame ("5%").
    #[arg(long, allow_hyphen_values = true)]
    pub offset_x: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub offset_y: Option<String>,
    #[arg(long)]
    pub scale: Option<f32>,
    /// 0..1
    #[arg(long)]
    pub opacity: Option<f32>,
    /// Z-order: higher is on top.
    #[arg(long, allow_hyphen_values = true)]
    pub layer: Option<i32>,
    #[arg(long)]
    pub font_size: Option<f32>,
    /// "#rrggbb" or "#rrggbbaa".
    #[arg(long)]
    pub color: Option<String>,
    #[arg(long)]
    pub background: Option<String>,
    /// Fade-in, ms.
    #[arg(long = "fade-in")]
    pub fade_in_ms: Option<u64>,
    /// Fade-out when hidden, ms.
    #[arg(long = "fade-out")]
    pub fade_out_ms: Option<u64>,
}

fn parse_colour(s: &str) -> Result<[u8; 4], String> {
    let h = s.trim_start_matches('#');
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| format!("bad colour {s:?}"));
    match h.len() {
        6 => Ok([byte(0)?, byte(2)?, byte(4)?, 255]),
        8 => Ok([byte(0)?, byte(2)?, byte(4)?, byte(6)?]),
        _ => Err(format!("bad colour {s:?}: use #rrggbb or #rrggbbaa")),
    }
}

fn parse_offset(s: &str) -> Result<Offset, String> {
    match s.strip_suffix('%') {
        Some(p) => p.trim().parse().map(Offset::Percent).map_err(|_| format!("bad offset {s:?}")),
        None => s.trim().parse().map(Offset::Px).map_err(|_| format!("bad offset {s:?}: pixels or a percentage")),
    }
}

impl OverlayRequest {
    pub fn to_spec(&self) -> Result<OverlaySpec, String> {
        let colour = self.color.as_deref().map(parse_colour).transpose()?.unwrap_or([255, 255, 255, 255]);
        let background = self.background.as_deref().map(parse_colour).transpose()?;
        let font_size = self.font_size.unwrap_or(32.0);
        let kind = self.kind.clone().unwrap_or_else(|| if self.text.is_some() { "text" } else { "image" }.into());
        let text = || self.text.clone().ok_or_else(|| format!("a {kind} overlay needs text"));
        let image = || self.image.clone().ok_or_else(|| format!("a {kind} overlay needs an image"));
        let kind = match kind.as_str() {
            "text" => OverlayKind::Text { text: text()?, font_size, color: colour, background },
            "image" => OverlayKind::Image { png: image()? },
            "logo" => OverlayKind::Logo { png: image()? },
            "lower_third" => {
                OverlayKind::LowerThird { png: self.image.clone(), text: text()?, font_size, color: colour, background }
            }
            k => return Err(format!("unknown overlay type {k:?} (text, image, logo, lower_third)")),
        };
        let mut spec = OverlaySpec::new(self.id.clone(), kind);
        if let Some(p) = &self.position {
            spec.position = match p.as_str() {
                "top_left" => Position::TopLeft,
                "top_right" => Position::TopRight,
                "bottom_left" => Position::BottomLeft,
                "bottom_right" => Position::BottomRight,
                "center" => Position::Center,
                "lower_third" => Position::LowerThird,
                other => return Err(format!("unknown position {other:?}")),
            };
        }
        if let Some(o) = &self.offset_x {
            spec.offset_x = parse_offset(o)?;
        }
        if let Some(o) = &self.offset_y {
            spec.offset_y = parse_offset(o)?;
        }
        spec.scale = self.scale.unwrap_or(1.0);
        spec.opacity = self.opacity.unwrap_or(1.0);
        spec.layer = self.layer.unwrap_or(0);
        spec.fade_in = Duration::from_millis(self.fade_in_ms.unwrap_or(0));
        spec.fade_out = Duration::from_millis(self.fade_out_ms.unwrap_or(0));
        Ok(spec)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An exit code for the CLI (see crate::error).
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response { ok: true, error: None, code: 0, result }
    }

    pub fn err(code: i32, error: impl Into<String>) -> Response {
        Response { ok: false, error: Some(error.into()), code, result: serde_json::Value::Null }
    }
}

pub type Incoming = (Request, oneshot::Sender<Response>);

/// Accepts connections and forwards each request to the daemon loop.
pub async fn serve(path: PathBuf, tx: mpsc::Sender<Incoming>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r.take(1 << 20)).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Err(e) => Response::err(crate::error::EXIT_USAGE, format!("bad request: {e}")),
                        Ok(req) => {
                            let (rtx, rrx) = oneshot::channel();
                            if tx.send((req, rtx)).await.is_err() {
                                Response::err(crate::error::EXIT_UNAVAILABLE, "the agent is shutting down")
                            } else {
                                rrx.await.unwrap_or_else(|_| Response::err(crate::error::EXIT_FAILURE, "no answer"))
                            }
                        }
                    };
                    let mut out = serde_json::to_vec(&resp).expect("serializes");
                    out.push(b'\n');
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

use tokio::io::AsyncReadExt;

/// Sends one request to the daemon (CLI side).
pub async fn call(data_dir: &Path, req: &Request) -> Result<Response, String> {
    let path = socket_path(data_dir);
    let mut s = UnixStream::connect(&path)
        .await
        .map_err(|e| format!("cannot reach the agent at {} ({e}): is `vistter-agent run` running?", path.display()))?;
    let mut line = serde_json::to_vec(req).expect("serializes");
    line.push(b'\n');
    s.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut answer))
        .await
        .map_err(|_| "the agent did not answer within 60 s".to_string())?
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("unreadable answer from the agent: {e}"))
}
