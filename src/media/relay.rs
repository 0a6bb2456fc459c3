//! Relay mode: one camera copied, without transcoding, to several destinations.
//!
//! The ingest FFmpeg (`-rtsp_transport tcp -timeout … -i URL -c:v copy … -f flv pipe:1`) is probed
//! before every start: camera AAC is copied, other audio is converted to AAC, and a camera without
//! audio gets silent AAC (YouTube drops audio-less streams after ~40 s, so a stream always carries audio). Its FLV goes
//! through the fan-out to one pusher per destination ingest. A camera restart is absorbed by the
//! fan-out's timestamp rebasing, so healthy destinations keep their connections.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::destination::OutputTarget;
use super::fanout::Fanout;
use super::flv::FlvReader;
use super::probe::{probe_camera, CameraProbe, CameraSource, ProbeError};
use super::pusher::{Outputs, PusherStatus};
use super::MediaEnv;
use crate::ffmpeg::argv::{common_prefix, Argv};
use crate::ffmpeg::job::{ArgSource, ChildIo, Job, JobKind, JobSpec, JobStatus, Phase, PrepareError};
use crate::values::{SourceId, StreamId};

#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub id: StreamId,
    pub camera: CameraSource,
    pub outputs: Vec<OutputTarget>,
}

/// Builds the ingest's argv from the camera as it is now.
pub fn ingest_args(cam: &CameraSource, probe: &CameraProbe, rtsp_timeout: Duration) -> Result<Argv, PrepareError> {
    match probe.video_codec.as_deref() {
        Some("h264") => {}
        other => {
            return Err(PrepareError {
                message: format!(
                    "camera {} sends {} video; relay mode needs H.264 (use a program to transcode)",
                    cam.camera_id,
                    other.unwrap_or("unknown")
                ),
                permanent: true,
            })
        }
    }
    let mut a = common_prefix();
    if cam.is_rtsp() {
        a = a.args(["-rtsp_transport", "tcp", "-timeout"]).arg(rtsp_timeout.as_micros().to_string());
    }
    a = a.arg("-i").masked(cam.input(), cam.shown.clone(), cam.secrets());
    let silent = probe.audio_codec.is_none();
    if silent {
        a = a.args(["-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=48000"]);
    }
    a = a.args(["-map", "0:v:0", "-c:v", "copy"]);
    a = match probe.audio_codec.as_deref() {
        Some("aac") => a.args(["-map", "0:a:0", "-c:a", "copy"]),
        Some(_) => a.args(["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]),
        // -shortest: when the camera ends, the endless silence must not keep FFmpeg alive.
        None => a.args(["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-shortest"]),
    };
    Ok(a.args(["-f", "flv", "-flvflags", "no_duration_filesize", "pipe:1"]))
}

struct IngestArgs {
    ffprobe: std::path::PathBuf,
    camera: CameraSource,
    rtsp_timeout: Duration,
}

impl ArgSource for IngestArgs {
    fn prepare(&self) -> BoxFuture<'static, Result<Argv, PrepareError>> {
        let (ffprobe, cam, t) = (self.ffprobe.clone(), self.camera.clone(), self.rtsp_timeout);
        Box::pin(async move {
            let probe = probe_camera(&ffprobe, &cam, t).await.map_err(|e| PrepareError {
                permanent: matches!(e, ProbeError::Tool(_)) || e.to_string().contains("401"),
                message: e.to_string(),
            })?;
            ingest_args(&cam, &probe, t)
        })
    }
}

pub struct Relay {
    id: StreamId,
    camera: CameraSource,
    fanout: Fanout,
    ingest: Job,
    reader: tokio::task::JoinHandle<()>,
    outputs: Outputs,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    pub id: StreamId,
    /// live · starting · reconnecting · degraded · failed · stopped
    pub state: &'static str,
    pub camera: SourceId,
    pub camera_url: String,
    pub ingest: JobStatus,
    /// The ingest FFmpeg's last stderr lines (redacted).
    pub ingest_stderr: Vec<String>,
    pub outputs: Vec<PusherStatus>,
}

pub fn state_of(job: &JobStatus) -> &'static str {
    match job.phase {
        Phase::Running => "live",
        Phase::Starting => "starting",
        Phase::Stopped => "stopped",
        Phase::Backoff if job.permanent_error.is_some() => "failed",
        Phase::Backoff if job.degraded => "degraded",
        Phase::Backoff => "reconnecting",
    }
}

impl Relay {
    pub async fn start(spec: RelaySpec, env: &MediaEnv) -> Relay {
        let fanout = Fanout::new(env.queue_bytes);
        let (io_tx, io_rx) = mpsc::channel(4);
        let ingest = Job::spawn(JobSpec {
            pipe_stdout: true,
            io: Some(io_tx),
            ..env.job(
                JobKind::RelayIngest { stream: spec.id.clone(), camera_id: spec.camera.camera_id.clone() },
                Arc::new(IngestArgs {
                    ffprobe: env.ffprobe.clone(),
                    camera: spec.camera.clone(),
                    rtsp_timeout: env.rtsp_timeout,
                }),
                env.ingest_stale,
            )
        });
        let reader = tokio::spawn(read_flv_generations(spec.id.to_string(), fanout.clone(), io_rx));
        let outputs = Outputs::new(&format!("relay:{}", spec.id), &fanout, env);
        let mut relay = Relay { id: spec.id, camera: spec.camera, fanout, ingest, reader, outputs };
        relay.outputs.set(spec.outputs).await;
        relay
    }

    /// Brings the set of outputs to `outputs` while live (see [`Outputs::set`]).
    pub async fn set_outputs(&mut self, outputs: Vec<OutputTarget>) {
        self.outputs.set(outputs).await;
    }

    pub fn id(&self) -> &StreamId {
        &self.id
    }

    pub fn status(&self) -> RelayStatus {
        let ingest = self.ingest.status();
        RelayStatus {
            id: self.id.clone(),
            state: state_of(&ingest),
            camera: self.camera.camera_id.clone(),
            camera_url: self.camera.shown.clone(),
            ingest,
            ingest_stderr: super::pusher::last_lines(self.ingest.stderr_tail()),
            outputs: self.outputs.status(),
        }
    }

    /// Stops everything; destinations get a clean end of stream.
    pub async fn stop(self) {
        tokio::join!(self.outputs.stop(), self.ingest.stop());
        self.fanout.close();
        self.reader.abort();
    }
}

/// Reads each generation's stdout as FLV into the fan-out (relay ingest, program encoder).
pub async fn read_flv_generations(id: String, fanout: Fanout, mut io_rx: mpsc::Receiver<ChildIo>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(io) = io_rx.recv().await {
        let Some(mut out) = io.stdout else { continue };
        let mut reader = FlvReader::new();
        'gen: loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    reader.push(&buf[..n]);
                    loop {
                        match reader.next_item() {
                            Ok(Some(item)) => fanout.push(item),
                            Ok(None) => break,
                            Err(e) => {
                                // Dropping stdout makes FFmpeg fail on its next write; it restarts.
                                tracing::error!(relay = %id, "ingest produced bad FLV: {e}");
                                break 'gen;
                            }
                        }
                    }
                }
            }
        }
    }
}
