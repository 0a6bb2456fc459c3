//! The control-plane envelope (the JSON object every message in either direction travels in) and
//! its signature.
//!
//! The signed bytes are the ASCII line `vistter.envelope.v1\n` followed by the RFC 8785 (JCS)
//! canonical JSON of the envelope *as received*, with its `signature` member removed. Verifying
//! the received object (not a re-serialisation of our struct) keeps any field we do not model
//! under the signature.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What precedes the canonical JSON in the signed bytes.
pub const SIGNING_CONTEXT: &[u8] = b"vistter.envelope.v1\n";
/// The `schema_version` this agent writes; it accepts any `1.x`.
pub const SCHEMA_VERSION: &str = "1.0";
pub const ALG: &str = "ed25519";

/// `{alg, key_id, value}`: an ed25519 signature (base64, 64 bytes) by the key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub alg: String,
    pub key_id: String,
    pub value: String,
}

/// One message, either direction. `payload` is read into a typed command later, by its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub schema_version: String,
    pub message_id: uuid::Uuid,
    pub correlation_id: Option<uuid::Uuid>,
    pub timestamp: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    pub device_id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub payload: Map<String, Value>,
    /// Set on everything the device sends: monotonic per device, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub signature: Signature,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the envelope cannot be put in canonical form: {0}")]
    Canonical(String),
    #[error("the signature is not base64 of 64 bytes")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
    #[error("unsupported signature algorithm {0:?}")]
    Alg(String),
}

/// The bytes a signature covers: the context line, then the JCS form of `msg` without `signature`.
pub fn signed_bytes(msg: &Map<String, Value>) -> Result<Vec<u8>, SignError> {
    let mut unsigned = msg.clone();
    unsigned.remove("signature");
    let canonical =
        serde_json_canonicalizer::to_vec(&Value::Object(unsigned)).map_err(|e| SignError::Canonical(e.to_string()))?;
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + canonical.len());
    out.extend_from_slice(SIGNING_CONTEXT);
    out.extend_from_slice(&canonical);
    Ok(out)
}

/// Signs `msg` in place: sets its `signature` member.
pub fn sign(msg: &mut Map<String, Value>, key_id: &str, key: &SigningKey) -> Result<(), SignError> {
    let sig = key.sign(&signed_bytes(msg)?);
    let s = Signature { alg: ALG.into(), key_id: key_id.into(), value: B64.encode(sig.to_bytes()) };
    msg.insert("signature".into(), serde_json::to_value(s).expect("a signature serialises"));
    Ok(())
}

/// Checks `msg`'s signature (whose `alg` and `value` are given) with `key`.
pub fn verify(msg: &Map<String, Value>, sig: &Signature, key: &VerifyingKey) -> Result<(), SignError> {
    if sig.alg != ALG {
        return Err(SignError::Alg(crate::values::shorten(&sig.alg)));
    }
    let raw = B64.decode(&sig.value).map_err(|_| SignError::Malformed)?;
    let bytes: [u8; 64] = raw.try_into().map_err(|_| SignError::Malformed)?;
    let sig = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify(&signed_bytes(msg)?, &sig).map_err(|_| SignError::Mismatch)
}

/// An ed25519 public key from base64 of its 32 bytes.
pub use crate::trust::public_key_from_b64;

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A new envelope from this device (`seq` set by the outbox), unsigned: `signature` is filled by
/// [`sign`] on its JSON object.
pub fn new_message(
    device_id: &str,
    ty: &str,
    payload: Map<String, Value>,
    correlation_id: Option<uuid::Uuid>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema_version".into(), SCHEMA_VERSION.into());
    m.insert("message_id".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("correlation_id".into(), correlation_id.map(|c| c.to_string()).into());
    m.insert("timestamp".into(), timestamp_now().into());
    m.insert("device_id".into(), device_id.into());
    m.insert("type".into(), ty.into());
    m.insert("payload".into(), Value::Object(payload));
    m
}

/// Now, as the envelope writes it (UTC, milliseconds).
pub fn timestamp_now() -> String {
    format!("{:.3}", crate::clock::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_bytes_are_the_context_line_and_canonical_json_without_the_signature() {
        let m = json!({"b": 1, "a": {"z": 1.0, "y": "é"}, "signature": {"x": 1}});
        let bytes = signed_bytes(m.as_object().unwrap()).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), "vistter.envelope.v1\n{\"a\":{\"y\":\"é\",\"z\":1},\"b\":1}");
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let k = key(7);
        let mut m = new_message("dev", "PING", Map::new(), None);
        sign(&mut m, "k1", &k).unwrap();
        let sig: Signature = serde_json::from_value(m["signature"].clone()).unwrap();
        assert_eq!(verify(&m, &sig, &k.verifying_key()), Ok(()));
        // Key order and whitespace do not matter; values do.
        let reparsed: Map<String, Value> = serde_json::from_str(&serde_json::to_string_pretty(&m).unwrap()).unwrap();
        assert_eq!(verify(&reparsed, &sig, &k.verifying_key()), Ok(()));
        let mut changed = m.clone();
        changed.insert("device_id".into(), "dev2".into());
        assert_eq!(verify(&changed, &sig, &k.verifying_key()), Err(SignError::Mismatch));
        assert_eq!(verify(&m, &sig, &key(8).verifying_key()), Err(SignError::Mismatch));
        let bad = Signature { value: "AAAA".into(), ..sig.clone() };
        assert_eq!(verify(&m, &bad, &k.verifying_key()), Err(SignError::Malformed));
        let alg = Signature { alg: "rsa".into(), ..sig };
        assert!(matches!(verify(&m, &alg, &k.verifying_key()), Err(SignError::Alg(_))));
    }

    #[test]
    fn a_new_message_reads_back_as_an_envelope() {
        let k = key(1);
        let mut m = new_message("dev", "EVENT", json!({"a": 1}).as_object().unwrap().clone(), Some(uuid::Uuid::nil()));
        m.insert("seq".into(), 5.into());
        sign(&mut m, "device", &k).unwrap();
        let e: Envelope = serde_json::from_value(Value::Object(m)).unwrap();
        assert_eq!((e.ty.as_str(), e.seq, e.correlation_id), ("EVENT", Some(5), Some(uuid::Uuid::nil())));
        assert!(e.timestamp.to_string().ends_with('Z'));
    }
}
