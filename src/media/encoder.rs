//! The program encoder: raw frames + PCM in, H.264 + AAC FLV out.
//!
//! One supervised FFmpeg per program reads `rawvideo` on stdin and `s16le` 48 kHz stereo on fd 4,
//! and writes FLV on stdout into the program's fan-out. Its input timestamps come from counting
//! frames and samples, so the program clock of the bus is the only clock (wall-clock timestamps from FFmpeg would drift against it). Two writer
//! tasks feed it through small bounded queues: when the encoder falls behind, the bus drops a whole
//! frame (picture and its audio together, so A/V stays locked) instead of blocking its clock.
//!
//! Pictures enter the encoder's pipe by reference (`vmsplice`): the pipe holds the pages of the
//! agent's frame buffer, and the only copy is the encoder's own read. The writer keeps each frame
//! until the pipe can no longer hold any of its pages (a pipe of N pages holds pages of at most
//! 1 + N / pages-per-frame frames), so no buffer is reused while the encoder may still read it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::fanout::Fanout;
use super::frame::OutFrame;
use super::ingest::ProgramFormat;
use super::relay::read_flv_generations;
use super::MediaEnv;
use crate::ffmpeg::argv::{common_prefix, Argv};
use crate::ffmpeg::job::{enlarge_pipe, ChildIo, ExtraFd, ExtraPipe, Job, JobKind, JobSpec, JobStatus};
use tokio::net::unix::pipe;

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
    frames_tx: mpsc::Sender<(OutFrame, Vec<u8>)>,
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
        let (frames_tx, frames_rx) = mpsc::channel::<(OutFrame, Vec<u8>)>(3);
        let (pipes_tx, pipes_rx) = mpsc::channel(2);
        let (flv_tx, flv_rx) = mpsc::channel(2);
        // Split each generation's pipes between the FLV reader and the writer.
        let splitter = tokio::spawn(async move {
            while let Some(mut io) = io_rx.recv().await {
                let stdin = io.stdin.take().and_then(|s| {
                    enlarge_pipe(s.as_fd(), 4 << 20);
                    let fd = s.into_owned_fd().map_err(|e| tracing::error!("the encoder's input pipe: {e}")).ok()?;
                    pipe::Sender::from_owned_fd(fd).map_err(|e| tracing::error!("the encoder's input pipe: {e}")).ok()
                });
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
    pub fn send(&mut self, frame: OutFrame, audio: &[i16]) -> bool {
        if self.frames_tx.capacity() == 0 {
            self.dropped += 1;
            frame.release();
            return false;
        }
        let pcm: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.offered.fetch_add(frame.byte_len() as u64, Ordering::Relaxed);
        match self.frames_tx.try_send((frame, pcm)) {
            Ok(()) => true,
            Err(e) => {
                e.into_inner().0.release();
                false
            }
        }
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
    mut pipes: mpsc::Receiver<(Option<pipe::Sender>, Option<pipe::Sender>)>,
    mut frames: mpsc::Receiver<(OutFrame, Vec<u8>)>,
) {
    let mut current: Option<(VideoPipe, pipe::Sender)> = None;
    loop {
        tokio::select! {
            biased;
            p = pipes.recv() => match p {
                Some((Some(v), Some(a))) => current = Some((VideoPipe::new(v), a)),
                Some(_) => current = None,
                None => return,
            },
            item = frames.recv() => {
                let Some((frame, pcm)) = item else { return };
                match current.as_mut() {
                    Some((video, audio)) => {
                        if audio.write_all(&pcm).await.is_err() {
                            frame.release();
                            current = None;
                        } else if video.send(frame).await.is_err() {
                            current = None;
                        }
                    }
                    None => frame.release(),
                }
            }
        }
    }
}

/// The encoder's picture pipe: frames spliced in by reference, each kept until the pipe is done
/// with it (see the module doc). Dropping it releases every frame.
struct VideoPipe {
    tx: pipe::Sender,
    /// Frames whose pages the pipe may still hold, oldest first.
    held: std::collections::VecDeque<OutFrame>,
    /// The pipe's size in pages.
    pipe_pages: usize,
    /// `vmsplice` refused (a kernel without it for pipes): copy from now on.
    copy: bool,
}

impl VideoPipe {
    fn new(tx: pipe::Sender) -> VideoPipe {
        use nix::fcntl::{fcntl, FcntlArg};
        let bytes = fcntl(&tx, FcntlArg::F_GETPIPE_SZ).ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(1 << 20);
        VideoPipe { tx, held: std::collections::VecDeque::new(), pipe_pages: bytes.div_ceil(4096), copy: false }
    }

    async fn send(&mut self, frame: OutFrame) -> std::io::Result<()> {
        let r = self.splice(&frame).await;
        let pages = frame.byte_len().div_ceil(4096).max(1);
        self.held.push_back(frame);
        // The pipe holds at most `pipe_pages` pages (one pipe slot each): of the newest frames only.
        let keep = if self.copy { 0 } else { 1 + self.pipe_pages.div_ceil(pages) };
        while self.held.len() > keep {
            if let Some(f) = self.held.pop_front() {
                f.release();
            }
        }
        r
    }

    async fn splice(&mut self, frame: &OutFrame) -> std::io::Result<()> {
        use nix::fcntl::{vmsplice, SpliceFFlags};
        let slices = frame.slices();
        let (mut i, mut off) = (0, 0);
        while i < slices.len() {
            if self.copy {
                self.tx.write_all(&slices[i][off..]).await?;
                (i, off) = (i + 1, 0);
                continue;
            }
            let iov: Vec<std::io::IoSlice<'_>> = std::iter::once(&slices[i][off..])
                .chain(slices[i + 1..].iter().copied())
                .map(std::io::IoSlice::new)
                .collect();
            self.tx.writable().await?;
            match self
                .tx
                .try_io(|| vmsplice(&self.tx, &iov, SpliceFFlags::SPLICE_F_NONBLOCK).map_err(std::io::Error::from))
            {
                Ok(mut n) => {
                    while n > 0 && i < slices.len() {
                        let left = slices[i].len() - off;
                        if n >= left {
                            (n, i, off) = (n - left, i + 1, 0);
                        } else {
                            (n, off) = (0, off + n);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EINVAL) || e.raw_os_error() == Some(nix::libc::ENOSYS) =>
                {
                    tracing::debug!("vmsplice into the encoder's pipe is not supported here: {e}; copying instead");
                    self.copy = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for VideoPipe {
    fn drop(&mut self) {
        for f in self.held.drain(..) {
            f.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{self, Band, Frame};
    use std::time::Duration;

    /// The pipe is read slowly while frames go in by reference, and every buffer the writer gives
    /// back is scribbled over at once (as the next camera frame would overwrite it): what comes out
    /// must be exactly the frames sent, so none was given back while the pipe still held its pages.
    #[tokio::test]
    async fn spliced_frames_arrive_intact_though_their_buffers_are_reused_at_once() {
        // A size no other test uses (the buffer pool is shared by the whole test binary).
        let (w, h) = (322u32, 182u32);
        let len = Frame::byte_len(w, h);
        let (tx, mut rx) = pipe::pipe().unwrap();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut all, mut buf) = (Vec::new(), vec![0u8; 3000]);
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => return all,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
        let scribble = || {
            let taken: Vec<Vec<u8>> = (0..8).map(|_| frame::buffer(len)).collect();
            for mut b in taken {
                b.fill(0xEE);
                frame::recycle(b);
            }
        };
        let mut vp = VideoPipe::new(tx);
        let mut want = Vec::new();
        for n in 0..30u8 {
            let mut data = frame::buffer(len);
            for (i, b) in data.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(3).wrapping_add(n) & 0x7f;
            }
            let base = Frame::from_bytes(w, h, data).unwrap();
            let out = if n % 3 == 0 {
                OutFrame::Own(base)
            } else {
                let mut band = Band::copy_of(&base, 40, 20);
                band.planes_mut().0.fill(n);
                OutFrame::Over { base: Arc::new(base), band: Some(band) }
            };
            want.extend(out.slices().concat());
            vp.send(out).await.unwrap();
            scribble();
        }
        drop(vp);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len());
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_bad, None, "byte {first_bad:?} of {} differs (0xEE: a buffer reused too early)", want.len());
    }

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
