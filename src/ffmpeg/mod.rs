//! FFmpeg supervision: one module, one authority over every FFmpeg
//! process the agent runs.
//!
//! - [`job`]: the job handle + owning task (spawn, health from progress, backoff, stop escalation).
//! - [`kind`]: what a job is for (camera, encoder, pusher, relay ingest); events are built from it.
//! - [`argv`]: argument lists with masked secrets.
//! - [`progress`]: the `-progress` parser. [`ring`]: bounded stderr. [`classify`]: permanent vs transient.
//! - [`backoff`]: full-jitter exponential backoff. [`registry`]: on-disk pids, reaping leftovers.

pub mod argv;
pub mod backoff;
pub mod classify;
pub mod job;
pub mod kind;
pub mod progress;
pub mod registry;
pub mod ring;
