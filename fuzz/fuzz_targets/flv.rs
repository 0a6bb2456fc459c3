//! Arbitrary bytes from the encoder's pipe, cut into arbitrary reads, through the FLV tag reader
//! that feeds every destination. Nothing may panic, and how the stream is cut into reads must not
//! change which tags come out or where it stops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::media::flv::{FlvReader, Item};

/// Every item (as its kind, timestamp and bytes) until the first error or the end of the input.
fn run(data: &[u8], step: usize) -> (Vec<(String, u32, Vec<u8>)>, bool) {
    let mut r = FlvReader::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        r.push(chunk);
        loop {
            match r.next_item() {
                Ok(Some(Item::Header(h))) => out.push(("header".into(), 0, h.to_vec())),
                Ok(Some(Item::Tag(t))) => {
                    let _ = (t.is_keyframe(), t.is_sequence_header(), t.encode());
                    out.push((format!("{:?}", t.kind), t.timestamp, t.data.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|input: (u8, bool, &[u8])| {
    let (step, with_header, data) = input;
    let mut stream = Vec::new();
    if with_header {
        stream.extend_from_slice(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
    }
    stream.extend_from_slice(data);
    assert_eq!(run(&stream, usize::from(step)), run(&stream, stream.len()));
});
