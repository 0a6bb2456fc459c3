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
