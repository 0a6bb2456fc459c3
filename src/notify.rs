//! The service manager's notification protocol (`sd_notify`) and its watchdog.
//!
//! When `NOTIFY_SOCKET` is set (systemd `Type=notify`; a path, or an abstract socket when it
//! starts with `@`), the daemon sends `READY=1` once it serves its local socket and `STOPPING=1`
//! when it begins to shut down. When `WATCHDOG_USEC` is set too (and `WATCHDOG_PID` is unset or
//! ours), it sends `WATCHDOG=1` every half of that period, but only while the loops that matter
//! are alive:
//! - the director's and the relay manager's loops each [`beat`] on every turn (they turn at least
//!   every second, resp. every `reconcile_interval_ms`); a loop is alive if it beat within
//!   `max(period, 5 s, 3 × its tick)`;
//! - the local API (its accept loop and the dispatcher) must answer a `PING` through the socket
//!   within `max(period / 2, 2 s)`. The daemon hands that probe in ([`spawn`]'s `probe`), so this
//!   module knows nothing of commands or sockets and sits low in the module graph.
//!
//! A wedged loop thus stops the pings, and systemd restarts the agent when the period runs out.
//! Written by hand rather than with a crate: the ones at hand cannot reach an abstract socket.

use std::future::Future;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Test hook: after this many seconds the director's loop wedges (awaits forever), so the
/// watchdog pings must stop. Read once at start; unset in production. Not `VISTTER_*`: those are
/// configuration.
pub const WEDGE_HOOK_ENV: &str = "VSA_TEST_WEDGE_AFTER_S";

/// The loops whose liveness gates the watchdog pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Director,
    Relays,
}

impl Loop {
    fn name(self) -> &'static str {
        match self {
            Loop::Director => "the director",
            Loop::Relays => "the relay manager",
        }
    }
}

/// Milliseconds since [`epoch`] of each loop's last turn, plus one (0: never).
static BEATS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Records that `l` turned (cheap: one atomic store).
pub fn beat(l: Loop) {
    BEATS[l as usize].store(now_ms(), Ordering::Relaxed);
}

/// How long ago `l` last turned, counting from `since` if it never did after it.
fn silent_for(l: Loop, since: u64) -> Duration {
    let last = BEATS[l as usize].load(Ordering::Relaxed).max(since);
    Duration::from_millis(now_ms().saturating_sub(last))
}

/// When the director wedges (test hook), read from [`WEDGE_HOOK_ENV`].
pub fn wedge_at() -> Option<tokio::time::Instant> {
    let s: u64 = std::env::var(WEDGE_HOOK_ENV).ok()?.trim().parse().ok()?;
    tracing::warn!("test hook: the director wedges after {s} s ({WEDGE_HOOK_ENV})");
    Some(tokio::time::Instant::now() + Duration::from_secs(s))
}

/// Sends one notification (`KEY=VALUE` lines) to `NOTIFY_SOCKET`, if it is set.
pub fn send(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) {
        Some(path) => send_to(&path, state),
        None => Ok(()),
    }
}

/// Sends `state` to the socket `path` (abstract when it starts with `@`).
fn send_to(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

fn send_logged(state: &str) {
    if let Err(e) = send(state) {
        tracing::warn!("sd_notify {}: {e}", state.trim_end());
    }
}

/// The watchdog period asked for by the service manager, if it is meant for us.
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Why the local API's liveness probe failed: what it answered, or why it could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAlive(pub String);

/// Tells the service manager the daemon is ready and, when it asks for a watchdog, starts the
/// task that pings it while the loops are alive (until `stop`). Nothing without `NOTIFY_SOCKET`.
/// `probe` asks the local API whether it answers (the daemon sends a `PING` through the socket);
/// each call is given `max(period / 2, 2 s)`.
pub fn spawn<P, F>(cfg: &Config, stop: CancellationToken, probe: P) -> Option<tokio::task::JoinHandle<()>>
where
    P: FnMut() -> F + Send + 'static,
    F: Future<Output = Result<(), NotAlive>> + Send + 'static,
{
    std::env::var_os("NOTIFY_SOCKET")?;
    send_logged("READY=1\n");
    let period = watchdog_period()?;
    let relay_tick = Duration::from_millis(cfg.reconcile_interval_ms);
    tracing::info!("systemd watchdog: {:.1} s, pinged every half while the loops are alive", period.as_secs_f64());
    Some(tokio::spawn(watchdog(probe, period, relay_tick, stop)))
}

/// Tells the service manager the daemon is stopping.
pub fn stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        send_logged("STOPPING=1\n");
    }
}

async fn watchdog<P, F>(mut probe: P, period: Duration, relay_tick: Duration, stop: CancellationToken)
where
    P: FnMut() -> F,
    F: Future<Output = Result<(), NotAlive>>,
{
    let floor = period.max(Duration::from_secs(5));
    let limits = [(Loop::Director, floor.max(Duration::from_secs(3))), (Loop::Relays, floor.max(relay_tick * 3))];
    let api_timeout = (period / 2).max(Duration::from_secs(2));
    let since = now_ms();
    let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = true;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut wedged: Vec<String> = limits
            .iter()
            .filter(|(l, limit)| silent_for(*l, since) > *limit)
            .map(|(l, _)| format!("{} (silent for {:.1} s)", l.name(), silent_for(*l, since).as_secs_f64()))
            .collect();
        match tokio::time::timeout(api_timeout, probe()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => wedged.push(format!("the local API ({e})")),
            Err(_) => wedged.push(format!("the local API (no answer within {:.1} s)", api_timeout.as_secs_f64())),
        }
        if stop.is_cancelled() {
            break;
        }
        if wedged.is_empty() {
            send_logged("WATCHDOG=1\n");
            if !was_ok {
                tracing::warn!("systemd watchdog: every loop is alive again; pings resumed");
            }
            was_ok = true;
        } else if was_ok {
            tracing::error!("systemd watchdog: pings withheld, not alive: {}", wedged.join(", "));
            was_ok = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let fs = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = fs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        let name = format!("vistter-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1\n").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n", "abstract socket");
    }
}
