//! Arbitrary `WWW-Authenticate` values (a camera, or anything answering on its address, may send anything):
//! parsing never panics, an error never repeats the value (it may hold a nonce), and a Digest challenge read
//! from it can always be answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::ptz::digest::{parse_challenges, Challenge, DigestSession};

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    match parse_challenges(&value) {
        Ok(challenges) => {
            for c in challenges {
                if let Challenge::Digest(d) = c {
                    let mut s = DigestSession::new(&d);
                    let h = s.authorize("POST", "/onvif/device_service", "admin", "pw", b"<x/>");
                    assert!(h.starts_with("Digest "), "{h}");
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(value.trim().len() < 8 || !shown.contains(value.trim()));
        }
    }
});
