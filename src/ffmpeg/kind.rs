//! What a job is for, fixed when the job is created.
//!
//! Events, logs and status say what a failure is about from this typed kind, never from the job's
//! name (a program camera named `program:show/camera:cam2` once read as a destination because only
//! names ending in `/ingest` counted as cameras). The job's name is derived from its kind, so the two
//! cannot disagree.

use std::fmt;

use serde::Serialize;

use crate::values::{DestinationId, SourceId, StreamId};

/// The role of one supervised FFmpeg process.
///
/// `owner` is the stream that runs the job, as the event log scopes it (`program:show`,
/// `relay:r1`): `stream status` and `events --subject program:show` find the job's events by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// A program camera's decode ingest (raw frames into the program bus).
    Camera { owner: String, camera_id: SourceId },
    /// A program's encoder (program bus → H.264/AAC FLV → fan-out).
    Encoder { owner: String },
    /// A pusher (fan-out → one ingest of one destination), in a program or a relay.
    Pusher {
        owner: String,
        destination: DestinationId,
        /// The destination's backup ingest rather than its primary one.
        backup: bool,
    },
    /// A relay's camera ingest (copied, not decoded, into the relay's fan-out).
    RelayIngest { stream: StreamId, camera_id: SourceId },
}

/// What kind of thing a job's events are about: the first half of `camera_down`, `destination_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Camera,
    Encoder,
    Destination,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Camera => "camera",
            Subject::Encoder => "encoder",
            Subject::Destination => "destination",
        }
    }
}

impl JobKind {
    /// What the job's failures take down, seen from the show: a dead relay ingest is a camera down
    /// just like a dead program camera.
    pub fn subject_kind(&self) -> Subject {
        match self {
            JobKind::Camera { .. } | JobKind::RelayIngest { .. } => Subject::Camera,
            JobKind::Encoder { .. } => Subject::Encoder,
            JobKind::Pusher { .. } => Subject::Destination,
        }
    }

    /// The id of the thing the job's events are about: the camera id, the destination id, or (an
    /// encoder has no id of its own) its program.
    pub fn subject_id(&self) -> &str {
        match self {
            JobKind::Camera { camera_id, .. } | JobKind::RelayIngest { camera_id, .. } => camera_id.as_str(),
            JobKind::Encoder { owner } => owner,
            JobKind::Pusher { destination, .. } => destination.as_str(),
        }
    }

    /// The stream that runs the job (`program:show`, `relay:r1`).
    pub fn owner(&self) -> String {
        match self {
            JobKind::Camera { owner, .. } | JobKind::Encoder { owner } | JobKind::Pusher { owner, .. } => owner.clone(),
            JobKind::RelayIngest { stream, .. } => format!("relay:{stream}"),
        }
    }
}

/// The job's name in logs, the pid registry and status: `program:show/camera:cam2`,
/// `relay:r1/push:yt:backup`.
impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobKind::Camera { owner, camera_id } => write!(f, "{owner}/camera:{camera_id}"),
            JobKind::Encoder { owner } => write!(f, "{owner}/encoder"),
            JobKind::Pusher { owner, destination, backup } => {
                write!(f, "{owner}/push:{destination}{}", if *backup { ":backup" } else { "" })
            }
            JobKind::RelayIngest { stream, .. } => write!(f, "relay:{stream}/ingest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(id: &str) -> SourceId {
        SourceId::new(id).unwrap()
    }

    fn dst(id: &str) -> DestinationId {
        DestinationId::new(id).unwrap()
    }

    fn camera(owner: &str, id: &str) -> JobKind {
        JobKind::Camera { owner: owner.into(), camera_id: src(id) }
    }

    #[test]
    fn a_program_camera_is_a_camera_named_by_its_id() {
        let k = camera("program:show", "cam2");
        assert_eq!(k.subject_kind(), Subject::Camera);
        assert_eq!(k.subject_id(), "cam2");
        assert_eq!(k.owner(), "program:show");
        assert_eq!(k.to_string(), "program:show/camera:cam2");
    }

    #[test]
    fn a_relay_ingest_is_a_camera_of_its_relay() {
        let k = JobKind::RelayIngest { stream: StreamId::new("r1").unwrap(), camera_id: src("cam1") };
        assert_eq!(k.subject_kind(), Subject::Camera);
        assert_eq!(k.subject_id(), "cam1");
        assert_eq!(k.owner(), "relay:r1");
        assert_eq!(k.to_string(), "relay:r1/ingest");
    }

    #[test]
    fn a_pusher_is_its_destination_whatever_its_name_ends_with() {
        // A destination named like an ingest job is still a destination.
        let k = JobKind::Pusher { owner: "relay:r1".into(), destination: dst("ingest"), backup: true };
        assert_eq!(k.subject_kind(), Subject::Destination);
        assert_eq!(k.subject_id(), "ingest");
        assert_eq!(k.to_string(), "relay:r1/push:ingest:backup");
    }

    #[test]
    fn an_encoder_is_about_its_program() {
        let k = JobKind::Encoder { owner: "program:main".into() };
        assert_eq!(k.subject_kind(), Subject::Encoder);
        assert_eq!(k.subject_id(), "program:main");
        assert_eq!(k.to_string(), "program:main/encoder");
    }
}
