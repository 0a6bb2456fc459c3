//! Timelines (DESIGN §5): the model and its validation, the pure engine, the actor that drives the
//! program bus from it, and the wall-clock scheduler.

pub mod actor;
pub mod director;
pub mod engine;
pub mod model;
pub mod preflight;
pub mod schedule;
pub mod scheduler;
