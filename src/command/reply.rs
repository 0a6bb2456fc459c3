//! Replies: what a command answers ([`Reply`]: done with an [`Output`], or refused with a
//! [`Refusal`] and its [`ErrorCode`]), typed on the local socket and in the cloud's RESULT/NACK.

use serde::{Deserialize, Serialize};

use super::*;

// ---------------------------------------------------------------------------------------------

/// Why a command was not done: the NACK codes of the envelope contract that a command can get once it was
/// read, each with its CLI exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A value or a field is wrong: nothing was done.
    SchemaViolation,
    UnsupportedType,
    NotFound,
    Conflict,
    Busy,
    /// It was tried and did not work (or the agent is going away).
    Failed,
    /// Withdrawn by an emergency (kill-all) before it took effect.
    Canceled,
}

impl ErrorCode {
    /// The wire name (`not_found`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SchemaViolation => "schema_violation",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Busy => "busy",
            ErrorCode::Failed => "failed",
            ErrorCode::Canceled => "canceled",
        }
    }

    pub fn exit_code(self) -> i32 {
        use crate::error::*;
        match self {
            ErrorCode::SchemaViolation | ErrorCode::UnsupportedType => EXIT_USAGE,
            ErrorCode::NotFound => EXIT_NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::Busy | ErrorCode::Canceled => EXIT_CONFLICT,
            ErrorCode::Failed => EXIT_FAILURE,
        }
    }
}

/// A refused or failed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub code: ErrorCode,
    /// The field at fault (`payload.overlay.color`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Refusal {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { code: ErrorCode::SchemaViolation, field: Some(field.into()), message: message.into() }
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, field: None, message: message.into() }
    }
}

/// A program as listed by `PROGRAM status`: its status and the destinations it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramInfo {
    #[serde(flatten)]
    pub status: ProgramStatus,
    pub destinations: Vec<DestinationId>,
}

/// The show as `SHOW_QUERY status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShowInfo {
    pub desired: DesiredShow,
    pub status: Option<ShowStatus>,
}

/// What a command that was done answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    Done,
    Pong {
        agent_time: String,
    },
    Started {
        preflight: Preflight,
    },
    ProgramStarted {
        id: ProgramId,
        /// Not stored: it is not started again after a restart.
        #[serde(default)]
        ephemeral: bool,
    },
    Cut {
        at_s: f64,
    },
    Programs {
        programs: Vec<ProgramInfo>,
    },
    Destinations {
        destinations: Vec<DestinationId>,
    },
    Jpeg {
        jpeg_base64: String,
    },
    Show {
        show: Box<ShowInfo>,
    },
    Preflight {
        preflight: Preflight,
    },
    Probe {
        probe: serde_json::Value,
    },
    KilledAll {
        show: bool,
        programs: usize,
    },
    /// `TIMELINE_LOAD` of a package.
    SegmentInstalled {
        segment: crate::segments::library::Installed,
    },
    /// `TIMELINE_LOAD` of an inline timeline.
    TimelineLoaded {
        timeline_id: TimelineId,
    },
    Diagnostics {
        report: Box<DiagnosticsReport>,
    },
    /// `CAMERA_ACTION discover`: the cameras that answered, with their models and stream URLs.
    Cameras {
        cameras: Vec<crate::ptz::discover::DiscoveredCamera>,
        /// Answers that were malformed, oversized or not for this probe.
        ignored_answers: usize,
    },
    /// `CONFIGURE`: what was changed, for the operator.
    Configured {
        summary: String,
    },
}

/// One reply per command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Done { output: Box<Output> },
    Refused { refusal: Refusal },
}

impl From<Result<Output, Refusal>> for Reply {
    fn from(r: Result<Output, Refusal>) -> Reply {
        match r {
            Ok(output) => Reply::Done { output: Box::new(output) },
            Err(refusal) => Reply::Refused { refusal },
        }
    }
}

impl Reply {
    pub fn into_result(self) -> Result<Output, Refusal> {
        match self {
            Reply::Done { output } => Ok(*output),
            Reply::Refused { refusal } => Err(refusal),
        }
    }
}
