//! `studio`: a reference cloud client (the envelope of `schemas/`), for trials, tests and operators. It signs
//! commands with a studio key, seals secrets to the device's X25519 key, publishes them on the
//! device's command topic and prints the replies as they come (ACK or NACK, PROGRESS, RESULT);
//! `watch` prints a device's telemetry; `serve-ws` is a WebSocket endpoint devices connect to with
//! their client certificates. Every message from a device is checked against its public key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Map, Value};
use tokio::io::AsyncBufReadExt;

use super::CliError;
use crate::control::envelope::{b64, public_key_from_b64, sign, timestamp_now, verify, Signature};
use crate::control::keys::seal_to;
use crate::control::tls::{self, TlsFiles};

#[derive(Subcommand, Debug)]
pub enum StudioCmd {
    /// Makes a studio signing key (ed25519) and prints the `trust add` line for a device.
    Keygen {
        #[arg(long)]
        key_id: String,
        /// Where to write the key (0600). Keep it secret.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Signs and publishes a command, then prints each reply (one JSON line each) until the
    /// RESULT or a NACK. Exit 0 when it succeeded, 1 when it was refused or failed.
    Send(SendArgs),
    /// Prints what a device publishes (replies, events, metrics, state), checking signatures.
    Watch {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        device: String,
        /// The device's ed25519 public key (base64); default: the one in its retained STATE.
        #[arg(long)]
        device_key: Option<String>,
        /// Stop after this many messages (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// A WebSocket endpoint (`wss://LISTEN/v1/devices/{id}/channel`, client certificate required).
    /// Prints every device message as one JSON line; reads commands from stdin, one JSON per line:
    /// `{"device": ID, "type": T, "payload": {...}}` is signed and sent, `{"device": ID, "raw": "..."}`
    /// is sent as it is.
    ServeWs {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long = "tls-key")]
        tls_key: PathBuf,
        /// The studio signing key (from `studio keygen`).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// mqtts://HOST:PORT (client certificate) or mqtt://HOST:PORT (loopback trials).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    #[arg(long, default_value = "vistter/v1")]
    prefix: String,
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long = "tls-key")]
    tls_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The studio signing key (from `studio keygen`).
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    device: String,
    /// The command type: PING, STREAM_CONTROL, TIMELINE_EXECUTE, OVERLAY_UPDATE, CAMERA_ACTION,
    /// DEVICE_CONFIG, TIMELINE_LOAD.
    #[arg(long = "type")]
    ty: String,
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Seals a secret into the payload: `/destinations/0/stream_key=VALUE` (JSON pointer).
    #[arg(long, value_name = "POINTER=VALUE")]
    seal: Vec<String>,
    /// The device's keys (base64); default: those in its retained STATE.
    #[arg(long)]
    device_key: Option<String>,
    #[arg(long)]
    sealing_key: Option<String>,
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

/// A studio key file.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    key_id: String,
    private_key_seed: String,
    public_key: String,
}

pub(crate) fn load_key(path: &std::path::Path) -> Result<(String, SigningKey), CliError> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
    let k: KeyFile = serde_json::from_str(&text)
        .map_err(|e| CliError::Invalid(format!("{}: not a studio key: {e}", path.display())))?;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&k.private_key_seed)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| CliError::Invalid(format!("{}: private_key_seed is not 32 bytes of base64", path.display())))?;
    Ok((k.key_id, SigningKey::from_bytes(&seed)))
}

/// A signed command for `device`.
pub fn command(key_id: &str, key: &SigningKey, device: &str, ty: &str, payload: Value) -> Result<Value, CliError> {
    let mut m = Map::new();
    m.insert("schema_version".into(), "1.0".into());
    m.insert("message_id".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("correlation_id".into(), Value::Null);
    m.insert("timestamp".into(), timestamp_now().into());
    m.insert("device_id".into(), device.into());
    m.insert("type".into(), ty.into());
    m.insert("payload".into(), payload);
    sign(&mut m, key_id, key).map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(Value::Object(m))
}

fn verified(m: &Value, device_key: Option<&str>) -> bool {
    let (Some(k), Some(obj)) = (device_key.and_then(public_key_from_b64), m.as_object()) else {
        return false;
    };
    serde_json::from_value::<Signature>(m["signature"].clone()).is_ok_and(|s| verify(obj, &s, &k).is_ok())
}

fn mqtt_options(b: &BrokerArgs, id: &str) -> Result<MqttOptions, CliError> {
    let u = url::Url::parse(&b.broker).map_err(|e| CliError::Invalid(format!("--broker: {e}")))?;
    let host = u.host_str().ok_or_else(|| CliError::Invalid("--broker has no host".into()))?.to_string();
    let tls = u.scheme() == "mqtts";
    let mut o = MqttOptions::new(id, host, u.port().unwrap_or(if tls { 8883 } else { 1883 }));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(17 << 20, 17 << 20);
    if tls {
        let (Some(ca), Some(cert), Some(key)) = (&b.ca, &b.cert, &b.tls_key) else {
            return Err(CliError::Invalid("mqtts:// needs --ca, --cert and --tls-key".into()));
        };
        let files = TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
        let c = tls::client_config(&files).map_err(|e| CliError::Invalid(e.to_string()))?;
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(c)));
    }
    Ok(o)
}

pub async fn studio(cmd: StudioCmd) -> Result<(), CliError> {
    match cmd {
        StudioCmd::Keygen { key_id, out } => keygen(&key_id, &out, "command"),
        StudioCmd::Send(a) => send(a).await,
        StudioCmd::Watch { broker, device, device_key, count } => watch(broker, &device, device_key, count).await,
        StudioCmd::ServeWs { listen, ca, cert, tls_key, key } => {
            serve_ws(&listen, TlsFiles { ca, cert, key: tls_key }, &key).await
        }
    }
}

pub(crate) fn keygen(key_id: &str, out: &std::path::Path, role: &str) -> Result<(), CliError> {
    crate::store::validate_id("key", key_id)?;
    if out.exists() {
        return Err(CliError::Coded(crate::error::EXIT_CONFLICT, format!("{} exists: not overwritten", out.display())));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = b64(key.verifying_key().as_bytes());
    let file = KeyFile { key_id: key_id.into(), private_key_seed: b64(key.as_bytes()), public_key: public.clone() };
    let text = serde_json::to_string_pretty(&file).map_err(|e| CliError::Failed(e.to_string()))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    outln!("{role} key {key_id} written to {}", out.display());
    outln!("on the device: vistter-agent trust add {key_id} --public-key {public} --role {role}");
    Ok(())
}

/// Connects, subscribes to `topics` and returns the client and a channel of publishes.
async fn connect(
    b: &BrokerArgs,
    topics: &[String],
) -> Result<(AsyncClient, tokio::sync::mpsc::Receiver<(String, Vec<u8>)>), CliError> {
    let id = format!("studio-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (client, mut ev) = AsyncClient::new(mqtt_options(b, &id)?, 256);
    ev.set_network_options(crate::control::mqtt::nodelay(ev.network_options()));
    for t in topics {
        client.subscribe(t, QoS::AtLeastOnce).await.map_err(|e| CliError::Failed(e.to_string()))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let want = topics.len();
    tokio::spawn(async move {
        let (mut acks, mut ready_tx) = (0, Some(ready_tx));
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks == want {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(Err(e.to_string()));
                    }
                    return;
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(15), ready).await {
        Ok(Ok(Ok(()))) => Ok((client, rx)),
        Ok(Ok(Err(e))) => Err(CliError::Unavailable(format!("broker {}: {e}", b.broker))),
        _ => Err(CliError::Unavailable(format!("broker {}: no answer", b.broker))),
    }
}

/// The device's keys from its retained STATE (within 3 s).
async fn keys_from_state(rx: &mut tokio::sync::mpsc::Receiver<(String, Vec<u8>)>, state_topic: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((topic, body))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if topic == state_topic {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                return Some(v["payload"].clone());
            }
        }
    }
    None
}

async fn send(a: SendArgs) -> Result<(), CliError> {
    let (key_id, key) = load_key(&a.key)?;
    let mut payload: Value =
        serde_json::from_str(&a.payload).map_err(|e| CliError::Invalid(format!("--payload: {e}")))?;
    let base = format!("{}/devices/{}", a.broker.prefix, a.device);
    let (client, mut rx) = connect(&a.broker, &[format!("{base}/replies"), format!("{base}/state")]).await?;
    let (mut device_key, mut sealing_key) = (a.device_key.clone(), a.sealing_key.clone());
    if device_key.is_none() || (sealing_key.is_none() && !a.seal.is_empty()) {
        let state = keys_from_state(&mut rx, &format!("{base}/state")).await;
        let field = |n: &str| state.as_ref().and_then(|s| s[n].as_str()).map(String::from);
        device_key = device_key.or_else(|| field("device_public_key"));
        sealing_key = sealing_key.or_else(|| field("device_sealing_key"));
    }
    for s in &a.seal {
        let (pointer, value) =
            s.split_once('=').ok_or_else(|| CliError::Invalid(format!("--seal {s:?}: use POINTER=VALUE")))?;
        let sk = sealing_key.as_deref().ok_or_else(|| {
            CliError::Invalid("--seal needs the device's sealing key (--sealing-key, or its retained STATE)".into())
        })?;
        let sealed =
            seal_to(sk, value).ok_or_else(|| CliError::Invalid("--sealing-key is not 32 bytes of base64".into()))?;
        let slot = payload
            .pointer_mut(pointer)
            .ok_or_else(|| CliError::Invalid(format!("--seal: {pointer} is not in the payload")))?;
        *slot = json!({"sealed": sealed});
    }
    let cmd = command(&key_id, &key, &a.device, &a.ty, payload)?;
    let id = cmd["message_id"].as_str().unwrap_or_default().to_string();
    client
        .publish(format!("{base}/commands"), QoS::AtLeastOnce, false, cmd.to_string())
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    eprintln!("sent {} {id}", a.ty);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout_s);
    loop {
        let Ok(Some((topic, body))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return Err(CliError::Unavailable(format!("no RESULT for {id} within {} s", a.timeout_s)));
        };
        if !topic.ends_with("/replies") {
            continue;
        }
        let Ok(m) = serde_json::from_slice::<Value>(&body) else { continue };
        if m["correlation_id"] != id.as_str() {
            continue;
        }
        let ok = verified(&m, device_key.as_deref());
        outln!("{}", json!({"verified": ok, "message": m}));
        if !ok {
            return Err(CliError::Failed("a reply's signature does not verify with the device's key".into()));
        }
        match m["type"].as_str() {
            Some("NACK") => return Err(CliError::Failed(format!("NACK {}", m["payload"]["code"]))),
            Some("RESULT") if m["payload"]["status"] == "succeeded" => return Ok(()),
            Some("RESULT") => return Err(CliError::Failed(format!("RESULT {}", m["payload"]["status"]))),
            _ => {}
        }
    }
}

async fn watch(b: BrokerArgs, device: &str, device_key: Option<String>, count: Option<u64>) -> Result<(), CliError> {
    let base = format!("{}/devices/{device}", b.prefix);
    let (_client, mut rx) = connect(&b, &[format!("{base}/#")]).await?;
    let mut key = device_key;
    let mut n = 0;
    while let Some((topic, body)) = rx.recv().await {
        let Ok(m) = serde_json::from_slice::<Value>(&body) else {
            outln!("{}", json!({"topic": topic, "error": "not JSON"}));
            continue;
        };
        if topic.ends_with("/commands") {
            continue;
        }
        if key.is_none() && m["type"] == "STATE" {
            key = m["payload"]["device_public_key"].as_str().map(String::from);
        }
        outln!("{}", json!({"topic": topic, "verified": verified(&m, key.as_deref()), "message": m}));
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
    Err(CliError::Unavailable("the broker closed the connection".into()))
}

type Peers = Arc<tokio::sync::Mutex<std::collections::HashMap<String, tokio::sync::mpsc::Sender<String>>>>;

async fn serve_ws(listen: &str, files: TlsFiles, key: &std::path::Path) -> Result<(), CliError> {
    let (key_id, key) = load_key(key)?;
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&files).map_err(|e| CliError::Invalid(e.to_string()))?);
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| CliError::Unavailable(format!("{listen}: {e}")))?;
    eprintln!(
        "serving wss://{}/v1/devices/{{id}}/channel",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    let peers: Peers = Arc::default();
    // Commands from stdin.
    let p = peers.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                eprintln!("stdin: not JSON: {line}");
                continue;
            };
            let device = v["device"].as_str().unwrap_or_default().to_string();
            let text = match v["raw"].as_str() {
                Some(raw) => raw.to_string(),
                None => {
                    match command(&key_id, &key, &device, v["type"].as_str().unwrap_or_default(), v["payload"].clone())
                    {
                        Ok(c) => c.to_string(),
                        Err(e) => {
                            eprintln!("stdin: {e}");
                            continue;
                        }
                    }
                }
            };
            match p.lock().await.get(&device) {
                Some(tx) => {
                    let _ = tx.send(text).await;
                }
                None => eprintln!("stdin: device {device} is not connected"),
            }
        }
    });
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| CliError::Failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, peers) = (acceptor.clone(), peers.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("a connection was refused: {e}");
                    return;
                }
            };
            let mut path = String::new();
            #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
            let ws = tokio_tungstenite::accept_hdr_async(
                tls,
                |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                 resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    path = req.uri().path().to_string();
                    Ok(resp)
                },
            )
            .await;
            let Ok(ws) = ws else { return };
            let Some(device) =
                path.strip_prefix("/v1/devices/").and_then(|p| p.strip_suffix("/channel")).map(String::from)
            else {
                eprintln!("a connection asked for {path}: not a device channel");
                return;
            };
            eprintln!("device {device} connected");
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
            peers.lock().await.insert(device.clone(), tx);
            let (mut sink, mut stream) = ws.split();
            let mut key: Option<String> = None;
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(t) => if sink.send(tokio_tungstenite::tungstenite::Message::text(t)).await.is_err() { break },
                        None => break,
                    },
                    m = stream.next() => match m {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                            let Ok(m) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                            if key.is_none() && m["type"] == "STATE" {
                                key = m["payload"]["device_public_key"].as_str().map(String::from);
                            }
                            outln!("{}", json!({"device": device, "verified": verified(&m, key.as_deref()), "message": m}));
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            eprintln!("device {device} disconnected");
            peers.lock().await.remove(&device);
        });
    }
}
