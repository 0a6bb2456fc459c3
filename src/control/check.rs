//! The checks every cloud command passes, always in the same order (size and JSON, envelope,
//! version, device, key, signature, then time, type, payload and the key's role); the first
//! failure decides the NACK code and nothing is executed.
//!
//! Two stages, because the dedupe store sits between them: [`Checker::authenticate`] proves who
//! sent the message (size, JSON, envelope, version, device, key, signature), so a repeated
//! `message_id` can be answered with its original reply; [`Authentic::check`] then applies time
//! and payload checks and yields a typed [`Checked`] command. Neither can be built any other way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::envelope::{verify, Envelope, SignError};
use crate::command::{self, Command, ErrorCode};
use crate::trust::{Role, TrustStore};

/// The NACK codes the cloud contract names (the checks', then execution errors).
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
        if let Some(pointer) = inexact_number(&obj) {
            return Err(refuse(Nack {
                message: format!(
                    "the number at {pointer} is outside ±(2^53 - 1): it cannot be signed exactly (I-JSON)"
                ),
                pointer: Some(pointer),
                code: NackCode::InvalidEnvelope,
            }));
        }
        if let Some(v) = obj.get("schema_version").and_then(Value::as_str) {
            if !is_v1(v) {
                let shown = crate::values::shorten(v);
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
        let shown = crate::values::shorten(key_id);
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
            let shown = crate::values::shorten(&e.ty);
            let msg = format!("unknown command type {shown:?}");
            return Err(Nack { pointer: Some("/type".into()), ..Nack::new(NackCode::UnsupportedType, msg) });
        }
        if let Some((pointer, why)) = plaintext_secret(&e.ty, &e.payload) {
            return Err(Nack { pointer: Some(pointer), ..Nack::new(NackCode::SchemaViolation, why) });
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
                let shown = crate::values::shorten(&self.key_id);
                return Err(Nack {
                    pointer: Some("/payload/trust".into()),
                    ..Nack::new(NackCode::UnknownKey, format!("key {shown:?} may not change the trust store"))
                });
            }
        }
        Ok(Checked { message_id: e.message_id, timestamp: e.timestamp, key_id: self.key_id, command })
    }
}

pub use crate::clock::trusted_now;

/// The largest integer every JSON reader holds exactly (RFC 7493 §2.2: an IEEE double's 53 bits).
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// The pointer of the first number (anywhere in `obj`) beyond ±[`MAX_EXACT_INTEGER`].
///
/// The signed bytes write every number as an IEEE double (RFC 8785), while serde_json reads an
/// integer into a `u64`/`i64` exactly: past 2^53, two different integers (…992 and …993) have the
/// same signed form, so one signature would cover both. Beyond ±(2^53 - 1) every double is an
/// integer too, so the rule is on magnitude, however the number is written. Fractions are exact
/// enough: serde_json reads them to the nearest double (`float_roundtrip`) and JCS writes the
/// shortest text that reads back to it, so the signed bytes fix the value the agent acts on; a
/// number past a double's range (`1e400`) is not JSON that serde_json reads at all.
fn inexact_number(obj: &Map<String, Value>) -> Option<String> {
    use std::fmt::Write;
    fn walk(v: &Value, at: &mut String) -> Option<String> {
        let len = at.len();
        let found = match v {
            Value::Number(n) => {
                let too_big = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u > MAX_EXACT_INTEGER,
                    (None, Some(i)) => i.unsigned_abs() > MAX_EXACT_INTEGER,
                    (None, None) => n.as_f64().is_none_or(|f| f.abs() > MAX_EXACT_INTEGER as f64),
                };
                too_big.then(|| at.clone())
            }
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                at.truncate(len);
                let _ = write!(at, "/{i}");
                walk(item, at)
            }),
            Value::Object(m) => members(m, at),
            _ => None,
        };
        at.truncate(len);
        found
    }
    fn members(m: &Map<String, Value>, at: &mut String) -> Option<String> {
        let len = at.len();
        m.iter().find_map(|(k, item)| {
            at.truncate(len);
            at.push('/');
            at.push_str(&k.replace('~', "~0").replace('/', "~1"));
            walk(item, at)
        })
    }
    // serde_json refuses input nested deeper than 128, so the walk's depth is bounded.
    members(obj, &mut String::new())
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

/// A field's JSON pointer and what is wrong with it.
type Found = Option<(String, &'static str)>;

/// The pointer of the first secret sent in the clear, and what to do instead: a camera
/// `password` or a destination `stream_key` that is not `{"sealed": "<text>"}`, or credentials in
/// the userinfo of a URL (`rtsp://user:password@host/…`): a camera's, a destination's ingest (its
/// key goes in `stream_key`, and the agent appends it) or a package's download URL.
fn plaintext_secret(ty: &str, payload: &Map<String, Value>) -> Found {
    const SEAL: &str = "a secret must travel sealed ({\"sealed\": \"<base64>\"})";
    const URL: &str = "credentials in a URL would cross the broker in the clear: send the user as `username` \
                       and the password sealed, or a destination's key sealed in `stream_key`";
    let sealed =
        |v: &Value| v.as_object().is_some_and(|o| o.len() == 1 && o.get("sealed").is_some_and(Value::is_string));
    let in_url =
        |v: Option<&Value>, at: String| v.and_then(Value::as_str).is_some_and(has_userinfo).then_some((at, URL));
    let each = |list: Option<&Value>, at: &str, check: &dyn Fn(&Value, String) -> Found| {
        let items = list?.as_array()?;
        items.iter().enumerate().find_map(|(i, item)| check(item, format!("/payload/{at}/{i}")))
    };
    let secret = |item: &Value, at: String, field: &str| {
        let v = item.get(field)?;
        (!sealed(v)).then(|| (format!("{at}/{field}"), SEAL))
    };
    match ty {
        "CAMERA_ACTION" => {
            let discover = payload.get("discover").and_then(|d| secret(d, "/payload/discover".into(), "password"));
            let camera = payload.get("camera");
            discover
                .or_else(|| camera.and_then(|c| secret(c, "/payload/camera".into(), "password")))
                .or_else(|| camera.and_then(|c| in_url(c.get("url"), "/payload/camera/url".into())))
        }
        "DEVICE_CONFIG" => each(payload.get("destinations"), "destinations", &|d, at| {
            secret(d, at.clone(), "stream_key").or_else(|| in_url(d.get("url"), format!("{at}/url")))
        })
        .or_else(|| {
            each(payload.get("cameras"), "cameras", &|c, at| {
                secret(c, at.clone(), "password").or_else(|| in_url(c.get("url"), format!("{at}/url")))
            })
        }),
        "TIMELINE_LOAD" => in_url(payload.get("package_url"), "/payload/package_url".into()),
        _ => None,
    }
}

/// Whether `url` carries a user or a password before its host. Read as the URL parser does, and
/// as text too (an `@` before the path), so a URL the parser refuses is judged all the same.
pub fn has_userinfo(url: &str) -> bool {
    let parsed = url::Url::parse(url.trim()).is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
    let authority = url.split_once("://").map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    parsed || authority.is_some_and(|a| a.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{b64, sign, signed_bytes};
    use super::*;
    use crate::trust::TrustEntry;
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
        // Credentials in a URL are a secret in the clear too, wherever a URL is taken.
        for (ty, payload, at) in [
            (
                "CAMERA_ACTION",
                json!({"action": "add", "camera_id": "c1", "camera": {"url": "rtsp://admin:hunter2@h/s"}}),
                "/payload/camera/url",
            ),
            (
                "CAMERA_ACTION",
                json!({"action": "update", "camera_id": "c1", "camera": {"url": "rtsp://admin@h/s"}}),
                "/payload/camera/url",
            ),
            (
                "DEVICE_CONFIG",
                json!({"mode": "merge", "cameras": [{"id": "c", "url": "rtsp://h/s"}, {"id": "d", "url": "rtsp://a:hunter2@h"}]}),
                "/payload/cameras/1/url",
            ),
            (
                "DEVICE_CONFIG",
                json!({"mode": "merge", "destinations": [{"id": "x", "platform": "custom", "url": "rtmp://k:hunter2@h/live"}]}),
                "/payload/destinations/0/url",
            ),
            (
                "TIMELINE_LOAD",
                json!({"package_url": "https://u:hunter2@cdn/p.vseg", "sha256": "0".repeat(64), "size": 1}),
                "/payload/package_url",
            ),
        ] {
            let n = outcome(&signed(msg(ty, payload), "studio", &cmd), &t).unwrap_err();
            assert_eq!((n.code, n.pointer.as_deref()), (NackCode::SchemaViolation, Some(at)), "{n:?}");
            assert!(!n.message.contains("hunter2") && !n.message.contains("admin"), "{n:?}");
        }
        for url in ["rtsp://a:b@h/s", "rtsp://a@h", "rtsp://:b@h", "rtsp://a%40b@h", "rtsp://x y@h/", "rtsp://a\\b@h"] {
            assert!(has_userinfo(url), "{url}");
        }
        for url in ["rtsp://h:554/s", "rtsp://h/a@b", "rtsp://h/s?u=a@b", "rtmp://h/live", "not a url"] {
            assert!(!has_userinfo(url), "{url}");
        }
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
    fn integers_past_2_53_cannot_share_a_signature() {
        let (cmd, _, t) = keys();
        let c = Checker { device_id: DEV, trust: &t, max_bytes: DEFAULT_MAX_BYTES };
        // Signed with 2^53; sent again with 2^53 + 1 and the same signature. JCS writes numbers
        // as IEEE doubles, so both messages have the same signed bytes.
        let sent = signed(
            msg("OVERLAY_UPDATE", json!({"action": "set_vars", "vars": {}, "n": 9007199254740992u64})),
            "studio",
            &cmd,
        );
        let text = String::from_utf8(sent.clone()).unwrap();
        let forged = text.replace("9007199254740992", "9007199254740993");
        assert_ne!(forged, text);
        let (a, b): (Map<String, Value>, Map<String, Value>) =
            (serde_json::from_str(&text).unwrap(), serde_json::from_str(&forged).unwrap());
        assert_ne!(a, b, "two different messages");
        assert_eq!(signed_bytes(&a).unwrap(), signed_bytes(&b).unwrap(), "one signed form");
        let sig: super::super::envelope::Signature = serde_json::from_value(a["signature"].clone()).unwrap();
        assert_eq!(verify(&b, &sig, &cmd.verifying_key()), Ok(()), "the signature covers the forged one too");
        // The checks refuse both before the signature is looked at, naming the number.
        for raw in [text.as_str(), forged.as_str()] {
            let r = c.authenticate(raw.as_bytes()).unwrap_err();
            assert_eq!(
                (r.nack.code, r.nack.pointer.as_deref()),
                (NackCode::InvalidEnvelope, Some("/payload/n")),
                "{r:?}"
            );
        }
        // Anywhere, either sign, written as an integer or not; the largest safe integer passes.
        for (v, at) in [
            (json!({"a": [1, {"b/c": -9007199254740992i64}]}), "/payload/x/a/1/b~1c"),
            (json!(18446744073709551615u64), "/payload/x"),
            (json!(1e16), "/payload/x"),
            (json!(-1.7e308), "/payload/x"),
        ] {
            let raw = signed(msg("PING", json!({"x": v})), "studio", &cmd);
            let r = c.authenticate(&raw).unwrap_err();
            assert_eq!((r.nack.code, r.nack.pointer.as_deref()), (NackCode::InvalidEnvelope, Some(at)), "{v}");
        }
        let raw =
            signed(msg("PING", json!({"x": [9007199254740991u64, -9007199254740991i64, 0.1, 1e-300]})), "studio", &cmd);
        assert!(c.authenticate(&raw).is_ok(), "±(2^53 - 1) and fractions are exact enough");
        // Past f64's range is not JSON this agent reads at all.
        let huge = String::from_utf8(signed(msg("PING", json!({"x": 1})), "studio", &cmd))
            .unwrap()
            .replace("\"x\":1", "\"x\":1e400");
        assert_eq!(c.authenticate(huge.as_bytes()).unwrap_err().nack.code, NackCode::InvalidEnvelope);
    }

    #[test]
    fn serde_paths_become_json_pointers() {
        assert_eq!(path_to_pointer("payload.camera_ids[0]"), "/payload/camera_ids/0");
        assert_eq!(path_to_pointer("payload.vars.a/b"), "/payload/vars/a~1b");
        assert_eq!(path_to_pointer("."), "");
    }

    /// Any JSON, its numbers of every kind and width, many near ±2^53.
    fn json_value() -> impl Strategy<Value = Value> {
        let edge = 1i64 << 53;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (edge - 4..edge + 4).prop_map(Value::from),
            (-edge - 4..-edge + 4).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            (-1e17..1e17f64).prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Equal values; integers compared exactly, other numbers as doubles (`2.0` is written `2`).
    fn same(a: &Value, b: &Value) -> bool {
        let int = |n: &serde_json::Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (int(x), int(y)) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary bytes are refused, never a panic.
        #[test]
        fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let (_, _, t) = keys();
            prop_assert!(outcome(&bytes, &t).is_err());
        }

        /// What a trusted key signed is what the agent reads: any message that passes
        /// authentication reads back from its signed bytes as the same values (else one signature
        /// would cover another message). Numbers are drawn around ±2^53 and across every width.
        #[test]
        fn what_was_signed_is_what_is_read(x in json_value()) {
            let (cmd, _, t) = keys();
            let c = Checker { device_id: DEV, trust: &t, max_bytes: DEFAULT_MAX_BYTES };
            let raw = signed(msg("PING", json!({"x": x})), "studio", &cmd);
            if c.authenticate(&raw).is_ok() {
                let mut received: Map<String, Value> = serde_json::from_slice(&raw).unwrap();
                let bytes = signed_bytes(&received).unwrap();
                let back: Value = serde_json::from_slice(&bytes[super::super::envelope::SIGNING_CONTEXT.len()..]).unwrap();
                received.remove("signature");
                prop_assert!(same(&Value::Object(received), &back), "{}", String::from_utf8_lossy(&raw));
            }
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
