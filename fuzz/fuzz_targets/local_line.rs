//! Arbitrary lines on the operator's socket (`vistter-agent` talks to the daemon with one JSON
//! command per line): every line is a command, a refusal, or blank. Nothing may panic, and a
//! refusal's message stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::local_api::{request, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    if let Some(Err(refusal)) = request(data) {
        assert!(refusal.to_string().len() <= MAX_LINE + 1024, "a refusal quotes a bounded part of the line");
    }
});
