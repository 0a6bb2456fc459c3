//! The MQTT link (DESIGN §3 "Transports"): outbound only, a persistent session, commands at QoS 1
//! acknowledged to the broker only once their reply is stored, replies on `…/replies`, a retained
//! STATE (birth) on `…/state` with a signed Last Will (death), and full-jitter reconnects.
//!
//! Topics: `{prefix}/devices/{device_id}/commands|replies|events|metrics|state`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::{new_message, sign};
use super::inbox::Inbox;
use crate::config::MqttConfig;

/// The command types this agent takes from the cloud (STATE `capabilities`).
fn capabilities() -> Value {
    json!({"commands": super::check::CLOUD_TYPES, "transports": ["mqtt"], "features": []})
}

pub struct Topics {
    pub commands: String,
    pub replies: String,
    pub state: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        let base = format!("{prefix}/devices/{device_id}");
        Topics {
            commands: format!("{base}/commands"),
            replies: format!("{base}/replies"),
            state: format!("{base}/state"),
        }
    }
}

/// A signed STATE message (birth when `online`, death otherwise).
async fn state(inbox: &Inbox, online: bool, link: &str) -> Option<String> {
    let p = inbox.keys.public();
    let payload = json!({
        "online": online,
        "agent_version": env!("CARGO_PKG_VERSION"),
        "device_public_key": p.device_public_key,
        "device_sealing_key": p.device_sealing_key,
        "capabilities": capabilities(),
        "link": {"mqtt": link},
        "segments": [],
        "program": null,
    });
    let Value::Object(payload) = payload else { return None };
    let mut m: Map<String, Value> = new_message(&inbox.device_id, "STATE", payload, None);
    m.insert("seq".into(), inbox.store.reserve_seq(1).await.ok()?.into());
    sign(&mut m, &inbox.device_id, inbox.keys.signing()).ok()?;
    Some(Value::Object(m).to_string())
}

/// Full jitter: a random wait in 0..=min(max, 1 s × 2^attempt).
fn backoff(attempt: u32, max: Duration) -> Duration {
    let cap = Duration::from_secs(1u64 << attempt.min(16)).min(max);
    Duration::from_millis(rand::thread_rng().gen_range(0..=cap.as_millis() as u64).max(200))
}

/// Runs the link until `shutdown`; reconnects on its own.
pub async fn run(cfg: MqttConfig, prefix: String, inbox: Arc<Inbox>, shutdown: CancellationToken) {
    let topics = Topics::new(&prefix, &inbox.device_id);
    let Some((host, port)) = host_port(&cfg.url) else {
        tracing::error!("control.mqtt.url has no host:port; the MQTT link is off");
        return;
    };
    let mut attempt = 0u32;
    while !shutdown.is_cancelled() {
        let Some(death) = state(&inbox, false, "offline").await else {
            tracing::error!("the STATE message could not be made; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let mut opts = MqttOptions::new(inbox.device_id.clone(), host.clone(), port);
        opts.set_keep_alive(Duration::from_secs(cfg.keepalive_s));
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        let max = inbox.max_bytes + 64 * 1024;
        opts.set_max_packet_size(max, max);
        opts.set_last_will(LastWill::new(&topics.state, death, QoS::AtLeastOnce, true));
        let (client, mut events) = AsyncClient::new(opts, 64);
        let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
        let publisher = {
            let (client, topic) = (client.clone(), topics.replies.clone());
            tokio::spawn(async move {
                while let Some(r) = out_rx.recv().await {
                    if client.publish(&topic, QoS::AtLeastOnce, false, r).await.is_err() {
                        break;
                    }
                }
            })
        };
        let mut connected_at: Option<Instant> = None;
        let dropped = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Some(s) = state(&inbox, false, "offline").await {
                        let _ = client.publish(&topics.state, QoS::AtLeastOnce, true, s).await;
                    }
                    let _ = client.disconnect().await;
                    // Let the event loop send what is queued (bounded).
                    let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;
                    break false;
                }
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        tracing::info!(session_present = ack.session_present, "MQTT link connected");
                        connected_at = Some(Instant::now());
                        // rumqttc does not resubscribe: a broker that lost the session needs it again.
                        if !ack.session_present {
                            if let Err(e) = client.subscribe(&topics.commands, QoS::AtLeastOnce).await {
                                tracing::warn!("MQTT subscribe: {e}");
                            }
                        }
                        if let Some(s) = state(&inbox, true, "connected").await {
                            let _ = client.publish(&topics.state, QoS::AtLeastOnce, true, s).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.commands => {
                        let (inbox, client, out) = (inbox.clone(), client.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            match inbox.receive(&p.payload, out).await {
                                // The reply is stored: now the broker may forget the command.
                                Ok(()) => { let _ = client.ack(&p).await; }
                                Err(e) => tracing::error!("a command could not be handled (store): {e}; left unacknowledged"),
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("MQTT link: {e}");
                        break true;
                    }
                }
            }
        };
        publisher.abort();
        if !dropped {
            return;
        }
        // Reset after 30 s connected; after an established connection drops, a random delay first.
        let mut wait = Duration::ZERO;
        match connected_at {
            Some(t) if t.elapsed() >= Duration::from_secs(30) => {
                attempt = 0;
                wait += Duration::from_millis(rand::thread_rng().gen_range(0..=cfg.drop_delay_max_s * 1000));
            }
            Some(_) => {
                wait += Duration::from_millis(rand::thread_rng().gen_range(0..=cfg.drop_delay_max_s * 1000));
            }
            None => {}
        }
        wait += backoff(attempt, Duration::from_secs(cfg.reconnect_max_s));
        attempt = attempt.saturating_add(1);
        tracing::info!("MQTT link: reconnecting in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    let default = if u.scheme() == "mqtts" { 8883 } else { 1883 };
    Some((u.host_str()?.to_string(), u.port().unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_backoff() {
        let t = Topics::new("vistter/v1", "vs-1");
        assert_eq!(t.commands, "vistter/v1/devices/vs-1/commands");
        assert_eq!(t.state, "vistter/v1/devices/vs-1/state");
        for a in 0..20 {
            assert!(backoff(a, Duration::from_secs(120)) <= Duration::from_secs(120));
        }
        assert!(backoff(0, Duration::from_secs(120)) <= Duration::from_secs(1));
        assert_eq!(host_port("mqtt://127.0.0.1:1884"), Some(("127.0.0.1".into(), 1884)));
        assert_eq!(host_port("mqtts://broker.example"), Some(("broker.example".into(), 8883)));
    }
}
