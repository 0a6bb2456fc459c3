//! Arbitrary datagrams answering a WS-Discovery probe (anyone on the LAN may send anything to the
//! probe's socket). Nothing may panic, and whatever the parser keeps is usable: an endpoint
//! reference, and only http(s) XAddrs without credentials.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::ptz::discover::{parse_probe_matches, MAX_ANSWER};

/// The MessageID the seeds answer (`RelatesTo`), so mutations reach past that check.
const ID: &str = "uuid:0b9f0c52-6a4e-4f6f-9d2e-000000000001";

fuzz_target!(|data: &[u8]| {
    let matches = parse_probe_matches(data, ID);
    if data.len() > MAX_ANSWER {
        assert!(matches.is_empty());
    }
    for m in matches {
        assert!(!m.endpoint.is_empty() && !m.endpoint.chars().any(char::is_control));
        assert!(!m.xaddrs.is_empty());
        for x in &m.xaddrs {
            let u = url::Url::parse(x).expect("an XAddr kept is a URL");
            assert!(matches!(u.scheme(), "http" | "https"), "{x}");
            assert!(u.username().is_empty() && u.password().is_none(), "{x}");
        }
    }
});
