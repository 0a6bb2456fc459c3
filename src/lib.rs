//! vistter-agent: the edge agent of the VistterStream camera-streaming appliance.
//!
//! The modules, lowest layer first: a module uses only modules listed before it, never one after
//! it (`tests/architecture.rs` checks that the graph has no cycles). `docs/ARCHITECTURE.md` tells
//! the same map with who owns what state, the data paths and the failure rules; the wire
//! contracts are in `schemas/`.
//!
//! - [`values`]: ids, checked values (program times, fps, bitrates, sizes) and the [`Origin`](values::Origin)
//!   of a command; the shared vocabulary, depending on nothing.
//! - [`error`]: the process exit codes. [`secret`]: `Secret` (prints `***`) and the redactor for
//!   FFmpeg output. [`clock`]: the wall clock the control plane's time checks read (with a test hook).
//! - [`logging`]: JSON lines or text, the in-memory ring for diagnostics, the rotated log file.
//! - [`ffmpeg`]: the FFmpeg supervisor: one task per process, health from progress, backoff, stop
//!   escalation, the pid registry.
//! - [`config`]: built-in defaults ← TOML file ← `VISTTER_*` environment ← flags, checked at load.
//! - [`notify`]: `sd_notify` readiness and the systemd watchdog, fed only while the loops live.
//! - [`media`]: camera ingest, the program bus (switcher, fallback, compositor), the encoder, the
//!   FLV fan-out, the pushers, relay mode, destination presets, camera probing.
//! - [`store`]: the SQLite store (WAL): cameras, destinations, relay streams, shows, schedules,
//!   events, the control plane's records; secrets sealed at rest.
//! - [`events`]: the sink that turns FFmpeg job events into log lines and event rows, and the
//!   sentences people read the rows in (the status page's and the CLI's).
//! - [`ptz`]: PTZ presets over ONVIF.
//! - [`trust`]: the trust store file: which keys may command the device, sign packages, or change
//!   the list; one locked read-change-write function for every writer.
//! - [`timeline`]: the timeline model and checks, the pure engine, the show actor, the director
//!   (owner of the show), schedules and the scheduler.
//! - [`segments`]: signed `.vseg` packages: read, verify, install into the library, drop folders,
//!   downloads.
//! - [`command`]: the one door: the typed commands and the dispatcher every change goes through.
//! - [`control`]: the cloud link: signed envelopes and their checks, the device's keys, MQTT and
//!   WebSocket, the outbox, telemetry.
//! - [`local_api`]: the operator's Unix socket into the dispatcher. [`status`]: the local HTTP
//!   status server (page, controls, `/metrics`, health, readiness, status JSON).
//! - [`daemon`]: `run`: starts every task and shuts them down in order. [`demo`]: a show on
//!   built-in sources.
//! - [`cli`]: the `vistter-agent` command line.
#![forbid(unsafe_code)]

pub mod assets;
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
pub mod ownership;
pub mod ptz;
pub mod secret;
pub mod segments;
pub mod status;
pub mod store;
pub mod timeline;
pub mod trust;
pub mod values;
