//! The control plane (DESIGN §3): signed envelopes, the device's keys, the trust store and the
//! checks every cloud command passes before the dispatcher sees it.

pub mod check;
pub mod envelope;
pub mod inbox;
pub mod keys;
pub mod mqtt;
pub mod trust;
