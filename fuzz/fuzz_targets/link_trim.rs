//! Arbitrary bytes from a broker or a WebSocket server, cut into arbitrary reads, through the
//! filters that trim oversize messages before the protocol clients read them. Nothing may panic,
//! and how the stream is cut into reads must not change what comes out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::control::trim::{MqttTrim, Trim, WsTrim};

fn run(t: &mut impl Trim, data: &[u8], step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        t.feed(chunk, &mut out);
    }
    out
}

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (step, limit, data) = input;
    let limit = usize::from(limit);
    let whole = run(&mut MqttTrim::new(limit), data, data.len());
    assert_eq!(run(&mut MqttTrim::new(limit), data, usize::from(step)), whole);
    let mut ws = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
    ws.extend_from_slice(data);
    let whole = run(&mut WsTrim::new(limit), &ws, ws.len());
    assert_eq!(run(&mut WsTrim::new(limit), &ws, usize::from(step)), whole);
});
