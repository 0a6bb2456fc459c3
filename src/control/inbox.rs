//! What happens to one message from the cloud, whatever transport brought it: check it (every
//! check, in order, before anything runs), answer ACK or NACK at once, run it, answer one RESULT; a
//! repeated `message_id` gets the replies first sent, without running anything again.
//!
//! Replies are signed by the device, numbered (`seq`) and stored before they are handed to the
//! transport, so the transport may acknowledge the command to its broker as soon as
//! [`Inbox::receive`] returns: a crash after that point loses nothing.

use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::check::{Checker, Nack, NackCode};
use super::keys::{DeviceKeys, Keyring};
use super::outbox::{Draft, Kind, Outbox, Remember, Route, Written};
use crate::clock::trusted_now;
use crate::command::device_config::{sealed_stream_key, Opened};
use crate::command::timeline_load::FromCloud;
use crate::command::{Command, DeviceConfig, ErrorCode, Refusal, Reply};
use crate::store::{Store, StoreError};
use crate::trust::TrustStore;

/// Runs a checked command (the dispatcher, with the cloud as origin).
pub trait Execute: Send + Sync + 'static {
    fn execute(&self, cmd: Command) -> BoxFuture<'static, Reply>;

    /// The running programs, read from their typed view (never through a command).
    fn programs(&self) -> Vec<crate::command::ProgramInfo> {
        Vec::new()
    }
}

impl Execute for crate::command::dispatch::Dispatcher {
    fn execute(&self, cmd: Command) -> BoxFuture<'static, Reply> {
        let d = self.clone();
        Box::pin(async move { d.dispatch(crate::values::Origin::Cloud, cmd).await })
    }

    fn programs(&self) -> Vec<crate::command::ProgramInfo> {
        self.programs_view()
    }
}

/// How often a command that is still running reports PROGRESS.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a command, and its RESULT, are tried again when the store cannot take them (a full disk).
const RESULT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(300);

pub struct Inbox {
    pub device_id: crate::values::DeviceId,
    pub trust: Arc<RwLock<TrustStore>>,
    pub keys: Arc<Keyring>,
    pub store: Store,
    pub outbox: Outbox,
    /// Where the trust store is saved when `DEVICE_CONFIG.trust` changes it.
    pub trust_path: std::path::PathBuf,
    pub max_bytes: usize,
    pub max_skew_s: u64,
    pub exec: Arc<dyn Execute>,
    /// The time floor (Unix ms) as last read or raised; [`FLOOR_UNKNOWN`] until first read.
    pub floor_ms: std::sync::atomic::AtomicI64,
    /// The segment library, listed in STATE messages (none: an empty list).
    pub segments: Option<crate::segments::library::Library>,
}

/// [`Inbox::floor_ms`] before the store was read.
pub const FLOOR_UNKNOWN: i64 = i64::MIN;

impl Inbox {
    /// Handles one raw message that came in on `route`. Its ACK or NACK (or, for a repeat, the
    /// replies first sent) is in the outbox, for `route`, when this returns; the RESULT follows
    /// when the command is done.
    /// The time floor: read from the store once, then kept here (only this inbox raises it,
    /// always in the store first).
    async fn time_floor(&self) -> Result<i64, StoreError> {
        use std::sync::atomic::Ordering;
        let cached = self.floor_ms.load(Ordering::SeqCst);
        if cached != FLOOR_UNKNOWN {
            return Ok(cached);
        }
        let stored = self.store.time_floor_ms().await?;
        // A raise that happened meanwhile wins.
        let _ = self.floor_ms.compare_exchange(FLOOR_UNKNOWN, stored, Ordering::SeqCst, Ordering::SeqCst);
        Ok(self.floor_ms.load(Ordering::SeqCst).max(stored))
    }

    /// [`Inbox::receive`], tried again if the store fails (a full disk), with a growing wait, for
    /// up to [`RESULT_RETRY_FOR`]: every step before the first reply is stored can be repeated, and
    /// a repeat of a stored command only sends its replies again. The broker would only deliver an
    /// unacknowledged command again after a reconnect, so the link does not count on it.
    pub async fn receive_retrying(self: &Arc<Self>, raw: &[u8], route: Route) -> Result<(), StoreError> {
        let mut wait = std::time::Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + RESULT_RETRY_FOR;
        loop {
            match self.receive(raw, route).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + wait < give_up => {
                    tracing::warn!("a command could not be handled yet (store): {e}; trying again")
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        }
    }

    pub async fn receive(self: &Arc<Self>, raw: &[u8], route: Route) -> Result<(), StoreError> {
        // A message the link cut short before reading it (over the size limit): nobody read
        // its id, so the NACK answers no message (`correlation_id: null`).
        if let Some(size) = super::trim::oversize(raw) {
            let nack = Nack::new(
                NackCode::InvalidEnvelope,
                format!("message of {size} bytes is over the {} byte limit", self.max_bytes),
            );
            self.reply("NACK", nack_payload(&nack), None, route, Remember::No).await?;
            return Ok(());
        }
        let authentic = {
            let trust = self.trust.read().unwrap_or_else(|e| e.into_inner());
            let checker = Checker { device_id: self.device_id.as_str(), trust: &trust, max_bytes: self.max_bytes };
            checker.authenticate(raw)
        };
        let authentic = match authentic {
            Ok(a) => a,
            // Not remembered: a message nobody signed must not fill the dedupe store.
            Err(r) => {
                self.reply("NACK", nack_payload(&r.nack), r.correlation_id, route, Remember::No).await?;
                return Ok(());
            }
        };
        let id = authentic.message_id();
        // A repeated message_id is found by the outbox writer when the first reply is stored (the
        // ACK, or a NACK below): its earlier replies go out instead, whatever the checks say now.
        let system = self.outbox.clock().now();
        let floor = self.time_floor().await?;
        let checked = {
            let trust = self.trust.read().unwrap_or_else(|e| e.into_inner()).clone();
            authentic.check(trusted_now(system, floor), self.max_skew_s, &trust)
        };
        let checked = match checked {
            Ok(c) => c,
            Err(nack) => {
                if let Written::Repeat(sent) =
                    self.reply("NACK", nack_payload(&nack), Some(id), route, Remember::First(id)).await?
                {
                    self.resend(id, sent, route).await?;
                }
                return Ok(());
            }
        };
        // Written with the dedupe record in one transaction: of two copies arriving together,
        // only one is accepted. A command signed by a trusted key, within the allowed skew, is
        // evidence of the time: the floor rises to it in the same transaction (never to the
        // system clock alone, which may be far off).
        let ack = Draft {
            ty: "ACK",
            payload: Map::new(),
            correlation_id: Some(id),
            kind: Kind::Replies,
            route: Some(route),
            remember: Remember::First(id),
            counter: None,
            raise_floor: Some(checked.timestamp.as_millisecond()),
        };
        let ack = match self.outbox.put(ack).await? {
            Written::Sent(ack) => ack,
            Written::Repeat(sent) => return self.resend(id, sent, route).await,
        };
        self.floor_ms.fetch_max(checked.timestamp.as_millisecond(), std::sync::atomic::Ordering::SeqCst);
        tracing::info!(message_id = %id, key_id = %checked.key_id, command = checked.command.type_name(), "cloud command accepted");
        let this = self.clone();
        // Everything logged while the command runs, however deep, carries its message_id.
        let span = tracing::error_span!("command", message_id = %id);
        let run_command = async move {
            let ty = checked.command.type_name();
            // Work that knows how far it is (a download) reports it here.
            let (status_tx, status) = tokio::sync::watch::channel((0u8, String::new()));
            // The rare, large futures are boxed: every command in flight holds this one, and a
            // burst of cheap commands should not each reserve room for a package download.
            let run = async {
                match checked.command {
                    Command::DeviceConfig(mut c) => {
                        let keys = this.keys.current();
                        open_device_config(&keys, &mut c, this.trust.clone(), this.trust_path.clone());
                        this.exec.execute(Command::DeviceConfig(c)).await
                    }
                    Command::TimelineLoad(mut t) => {
                        t.from_cloud = Some(this.load_context(&status_tx).await);
                        this.exec.execute(Command::TimelineLoad(t)).await
                    }
                    Command::CameraAction(mut c) => match this.open_camera_password(&mut c) {
                        Ok(()) => this.exec.execute(Command::CameraAction(c)).await,
                        Err(refusal) => Reply::Refused { refusal },
                    },
                    Command::CameraDiscover(mut d) => match this.open_discover_password(&mut d) {
                        Ok(()) => this.exec.execute(Command::CameraDiscover(d)).await,
                        Err(refusal) => Reply::Refused { refusal },
                    },
                    cmd => this.exec.execute(cmd).await,
                }
            };
            let reply = this.with_progress(id, route, ty, run, status).await;
            let payload = result_payload(reply);
            // The command has run: its RESULT must reach the cloud. A store that cannot take it
            // (a full disk) is tried again, for a few minutes.
            let mut wait = std::time::Duration::from_millis(500);
            let give_up = tokio::time::Instant::now() + RESULT_RETRY_FOR;
            loop {
                let remember = Remember::Then(id, vec![ack.clone()]);
                match this.reply("RESULT", payload.clone(), Some(id), route, remember).await {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() + wait < give_up => {
                        tracing::warn!(message_id = %id, "the RESULT could not be stored yet: {e}; trying again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                    }
                    Err(e) => {
                        tracing::error!(message_id = %id, "the RESULT could not be stored: {e}; given up");
                        break;
                    }
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(run_command, span));
        Ok(())
    }

    /// Runs `work`; while it takes longer than [`PROGRESS_EVERY`], a PROGRESS goes out each time
    /// that passes (pre-flights and probes take seconds), so the cloud knows it is alive. Work that
    /// reports `(percent, detail)` on `status` also gets one each time it moves 5 points.
    async fn with_progress(
        &self,
        id: uuid::Uuid,
        route: Route,
        ty: &str,
        work: impl std::future::Future<Output = Reply>,
        mut status: tokio::sync::watch::Receiver<(u8, String)>,
    ) -> Reply {
        tokio::pin!(work);
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let mut sent_pct = 0u8;
        loop {
            let now = tokio::select! {
                r = &mut work => return r,
                _ = tick.tick() => true,
                Ok(()) = status.changed() => false,
            };
            let (pct, detail) = status.borrow_and_update().clone();
            if !now && pct < sent_pct.saturating_add(5) {
                continue;
            }
            sent_pct = pct;
            tick.reset();
            let detail =
                if detail.is_empty() { format!("{ty} running for {} s", started.elapsed().as_secs()) } else { detail };
            let Value::Object(p) = json!({"percent": pct.min(100), "state": "running", "detail": detail}) else {
                continue;
            };
            if let Err(e) = self.reply("PROGRESS", p, Some(id), route, Remember::No).await {
                tracing::warn!(message_id = %id, "a PROGRESS could not be stored: {e}");
            }
        }
    }

    /// What a `TIMELINE_LOAD` is lent: the trust store and the trusted time as they are now, and
    /// where to report progress.
    async fn load_context(&self, status: &tokio::sync::watch::Sender<(u8, String)>) -> FromCloud {
        let trust = self.trust.read().unwrap_or_else(|e| e.into_inner()).clone();
        let floor = self.time_floor().await.unwrap_or(0);
        FromCloud {
            trust,
            device_id: self.device_id.clone(),
            now: trusted_now(jiff::Timestamp::now(), floor),
            progress: status.clone(),
        }
    }

    /// A camera's sealed password, opened with the device's key now that every check passed.
    fn open_camera_password(&self, c: &mut crate::command::CameraAction) -> Result<(), Refusal> {
        if let Some(spec) = c.camera.as_mut() {
            if let Some(sealed) = spec.password.take() {
                let opened = self
                    .keys
                    .current()
                    .open(&sealed.sealed)
                    .map_err(|e| Refusal::field("payload.camera.password", e.to_string()))?;
                spec.opened_password = Some(opened);
            }
        }
        Ok(())
    }

    /// `discover`'s sealed password, opened the same way.
    fn open_discover_password(&self, d: &mut crate::command::discover::CameraDiscover) -> Result<(), Refusal> {
        if let Some(spec) = d.discover.as_mut() {
            if let Some(sealed) = spec.password.take() {
                let opened = self
                    .keys
                    .current()
                    .open(&sealed.sealed)
                    .map_err(|e| Refusal::field("payload.discover.password", e.to_string()))?;
                spec.opened_password = Some(opened);
            }
        }
        Ok(())
    }

    /// A repeated command: its replies go out again, unchanged, on the transport it came in on.
    async fn resend(&self, id: uuid::Uuid, sent: Vec<String>, route: Route) -> Result<(), StoreError> {
        tracing::info!(message_id = %id, "a repeated command: its replies are sent again, nothing runs");
        self.outbox.resend(sent, route).await
    }

    /// A signed, numbered reply, stored in the outbox for `route`.
    async fn reply(
        &self,
        ty: &'static str,
        payload: Map<String, Value>,
        to: Option<uuid::Uuid>,
        route: Route,
        remember: Remember,
    ) -> Result<Written, StoreError> {
        self.outbox
            .put(Draft {
                ty,
                payload,
                correlation_id: to,
                kind: Kind::Replies,
                route: Some(route),
                remember,
                counter: None,
                raise_floor: None,
            })
            .await
    }
}

/// A `DEVICE_CONFIG`'s sealed stream keys, opened with the device's key now that every check
/// passed, and lent to the command with the trust store ([`Opened`]) for the handler in
/// `command::device_config`, which never sees the device's key. A key that does not open is kept
/// as its refusal: the handler refuses the command at that item.
pub fn open_device_config(
    keys: &DeviceKeys,
    c: &mut DeviceConfig,
    trust: Arc<RwLock<TrustStore>>,
    trust_path: std::path::PathBuf,
) {
    let mut stream_keys = std::collections::BTreeMap::new();
    for (i, item) in c.destinations.iter().flatten().enumerate() {
        if let Some(sealed) = sealed_stream_key(item) {
            let opened = keys
                .open(&sealed.sealed)
                .map_err(|e| Refusal::field(format!("payload.destinations.{i}.stream_key"), e.to_string()));
            stream_keys.insert(i, opened);
        }
    }
    c.opened = Some(Opened { stream_keys, trust, trust_path });
}

fn nack_payload(n: &Nack) -> Map<String, Value> {
    match serde_json::to_value(n) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn result_payload(reply: Reply) -> Map<String, Value> {
    let v = match reply {
        Reply::Done { output } => {
            json!({"status": "succeeded", "output": serde_json::to_value(&*output).unwrap_or(Value::Null)})
        }
        Reply::Refused { refusal } => {
            let status = if refusal.code == ErrorCode::Canceled { "canceled" } else { "failed" };
            let code = match refusal.code {
                ErrorCode::SchemaViolation => NackCode::SchemaViolation,
                ErrorCode::UnsupportedType => NackCode::UnsupportedType,
                ErrorCode::NotFound => NackCode::NotFound,
                ErrorCode::Conflict => NackCode::Conflict,
                ErrorCode::Busy => NackCode::Busy,
                ErrorCode::Failed | ErrorCode::Canceled => NackCode::Failed,
            };
            let mut error = json!({"code": code, "message": refusal.message});
            if let Some(f) = refusal.field.as_deref() {
                error["pointer"] = super::check::path_to_pointer(f).into();
            }
            json!({"status": status, "error": error})
        }
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{b64, sign};
    use super::super::outbox::Bounds;
    use super::*;
    use crate::command::Output;
    use crate::trust::{Role, TrustEntry};
    use ed25519_dalek::SigningKey;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Arc<AtomicUsize>);

    impl Execute for Counting {
        fn execute(&self, cmd: Command) -> BoxFuture<'static, Reply> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match cmd {
                    Command::Ping(_) => Reply::Done { output: Box::new(Output::Pong { agent_time: "t".into() }) },
                    // Long work, as a pre-flight is.
                    Command::CameraAction(_) => {
                        tokio::time::sleep(PROGRESS_EVERY + std::time::Duration::from_millis(500)).await;
                        Reply::Done { output: Box::new(Output::Done) }
                    }
                    _ => Reply::Refused { refusal: Refusal::new(ErrorCode::NotFound, "no such timeline") },
                }
            })
        }
    }

    async fn inbox(dir: &std::path::Path) -> (Arc<Inbox>, Arc<AtomicUsize>, SigningKey) {
        let studio = SigningKey::from_bytes(&[9; 32]);
        let mut t = TrustStore::default();
        t.add(TrustEntry::new("studio", &b64(studio.verifying_key().as_bytes()), &[Role::Command]).unwrap()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Keyring::load_or_create(dir).unwrap());
        let store = Store::open(dir).await.unwrap();
        let bounds = Bounds { max_messages: 1000, max_bytes: 1 << 20 };
        let outbox = Outbox::start(store.clone(), "dev".into(), keys.clone(), vec![Route::Mqtt], bounds).await.unwrap();
        let inbox = Inbox {
            device_id: crate::values::DeviceId::new("dev").unwrap(),
            trust: Arc::new(RwLock::new(t)),
            keys,
            store,
            outbox,
            trust_path: dir.join("trust.json"),
            max_bytes: 256 * 1024,
            max_skew_s: 300,
            exec: Arc::new(Counting(runs.clone())),
            floor_ms: std::sync::atomic::AtomicI64::new(FLOOR_UNKNOWN),
            segments: None,
        };
        (Arc::new(inbox), runs, studio)
    }

    fn command(key: &SigningKey, id: &str, ty: &str, payload: Value) -> Vec<u8> {
        let mut m = json!({"schema_version": "1.0", "message_id": id, "correlation_id": null,
                           "timestamp": super::super::envelope::timestamp_now(), "device_id": "dev", "type": ty, "payload": payload});
        sign(m.as_object_mut().unwrap(), "studio", key).unwrap();
        serde_json::to_vec(&m).unwrap()
    }

    /// Reads what the outbox holds for MQTT, as a transport would.
    struct Rx(i64);

    async fn replies(inbox: &Inbox, rx: &mut Rx, n: usize) -> Vec<Value> {
        let mut v = Vec::new();
        let t0 = std::time::Instant::now();
        while v.len() < n {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5), "only {v:?}");
            for r in inbox.outbox.after(Route::Mqtt, rx.0, (n - v.len()) as i64).await.unwrap() {
                rx.0 = r.id;
                v.push(serde_json::from_str(&r.body).unwrap());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        v
    }

    #[tokio::test]
    async fn ack_then_one_result_and_a_repeat_runs_nothing_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, runs, studio) = inbox(dir.path()).await;
        let mut rx = Rx(0);
        let id = "6a1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
        let raw = command(&studio, id, "PING", json!({}));
        inbox.receive(&raw, Route::Mqtt).await.unwrap();
        let first = replies(&inbox, &mut rx, 2).await;
        assert_eq!((first[0]["type"].as_str(), first[1]["type"].as_str()), (Some("ACK"), Some("RESULT")));
        assert_eq!(first[0]["correlation_id"], id);
        assert_eq!(first[1]["payload"]["status"], "succeeded");
        assert!(first[1]["seq"].as_u64() > first[0]["seq"].as_u64(), "seq rises: {first:?}");
        let floor = inbox.store.time_floor_ms().await.unwrap();
        let sent: jiff::Timestamp =
            serde_json::from_slice::<Value>(&raw).unwrap()["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(floor, sent.as_millisecond(), "the time floor rose to the accepted command's time");
        inbox.receive(&raw, Route::Mqtt).await.unwrap();
        assert_eq!(replies(&inbox, &mut rx, 2).await, first, "the identical replies");
        drop(inbox);
        let (again, runs2, _) = self::inbox(dir.path()).await;
        again.receive(&raw, Route::Mqtt).await.unwrap();
        assert_eq!(replies(&again, &mut rx, 2).await, first, "after a restart too");
        assert_eq!(runs.load(Ordering::SeqCst) + runs2.load(Ordering::SeqCst), 1, "executed once");
        // A refusal by the handler is a RESULT failed with its code.
        inbox_result(&again, &studio, &mut rx).await;
    }

    async fn inbox_result(inbox: &Arc<Inbox>, studio: &SigningKey, rx: &mut Rx) {
        let raw = command(
            studio,
            "7a1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11",
            "TIMELINE_EXECUTE",
            json!({"action": "play", "timeline_id": "nope"}),
        );
        inbox.receive(&raw, Route::Mqtt).await.unwrap();
        let r = replies(inbox, rx, 2).await;
        assert_eq!(r[1]["payload"]["status"], "failed");
        assert_eq!(r[1]["payload"]["error"]["code"], "not_found");
    }

    #[tokio::test]
    async fn a_refused_message_gets_one_nack_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, runs, studio) = inbox(dir.path()).await;
        let mut rx = Rx(0);
        inbox.receive(b"{oops", Route::Mqtt).await.unwrap();
        let n = replies(&inbox, &mut rx, 1).await;
        assert_eq!((n[0]["type"].as_str(), n[0]["payload"]["code"].as_str()), (Some("NACK"), Some("invalid_envelope")));
        assert_eq!(n[0]["correlation_id"], Value::Null, "unread: no correlation");
        let bad = command(
            &studio,
            "8a1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11",
            "OVERLAY_UPDATE",
            json!({"action": "show", "overlay_id": "o", "overlay": {"type": "text", "text": "x", "opacity": 2}}),
        );
        inbox.receive(&bad, Route::Mqtt).await.unwrap();
        let n = replies(&inbox, &mut rx, 1).await;
        assert_eq!(n[0]["payload"]["code"], "schema_violation");
        assert_eq!(n[0]["payload"]["pointer"], "/payload/overlay/opacity");
        assert_eq!(n[0]["correlation_id"], "8a1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(inbox.outbox.after(Route::Mqtt, rx.0, 10).await.unwrap().is_empty(), "no RESULT after a NACK");
    }

    #[tokio::test]
    async fn long_work_reports_progress_between_its_ack_and_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, _, studio) = inbox(dir.path()).await;
        let mut rx = Rx(0);
        let id = "9a1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11";
        inbox
            .receive(&command(&studio, id, "CAMERA_ACTION", json!({"action": "probe", "camera_id": "c1"})), Route::Mqtt)
            .await
            .unwrap();
        let r = replies(&inbox, &mut rx, 3).await;
        let types: Vec<&str> = r.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["ACK", "PROGRESS", "RESULT"], "{r:?}");
        assert_eq!(r[1]["correlation_id"], id);
        assert_eq!(r[1]["payload"]["state"], "running");
        // A repeat gets the ACK and the RESULT (PROGRESS is not a reply to keep).
        inbox
            .receive(&command(&studio, id, "CAMERA_ACTION", json!({"action": "probe", "camera_id": "c1"})), Route::Mqtt)
            .await
            .unwrap();
        let again = replies(&inbox, &mut rx, 2).await;
        assert_eq!(again, [r[0].clone(), r[2].clone()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundreds_of_commands_at_once_are_each_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, runs, studio) = inbox(dir.path()).await;
        let n = 300;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let raw = command(&studio, &format!("{i:08x}-6a4e-4f6f-9d2e-3c7a1d2b8e11"), "PING", json!({}));
                let inbox = inbox.clone();
                tokio::spawn(async move { inbox.receive(&raw, Route::Mqtt).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("no store error under load (a write lock is taken up front)");
        }
        let mut rx = Rx(0);
        let all = replies(&inbox, &mut rx, 2 * n).await;
        assert_eq!(all.iter().filter(|m| m["type"] == "RESULT").count(), n);
        assert_eq!(runs.load(Ordering::SeqCst), n);
        let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous seq in outbox order");
    }

    #[tokio::test]
    async fn a_clock_jump_ahead_and_back_cannot_replay_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, runs, studio) = inbox(dir.path()).await;
        let mut rx = Rx(0);
        let raw = command(&studio, "ab1f0c52-6a4e-4f6f-9d2e-3c7a1d2b8e11", "PING", json!({}));
        inbox.receive(&raw, Route::Mqtt).await.unwrap();
        let first = replies(&inbox, &mut rx, 2).await;
        drop(inbox);
        // Restarted with the clock 26 h ahead (past the dedupe window): the store is tidied.
        let (ahead, runs2, _) = self::inbox(dir.path()).await;
        ahead.outbox.clock().step(26 * 3600 * 1000);
        // Two passes of the outbox writer, the second after the first one's tidying.
        for _ in 0..2 {
            ahead.receive(b"{oops", Route::Mqtt).await.unwrap();
        }
        assert_eq!(replies(&ahead, &mut rx, 2).await.len(), 2);
        // The clock back: the command, still within max_skew_s of the trusted time, comes again.
        ahead.outbox.clock().step(-26 * 3600 * 1000);
        ahead.receive(&raw, Route::Mqtt).await.unwrap();
        assert_eq!(replies(&ahead, &mut rx, 2).await, first, "its first replies again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst) + runs2.load(Ordering::SeqCst), 1, "executed once");
    }
}
