//! A bounded ring of FFmpeg's last stderr lines, kept for failure reports and classification.
//!
//! Fed with raw chunks as they are read (stderr is drained continuously so FFmpeg never blocks on a
//! full pipe). Progress-style lines end in `\r`, so both `\r` and `\n` end a line; each line is capped
//! in length and secrets are redacted before a line is stored (FFmpeg echoes URLs with stream keys and passwords; they must never reach a log or a report).
//!
//! Every job's ring is also listed in a process-wide table ([`register`], [`tails`]) so the
//! diagnostics request can report each job's last lines without asking every subsystem that owns
//! jobs; a job that ended leaves its last lines there too (the newest [`ENDED_KEPT`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

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

/// Ended jobs whose last lines are kept for diagnostics.
pub const ENDED_KEPT: usize = 32;
/// Lines kept of an ended job.
const ENDED_LINES: usize = 50;

/// The last stderr lines of one job, as the diagnostics request reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobTail {
    pub job: String,
    /// Still supervised (false: the job ended; these were its last lines).
    pub running: bool,
    /// Oldest first, redacted.
    pub lines: Vec<String>,
}

#[derive(Default)]
struct Table {
    live: BTreeMap<String, Weak<Mutex<StderrRing>>>,
    ended: VecDeque<JobTail>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// Lists a job's ring (a job spawned again under the same name replaces the entry).
pub fn register(job: &str, ring: &Arc<Mutex<StderrRing>>) {
    with_table(|t| {
        t.live.retain(|_, w| w.strong_count() > 0);
        t.live.insert(job.to_string(), Arc::downgrade(ring));
        t.ended.retain(|e| e.job != job);
    });
}

/// Keeps an ending job's last lines among the ended ones.
pub fn retire(job: &str, ring: &Arc<Mutex<StderrRing>>) {
    let lines = ring.lock().unwrap_or_else(|e| e.into_inner()).lines();
    let lines = lines[lines.len().saturating_sub(ENDED_LINES)..].to_vec();
    with_table(|t| {
        // A job of the same name spawned since then keeps its entry.
        if t.live.get(job).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(ring))) {
            t.live.remove(job);
        }
        t.ended.retain(|e| e.job != job);
        if t.ended.len() == ENDED_KEPT {
            t.ended.pop_front();
        }
        t.ended.push_back(JobTail { job: job.to_string(), running: false, lines });
    });
}

/// The last `max_lines` lines of every running job, then of the recently ended ones.
pub fn tails(max_lines: usize) -> Vec<JobTail> {
    let (live, ended) =
        with_table(|t| (t.live.iter().map(|(k, w)| (k.clone(), w.upgrade())).collect::<Vec<_>>(), t.ended.clone()));
    let last = |lines: Vec<String>| lines[lines.len().saturating_sub(max_lines)..].to_vec();
    let mut out: Vec<JobTail> = live
        .into_iter()
        .filter_map(|(job, ring)| {
            let lines = ring?.lock().unwrap_or_else(|e| e.into_inner()).lines();
            Some(JobTail { job, running: true, lines: last(lines) })
        })
        .collect();
    out.extend(ended.into_iter().map(|e| JobTail { lines: last(e.lines), ..e }));
    out
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

    #[test]
    fn the_table_lists_running_and_ended_jobs() {
        let ring = Arc::new(Mutex::new(StderrRing::new(100, Redactor::default())));
        ring.lock().unwrap().feed(b"one\ntwo\nthree\n");
        register("test:tails/a", &ring);
        let mine = |v: Vec<JobTail>| v.into_iter().filter(|t| t.job == "test:tails/a").collect::<Vec<_>>();
        let t = mine(tails(2));
        assert_eq!(
            t,
            vec![JobTail { job: "test:tails/a".into(), running: true, lines: vec!["two".into(), "three".into()] }]
        );
        retire("test:tails/a", &ring);
        drop(ring);
        let t = mine(tails(50));
        assert_eq!((t.len(), t[0].running, t[0].lines.len()), (1, false, 3), "{t:?}");
    }
}
