//! The checks every cloud command passes, in the order of DESIGN §3 ("Checks, in order"); the
//! first failure decides the NACK code and nothing is executed.
//!
//! Two stages, because the dedupe store sits between them: [`Checker::authenticate`] proves who
//! sent the message (size, JSON, envelope, version, device, key, signature), so a repeated
//! `message_id` can be answered with its original reply; [`Authentic::check`] then applies time
//! and payload checks and yields a typed [`Checked`] command. Neither can be built any other way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::envelope::{verify, Envelope, SignError};
use super::trust::{Role, TrustStore};
use crate::command::{self, Command, ErrorCode};

/// The NACK codes of DESIGN §3 (checks, then execution errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackCode {
    InvalidEnvelope,
    UnsupportedVersion,
    WrongDevice,
    UnknownKey,
    BadSignature,
    Expired,
    UnsupportedType,
    SchemaViolation,
    NotFound,
    Conflict,
    Busy,
    Failed,
}

/// A NACK payload: `{code, message, pointer?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nack {
    pub code: NackCode,
    pub message: String,
    /// JSON pointer (into the envelope) of the first wrong value, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Nack {
    pub(crate) fn new(code: NackCode, message: impl Into<String>) -> Nack {
        Nack { code, message: message.into(), pointer: None }
    }
}

/// A refused message, with the id to answer to (`None` when the message could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub correlation_id: Option<uuid::Uuid>,
    pub nack: Nack,
}

/// The command types the cloud may send.
pub const CLOUD_TYPES: [&str; 7] =
    ["PING", "STREAM_CONTROL", "TIMELINE_EXECUTE", "OVERLAY_UPDATE", "CAMERA_ACTION", "DEVICE_CONFIG", "TIMELINE_LOAD"];

pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
pub const DEFAULT_MAX_SKEW_S: u64 = 300;

pub struct Checker<'a> {
    pub device_id: &'a str,
    pub trust: &'a TrustStore,
    pub max_bytes: usize,
}

/// A message whose signature was checked by a key trusted to command this device.
#[derive(Debug)]
pub struct Authentic {
    envelope: Envelope,
    key_id: String,
}

/// A command that passed every check: what the dispatcher runs.
#[derive(Debug)]
pub struct Checked {
    pub message_id: uuid::Uuid,
    /// The command's own (signed) time.
    pub timestamp: jiff::Timestamp,
    pub key_id: String,
    pub command: Command,
}

impl Checker<'_> {
    pub fn authenticate(&self, raw: &[u8]) -> Result<Authentic, Rejected> {
        let unread = |nack| Rejected { correlation_id: None, nack };
        if raw.len() > self.max_bytes {
            return Err(unread(Nack::new(
                NackCode::InvalidEnvelope,
                format!("message of {} bytes is over the {} byte limit", raw.len(), self.max_bytes),
            )));
        }
        let obj: Map<String, Value> = serde_json::from_slice(raw)
            .map_err(|e| unread(Nack::new(NackCode::InvalidEnvelope, format!("not a JSON object: {e}"))))?;
        // Once it is an object, a readable message_id is what the reply answers.
        let id = obj.get("message_id").and_then(Value::as_str).and_then(|s| s.parse::<uuid::Uuid>().ok());
        let refuse = |nack| Rejected { correlation_id: id, nack };
        if let Some(v) = obj.get("schema_version").and_then(Value::as_str) {
            if !is_v1(v) {
                let shown = crate::media::compositor::request::shorten(v);
                return Err(refuse(Nack {
                    pointer: Some("/schema_version".into()),
                    ..Nack::new(
                        NackCode::UnsupportedVersion,
                        format!("schema_version {shown:?}: this agent speaks 1.x"),
                    )
                }));
            }
        }
        let envelope: Envelope = serde_path_to_error::deserialize(Value::Object(obj.clone())).map_err(|e| {
            let pointer = path_to_pointer(&e.path().to_string());
            refuse(Nack {
                pointer: Some(pointer),
                ..Nack::new(NackCode::InvalidEnvelope, format!("envelope: {}", e.into_inner()))
            })
        })?;
        if envelope.device_id != self.device_id {
            return Err(refuse(Nack::new(NackCode::WrongDevice, "the message is addressed to another device")));
        }
        let key_id = &envelope.signature.key_id;
        let shown = crate::media::compositor::request::shorten(key_id);
        let Some(key) = self.trust.key_for(key_id, Role::Command) else {
            let why = if self.trust.get(key_id).is_some() { "may not send commands" } else { "is not trusted" };
            return Err(refuse(Nack::new(NackCode::UnknownKey, format!("key {shown:?} {why}"))));
        };
        verify(&obj, &envelope.signature, &key).map_err(|e| {
            let msg = match e {
                SignError::Mismatch => format!("the signature by {shown:?} does not match the message"),
                other => other.to_string(),
            };
            refuse(Nack::new(NackCode::BadSignature, msg))
        })?;
        let key_id = key_id.clone();
        Ok(Authentic { envelope, key_id })
    }
}

impl Authentic {
    pub fn message_id(&self) -> uuid::Uuid {
        self.envelope.message_id
    }

    /// Time (against `now`, already raised to the device's time floor), type and payload.
    pub fn check(self, now: jiff::Timestamp, max_skew_s: u64, trust: &TrustStore) -> Result<Checked, Nack> {
        let e = self.envelope;
        let skew = (e.timestamp.as_millisecond() - now.as_millisecond()) / 1000;
        if skew.unsigned_abs() > max_skew_s {
            let when = if skew < 0 { "in the past" } else { "in the future" };
            return Err(Nack {
                pointer: Some("/timestamp".into()),
                ..Nack::new(
                    NackCode::Expired,
                    format!("timestamp is {} s {when} (allowed: {max_skew_s} s)", skew.unsigned_abs()),
                )
            });
        }
        if let Some(exp) = e.expires_at.filter(|x| *x <= now) {
            return Err(Nack {
                pointer: Some("/expires_at".into()),
                ..Nack::new(NackCode::Expired, format!("the command expired at {exp}"))
            });
        }
        if !CLOUD_TYPES.contains(&e.ty.as_str()) {
            let shown = crate::media::compositor::request::shorten(&e.ty);
            let msg = format!("unknown command type {shown:?}");
            return Err(Nack { pointer: Some("/type".into()), ..Nack::new(NackCode::UnsupportedType, msg) });
        }
        if let Some(pointer) = plaintext_secret(&e.ty, &e.payload) {
            return Err(Nack {
                pointer: Some(pointer),
                ..Nack::new(NackCode::SchemaViolation, "a secret must travel sealed ({\"sealed\": \"<base64>\"})")
            });
        }
        let command = command::from_parts(&e.ty, Value::Object(e.payload.clone())).map_err(|r| Nack {
            code: match r.code {
                ErrorCode::UnsupportedType => NackCode::UnsupportedType,
                _ => NackCode::SchemaViolation,
            },
            pointer: r.field.as_deref().map(path_to_pointer),
            message: r.message,
        })?;
        if let Command::DeviceConfig(c) = &command {
            if c.trust.is_some() && trust.key_for(&self.key_id, Role::TrustAdmin).is_none() {
                let shown = crate::media::compositor::request::shorten(&self.key_id);
                return Err(Nack {
                    pointer: Some("/payload/trust".into()),
                    ..Nack::new(NackCode::UnknownKey, format!("key {shown:?} may not change the trust store"))
                });
            }
        }
        Ok(Checked { message_id: e.message_id, timestamp: e.timestamp, key_id: self.key_id, command })
    }
}

/// The time checks run against: the system clock, but never earlier than the persisted time floor
/// (a device that boots without a real-time clock in 1970 must not reopen old commands).
pub fn trusted_now(system: jiff::Timestamp, floor_ms: i64) -> jiff::Timestamp {
    let floor = jiff::Timestamp::from_millisecond(floor_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    system.max(floor)
}

/// `1.x` with a numeric minor.
fn is_v1(v: &str) -> bool {
    v.strip_prefix("1.").is_some_and(|m| !m.is_empty() && m.len() <= 9 && m.bytes().all(|b| b.is_ascii_digit()))
}

/// `payload.camera_ids[0]` (serde's path, or `.` for the whole) → `/payload/camera_ids/0`.
pub fn path_to_pointer(path: &str) -> String {
    if path == "." || path.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split('.') {
        let mut rest = part;
        let name_end = rest.find('[').unwrap_or(rest.len());
        let (name, idx) = rest.split_at(name_end);
        if !name.is_empty() {
            out.push('/');
            out.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        rest = idx;
        while let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').unwrap_or(r.len());
            out.push('/');
            out.push_str(&r[..close]);
            rest = r.get(close + 1..).unwrap_or("");
        }
    }
    out
}

/// The pointer of the first secret field sent in the clear: a camera `password` or a destination
/// `stream_key` that is not `{"sealed": "<text>"}`.
fn plaintext_secret(ty: &str, payload: &Map<String, Value>) -> Option<String> {
    let sealed =
        |v: &Value| v.as_object().is_some_and(|o| o.len() == 1 && o.get("sealed").is_some_and(Value::is_string));
    let check = |list: Option<&Value>, field: &str, at: &str| -> Option<String> {
        let items = list?.as_array()?;
        items.iter().enumerate().find_map(|(i, item)| {
            let v = item.get(field)?;
            (!sealed(v)).then(|| format!("/payload/{at}/{i}/{field}"))
        })
    };
    match ty {
        "CAMERA_ACTION" => {
            let v = payload.get("camera")?.get("password")?;
            (!sealed(v)).then(|| "/payload/camera/password".to_string())
        }
        "DEVICE_CONFIG" => check(payload.get("destinations"), "stream_key", "destinations")
            .or_else(|| check(payload.get("cameras"), "password", "cameras")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{b64, sign};
    use super::super::trust::TrustEntry;
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use serde_json::json;

    const DEV: &str = "vs-test-01";

    fn keys() -> (SigningKey, SigningKey, TrustStore) {
        let (cmd, admin) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let mut t = TrustStore::default();
        t.add(TrustEntry::new("studio", &b64(cmd.verifying_key().as_bytes()), &[Role::Command]).unwrap()).unwrap();
        t.add(
            TrustEntry::new("admin", &b64(admin.verifying_key().as_bytes()), &[Role::Command, Role::TrustAdmin])
                .unwrap(),
        )
        .unwrap();
        (cmd, admin, t)
    }

    fn msg(ty: &str, payload: Value) -> Map<String, Value> {
        json!({
            "schema_version": "1.0",
            "message_id": "0b9f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11",
            "correlation_id": null,
            "timestamp": "2026-11-24T12:00:00.000Z",
            "device_id": DEV,
            "type": ty,
            "payload": payload,
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn signed(mut m: Map<String, Value>, key_id: &str, k: &SigningKey) -> Vec<u8> {
        sign(&mut m, key_id, k).unwrap();
        serde_json::to_vec(&m).unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2026-11-24T12:00:30Z".parse().unwrap()
    }

    /// The NACK code a message gets, or None when it passes.
    fn outcome(raw: &[u8], t: &TrustStore) -> Result<Checked, Nack> {
        let c = Checker { device_id: DEV, trust: t, max_bytes: DEFAULT_MAX_BYTES };
        c.authenticate(raw).map_err(|r| r.nack)?.check(now(), DEFAULT_MAX_SKEW_S, t)
    }

    fn code(raw: &[u8], t: &TrustStore) -> Option<NackCode> {
        outcome(raw, t).err().map(|n| n.code)
    }

    #[test]
    fn a_signed_command_passes_and_each_check_has_its_code() {
        let (cmd, admin, t) = keys();
        let ok = signed(msg("PING", json!({})), "studio", &cmd);
        let c = outcome(&ok, &t).unwrap();
        assert_eq!((c.key_id.as_str(), c.command.type_name()), ("studio", "PING"));

        assert_eq!(code(b"{not json", &t), Some(NackCode::InvalidEnvelope));
        assert_eq!(code(&vec![b' '; DEFAULT_MAX_BYTES + 1], &t), Some(NackCode::InvalidEnvelope));
        let mut m = msg("PING", json!({}));
        m.remove("timestamp");
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::InvalidEnvelope));
        let mut m = msg("PING", json!({}));
        m.insert("schema_version".into(), "2.0".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::UnsupportedVersion));
        let mut m = msg("PING", json!({}));
        m.insert("schema_version".into(), "1.7".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), None, "a higher minor is accepted");
        let mut m = msg("PING", json!({}));
        m.insert("device_id".into(), "vs-other".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::WrongDevice));
        assert_eq!(code(&signed(msg("PING", json!({})), "stranger", &cmd), &t), Some(NackCode::UnknownKey));
        // Signed by one key, claiming another.
        assert_eq!(code(&signed(msg("PING", json!({})), "studio", &admin), &t), Some(NackCode::BadSignature));
        // One payload byte changed after signing.
        let flipped = String::from_utf8(signed(
            msg("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {"a": "b"}})),
            "studio",
            &cmd,
        ))
        .unwrap()
        .replace("\"b\"", "\"c\"");
        assert_eq!(code(flipped.as_bytes(), &t), Some(NackCode::BadSignature));
        let mut m = msg("PING", json!({}));
        m.insert("timestamp".into(), "2026-11-24T11:50:00Z".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::Expired), "10 min old");
        let mut m = msg("PING", json!({}));
        m.insert("timestamp".into(), "2026-11-24T12:10:00Z".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::Expired), "from the future");
        let mut m = msg("PING", json!({}));
        m.insert("expires_at".into(), "2026-11-24T12:00:10Z".into());
        assert_eq!(code(&signed(m, "studio", &cmd), &t), Some(NackCode::Expired), "past expires_at");
        assert_eq!(code(&signed(msg("REBOOT", json!({})), "studio", &cmd), &t), Some(NackCode::UnsupportedType));
        assert_eq!(
            code(&signed(msg("PROGRAM", json!({"action": "status"})), "studio", &cmd), &t),
            Some(NackCode::UnsupportedType),
            "local only"
        );
        assert_eq!(code(&signed(msg("TIMELINE_LOAD", json!({})), "studio", &cmd), &t), Some(NackCode::SchemaViolation));
        let plain_http = json!({"package_url": "http://example.com/p.vseg", "sha256": "0".repeat(64), "size": 10});
        let n = outcome(&signed(msg("TIMELINE_LOAD", plain_http), "studio", &cmd), &t).unwrap_err();
        assert_eq!((n.code, n.pointer.as_deref()), (NackCode::SchemaViolation, Some("/payload/package_url")), "{n:?}");
        let n = outcome(&signed(msg("OVERLAY_UPDATE", json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "color": "#zzzzzz"}})), "studio", &cmd), &t).unwrap_err();
        assert_eq!(
            (n.code, n.pointer.as_deref()),
            (NackCode::SchemaViolation, Some("/payload/overlay/color")),
            "{n:?}"
        );
    }

    #[test]
    fn secrets_must_be_sealed_and_only_an_admin_changes_the_trust_store() {
        let (cmd, admin, t) = keys();
        let plain = msg(
            "CAMERA_ACTION",
            json!({"action": "add", "camera_id": "c1", "camera": {"url": "rtsp://h/s", "password": "hunter2"}}),
        );
        let n = outcome(&signed(plain, "studio", &cmd), &t).unwrap_err();
        assert_eq!((n.code, n.pointer.as_deref()), (NackCode::SchemaViolation, Some("/payload/camera/password")));
        assert!(!n.message.contains("hunter2"), "{n:?}");
        let dc = msg(
            "DEVICE_CONFIG",
            json!({"mode": "merge", "destinations": [{"id": "yt", "platform": "youtube", "stream_key": {"sealed": "AAAA"}}, {"id": "fb", "platform": "facebook", "stream_key": "live_123"}]}),
        );
        let n = outcome(&signed(dc, "studio", &cmd), &t).unwrap_err();
        assert_eq!(
            (n.code, n.pointer.as_deref()),
            (NackCode::SchemaViolation, Some("/payload/destinations/1/stream_key"))
        );
        let trust = msg("DEVICE_CONFIG", json!({"mode": "merge", "trust": {"revoke": ["studio"]}}));
        assert_eq!(code(&signed(trust.clone(), "studio", &cmd), &t), Some(NackCode::UnknownKey), "a command key");
        assert_eq!(code(&signed(trust, "admin", &admin), &t), None, "a trust_admin key");
    }

    #[test]
    fn a_clock_back_in_1970_cannot_reopen_old_commands() {
        let (cmd, _, t) = keys();
        let c = Checker { device_id: DEV, trust: &t, max_bytes: DEFAULT_MAX_BYTES };
        let floor = now().as_millisecond();
        let clock = jiff::Timestamp::UNIX_EPOCH;
        let at = |ts: &str| {
            let mut m = msg("PING", json!({}));
            m.insert("timestamp".into(), ts.into());
            c.authenticate(&signed(m, "studio", &cmd)).unwrap().check(trusted_now(clock, floor), DEFAULT_MAX_SKEW_S, &t)
        };
        assert_eq!(at("2025-01-01T00:00:00Z").unwrap_err().code, NackCode::Expired, "an old command stays closed");
        assert_eq!(at("1970-01-01T00:00:10Z").unwrap_err().code, NackCode::Expired, "a 1970 timestamp too");
        assert!(at("2026-11-24T12:01:00Z").is_ok(), "a current command passes");
    }

    #[test]
    fn serde_paths_become_json_pointers() {
        assert_eq!(path_to_pointer("payload.camera_ids[0]"), "/payload/camera_ids/0");
        assert_eq!(path_to_pointer("payload.vars.a/b"), "/payload/vars/a~1b");
        assert_eq!(path_to_pointer("."), "");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary bytes are refused, never a panic.
        #[test]
        fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let (_, _, t) = keys();
            prop_assert!(outcome(&bytes, &t).is_err());
        }

        /// A valid message with one byte changed, cut short or with a value replaced: refused or,
        /// when the change kept it valid and signed, accepted; never a panic.
        #[test]
        fn mutated_messages_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let (cmd, _, t) = keys();
            let mut raw = signed(msg("TIMELINE_EXECUTE", json!({"action": "seek", "position_s": 12.5})), "studio", &cmd);
            let i = at.index(raw.len());
            if cut { raw.truncate(i) } else { raw[i] = byte }
            let _ = outcome(&raw, &t);
        }
    }
}
