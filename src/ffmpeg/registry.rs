//! The on-disk registry of FFmpeg processes this agent started.
//!
//! One small file per live child, `<dir>/<pid>.json`, written right after spawn and removed when the
//! child is reaped. If the agent dies hard (SIGKILL, power cut of the agent only), its children may
//! outlive it, still holding RTMP sessions that would make the ingest refuse the next publisher. On the
//! next start the agent reaps exactly those: a process is ours only if its pid *and* its kernel start
//! time match the record, so a recycled pid (another program) is never touched (never kill
//! by name: other FFmpeg processes on the box are not ours).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    pub job: String,
    pub agent_pid: u32,
}

#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn open(dir: &Path) -> std::io::Result<Registry> {
        std::fs::create_dir_all(dir)?;
        Ok(Registry { dir: dir.to_path_buf() })
    }

    fn path(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("{pid}.json"))
    }

    /// Records a child we just spawned (its own process group leader).
    pub fn register(&self, pid: u32, job: &str) -> std::io::Result<()> {
        let rec = Record {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            job: job.to_string(),
            agent_pid: std::process::id(),
        };
        let tmp = self.dir.join(format!(".{pid}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&rec).expect("record serializes"))?;
        std::fs::rename(tmp, self.path(pid))
    }

    pub fn unregister(&self, pid: u32) {
        let _ = std::fs::remove_file(self.path(pid));
    }

    pub fn records(&self) -> Vec<Record> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Kills the leftovers of earlier agent instances (whole process groups), returns their pids.
    /// Records whose process is gone or is now a different process are just removed.
    pub async fn reap_leftovers(&self) -> Vec<u32> {
        let me = std::process::id();
        // All signalled first, then waited for together: a restart after a crash is back on air
        // sooner than if each leftover had its own grace period in turn.
        let mut live = Vec::new();
        for rec in self.records() {
            if rec.agent_pid == me {
                continue;
            }
            if rec.start_ticks != 0 && start_ticks(rec.pid) == Some(rec.start_ticks) {
                tracing::warn!(pid = rec.pid, job = %rec.job, "reaping FFmpeg left over by an earlier agent");
                let _ = killpg(Pid::from_raw(rec.pid as i32), Signal::SIGTERM);
                live.push(rec);
            } else {
                self.unregister(rec.pid);
            }
        }
        let gone = |rec: &Record| start_ticks(rec.pid) != Some(rec.start_ticks) || is_zombie(rec.pid);
        for _ in 0..20 {
            if live.iter().all(gone) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut reaped = Vec::new();
        for rec in live {
            if !gone(&rec) {
                let _ = killpg(Pid::from_raw(rec.pid as i32), Signal::SIGKILL);
            }
            reaped.push(rec.pid);
            self.unregister(rec.pid);
        }
        reaped
    }
}

/// The kernel start time of a process, or None if it does not exist.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // Fields after ')' start at field 3 (state); starttime is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(start_ticks(u32::MAX - 1).is_none());
    }

    #[tokio::test]
    async fn stale_records_of_other_processes_are_removed_without_killing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        // A record whose pid exists (this test process) but with a wrong start time: not ours.
        let rec = Record { pid: std::process::id(), start_ticks: 1, job: "x".into(), agent_pid: 1 };
        std::fs::write(dir.path().join(format!("{}.json", rec.pid)), serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(reg.reap_leftovers().await.is_empty());
        assert!(reg.records().is_empty());
    }
}
