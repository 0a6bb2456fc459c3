//! Arbitrary bytes as a cloud message: every check of DESIGN §3 runs on them (size, JSON,
//! envelope, version, device, key, signature, time, type, payload). Nothing may panic; a message
//! that passes must have been signed by the trusted key (the fuzzer cannot forge one, so every
//! pass is a bug).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vistter_agent::control::check::{Checker, DEFAULT_MAX_BYTES, DEFAULT_MAX_SKEW_S};
use vistter_agent::control::envelope::b64;
use vistter_agent::control::trust::{Role, TrustEntry, TrustStore};

fn trust() -> &'static TrustStore {
    static T: OnceLock<TrustStore> = OnceLock::new();
    T.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut t = TrustStore::default();
        t.add(TrustEntry::new("studio", &b64(key.verifying_key().as_bytes()), &[Role::Command]).unwrap()).unwrap();
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let t = trust();
    let c = Checker { device_id: "vs-fuzz", trust: t, max_bytes: DEFAULT_MAX_BYTES };
    if let Ok(a) = c.authenticate(data) {
        let now = jiff::Timestamp::now();
        let _ = a.check(now, DEFAULT_MAX_SKEW_S, t);
        panic!("an unsigned message passed authentication");
    }
});
