//! The figures readers show of the running programs: the status page, `/metrics`, the status API
//! and the cloud's METRICS all print these, computed once from the programs' typed view
//! ([`ProgramInfo`], read from watch channels, never through a command).

use serde::Serialize;

use super::ProgramInfo;
use crate::ffmpeg::job::Phase;
use crate::values::{DestinationId, ProgramId};

/// One program's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramFigures {
    pub id: ProgramId,
    /// Frames per second of program time since the program started (two decimals).
    pub fps: f64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub uptime_s: f64,
    pub fallbacks: u64,
    pub emergency_slate: bool,
    /// The encoder's speed (1.0 is real time), once it reported one.
    pub speed: Option<f64>,
}

/// One push of a program to a destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationFigures {
    pub id: DestinationId,
    pub program_id: ProgramId,
    pub state: Phase,
    pub bitrate_kbps: Option<f64>,
    pub speed: Option<f64>,
    pub starts: u64,
    pub dropped_frames: Option<u64>,
}

/// The figures of these programs and of their pushes.
pub fn figures(programs: &[ProgramInfo]) -> (Vec<ProgramFigures>, Vec<DestinationFigures>) {
    let mut p = Vec::new();
    let mut d = Vec::new();
    for info in programs {
        let s = &info.status;
        let fps = if s.program_time_s > 0.0 { s.frames as f64 / s.program_time_s } else { 0.0 };
        p.push(ProgramFigures {
            id: s.id.clone(),
            fps: (fps * 100.0).round() / 100.0,
            frames: s.frames,
            dropped_frames: s.dropped_frames,
            uptime_s: s.program_time_s.round(),
            fallbacks: s.fallbacks,
            emergency_slate: s.emergency_slate,
            speed: s.encoder.progress.as_ref().and_then(|p| p.speed),
        });
        for o in &s.outputs {
            let prog = o.job.progress.as_ref();
            d.push(DestinationFigures {
                id: o.destination.clone(),
                program_id: s.id.clone(),
                state: o.job.phase,
                bitrate_kbps: prog.and_then(|p| p.bitrate_kbps),
                speed: prog.and_then(|p| p.speed),
                starts: o.job.starts,
                dropped_frames: prog.and_then(|p| p.drop_frames),
            });
        }
    }
    (p, d)
}
