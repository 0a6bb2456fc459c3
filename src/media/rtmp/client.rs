//! One RTMP publishing session over any byte stream (TCP, or TLS for RTMPS).
//!
//! The handshake and the outgoing chunk layer come from `rml_rtmp`; what the server sends is read
//! by [`super::incoming`] (bounded, fuzzed); the command exchange is ours,
//! because `rml_rtmp`'s `ClientSession` sends no `releaseStream`/`FCPublish` (which some ingests
//! expect), cannot pass the encoder's own `onMetaData` through, and folds every refusal into one
//! "unhandled status" event. Here each stage has its own deadline and each answer of the server
//! becomes a [`PublishError`] that says what it was, with the server's exact code.
//!
//! Everything the server sends is untrusted: a message that does not parse, a chunk size out of
//! range, or more than [`MAX_PENDING`] bytes without a whole message ends the session with an
//! error, never a panic or an unbounded buffer.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::incoming::{interpret, ChunkReader, Control};
use crate::media::flv::{Tag, TagKind};

/// The chunk size the agent sends with (FFmpeg and OBS use 4096; fewer chunk headers per frame).
const OUT_CHUNK_SIZE: u32 = 4096;
/// The largest chunk size accepted from the server (the spec allows 2^31-1; no ingest needs more).
const MAX_IN_CHUNK_SIZE: u32 = 1 << 20;
/// Bytes from the server buffered without a whole message before the session is given up.
pub const MAX_PENDING: usize = 2 << 20;
/// How the agent introduces itself in `connect` (the form encoders use; some ingests look for FMLE).
const FLASH_VER: &str = "FMLE/3.0 (compatible; vistter-agent)";

/// Why a publishing session ended or never started. `Display` never shows the stream key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    #[error("connection refused by {0}")]
    ConnectRefused(String),
    #[error("cannot reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("TLS failure: {0}")]
    Tls(String),
    #[error("no answer from the ingest within {secs:.1} s during {stage}")]
    Timeout { stage: &'static str, secs: f64 },
    #[error("the ingest closed the connection during {stage}")]
    Closed { stage: &'static str },
    /// The server said no: `code` is its exact status code (`NetStream.Publish.BadName`).
    #[error("{what} refused by the ingest: {code}{}", description_suffix(.description))]
    Refused { what: &'static str, code: String, description: String },
    #[error("RTMP protocol error from the ingest: {0}")]
    Protocol(String),
    #[error("network error: {0}")]
    Io(String),
    #[error("the stream's sender stopped accepting data for {secs:.1} s (the ingest stopped reading)")]
    Stalled { secs: f64 },
}

fn description_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

impl PublishError {
    /// Whether a human must change something (the key, the URL, the CA) before a retry can work.
    pub fn is_permanent(&self) -> bool {
        match self {
            PublishError::Refused { code, description, .. } => {
                // nginx-rtmp answers BadName "Already publishing" while the previous session of
                // the same key is still there: that clears on its own.
                !description.to_ascii_lowercase().contains("already publishing")
                    && (code.ends_with(".BadName")
                        || code.ends_with(".Denied")
                        || code.ends_with(".Rejected")
                        || code.ends_with(".Unauthorized")
                        || code.ends_with(".Forbidden")
                        || code.ends_with(".Failed"))
            }
            PublishError::Tls(reason) => reason.contains("certificate") || reason.contains("CA"),
            _ => false,
        }
    }

    /// A short hint for the operator, shown after the error.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PublishError::Refused { what: "publish", .. } => Some("check the stream key"),
            PublishError::Refused { .. } => Some("check the ingest URL"),
            PublishError::Tls(_) if self.is_permanent() => {
                Some("check the destination's CA file or the ingest's certificate")
            }
            PublishError::Closed { stage: "publish" } => {
                Some("an ingest closes the connection this way when it refuses the stream key")
            }
            _ => None,
        }
    }
}

impl From<std::io::Error> for PublishError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => PublishError::Closed { stage: "the stream" },
            _ => PublishError::Io(e.to_string()),
        }
    }
}

fn protocol(e: impl std::fmt::Display) -> PublishError {
    PublishError::Protocol(e.to_string())
}

/// Where to publish: the application (the ingest URL's path) and the stream key.
pub struct PublishTarget<'a> {
    pub app: &'a str,
    pub tc_url: &'a str,
    pub key: &'a str,
}

/// A live publishing session: the message stream to send on and the chunk state of both sides.
pub struct Session<S> {
    io: S,
    out: ChunkSerializer,
    input: ChunkReader,
    stream_id: u32,
    /// Bytes received and the server's acknowledgement window (we acknowledge as the spec asks).
    received: u64,
    acked: u64,
    ack_window: u32,
    stage_timeout: Duration,
    next_tx: f64,
    wbuf: Vec<u8>,
    rbuf: Box<[u8]>,
    /// Bytes written to the server since the session began.
    pub bytes_out: u64,
}

/// A message from the server that the publishing side cares about.
enum Incoming {
    Result { tx: f64, args: Vec<Amf0Value> },
    Error { tx: f64, args: Vec<Amf0Value> },
    Status { code: String, level: String, description: String },
    Other,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Handshake, `connect`, `releaseStream`, `FCPublish`, `createStream`, `publish`: the stream is
    /// accepted when this returns. Each stage must finish within `stage_timeout`.
    pub async fn publish(io: S, target: &PublishTarget<'_>, stage_timeout: Duration) -> Result<Self, PublishError> {
        let mut s = Session {
            io,
            out: ChunkSerializer::new(),
            input: ChunkReader::new(),
            stream_id: 0,
            received: 0,
            acked: 0,
            ack_window: 0,
            stage_timeout,
            next_tx: 1.0,
            wbuf: Vec::with_capacity(64 * 1024),
            rbuf: vec![0u8; 16 * 1024].into_boxed_slice(),
            bytes_out: 0,
        };
        let leftover = s.handshake(stage_timeout).await?;
        let mut queued = s.feed(&leftover)?;

        let p = s.out.set_max_chunk_size(OUT_CHUNK_SIZE, RtmpTimestamp::new(0)).map_err(protocol)?;
        s.wbuf.extend_from_slice(&p.bytes);
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String(target.app.to_string()));
        props.insert("type".to_string(), Amf0Value::Utf8String("nonprivate".into()));
        props.insert("flashVer".to_string(), Amf0Value::Utf8String(FLASH_VER.into()));
        props.insert("tcUrl".to_string(), Amf0Value::Utf8String(target.tc_url.to_string()));
        let connect_tx = s.command("connect", Amf0Value::Object(props), vec![], 0)?;
        s.flush().await?;
        let deadline = Instant::now() + stage_timeout;
        loop {
            match s.next_incoming(&mut queued, deadline, "connect").await? {
                Incoming::Result { tx, .. } if tx == connect_tx => break,
                Incoming::Error { tx, args } if tx == connect_tx => return Err(refusal("connection", &args)),
                _ => {}
            }
        }

        let key = Amf0Value::Utf8String(target.key.to_string());
        s.command("releaseStream", Amf0Value::Null, vec![key.clone()], 0)?;
        s.command("FCPublish", Amf0Value::Null, vec![key.clone()], 0)?;
        let create_tx = s.command("createStream", Amf0Value::Null, vec![], 0)?;
        s.flush().await?;
        let deadline = Instant::now() + stage_timeout;
        loop {
            match s.next_incoming(&mut queued, deadline, "createStream").await? {
                Incoming::Result { tx, args } if tx == create_tx => {
                    let id = args.into_iter().find_map(Amf0Value::get_number);
                    match id {
                        Some(n) if n.is_finite() && n >= 1.0 && n < f64::from(u32::MAX) => {
                            s.stream_id = n as u32;
                            break;
                        }
                        _ => return Err(PublishError::Protocol("createStream answered without a stream id".into())),
                    }
                }
                Incoming::Error { tx, args } if tx == create_tx => return Err(refusal("createStream", &args)),
                _ => {}
            }
        }

        let publish_tx =
            s.command("publish", Amf0Value::Null, vec![key, Amf0Value::Utf8String("live".into())], s.stream_id)?;
        s.flush().await?;
        let deadline = Instant::now() + stage_timeout;
        loop {
            match s.next_incoming(&mut queued, deadline, "publish").await? {
                Incoming::Status { code, .. } if code == "NetStream.Publish.Start" => return Ok(s),
                Incoming::Status { code, level, description } if level == "error" || is_failure_code(&code) => {
                    return Err(PublishError::Refused { what: "publish", code, description });
                }
                // Servers answer a refused publish with `_error` on transaction 0 or the publish's
                // own; a late `_error` to releaseStream or FCPublish (common, harmless) is not it.
                Incoming::Error { tx, args } if tx == 0.0 || tx == publish_tx => return Err(refusal("publish", &args)),
                _ => {}
            }
        }
    }

    /// Queues one FLV tag as an RTMP message (the encoder's tags carry exactly RTMP's payloads).
    pub fn queue_tag(&mut self, tag: &Tag) -> Result<(), PublishError> {
        let (type_id, data) = match tag.kind {
            TagKind::Audio => (8, tag.data.clone()),
            TagKind::Video => (9, tag.data.clone()),
            // The encoder's `onMetaData` goes out as `@setDataFrame` so the ingest keeps it.
            TagKind::Script => {
                let mut d =
                    rml_amf0::serialize(&vec![Amf0Value::Utf8String("@setDataFrame".into())]).map_err(protocol)?;
                d.extend_from_slice(&tag.data);
                (18, Bytes::from(d))
            }
        };
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(tag.timestamp),
            type_id,
            message_stream_id: self.stream_id,
            data,
        };
        let p = self.out.serialize(&payload, false, false).map_err(protocol)?;
        self.wbuf.extend_from_slice(&p.bytes);
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes everything queued; fails with `Stalled` when the server stops reading for `stall`.
    pub async fn flush_within(&mut self, stall: Duration) -> Result<(), PublishError> {
        match tokio::time::timeout(stall, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Stalled { secs: stall.as_secs_f64() }),
        }
    }

    /// Waits for the server to say something and handles it (acknowledgements, pings, a late
    /// refusal). Cancel-safe: use it in a `select!` beside the sender.
    pub async fn serve_incoming(&mut self) -> Result<(), PublishError> {
        let n = self.io.read(&mut self.rbuf).await?;
        if n == 0 {
            return Err(PublishError::Closed { stage: "the stream" });
        }
        let chunk = self.rbuf[..n].to_vec();
        for m in self.feed(&chunk)? {
            if let Incoming::Status { code, level, description } = m {
                if level == "error" || is_failure_code(&code) {
                    return Err(PublishError::Refused { what: "the stream", code, description });
                }
            }
        }
        Ok(())
    }

    async fn handshake(&mut self, timeout: Duration) -> Result<Vec<u8>, PublishError> {
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs.generate_outbound_p0_and_p1().map_err(protocol)?;
        self.io.write_all(&c0c1).await?;
        let deadline = Instant::now() + timeout;
        let mut seen = 0usize;
        loop {
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)).await {
                Err(_) => {
                    return Err(PublishError::Timeout { stage: "the RTMP handshake", secs: timeout.as_secs_f64() })
                }
                Ok(r) => r?,
            };
            if n == 0 {
                return Err(PublishError::Closed { stage: "the RTMP handshake" });
            }
            seen += n;
            if seen > 64 * 1024 {
                return Err(PublishError::Protocol("the handshake did not end".into()));
            }
            let chunk = self.rbuf[..n].to_vec();
            match hs.process_bytes(&chunk).map_err(protocol)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    if !response_bytes.is_empty() {
                        self.io.write_all(&response_bytes).await?;
                    }
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    self.io.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    fn command(
        &mut self,
        name: &str,
        object: Amf0Value,
        args: Vec<Amf0Value>,
        stream: u32,
    ) -> Result<f64, PublishError> {
        let tx = self.next_tx;
        self.next_tx += 1.0;
        let msg = RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id: tx,
            command_object: object,
            additional_arguments: args,
        };
        let payload = msg.into_message_payload(RtmpTimestamp::new(0), stream).map_err(protocol)?;
        let p = self.out.serialize(&payload, false, false).map_err(protocol)?;
        self.wbuf.extend_from_slice(&p.bytes);
        Ok(tx)
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.bytes_out += self.wbuf.len() as u64;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    async fn next_incoming(
        &mut self,
        queued: &mut Vec<Incoming>,
        deadline: Instant,
        stage: &'static str,
    ) -> Result<Incoming, PublishError> {
        loop {
            if !queued.is_empty() {
                return Ok(queued.remove(0));
            }
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)).await {
                Err(_) => return Err(PublishError::Timeout { stage, secs: self.stage_timeout.as_secs_f64() }),
                Ok(Ok(0)) => return Err(PublishError::Closed { stage }),
                Ok(r) => r.map_err(|e| match PublishError::from(e) {
                    PublishError::Closed { .. } => PublishError::Closed { stage },
                    other => other,
                })?,
            };
            let chunk = self.rbuf[..n].to_vec();
            *queued = self.feed(&chunk)?;
            // Acknowledgements and pong answers made while parsing go out at once.
            self.flush().await?;
        }
    }

    /// Parses what the server sent, answers what needs an answer, returns the rest.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Incoming>, PublishError> {
        self.received += bytes.len() as u64;
        if self.ack_window > 0 && self.received - self.acked >= u64::from(self.ack_window) {
            self.acked = self.received;
            let ack = RtmpMessage::Acknowledgement { sequence_number: self.received as u32 };
            self.send_control(ack)?;
        }
        let mut out = Vec::new();
        self.input.push(bytes);
        while let Some((type_id, data)) = self.input.next_message().map_err(protocol)? {
            match interpret(type_id, &data).map_err(protocol)? {
                Control::ChunkSize(size) => {
                    if size == 0 || size > MAX_IN_CHUNK_SIZE {
                        return Err(PublishError::Protocol(format!("chunk size {size} out of range")));
                    }
                    self.input.set_chunk_size(size as usize);
                }
                Control::AckWindow(size) => self.ack_window = size,
                Control::Ping(t) => {
                    let pong = RtmpMessage::UserControl {
                        event_type: UserControlEventType::PingResponse,
                        stream_id: None,
                        buffer_length: None,
                        timestamp: Some(RtmpTimestamp::new(t)),
                    };
                    self.send_control(pong)?;
                }
                Control::Command { name, tx, args } => out.push(match name.as_str() {
                    "_result" => Incoming::Result { tx, args },
                    "_error" => Incoming::Error { tx, args },
                    "onStatus" => status(&args),
                    _ => Incoming::Other,
                }),
                Control::Ignored => out.push(Incoming::Other),
            }
        }
        if self.input.buffered() > MAX_PENDING {
            return Err(PublishError::Protocol(format!(
                "more than {MAX_PENDING} bytes from the ingest without a whole message"
            )));
        }
        Ok(out)
    }

    fn send_control(&mut self, msg: RtmpMessage) -> Result<(), PublishError> {
        let payload = msg.into_message_payload(RtmpTimestamp::new(0), 0).map_err(protocol)?;
        let p = self.out.serialize(&payload, false, false).map_err(protocol)?;
        self.wbuf.extend_from_slice(&p.bytes);
        Ok(())
    }
}

fn is_failure_code(code: &str) -> bool {
    [".BadName", ".Denied", ".Failed", ".Rejected", ".Unauthorized", ".Forbidden"].iter().any(|s| code.ends_with(s))
}

fn info_object(args: &[Amf0Value]) -> (String, String, String) {
    for a in args {
        if let Amf0Value::Object(o) = a {
            let get = |k: &str| match o.get(k) {
                Some(Amf0Value::Utf8String(s)) => s.chars().filter(|c| !c.is_control()).take(200).collect(),
                _ => String::new(),
            };
            return (get("code"), get("level"), get("description"));
        }
    }
    (String::new(), String::new(), String::new())
}

fn status(args: &[Amf0Value]) -> Incoming {
    let (code, level, description) = info_object(args);
    Incoming::Status { code, level, description }
}

fn refusal(what: &'static str, args: &[Amf0Value]) -> PublishError {
    let (code, _, description) = info_object(args);
    let code = if code.is_empty() { "_error".to_string() } else { code };
    PublishError::Refused { what, code, description }
}
