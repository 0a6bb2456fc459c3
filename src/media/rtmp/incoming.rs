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

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_or_an_error(type_id in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = interpret(type_id, &data);
        }

        /// The chunk layer the client uses (`rml_rtmp`'s) over arbitrary bytes from a server, in
        /// arbitrary pieces: messages or errors, never a panic.
        #[test]
        fn the_chunk_reader_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048), cut in 1usize..64) {
            let mut d = rml_rtmp::chunk_io::ChunkDeserializer::new();
            for piece in data.chunks(cut) {
                let mut input = piece;
                while let Ok(Some(m)) = d.get_next_message(input) {
                    let _ = interpret(m.type_id, &m.data);
                    input = &[];
                }
            }
        }
    }
}
