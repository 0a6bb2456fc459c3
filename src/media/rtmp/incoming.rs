//! What one message from the ingest means to a publisher, read from its bytes.
//!
//! This is the agent's own reading of the few messages a publisher acts on, not `rml_rtmp`'s
//! message layer: that one panics on an AMF0 command of fewer than three values (FFmpeg's RTMP
//! server sends such messages), and its recursive AMF0 reader has no depth limit, so a nested
//! object sent by a hostile server could overflow the stack. Here every length is checked, AMF0
//! nesting stops at [`MAX_DEPTH`], and anything else is a clean error.

use std::collections::HashMap;

use rml_amf0::Amf0Value;

/// AMF0 nesting accepted from a server (a status object is one level deep).
pub const MAX_DEPTH: usize = 16;
/// The largest command accepted from a server (real answers are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Set Chunk Size (type 1).
    ChunkSize(u32),
    /// Window Acknowledgement Size (type 5).
    AckWindow(u32),
    /// User Control PingRequest (type 4, event 6): answer with its timestamp.
    Ping(u32),
    /// An AMF0 command (type 20, or type 17 with its leading byte): name, transaction, and the
    /// values after the command object.
    Command { name: String, tx: f64, args: Vec<Amf0Value> },
    /// Anything a publisher does not act on.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

fn bad(s: impl Into<String>) -> BadMessage {
    BadMessage(s.into())
}

fn be_u32(d: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?))
}

pub fn interpret(type_id: u8, data: &[u8]) -> Result<Control, BadMessage> {
    match type_id {
        1 => be_u32(data).map(|n| Control::ChunkSize(n & 0x7fff_ffff)).ok_or_else(|| bad("short Set Chunk Size")),
        5 => be_u32(data).map(Control::AckWindow).ok_or_else(|| bad("short Window Acknowledgement Size")),
        4 => {
            let event = data.get(..2).ok_or_else(|| bad("short User Control message"))?;
            if event == [0, 6] {
                be_u32(&data[2..]).map(Control::Ping).ok_or_else(|| bad("short PingRequest"))
            } else {
                Ok(Control::Ignored)
            }
        }
        20 => command(data),
        17 => command(data.get(1..).unwrap_or_default()),
        _ => Ok(Control::Ignored),
    }
}

fn command(data: &[u8]) -> Result<Control, BadMessage> {
    if data.len() > MAX_COMMAND_BYTES {
        return Err(bad(format!("a command of {} bytes", data.len())));
    }
    let mut r = Reader { d: data, at: 0 };
    let mut values = Vec::new();
    while r.at < data.len() {
        values.push(r.value(0)?);
    }
    let mut it = values.into_iter();
    let Some(Amf0Value::Utf8String(name)) = it.next() else {
        return Ok(Control::Ignored);
    };
    let tx = match it.next() {
        Some(Amf0Value::Number(n)) => n,
        _ => 0.0,
    };
    let _command_object = it.next();
    Ok(Control::Command { name, tx, args: it.collect() })
}

struct Reader<'a> {
    d: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BadMessage> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.d.len()).ok_or_else(|| bad("truncated AMF0"))?;
        let s = &self.d[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<usize, BadMessage> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<usize, BadMessage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn string(&mut self, len: usize) -> Result<String, BadMessage> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, BadMessage> {
        if depth > MAX_DEPTH {
            return Err(bad("AMF0 nested too deep"));
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0 => {
                let b = self.take(8)?;
                Amf0Value::Number(f64::from_be_bytes(b.try_into().map_err(|_| bad("number"))?))
            }
            1 => Amf0Value::Boolean(self.take(1)?[0] != 0),
            2 => {
                let n = self.u16()?;
                Amf0Value::Utf8String(self.string(n)?)
            }
            12 => {
                let n = self.u32()?;
                Amf0Value::Utf8String(self.string(n)?)
            }
            3 => Amf0Value::Object(self.properties(depth)?),
            8 => {
                self.take(4)?; // the ECMA array's count is a hint; its end marker ends it
                Amf0Value::Object(self.properties(depth)?)
            }
            10 => {
                let n = self.u32()?;
                // Each value takes at least one byte: a count beyond what is left is a lie.
                if n > self.d.len() - self.at {
                    return Err(bad("AMF0 array longer than its message"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(v)
            }
            5 => Amf0Value::Null,
            6 => Amf0Value::Undefined,
            11 => {
                let b = self.take(10)?;
                Amf0Value::Number(f64::from_be_bytes(b[..8].try_into().map_err(|_| bad("date"))?))
            }
            m => return Err(bad(format!("AMF0 type {m} not expected from an ingest"))),
        })
    }

    fn properties(&mut self, depth: usize) -> Result<HashMap<String, Amf0Value>, BadMessage> {
        let mut o = HashMap::new();
        loop {
            let n = self.u16()?;
            if n == 0 {
                if self.take(1)?[0] == 9 {
                    return Ok(o);
                }
                return Err(bad("AMF0 object without its end marker"));
            }
            let k = self.string(n)?;
            let v = self.value(depth + 1)?;
            o.insert(k, v);
        }
    }
}

/// The largest message accepted from a server (its answers are a few hundred bytes).
pub const MAX_IN_MESSAGE: usize = 256 * 1024;
/// Chunk streams a server may use at once.
const MAX_CHUNK_STREAMS: usize = 16;

/// What the reader knows of one chunk stream: the last header and the message being assembled.
#[derive(Debug, Default, Clone)]
struct ChunkStream {
    length: usize,
    type_id: u8,
    extended: bool,
    partial: Vec<u8>,
}

/// A chunk's headers as read: (their length in bytes, chunk stream id, format, message header).
type Header = (usize, u32, u8, [u8; 11]);

/// The agent's own reader of the RTMP chunk stream a server sends (RTMP 1.0 §5.3), bounded:
/// `rml_rtmp`'s chunk deserializer subtracts without a check on a continuation chunk longer than
/// its message (found by the `rtmp_incoming` fuzz target), which in a release build asks for an
/// allocation of nearly `usize::MAX` bytes. Here every size is checked before it is used, a
/// message is at most [`MAX_IN_MESSAGE`] bytes and a server may use [`MAX_CHUNK_STREAMS`] chunk
/// streams. Timestamps are read past and not kept: a publisher acts on no server timestamp.
#[derive(Debug)]
pub struct ChunkReader {
    buf: Vec<u8>,
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader { buf: Vec::new(), chunk_size: 128, streams: HashMap::new() }
    }
}

impl ChunkReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The server's Set Chunk Size, for the chunks after it.
    pub fn set_chunk_size(&mut self, n: usize) {
        self.chunk_size = n.max(1);
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet part of a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.streams.values().map(|s| s.partial.len()).sum::<usize>()
    }

    /// The next whole message (type id, payload), `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, BadMessage> {
        loop {
            let Some((used, csid, fmt, header)) = self.header()? else { return Ok(None) };
            let mut st = match (fmt, self.streams.get(&csid)) {
                (0, prev) => prev.cloned().unwrap_or_default(),
                (_, Some(prev)) => prev.clone(),
                (_, None) => return Err(bad(format!("chunk stream {csid} continued before it began"))),
            };
            let mut at = used;
            if fmt <= 1 {
                if !st.partial.is_empty() {
                    return Err(bad("a new message began inside another on the same chunk stream"));
                }
                st.length = u32::from_be_bytes([0, header[3], header[4], header[5]]) as usize;
                st.type_id = header[6];
                if st.length > MAX_IN_MESSAGE {
                    return Err(bad(format!("a message of {} bytes from the ingest", st.length)));
                }
            }
            if fmt <= 2 {
                st.extended = header[..3] == [0xff, 0xff, 0xff];
            }
            if st.extended {
                if self.buf.len() < at + 4 {
                    return Ok(None);
                }
                at += 4;
            }
            let want = (st.length - st.partial.len()).min(self.chunk_size);
            if self.buf.len() < at + want {
                return Ok(None);
            }
            st.partial.extend_from_slice(&self.buf[at..at + want]);
            self.buf.drain(..at + want);
            if st.partial.len() == st.length {
                let payload = std::mem::take(&mut st.partial);
                let type_id = st.type_id;
                self.streams.insert(csid, st);
                return Ok(Some((type_id, payload)));
            }
            if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(bad("too many chunk streams from the ingest"));
            }
            self.streams.insert(csid, st);
        }
    }

    /// The basic and message headers at the front of the buffer: (bytes, csid, fmt, the message
    /// header's fields: timestamp 0..3, length 3..6, type 6) or `None` if incomplete.
    fn header(&self) -> Result<Option<Header>, BadMessage> {
        let b = &self.buf;
        let Some(&first) = b.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, basic) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let len = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < basic + len {
            return Ok(None);
        }
        let mut h = [0u8; 11];
        h[..len].copy_from_slice(&b[basic..basic + len]);
        Ok(Some((basic + len, csid, fmt, h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amf(values: Vec<Amf0Value>) -> Vec<u8> {
        rml_amf0::serialize(&values).unwrap()
    }

    #[test]
    fn a_status_answer_reads_back() {
        let mut info = HashMap::new();
        info.insert("code".to_string(), Amf0Value::Utf8String("NetStream.Publish.BadName".into()));
        info.insert("level".to_string(), Amf0Value::Utf8String("error".into()));
        let data = amf(vec![
            Amf0Value::Utf8String("onStatus".into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Object(info.clone()),
        ]);
        assert_eq!(
            interpret(20, &data).unwrap(),
            Control::Command { name: "onStatus".into(), tx: 0.0, args: vec![Amf0Value::Object(info)] }
        );
        assert_eq!(interpret(1, &[0, 0, 16, 0]).unwrap(), Control::ChunkSize(4096));
        assert_eq!(interpret(4, &[0, 6, 0, 0, 1, 0]).unwrap(), Control::Ping(256));
        assert_eq!(interpret(9, &[1, 2, 3]).unwrap(), Control::Ignored);
    }

    /// FFmpeg's RTMP server sends commands of fewer than three values; `rml_rtmp`'s message layer
    /// panicked on them ("range end index 3 out of range for slice of length 1").
    #[test]
    fn a_command_of_one_value_is_read_not_a_panic() {
        let data = amf(vec![Amf0Value::Utf8String("onFCPublish".into())]);
        assert_eq!(
            interpret(20, &data).unwrap(),
            Control::Command { name: "onFCPublish".into(), tx: 0.0, args: vec![] }
        );
        assert_eq!(interpret(20, &[]).unwrap(), Control::Ignored);
    }

    #[test]
    fn deep_nesting_and_lying_lengths_are_errors() {
        let mut deep = vec![2, 0, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[3, 0, 1, b'k']);
        }
        assert!(interpret(20, &deep).is_err());
        assert!(interpret(20, &[2, 0xff, 0xff, b'a']).is_err());
        assert!(interpret(20, &[10, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(interpret(20, &vec![5; MAX_COMMAND_BYTES + 1]).is_err());
        assert!(interpret(1, &[0]).is_err());
    }

    /// One chunk: with a full header (`fmt0`, for a message of `len` bytes) or a continuation.
    fn chunk(csid: u8, fmt0: bool, type_id: u8, len: usize, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![if fmt0 { csid } else { 0xc0 | csid }];
        if fmt0 {
            v.extend_from_slice(&[0, 0, 0]);
            v.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            v.push(type_id);
            v.extend_from_slice(&[0, 0, 0, 0]);
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn messages_across_chunks_and_reads_come_out_whole() {
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut wire = chunk(3, true, 20, 300, &body[..128]);
        wire.extend(chunk(3, false, 0, 0, &body[128..256]));
        wire.extend(chunk(3, false, 0, 0, &body[256..]));
        wire.extend(chunk(2, true, 1, 4, &[0, 0, 16, 0]));
        for step in [1, 7, wire.len()] {
            let mut r = ChunkReader::new();
            let mut got = vec![];
            for piece in wire.chunks(step) {
                r.push(piece);
                while let Some(m) = r.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![(20, body.clone()), (1, vec![0, 0, 16, 0])], "read {step} bytes at a time");
        }
    }

    /// The input the `rtmp_incoming` fuzz target found for `rml_rtmp`'s deserializer (a message
    /// continued past its length, then a huge claim) is an error here, never a panic or a huge
    /// allocation.
    #[test]
    fn lying_chunk_headers_are_errors() {
        let mut r = ChunkReader::new();
        r.push(&[0xc5, 1, 2, 3]);
        assert!(r.next_message().is_err(), "a continuation with no message");
        let mut r = ChunkReader::new();
        r.push(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]);
        assert!(r.next_message().is_err(), "a 16 MiB message");
        let mut r = ChunkReader::new();
        let mut wire = chunk(3, true, 20, 200, &[5; 128]);
        wire.extend(chunk(3, true, 20, 4, &[5; 4]));
        r.push(&wire);
        assert!(r.next_message().is_err(), "a new message inside another");
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_or_an_error(type_id in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = interpret(type_id, &data);
        }

        /// The chunk reader over arbitrary bytes from a server, in arbitrary pieces: the same
        /// messages whatever the pieces, until an error, never a panic.
        #[test]
        fn the_chunk_reader_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 1usize..64) {
            let run = |step: usize| {
                let mut r = ChunkReader::new();
                let mut out = vec![];
                for piece in data.chunks(step) {
                    r.push(piece);
                    loop {
                        match r.next_message() {
                            Ok(Some(m)) => {
                                let _ = interpret(m.0, &m.1);
                                out.push(m);
                            }
                            Ok(None) => break,
                            Err(_) => return (out, true),
                        }
                    }
                }
                (out, false)
            };
            prop_assert_eq!(run(cut), run(data.len().max(1)));
        }
    }
}
