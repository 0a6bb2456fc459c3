//! Arbitrary bodies posted to the status page's controls (`POST /control/<action>`, form-encoded):
//! each is read as the page's server reads it, then becomes a command or a refusal. Nothing may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::status::form::command;

const ACTIONS: [&str; 8] = ["go-live", "stop", "slate", "cut", "unpin", "clear-overlays", "", "x"];

fuzz_target!(|input: (u8, &[u8])| {
    let (action, body) = input;
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else { return };
    let _ = command(ACTIONS[usize::from(action) % ACTIONS.len()], &form, &["d1".to_string()]);
});
