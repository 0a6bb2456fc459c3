//! Parser for FFmpeg's `-progress` output.
//!
//! FFmpeg writes `key=value` lines, one field per line, and ends each block with
//! `progress=continue` or `progress=end`. Values may be `N/A`; `out_time_ms` is really microseconds,
//! like `out_time_us`. Lines may end in `\n`, `\r\n` or `\r`. The parser is incremental (feed any
//! chunking of the stream) and bounded: an absurdly long line is discarded, never buffered.

/// One completed progress block. Fields FFmpeg printed as `N/A` (or not at all) are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    pub out_time_us: Option<i64>,
    pub speed: Option<f64>,
    pub drop_frames: Option<u64>,
    pub dup_frames: Option<u64>,
    /// Output bitrate in kbit/s.
    pub bitrate_kbps: Option<f64>,
    pub total_size: Option<u64>,
    /// `progress=end`: FFmpeg is finishing.
    pub end: bool,
}

const MAX_LINE: usize = 1024;

#[derive(Debug, Default)]
pub struct ProgressParser {
    line: Vec<u8>,
    overlong: bool,
    current: Progress,
}

impl ProgressParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns every block completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Progress> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.overlong {
                    if let Some(p) = self.finish_line() {
                        out.push(p);
                    }
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        out
    }

    fn finish_line(&mut self) -> Option<Progress> {
        let line = std::str::from_utf8(&self.line).ok()?.trim();
        let (key, value) = line.split_once('=')?;
        let value = value.trim();
        let p = &mut self.current;
        match key.trim() {
            "frame" => p.frame = num(value),
            "fps" => p.fps = num(value),
            "out_time_us" | "out_time_ms" => p.out_time_us = num(value),
            "speed" => p.speed = num(value.trim_end_matches('x')),
            "drop_frames" => p.drop_frames = num(value),
            "dup_frames" => p.dup_frames = num(value),
            "bitrate" => p.bitrate_kbps = num(value.trim_end_matches("kbits/s")),
            "total_size" => p.total_size = num(value),
            "progress" => {
                let mut done = std::mem::take(&mut self.current);
                done.end = value == "end";
                return Some(done);
            }
            _ => {}
        }
        None
    }
}

fn num<T: std::str::FromStr>(v: &str) -> Option<T> {
    if v == "N/A" {
        return None;
    }
    v.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Captured from `ffmpeg -progress pipe:1` (FFmpeg 5.1) relaying an RTSP camera.
    const CAPTURED: &str = "frame=251\nfps=25.02\nstream_0_0_q=-1.0\nbitrate= 312.4kbits/s\ntotal_size=393216\nout_time_us=10040000\nout_time_ms=10040000\nout_time=00:00:10.040000\ndup_frames=0\ndrop_frames=0\nspeed=1.00x\nprogress=continue\n";

    #[test]
    fn parses_a_captured_block() {
        let mut p = ProgressParser::new();
        let blocks = p.feed(CAPTURED.as_bytes());
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0];
        assert_eq!(b.frame, Some(251));
        assert_eq!(b.out_time_us, Some(10_040_000));
        assert_eq!(b.speed, Some(1.0));
        assert_eq!(b.bitrate_kbps, Some(312.4));
        assert_eq!(b.total_size, Some(393_216));
        assert_eq!(b.drop_frames, Some(0));
        assert!(!b.end);
    }

    #[test]
    fn not_available_values_and_cr_endings() {
        let block = "frame=0\rfps=0.00\rbitrate=N/A\rtotal_size=N/A\rout_time_us=N/A\rspeed=N/A\rprogress=continue\r";
        let mut p = ProgressParser::new();
        let b = p.feed(block.as_bytes()).remove(0);
        assert_eq!(b.frame, Some(0));
        assert_eq!(b.bitrate_kbps, None);
        assert_eq!(b.out_time_us, None);
        assert_eq!(b.speed, None);
        let end = p.feed(b"out_time_us=5\r\nprogress=end\r\n").remove(0);
        assert!(end.end);
        assert_eq!(end.out_time_us, Some(5));
    }

    #[test]
    fn overlong_lines_are_dropped_not_buffered() {
        let mut p = ProgressParser::new();
        let junk = vec![b'x'; 100_000];
        assert!(p.feed(&junk).is_empty());
        assert!(p.line.len() <= MAX_LINE);
        let b = p.feed(b"\nframe=3\nprogress=continue\n");
        assert_eq!(b[0].frame, Some(3));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_blocks(cuts in proptest::collection::vec(0usize..400, 0..20)) {
            let data = CAPTURED.repeat(3);
            let bytes = data.as_bytes();
            let mut whole = ProgressParser::new();
            let expected = whole.feed(bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut p = ProgressParser::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(p.feed(&bytes[last..c]));
                last = c;
            }
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut p = ProgressParser::new();
            let _ = p.feed(&data);
        }
    }
}
