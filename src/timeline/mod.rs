//! Timelines: the model and its validation, the pure engine, the actor that drives the program
//! bus from it, the director that owns the show, and the wall-clock scheduler.

pub mod actor;
pub mod ctx;
pub mod director;
pub mod engine;
pub mod load;
pub mod model;
pub mod preflight;
pub mod schedule;
pub mod scheduler;
pub mod sources;
