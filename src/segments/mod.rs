//! Segment packages: signed, zstd-compressed tar files that carry a timeline and its
//! assets to the appliance, from the cloud (`TIMELINE_LOAD`), a USB stick (drop folders) or the
//! CLI, and the library they are installed into.
//!
//! The reader ([`package`]) is streaming and bounded: it checks the manifest's signature before a
//! payload byte is written, hashes and counts every file while writing it into a staging dir, and
//! refuses anything a package must not contain. Only the reader makes a [`package::VerifiedPackage`],
//! and only a `VerifiedPackage` can be installed ([`library`]): fsync, rename, one DB transaction.

pub mod download;
pub mod drop;
pub mod library;
pub mod manifest;
pub mod pack;
pub mod package;
#[cfg(test)]
pub(crate) mod testkit;

use serde::{Deserialize, Serialize};

pub use crate::config::Limits;

/// Why a package was refused. The code (snake_case) is what events, result files and RESULTs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threat {
    /// Not a zstd stream, or not a tar inside it.
    Corrupt,
    Truncated,
    /// The zstd window is larger than `max_window_log` allows.
    WindowTooLarge,
    /// Over a size limit (the package, a file, or everything unpacked: a decompression bomb).
    TooLarge,
    TooManyEntries,
    ManifestNotFirst,
    SignatureNotSecond,
    BadManifest,
    BadSignature,
    UnknownKey,
    /// Signed by a trusted key that does not hold the `segment` role.
    KeyNotForSegments,
    Expired,
    NotForThisDevice,
    AgentTooOld,
    /// Its version is not above the installed one.
    Rollback,
    UnsafePath,
    NonUtf8Name,
    /// A symlink, hard link, device, FIFO, directory or other non-regular entry.
    NotARegularFile,
    DuplicateEntry,
    ExtraFile,
    MissingFile,
    SizeMismatch,
    ChecksumMismatch,
    /// The timeline inside does not check against this appliance (cameras, assets, values).
    TimelineInvalid,
    /// A timeline of that id exists and does not belong to this segment.
    Conflict,
    NoSpace,
    /// Something on this side failed (disk, database): the package may be fine.
    Local,
}

impl Threat {
    pub fn code(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", message, threat.code())]
pub struct Rejection {
    pub threat: Threat,
    pub message: String,
}

impl Rejection {
    pub fn new(threat: Threat, message: impl Into<String>) -> Rejection {
        Rejection { threat, message: message.into() }
    }

    pub fn local(e: impl std::fmt::Display) -> Rejection {
        Rejection::new(Threat::Local, e.to_string())
    }
}
