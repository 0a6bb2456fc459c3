//! The program encoder: raw frames + PCM in, H.264 + AAC FLV out.
//!
//! One supervised FFmpeg per program reads `rawvideo` on stdin and `s16le` 48 kHz stereo on fd 4,
//! and writes FLV on stdout into the program's fan-out. Its input timestamps come from counting
//! frames and samples, so the program clock of the bus is the only clock (wall-clock timestamps from FFmpeg would drift against it). Two writer
//! tasks feed it through small bounded queues: when the encoder falls behind, the bus drops a whole
//! frame (picture and its audio together, so A/V stays locked) instead of blocking its clock.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::fanout::Fanout;
use super::frame::Frame;
use super::ingest::ProgramFormat;
use super::relay::read_flv_generations;
use super::MediaEnv;
use crate::ffmpeg::argv::{common_prefix, Argv};
use crate::ffmpeg::job::{enlarge_pipe, ChildIo, ExtraFd, ExtraPipe, Job, JobKind, JobSpec, JobStatus};
use tokio::process::ChildStdin;

/// Encoding profiles (audio is always AAC 128k 48 kHz stereo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 1080p30, 4500k, CBR-like.
    Reliability,
    /// 1080p30, 6000k.
    Quality,
    /// 720p30, 2500k.
    #[value(name = "720p30")]
    #[serde(rename = "720p30")]
    P720,
    /// 480p30, 1200k.
    #[value(name = "480p30")]
    #[serde(rename = "480p30")]
    P480,
}

impl Profile {
    pub fn settings(self) -> (ProgramFormat, u32) {
        match self {
            Profile::Reliability => (ProgramFormat { width: 1920, height: 1080, fps: 30 }, 4500),
            Profile::Quality => (ProgramFormat { width: 1920, height: 1080, fps: 30 }, 6000),
            Profile::P720 => (ProgramFormat { width: 1280, height: 720, fps: 30 }, 2500),
            Profile::P480 => (ProgramFormat { width: 854, height: 480, fps: 30 }, 1200),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSettings {
    pub format: ProgramFormat,
    pub bitrate_kbps: u32,
    /// From the hardware probe (`libx264` when nothing else works).
    pub encoder: String,
}

pub fn encoder_args(s: &EncoderSettings) -> Argv {
    let f = s.format;
    let gop = (f.fps * super::destination::KEYFRAME_INTERVAL_S).to_string();
    let (b, maxrate, bufsize) =
        (format!("{}k", s.bitrate_kbps), format!("{}k", s.bitrate_kbps), format!("{}k", s.bitrate_kbps * 2));
    let mut a = common_prefix();
    if s.encoder == "h264_vaapi" {
        a = a.args(["-vaapi_device", "/dev/dri/renderD128"]);
    }
    a = a
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s"])
        .arg(format!("{}x{}", f.width, f.height))
        .args(["-framerate"])
        .arg(f.fps.to_string())
        // Raw inputs need no probing; FFmpeg's default probe would wait for seconds of audio
        // before reading any video, and deadlock against a full video pipe.
        .args(["-probesize", "32", "-analyzeduration", "0", "-thread_queue_size", "64", "-i", "pipe:0"])
        .args(["-f", "s16le", "-ar", "48000", "-ac", "2", "-probesize", "32", "-analyzeduration", "0"])
        .args(["-thread_queue_size", "64", "-i", "pipe:4"])
        .args(["-map", "0:v:0", "-map", "1:a:0"]);
    a = match s.encoder.as_str() {
        "h264_vaapi" => a.args(["-vf", "format=nv12,hwupload", "-c:v", "h264_vaapi"]),
        "h264_qsv" => a.args(["-pix_fmt", "nv12", "-c:v", "h264_qsv"]),
        "h264_nvenc" => a.args(["-c:v", "h264_nvenc", "-preset", "p4", "-tune", "ll"]),
        "h264_videotoolbox" => a.args(["-c:v", "h264_videotoolbox", "-realtime", "1"]),
        "h264_v4l2m2m" => a.args(["-c:v", "h264_v4l2m2m"]),
        _ => a.args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]),
    };
    a.args(["-b:v", &b, "-maxrate", &maxrate, "-bufsize", &bufsize, "-g", &gop, "-keyint_min", &gop])
        .args(["-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-f", "flv", "-flvflags", "no_duration_filesize", "pipe:1"])
}

pub struct Encoder {
    job: Job,
    frames_tx: mpsc::Sender<(Frame, Vec<u8>)>,
    offered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dropped: u64,
}

impl Encoder {
    pub fn start(job_prefix: &str, settings: &EncoderSettings, fanout: &Fanout, env: &MediaEnv) -> Encoder {
        let (io_tx, mut io_rx) = mpsc::channel::<ChildIo>(4);
        let offered = Arc::new(AtomicU64::new(0));
        let job = Job::spawn(JobSpec {
            pipe_stdin: true,
            pipe_stdout: true,
            input_activity: Some(offered.clone()),
            io: Some(io_tx),
            extra_fds: vec![ExtraFd { child_fd: 4, child_writes: false }],
            ..env.job(JobKind::Encoder { owner: job_prefix.into() }, Arc::new(encoder_args(settings)), env.stale)
        });
        let (frames_tx, frames_rx) = mpsc::channel::<(Frame, Vec<u8>)>(3);
        let (pipes_tx, pipes_rx) = mpsc::channel(2);
        let (flv_tx, flv_rx) = mpsc::channel(2);
        // Split each generation's pipes between the FLV reader and the writer.
        let splitter = tokio::spawn(async move {
            while let Some(mut io) = io_rx.recv().await {
                let stdin = io.stdin.take();
                if let Some(s) = &stdin {
                    enlarge_pipe(s.as_fd(), 4 << 20);
                }
                let pcm = io.extra.drain(..).find_map(|p| match p {
                    ExtraPipe::Writer(w) => Some(w),
                    ExtraPipe::Reader(_) => None,
                });
                let _ = pipes_tx.send((stdin, pcm)).await;
                let _ = flv_tx.send(io).await;
            }
        });
        let reader = tokio::spawn(read_flv_generations(job_prefix.to_string(), fanout.clone(), flv_rx));
        let writer = tokio::spawn(write_loop(pipes_rx, frames_rx));
        Encoder { job, frames_tx, offered, tasks: vec![splitter, reader, writer], dropped: 0 }
    }

    /// Queues one frame and its audio; returns false (and drops both) when the encoder is behind.
    pub fn send(&mut self, frame: Frame, audio: &[i16]) -> bool {
        if self.frames_tx.capacity() == 0 {
            self.dropped += 1;
            return false;
        }
        let pcm: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.offered.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        self.frames_tx.try_send((frame, pcm)).is_ok()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn status(&self) -> JobStatus {
        self.job.status()
    }

    pub async fn stop(self) {
        drop(self.frames_tx);
        self.job.stop().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Writes each frame's audio, then its picture, into the current generation's pipes. One writer
/// for both keeps them in lockstep; audio first because FFmpeg probes its audio input before it
/// reads video (a video-first writer deadlocks at start), and the enlarged pipes absorb the order.
/// Frames arriving while there is no live encoder are discarded (it is restarting).
async fn write_loop(
    mut pipes: mpsc::Receiver<(Option<ChildStdin>, Option<tokio::net::unix::pipe::Sender>)>,
    mut frames: mpsc::Receiver<(Frame, Vec<u8>)>,
) {
    let mut current: Option<(ChildStdin, tokio::net::unix::pipe::Sender)> = None;
    loop {
        tokio::select! {
            biased;
            p = pipes.recv() => match p {
                Some((Some(v), Some(a))) => current = Some((v, a)),
                Some(_) => current = None,
                None => return,
            },
            item = frames.recv() => {
                let Some((frame, pcm)) = item else { return };
                if let Some((video, audio)) = current.as_mut() {
                    let ok = audio.write_all(&pcm).await.is_ok() && video.write_all(&frame.data).await.is_ok();
                    if !ok {
                        current = None;
                    }
                }
                frame.recycle();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x264_arguments_follow_the_profile() {
        let (format, kbps) = Profile::Reliability.settings();
        let a = encoder_args(&EncoderSettings { format, bitrate_kbps: kbps, encoder: "libx264".into() }).to_string();
        for want in [
            "-s 1920x1080",
            "-framerate 30",
            "-b:v 4500k -maxrate 4500k -bufsize 9000k",
            "-g 60 -keyint_min 60",
            "-sc_threshold 0",
            "-c:a aac -b:a 128k -ar 48000 -ac 2",
            "-tune zerolatency",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        let v = encoder_args(&EncoderSettings { format, bitrate_kbps: 2500, encoder: "h264_vaapi".into() }).to_string();
        assert!(v.contains("-vaapi_device") && v.contains("hwupload"), "{v}");
    }
}
