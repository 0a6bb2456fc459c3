//! No message can wedge a link (whatever a broker or server sends, the link keeps working): a message over the size limit is cut
//! short *in the byte stream*, before the protocol client reads it, and replaced by a small
//! marker payload that the inbox answers with `invalid_envelope` (`correlation_id: null`).
//!
//! Why in the byte stream: the MQTT client refuses a packet over its size limit by failing the
//! whole connection, and a persistent session makes the broker deliver the same message again on
//! every reconnect, so one oversize command would keep the link down for good. Raising the limit
//! instead would buffer whatever a broker sends (up to 256 MiB) in memory. Here the oversize
//! packet keeps its topic and packet id, so the client sees an ordinary small PUBLISH, the inbox
//! answers it, and it is acknowledged to the broker like any other command, which then forgets it.
//! The WebSocket link does the same with frames: an oversize message becomes one short frame and
//! the connection stays.
//!
//! The machines are pure (bytes in, bytes out, no I/O) and bounded: nothing is buffered beyond a
//! packet's header (an MQTT topic is at most 64 KiB), whatever the size of the message skipped.
//! [`TrimStream`] wraps a connection with one of them on the read side.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The payload put in place of an oversize message, followed by its size in decimal. It is not
/// JSON, so whatever reads it without knowing the marker refuses it as an envelope too.
pub const MARKER: &[u8] = b"\0vistter-oversize ";

/// The size of the message a marker payload stands for, or `None` for any other payload.
pub fn oversize(payload: &[u8]) -> Option<u64> {
    let digits = payload.strip_prefix(MARKER)?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn marker(size: u64) -> Vec<u8> {
    let mut m = MARKER.to_vec();
    m.extend_from_slice(size.to_string().as_bytes());
    m
}

/// A byte-stream filter: consumes `input` whole, appends what the reader should see to `out`.
pub trait Trim: Send + Unpin {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>);
}

/// MQTT 3.1.1, broker → client: a PUBLISH whose remaining length is over `limit` keeps its
/// fixed-header flags, topic and packet id, and its payload becomes the marker. Every other
/// packet passes untouched.
pub struct MqttTrim {
    limit: usize,
    state: MqttState,
}

enum MqttState {
    /// The fixed header: the type byte and up to 4 bytes of remaining length.
    Header(Vec<u8>),
    /// Passing `left` more bytes of an ordinary packet.
    Pass(usize),
    /// An oversize PUBLISH: collecting its variable header (`total` bytes follow the fixed header).
    PubHead { first: u8, total: usize, head: Vec<u8> },
    /// Dropping `left` more bytes of an oversize payload.
    Skip(usize),
}

impl MqttTrim {
    pub fn new(limit: usize) -> MqttTrim {
        MqttTrim { limit, state: MqttState::Header(Vec::with_capacity(5)) }
    }
}

/// The length of a PUBLISH's variable header (topic, then a packet id at QoS 1 and 2), once the
/// topic's length is known.
fn publish_head_len(first: u8, head: &[u8]) -> Option<usize> {
    let topic = 2 + usize::from(u16::from_be_bytes([*head.first()?, *head.get(1)?]));
    Some(topic + if (first >> 1) & 3 > 0 { 2 } else { 0 })
}

/// MQTT's variable byte integer.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

impl Trim for MqttTrim {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                MqttState::Pass(left) => {
                    let n = (*left).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = MqttState::Header(Vec::with_capacity(5));
                    }
                }
                MqttState::Skip(left) => {
                    let n = (*left).min(input.len());
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = MqttState::Header(Vec::with_capacity(5));
                    }
                }
                MqttState::Header(h) => {
                    h.push(input[0]);
                    input = &input[1..];
                    if h.len() < 2 || (h[h.len() - 1] & 0x80 != 0 && h.len() < 5) {
                        continue;
                    }
                    let mut total = 0usize;
                    for (i, b) in h[1..].iter().enumerate() {
                        total |= usize::from(b & 0x7f) << (7 * i);
                    }
                    let h = std::mem::take(h);
                    let first = h[0];
                    if first >> 4 == 3 && total > self.limit && h[h.len() - 1] & 0x80 == 0 {
                        self.state = MqttState::PubHead { first, total, head: Vec::new() };
                    } else {
                        out.extend_from_slice(&h);
                        self.state =
                            if total == 0 { MqttState::Header(Vec::with_capacity(5)) } else { MqttState::Pass(total) };
                    }
                }
                MqttState::PubHead { first, total, head } => {
                    let (first, total) = (*first, *total);
                    // The topic's length first, then the rest of the variable header; a header
                    // longer than the packet is malformed and ends with the packet.
                    let need = publish_head_len(first, head).unwrap_or(2).min(total);
                    let n = need.saturating_sub(head.len()).min(input.len());
                    head.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let done = head.len() >= total || publish_head_len(first, head).is_some_and(|l| head.len() >= l);
                    if !done {
                        continue;
                    }
                    let head = std::mem::take(head);
                    let payload = total - head.len();
                    let m = marker(payload as u64);
                    out.push(first);
                    varint(head.len() + m.len(), out);
                    out.extend_from_slice(&head);
                    out.extend_from_slice(&m);
                    self.state =
                        if payload == 0 { MqttState::Header(Vec::with_capacity(5)) } else { MqttState::Skip(payload) };
                }
            }
        }
    }
}

/// WebSocket, server → client: the HTTP handshake response passes, then frames. A data message
/// (text or binary, over any number of frames) whose size passes `limit` is cut: the frame that
/// passes it carries the marker instead, and the rest of that message's frames are emptied.
/// Control frames (ping, pong, close) always pass.
pub struct WsTrim {
    limit: u64,
    state: WsState,
    /// Bytes of the current data message let through so far.
    message: u64,
    /// The current data message was cut.
    cut: bool,
}

enum WsState {
    /// In the HTTP response: the last bytes seen, looking for the blank line.
    Handshake(u32),
    Header(Vec<u8>),
    Pass(u64),
    Skip(u64),
}

impl WsTrim {
    pub fn new(limit: usize) -> WsTrim {
        WsTrim { limit: limit as u64, state: WsState::Handshake(0), message: 0, cut: false }
    }

    /// The header's full length, once its first two bytes are known.
    fn header_len(h: &[u8]) -> Option<usize> {
        let b1 = *h.get(1)?;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Some(2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 })
    }

    fn payload_len(h: &[u8]) -> u64 {
        match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0xff; 8])),
            n => u64::from(n),
        }
    }
}

impl Trim for WsTrim {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                WsState::Handshake(last) => {
                    // The response ends with CRLF CRLF: the last four bytes, kept in a u32.
                    let mut i = 0;
                    let mut done = false;
                    while i < input.len() {
                        *last = (*last << 8) | u32::from(input[i]);
                        i += 1;
                        if *last == u32::from_be_bytes(*b"\r\n\r\n") {
                            done = true;
                            break;
                        }
                    }
                    out.extend_from_slice(&input[..i]);
                    input = &input[i..];
                    if done {
                        self.state = WsState::Header(Vec::with_capacity(14));
                    }
                }
                WsState::Pass(left) | WsState::Skip(left) if *left == 0 => {
                    self.state = WsState::Header(Vec::with_capacity(14));
                }
                WsState::Pass(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                }
                WsState::Skip(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    input = &input[n..];
                    *left -= n as u64;
                }
                WsState::Header(h) => {
                    h.push(input[0]);
                    input = &input[1..];
                    match WsTrim::header_len(h) {
                        Some(n) if h.len() == n => {}
                        _ => continue,
                    }
                    let h = std::mem::take(h);
                    let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
                    let len = WsTrim::payload_len(&h);
                    if opcode >= 8 {
                        out.extend_from_slice(&h);
                        self.state = WsState::Pass(len);
                        continue;
                    }
                    if opcode != 0 {
                        // A new data message.
                        self.message = 0;
                        self.cut = false;
                    }
                    let over = self.message.saturating_add(len) > self.limit;
                    if self.cut || over {
                        // This frame's payload becomes the marker (or nothing, once marked).
                        let m = if self.cut { Vec::new() } else { marker(self.message.saturating_add(len)) };
                        out.push(h[0]);
                        out.push(m.len() as u8);
                        out.extend_from_slice(&m);
                        self.cut = true;
                        self.state = WsState::Skip(len);
                    } else {
                        self.message += len;
                        out.extend_from_slice(&h);
                        self.state = WsState::Pass(len);
                    }
                    if fin {
                        // The next data frame starts a new message (and resets `cut`).
                        self.message = 0;
                    }
                }
            }
        }
    }
}

/// A connection whose read side goes through a [`Trim`]; writes pass untouched.
pub struct TrimStream<S, T> {
    inner: S,
    trim: T,
    /// Filtered bytes not yet handed to the reader.
    ready: Vec<u8>,
    at: usize,
    scratch: Box<[u8]>,
}

impl<S, T> TrimStream<S, T> {
    pub fn new(inner: S, trim: T) -> TrimStream<S, T> {
        TrimStream { inner, trim, ready: Vec::new(), at: 0, scratch: vec![0; 16 * 1024].into_boxed_slice() }
    }
}

impl<S: AsyncRead + Unpin, T: Trim> AsyncRead for TrimStream<S, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.at < this.ready.len() {
                let n = (this.ready.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                if this.at == this.ready.len() {
                    this.ready.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // The end of the stream.
                        return Poll::Ready(Ok(()));
                    }
                    // Skipped bytes give nothing to hand over: read again rather than
                    // returning an empty read, which would mean the end of the stream.
                    this.trim.feed(&this.scratch[..n], &mut this.ready);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, T: Unpin> AsyncWrite for TrimStream<S, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;
    use rumqttc::{Packet, PubAck, Publish, QoS};

    const LIMIT: usize = 1000;

    fn encode(packets: &[Packet]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for p in packets {
            p.write(&mut b, usize::MAX).unwrap();
        }
        b.to_vec()
    }

    fn publish(topic: &str, qos: QoS, pkid: u16, len: usize) -> Packet {
        let mut p = Publish::new(topic, qos, vec![b'{'; len]);
        p.pkid = pkid;
        Packet::Publish(p)
    }

    /// The filter's output read by the MQTT client's own codec, with its limit just over ours.
    fn decode(bytes: &[u8]) -> Vec<Packet> {
        let mut b = BytesMut::from(bytes);
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(Packet::read(&mut b, LIMIT + 64).expect("the client reads what the filter lets through"));
        }
        out
    }

    fn run(trim: &mut impl Trim, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(bytes.len());
            if c > at {
                trim.feed(&bytes[at..c], &mut out);
                at = c;
            }
        }
        trim.feed(&bytes[at..], &mut out);
        out
    }

    #[test]
    fn an_oversize_publish_keeps_its_topic_and_packet_id_and_carries_the_marker() {
        let input = encode(&[
            Packet::PingResp,
            publish("v/devices/d/commands", QoS::AtLeastOnce, 7, 10),
            publish("v/devices/d/commands", QoS::AtLeastOnce, 8, 300_000),
            Packet::PubAck(PubAck::new(3)),
            publish("v/devices/d/commands", QoS::AtMostOnce, 0, 5000),
            publish("v/devices/d/commands", QoS::AtLeastOnce, 9, LIMIT - 30),
        ]);
        let out = decode(&run(&mut MqttTrim::new(LIMIT), &input, &[]));
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(out[0], Packet::PingResp);
        assert_eq!(out[1], publish("v/devices/d/commands", QoS::AtLeastOnce, 7, 10));
        let Packet::Publish(p) = &out[2] else { panic!("{:?}", out[2]) };
        assert_eq!((p.topic.as_str(), p.pkid, p.qos), ("v/devices/d/commands", 8, QoS::AtLeastOnce));
        assert_eq!(oversize(&p.payload), Some(300_000));
        assert_eq!(out[3], Packet::PubAck(PubAck::new(3)));
        let Packet::Publish(p) = &out[4] else { panic!() };
        assert_eq!((oversize(&p.payload), p.qos), (Some(5000), QoS::AtMostOnce));
        assert_eq!(out[5], publish("v/devices/d/commands", QoS::AtLeastOnce, 9, LIMIT - 30));
    }

    #[test]
    fn the_marker_is_not_a_payload_anyone_else_sends() {
        assert_eq!(oversize(b"{\"a\":1}"), None);
        assert_eq!(oversize(MARKER), None);
        assert_eq!(oversize(b"\0vistter-oversize 12x"), None);
        assert_eq!(oversize(b"\0vistter-oversize 123"), Some(123));
        assert!(serde_json::from_slice::<serde_json::Value>(&marker(5)).is_err(), "not JSON");
    }

    fn ws_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Frames as (fin, opcode, payload), after the handshake.
    fn ws_frames(mut b: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let end = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        b = &b[end..];
        let mut out = Vec::new();
        while !b.is_empty() {
            let hl = WsTrim::header_len(b).unwrap();
            let len = WsTrim::payload_len(b) as usize;
            out.push((b[0] & 0x80 != 0, b[0] & 0x0f, b[hl..hl + len].to_vec()));
            b = &b[hl + len..];
        }
        out
    }

    fn ws_input() -> Vec<u8> {
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        input.extend(ws_frame(true, 1, b"{\"small\":1}"));
        input.extend(ws_frame(true, 1, &vec![b'x'; 70_000]));
        input.extend(ws_frame(true, 9, b"ping"));
        // A message of three frames that passes the limit in its second, a ping between them.
        input.extend(ws_frame(false, 2, &[1; 600]));
        input.extend(ws_frame(false, 0, &[2; 600]));
        input.extend(ws_frame(true, 10, b""));
        input.extend(ws_frame(true, 0, &[3; 600]));
        input.extend(ws_frame(true, 1, b"after"));
        input
    }

    #[test]
    fn an_oversize_websocket_message_becomes_one_marker_and_the_stream_goes_on() {
        let input = ws_input();
        let out = run(&mut WsTrim::new(LIMIT), &input, &[]);
        assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"));
        let f = ws_frames(&out);
        assert_eq!(f[0], (true, 1, b"{\"small\":1}".to_vec()));
        assert_eq!((f[1].0, f[1].1, oversize(&f[1].2)), (true, 1, Some(70_000)));
        assert_eq!(f[2], (true, 9, b"ping".to_vec()));
        assert_eq!(f[3], (false, 2, vec![1; 600]));
        assert_eq!((f[4].0, f[4].1, oversize(&f[4].2)), (false, 0, Some(1200)));
        assert_eq!(f[5], (true, 10, vec![]));
        assert_eq!(f[6], (true, 0, vec![]), "the rest of a cut message is emptied");
        assert_eq!(f[7], (true, 1, b"after".to_vec()));
        assert_eq!(f.len(), 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// However the stream is cut into reads, the client sees the same packets.
        #[test]
        fn mqtt_output_does_not_depend_on_how_the_stream_is_read(mut cuts in prop::collection::vec(0usize..310_000, 0..40)) {
            cuts.sort_unstable();
            let input = encode(&[
                publish("t/commands", QoS::AtLeastOnce, 1, 20),
                publish("t/commands", QoS::AtLeastOnce, 2, 300_000),
                Packet::PingResp,
                publish("t/commands", QoS::AtLeastOnce, 3, 999),
            ]);
            let whole = run(&mut MqttTrim::new(LIMIT), &input, &[]);
            prop_assert_eq!(run(&mut MqttTrim::new(LIMIT), &input, &cuts), whole);
        }

        #[test]
        fn ws_output_does_not_depend_on_how_the_stream_is_read(mut cuts in prop::collection::vec(0usize..75_000, 0..40)) {
            cuts.sort_unstable();
            let input = ws_input();
            let whole = run(&mut WsTrim::new(LIMIT), &input, &[]);
            prop_assert_eq!(run(&mut WsTrim::new(LIMIT), &input, &cuts), whole);
        }

        /// Garbage from a broker: never a panic, and the output is never larger than the input
        /// plus a marker per byte read.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4000), cuts in prop::collection::vec(0usize..4000, 0..10)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let _ = run(&mut MqttTrim::new(100), &bytes, &cuts);
            let mut ws = b"HTTP/1.1 101 x\r\n\r\n".to_vec();
            ws.extend(&bytes);
            let _ = run(&mut WsTrim::new(100), &ws, &cuts);
        }
    }
}
