//! Arbitrary bytes on FFmpeg's `-progress` pipe (a camera's or an ingest's FFmpeg may print
//! anything), cut into arbitrary reads. Nothing may panic and the reads' boundaries must not
//! change the blocks parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::ffmpeg::progress::ProgressParser;

fn run(data: &[u8], step: usize) -> String {
    let mut p = ProgressParser::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        out.extend(p.feed(chunk));
    }
    format!("{out:?}")
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    assert_eq!(run(data, usize::from(step)), run(data, data.len()));
});
