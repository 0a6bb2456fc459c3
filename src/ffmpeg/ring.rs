//! A bounded ring of FFmpeg's last stderr lines, kept for failure reports and classification.
//!
//! Fed with raw chunks as they are read (stderr is drained continuously so FFmpeg never blocks on a
//! full pipe). Progress-style lines end in `\r`, so both `\r` and `\n` end a line; each line is capped
//! in length and secrets are redacted before a line is stored (LESSONS 8 and 19).

use std::collections::VecDeque;

use crate::secret::Redactor;

const MAX_LINE: usize = 400;

#[derive(Debug)]
pub struct StderrRing {
    lines: VecDeque<String>,
    capacity: usize,
    partial: Vec<u8>,
    redactor: Redactor,
}

impl StderrRing {
    pub fn new(capacity: usize, redactor: Redactor) -> Self {
        StderrRing { lines: VecDeque::with_capacity(capacity), capacity, partial: Vec::new(), redactor }
    }

    /// Feeds a chunk; returns the lines it completed (already redacted), for logging.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    let line = self.redactor.redact(String::from_utf8_lossy(&self.partial).trim_end());
                    self.partial.clear();
                    if !line.is_empty() {
                        self.push(line.clone());
                        done.push(line);
                    }
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        done
    }

    fn push(&mut self, line: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn keeps_the_last_lines_bounded_and_redacted() {
        let mut r = StderrRing::new(3, Redactor::new([Secret::new("sekret-key")]));
        r.feed(b"a\nb\rc\r\nd\n");
        r.feed(b"rtmp://h/app/sekret-key: Connection refused\n");
        assert_eq!(r.lines(), vec!["c", "d", "rtmp://h/app/***: Connection refused"]);
        r.feed(&vec![b'z'; 10_000]);
        r.feed(b"\n");
        assert_eq!(r.lines().last().unwrap().len(), MAX_LINE);
    }
}
