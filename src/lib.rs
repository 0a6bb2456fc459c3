//! vistter-agent: the edge agent of the VistterStream camera-streaming appliance.
//!
//! Map of the crate (DESIGN §6):
//! - [`cli`]: the `vistter-agent` command line; [`config`]: file ← env ← flags.
//! - [`daemon`]: `run`, the reconcile loop that owns every media job.
//! - [`store`]: SQLite (WAL) with cameras, destinations, relay streams, events; secrets sealed.
//! - [`ffmpeg`]: the FFmpeg supervisor (jobs, progress, backoff, pid registry).
//! - [`media`]: fan-out, pushers, relay mode, destination presets, camera probing, hwaccel.
//! - [`secret`]: `Secret` (prints `***`) and the redactor for FFmpeg output.
//! - [`clock`]: the wall clock the control plane's time checks read (with its test hook).
//! - [`error`]: process exit codes. [`logging`]: JSON lines / text, the log ring and file.
//! - [`status`]: the read-only HTTP status server (`[status]`): health, readiness, metrics, status JSON.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod events;
pub mod ffmpeg;
pub mod local_api;
pub mod logging;
pub mod media;
pub mod notify;
pub mod ptz;
pub mod secret;
pub mod segments;
pub mod status;
pub mod store;
pub mod timeline;
pub mod trust;
pub mod values;
