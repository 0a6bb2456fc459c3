//! Arbitrary bytes from an RTMP ingest, cut into arbitrary reads, through the native publisher's
//! chunk reader and its reading of each message (commands, status answers, control messages).
//! Nothing may panic, recurse or allocate without bound, and how the bytes are cut into reads must
//! not change which messages come out or where it stops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::media::rtmp::incoming::{interpret, ChunkReader, Control};

fn run(data: &[u8], step: usize) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut r = ChunkReader::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        r.push(chunk);
        loop {
            match r.next_message() {
                Ok(Some((t, m))) => {
                    if let Ok(Control::ChunkSize(n)) = interpret(t, &m) {
                        if (1..=1 << 20).contains(&n) {
                            r.set_chunk_size(n as usize);
                        }
                    }
                    out.push((t, m));
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    assert_eq!(run(data, usize::from(step)), run(data, data.len()));
    // The message reader on the raw bytes too, as if they were one message of each kind.
    for t in [1u8, 4, 5, 17, 20] {
        let _ = interpret(t, data);
    }
});
