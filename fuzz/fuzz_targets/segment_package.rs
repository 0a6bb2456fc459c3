//! Arbitrary bytes as a `.vseg` (DESIGN §4): zstd, tar, manifest.json, manifest.sig, the payload,
//! through the same reader the importer uses (verify only: nothing is written). Nothing may panic
//! or allocate past the limits; a package that verifies must have been signed by the trusted key
//! (the fuzzer cannot forge one, so it can only pass with a seed's manifest). The manifest parser
//! also gets the bytes directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vistter_agent::control::envelope::b64;
use vistter_agent::control::trust::{Role, TrustEntry, TrustStore};
use vistter_agent::segments::manifest::Manifest;
use vistter_agent::segments::package::{verify, Checks};
use vistter_agent::segments::Limits;

fn trust() -> &'static TrustStore {
    static T: OnceLock<TrustStore> = OnceLock::new();
    T.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut t = TrustStore::default();
        t.add(TrustEntry::new("fuzz", &b64(key.verifying_key().as_bytes()), &[Role::Segment]).unwrap()).unwrap();
        t
    })
}

const LIMITS: Limits = Limits {
    max_compressed_bytes: 1 << 20,
    max_uncompressed_bytes: 4 << 20,
    max_file_bytes: 1 << 20,
    max_entries: 64,
    max_window_log: 20,
};

fuzz_target!(|data: &[u8]| {
    let checks = Checks {
        trust: trust(),
        device_id: "vs-fuzz",
        now: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        limits: LIMITS,
    };
    let _ = verify(data, &checks, &mut |_| {});
    let _ = Manifest::parse(data, &LIMITS);
});
