//! What the box reaches and what reaches it: the daemon over its local socket (asked only `PING`),
//! the status page's address, each camera's RTSP port (a TCP connect, nothing sent), and the cloud
//! link as the running daemon reports it. The clock's skew is not measured anywhere in the agent
//! (each cloud command's timestamp is checked against the clock, and the difference is not kept),
//! so its line says so instead of guessing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::Check;
use crate::command::{Command, Output, Ping};
use crate::config::Config;
use crate::local_api::{self, CallError};
use crate::store::peek::{CameraAddress, Peek};

/// How long the daemon may take to answer `PING`.
const PING_WAIT: Duration = Duration::from_secs(5);
/// How long a camera's RTSP port may take to accept a connection.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
const AS_ROOT: &str = "run it as root: sudo vistter-agent doctor";
const START: &str = "sudo systemctl enable --now vistter-agent (or `vistter-agent run`)";

/// Whether the daemon runs and answers on its socket.
pub async fn daemon(data_dir: &Path) -> Check {
    let sock = local_api::socket_path(data_dir);
    let shown = sock.display();
    match tokio::time::timeout(PING_WAIT, local_api::call(data_dir, &Command::Ping(Ping {}))).await {
        Err(_) => Check::fail(
            "daemon",
            format!("{shown} takes connections but the daemon did not answer within {} s", PING_WAIT.as_secs()),
            "journalctl -u vistter-agent -n 50, then sudo systemctl restart vistter-agent",
        ),
        Ok(Ok(reply)) => match reply.into_result() {
            Ok(Output::Pong { .. }) => Check::ok("daemon", format!("running: it answers on {shown}")),
            Ok(other) => {
                Check::fail("daemon", format!("answered PING with {other:?}"), "update the CLI and the daemon together")
            }
            Err(refusal) => {
                Check::fail("daemon", format!("refused PING: {refusal}"), "update the CLI and the daemon together")
            }
        },
        Ok(Err(CallError::Connect { source, .. })) => match source.kind() {
            std::io::ErrorKind::NotFound => Check::warn("daemon", format!("not running (no socket at {shown})"), START),
            std::io::ErrorKind::ConnectionRefused => Check::warn(
                "daemon",
                format!("not running: {shown} was left by a daemon that stopped"),
                "sudo systemctl restart vistter-agent",
            ),
            std::io::ErrorKind::PermissionDenied => {
                Check::warn("daemon", format!("{shown} cannot be opened by you (permission denied)"), AS_ROOT)
            }
            _ => Check::fail("daemon", format!("{shown}: {source}"), "sudo systemctl restart vistter-agent"),
        },
        Ok(Err(e)) => Check::fail("daemon", e.to_string(), "journalctl -u vistter-agent -n 50"),
    }
}

/// The status page's address; beyond loopback, whether the admin password guards its controls.
pub fn status_page(cfg: &Config, peek: &Result<Option<Peek>, String>, running: bool, answered: bool) -> Check {
    let admin = match peek {
        Ok(Some(p)) => p.admin_password_set().map_err(|e| e.to_string()),
        Ok(None) => Ok(false),
        Err(e) => Err(e.clone()),
    };
    judge_status_page(cfg.status.enabled, &cfg.status.listen, admin, running.then_some(answered))
}

/// The pure part of [`status_page`]; `answered` is `None` when no daemon runs to ask.
fn judge_status_page(enabled: bool, listen: &str, admin: Result<bool, String>, answered: Option<bool>) -> Check {
    const C: &str = "status page";
    if !enabled {
        return Check::ok(C, "off ([status] enabled = false)");
    }
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        return Check::fail(
            C,
            format!("status.listen {listen:?} is not IP:PORT"),
            "set status.listen, e.g. 192.168.1.50:8787",
        );
    };
    if answered == Some(false) {
        return Check::warn(
            C,
            format!("the daemon runs but nothing answers at {addr} (the port may be taken by another program)"),
            "journalctl -u vistter-agent -n 100 names the cause",
        );
    }
    let serving = if answered == Some(true) { "answers at" } else { "set to" };
    if addr.ip().is_loopback() {
        return Check::ok(
            C,
            format!(
                "{serving} {addr}, loopback only: a phone on the LAN cannot open it (set status.listen to the box's LAN address, e.g. 192.168.1.50:{}, to show it there)",
                addr.port()
            ),
        );
    }
    let reach = if addr.ip().is_unspecified() { "every network of the box" } else { "the network" };
    match admin {
        Ok(true) => Check::ok(C, format!("{serving} {addr}, open to {reach}; its controls need the admin password (set)")),
        Ok(false) => Check::warn(
            C,
            format!("{serving} {addr}, open to {reach}: anyone there can read it, and its controls are off: no admin password is set"),
            "sudo vistter-agent admin set-password",
        ),
        Err(e) => Check::warn(C, format!("{serving} {addr}, open to {reach}; whether an admin password is set cannot be read ({e})"), AS_ROOT),
    }
}

/// Each configured camera's RTSP port, all at once.
pub async fn cameras(peek: &Result<Option<Peek>, String>) -> Vec<Check> {
    let cams = match peek {
        Err(e) => return vec![Check::warn("cameras", format!("the database cannot be opened: {e}"), AS_ROOT)],
        Ok(None) => return vec![Check::ok("cameras", "none configured (no database yet)")],
        Ok(Some(p)) => match p.cameras() {
            Ok(c) => c,
            Err(e) => return vec![Check::fail("cameras", format!("the database cannot be read: {e}"), AS_ROOT)],
        },
    };
    if cams.is_empty() {
        return vec![Check::ok("cameras", "none configured (sudo vistter-agent camera add)")];
    }
    futures_util::future::join_all(cams.iter().map(camera)).await
}

/// A TCP connect to the camera's RTSP host and port (554, or 322 for rtsps://). Only the masked
/// URL is shown; the password is not even read.
async fn camera(c: &CameraAddress) -> Check {
    let check = format!("camera {}", c.id);
    let Some((host, port)) = url::Url::parse(&c.url).ok().and_then(|u| {
        Some((u.host_str()?.to_string(), u.port().unwrap_or(if u.scheme() == "rtsps" { 322 } else { 554 })))
    }) else {
        return Check::fail(
            check,
            format!("{}: the stored URL has no host", c.shown),
            format!("camera remove {} and add it again", c.id),
        );
    };
    let target = format!("{host}:{port}");
    let fix = format!("check the camera's power, network and address, then sudo vistter-agent camera probe {}", c.id);
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(target.as_str())).await {
        Ok(Ok(_)) => {
            Check::ok(check, format!("{}: {target} accepts connections ({} ms)", c.shown, start.elapsed().as_millis()))
        }
        Ok(Err(e)) => Check::fail(check, format!("{}: unreachable: {target}: {e}", c.shown), fix),
        Err(_) => Check::fail(
            check,
            format!("{}: unreachable: {target} did not answer within {} s", c.shown, CONNECT_WAIT.as_secs()),
            fix,
        ),
    }
}

/// The status JSON's cloud fields (`GET /api/v1/status`).
#[derive(Deserialize, Default)]
struct LiveCloud {
    #[serde(default)]
    cloud_links: Option<LiveLinks>,
    #[serde(default)]
    cloud_last_contact_s: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LiveLinks {
    Links(BTreeMap<String, String>),
    /// `"not configured"`.
    #[allow(dead_code)]
    None(String),
}

/// The daemon's links file (`cloud_links.json`), for when its status server is off.
#[derive(Deserialize)]
struct LinksFile {
    pid: i32,
    links: BTreeMap<String, String>,
}

/// Each configured cloud transport: its state and last contact as the running daemon knows them
/// (kept in its memory only), and the clock skew line.
pub fn cloud(cfg: &Config, running: bool, live: Option<&serde_json::Value>) -> Vec<Check> {
    let mut transports = Vec::new();
    if let Some(m) = &cfg.control.mqtt {
        transports.push(("mqtt", crate::logging::mask_url_passwords(&m.url)));
    }
    if let Some(w) = &cfg.control.ws {
        transports.push(("ws", crate::logging::mask_url_passwords(&w.url)));
    }
    let mut out = Vec::new();
    if transports.is_empty() {
        out.push(Check::ok("cloud link", "not configured ([control.mqtt] / [control.ws])"));
    }
    let live: Option<LiveCloud> = live.and_then(|v| serde_json::from_value(v.clone()).ok());
    let file: Option<LinksFile> = std::fs::read_to_string(crate::control::links_file(&cfg.data_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|f: &LinksFile| nix::sys::signal::kill(nix::unistd::Pid::from_raw(f.pid), None).is_ok());
    for (route, url) in transports {
        let check = format!("cloud link {route}");
        if !running {
            out.push(Check::warn(
                check,
                format!("{url}: state and last contact unknown: the daemon is not running (it keeps them in memory)"),
                START,
            ));
            continue;
        }
        let state = match live.as_ref().and_then(|l| l.cloud_links.as_ref()) {
            Some(LiveLinks::Links(l)) => l.get(route).cloned(),
            _ => file.as_ref().and_then(|f| f.links.get(route).cloned()),
        };
        let contact = match live.as_ref() {
            None => {
                "last contact unknown (the status server is off or did not answer, and it is where the daemon tells it)"
                    .to_string()
            }
            Some(l) => match l.cloud_last_contact_s.as_ref().and_then(|c| c.get(route)) {
                Some(s) => format!("last heard from {} ago", super::super::control::secs(*s)),
                None => "never heard from since the daemon started".to_string(),
            },
        };
        let state_text = state.clone().unwrap_or_else(|| "state unknown".into());
        let detail = format!("{url}: {state_text}, {contact}");
        out.push(if state.as_deref() == Some("connected") {
            Check::ok(check, detail)
        } else {
            Check::warn(check, detail, "journalctl -u vistter-agent -n 100 names the cause (README: Troubleshooting)")
        });
    }
    out.push(Check::ok(
        "clock skew",
        format!(
            "not measured: the agent checks each cloud command's timestamp against this clock (within control.max_skew_s = {} s) and keeps no measurement; `timedatectl` says whether the clock is synchronized",
            cfg.control.max_skew_s
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::Status;

    #[test]
    fn the_status_page_is_judged_by_its_address_and_the_admin_password() {
        let off = judge_status_page(false, "x", Ok(false), None);
        assert_eq!(off.status, Status::Ok);
        let lo = judge_status_page(true, "127.0.0.1:8787", Ok(false), None);
        assert!(lo.status == Status::Ok && lo.detail.contains("loopback only"), "{lo:?}");
        let lan = judge_status_page(true, "192.168.1.50:8787", Ok(false), None);
        assert!(
            lan.status == Status::Warn && lan.fix.as_deref() == Some("sudo vistter-agent admin set-password"),
            "{lan:?}"
        );
        let lan = judge_status_page(true, "0.0.0.0:8787", Ok(true), Some(true));
        assert!(lan.status == Status::Ok && lan.detail.contains("answers at"), "{lan:?}");
        let dead = judge_status_page(true, "127.0.0.1:8787", Ok(true), Some(false));
        assert_eq!(dead.status, Status::Warn, "{dead:?}");
        let unknown = judge_status_page(true, "[::]:8787", Err("permission denied".into()), None);
        assert!(unknown.status == Status::Warn && unknown.detail.contains("permission denied"), "{unknown:?}");
    }
}
