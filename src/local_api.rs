//! The local operator socket: a Unix socket in the data dir (`agent.sock`, mode 0600) through which
//! the CLI talks to the running daemon. It carries the same typed commands as the cloud
//! ([`crate::command`]): one JSON command per line (`{"type": …, "payload": …}`), one JSON
//! [`Reply`] per line. Only the socket's owner (root on the appliance) can connect; nothing
//! listens on the network.
//!
//! Lines are bounded (64 KiB): a longer one is refused and the connection closed. Each command is
//! handed to the dispatcher, which runs it on a task of its own, so one connection waiting on a
//! slow command never delays another connection's kill-all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::command::dispatch::Dispatcher;
use crate::command::{self, Command, ErrorCode, Origin, Refusal, Reply};

/// The longest command line accepted.
pub const MAX_LINE: usize = 64 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent.sock")
}

/// Accepts connections and hands each command to the dispatcher as the operator's.
pub async fn serve(path: PathBuf, dispatcher: Dispatcher) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(connection(stream, dispatcher.clone()));
        }
    }))
}

async fn connection(stream: UnixStream, dispatcher: Dispatcher) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded: at most MAX_LINE + 1 bytes are read for one line.
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let too_long = is_cut(&buf);
        let reply = match request(&buf) {
            None => continue,
            Some(Err(refusal)) => Reply::Refused { refusal },
            Some(Ok(cmd)) => dispatcher.dispatch(Origin::Operator, cmd).await,
        };
        let mut out = serde_json::to_vec(&reply).expect("replies serialize");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || too_long {
            break;
        }
    }
}

/// A line read with at most `MAX_LINE + 1` bytes that did not end: the rest is not read.
fn is_cut(line: &[u8]) -> bool {
    line.len() > MAX_LINE && line.last() != Some(&b'\n')
}

/// What one line read from the socket asks for: `None` for a blank line, a refusal for a line
/// that is too long, not UTF-8 or not a command. Never panics, whatever the bytes.
pub fn request(line: &[u8]) -> Option<Result<Command, Refusal>> {
    if is_cut(line) {
        return Some(Err(Refusal::field("request", format!("longer than {MAX_LINE} bytes"))));
    }
    match std::str::from_utf8(line) {
        Err(_) => Some(Err(Refusal::field("request", "not UTF-8"))),
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => Some(command::parse(line.trim_end())),
    }
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the agent at {path} ({source}): is `vistter-agent run` running?")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent did not answer within {0} s")]
    Timeout(u64),
    #[error("unreadable answer from the agent: {0}")]
    Unreadable(String),
}

/// Sends one command to the daemon (CLI side) and reads its reply.
pub async fn call(data_dir: &Path, cmd: &Command) -> Result<Reply, CallError> {
    let path = socket_path(data_dir);
    let mut s = UnixStream::connect(&path)
        .await
        .map_err(|source| CallError::Connect { path: path.display().to_string(), source })?;
    let mut line = serde_json::to_vec(cmd).expect("commands serialize");
    line.push(b'\n');
    s.write_all(&line).await?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    const WAIT_S: u64 = 60;
    tokio::time::timeout(Duration::from_secs(WAIT_S), reader.read_line(&mut answer))
        .await
        .map_err(|_| CallError::Timeout(WAIT_S))??;
    serde_json::from_str(&answer).map_err(|e| CallError::Unreadable(e.to_string()))
}

/// Exit code of a refusal (see `crate::error`).
pub fn exit_code(r: &Refusal) -> i32 {
    ErrorCode::exit_code(r.code)
}
