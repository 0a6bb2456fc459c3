//! The MQTT link: outbound only, mutual TLS, a persistent session,
//! commands at QoS 1 acknowledged to the broker only once their reply is stored, and every
//! message the device sends read from the outbox and marked delivered only on its PUBACK.
//! A retained STATE (birth) on `…/state`, with a signed Last Will (death); full-jitter reconnects.
//!
//! Topics: `{prefix}/devices/{device_id}/commands|replies|events|metrics|state`.
//!
//! The MQTT client does not dial the broker itself: it connects to a private Unix socket, and a
//! bridge task dials the broker (TCP, TLS when configured) and passes the bytes through
//! [`super::trim`], so a command over the size limit reaches the client as a short marker that is
//! answered and acknowledged, instead of failing the connection (and, the session being
//! persistent, every connection after it).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::link::{self, LinkError, Links};
use super::outbox::{Kind, Route};
use super::tls::{self, TlsFiles};
use super::trim::{MqttTrim, TrimStream};
use crate::config::MqttConfig;

pub struct Topics {
    pub commands: String,
    pub replies: String,
    pub events: String,
    pub metrics: String,
    pub state: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        let base = format!("{prefix}/devices/{device_id}");
        Topics {
            commands: format!("{base}/commands"),
            replies: format!("{base}/replies"),
            events: format!("{base}/events"),
            metrics: format!("{base}/metrics"),
            state: format!("{base}/state"),
        }
    }

    fn of(&self, kind: Kind) -> &str {
        match kind {
            Kind::Replies => &self.replies,
            Kind::Events => &self.events,
            Kind::Metrics => &self.metrics,
            Kind::State | Kind::Will => &self.state,
        }
    }
}

/// Full jitter: a random wait in 0..=min(max, 1 s × 2^attempt), at least 200 ms.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let cap = Duration::from_secs(1u64 << attempt.min(16)).min(max);
    Duration::from_millis(rand::thread_rng().gen_range(0..=cap.as_millis() as u64).max(200))
}

/// The wait before the next attempt: after an established connection drops, a random 0..=`drop_max`
/// first (so a fleet does not stampede a recovering broker); the backoff restarts after 30 s up.
pub fn reconnect_wait(attempt: &mut u32, up_for: Option<Duration>, max: Duration, drop_max: Duration) -> Duration {
    let mut wait = Duration::ZERO;
    if let Some(up) = up_for {
        if up >= Duration::from_secs(30) {
            *attempt = 0;
        }
        wait += Duration::from_millis(rand::thread_rng().gen_range(0..=drop_max.as_millis() as u64));
    }
    wait += backoff(*attempt, max);
    *attempt = attempt.saturating_add(1);
    wait
}

/// At most this many messages published and not yet acknowledged by the broker.
const IN_FLIGHT: usize = 200;

fn tls_files(cfg: &MqttConfig) -> Option<TlsFiles> {
    cfg.url.starts_with("mqtts://").then(|| TlsFiles {
        ca: cfg.ca_file.clone(),
        cert: cfg.cert_file.clone(),
        key: cfg.key_file.clone(),
    })
}

/// Runs the link until `shutdown`; reconnects on its own.
pub async fn run(cfg: MqttConfig, prefix: String, inbox: Arc<Inbox>, links: Links, shutdown: CancellationToken) {
    let topics = Topics::new(&prefix, inbox.device_id.as_str());
    let Some((host, port)) = host_port(&cfg.url) else {
        tracing::error!("control.mqtt.url has no host:port; the MQTT link is off");
        return;
    };
    let files = tls_files(&cfg);
    let shim = match Shim::bind() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("MQTT link: its private socket could not be made ({e}); the MQTT link is off");
            links.set(Route::Mqtt, "offline");
            return;
        }
    };
    let mut attempt = 0u32;
    while !shutdown.is_cancelled() {
        let mut opts = MqttOptions::new(inbox.device_id.clone(), shim.path.clone(), 0);
        opts.set_transport(Transport::Unix);
        opts.set_keep_alive(Duration::from_secs(cfg.keepalive_s));
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        opts.set_inflight(IN_FLIGHT as u16 + 16);
        // Anything larger reaches the client only as a marker (the bridge trims it).
        let max = inbox.max_bytes + 64 * 1024;
        opts.set_max_packet_size(max, max);
        let fingerprint = files.as_ref().map(tls::fingerprint);
        let mut tls_config = None;
        if let Some(f) = &files {
            // Read again for every connection: a renewed certificate is used without a restart.
            match tls::client_config(f) {
                Ok(c) => tls_config = Some(c),
                Err(e) => {
                    tracing::error!("MQTT link: {e}");
                    links.set(Route::Mqtt, "tls_error");
                    let wait = backoff(attempt, Duration::from_secs(cfg.reconnect_max_s));
                    attempt = attempt.saturating_add(1);
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => continue }
                }
            }
        }
        let mut bridge =
            AbortOnDrop(tokio::spawn(bridge(shim.listener.clone(), host.clone(), port, tls_config, inbox.max_bytes)));
        // The death message, signed when connecting. It takes no `seq` (it carries `after_seq`),
        // so a will signed for an attempt that failed costs nothing.
        let death = match link::state(&inbox, &links.with(Route::Mqtt, "offline"), link::Life::Will).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("the STATE message could not be made: {e}; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(5)) => continue }
            }
        };
        opts.set_last_will(LastWill::new(&topics.state, death.clone(), QoS::AtLeastOnce, true));
        links.set(Route::Mqtt, "connecting");
        let mut conn = Connection::new(opts, &topics, inbox.clone(), links.clone()).await;
        let outcome = conn.serve(&shutdown, files.as_ref(), fingerprint).await;
        match outcome {
            End::Shutdown => {
                conn.disconnect(true).await;
                links.set(Route::Mqtt, "offline");
                return;
            }
            End::Renewed(what) => {
                tracing::info!("MQTT link: {what}; reconnecting with them");
                // A clean DISCONNECT: the broker drops the will, the cloud sees no offline blip.
                conn.disconnect(false).await;
                links.set(Route::Mqtt, "reconnecting");
                continue;
            }
            End::Dropped(e) => {
                // The bridge's own failure (the broker refused TCP, TLS failed) says more than
                // the client's "connection closed".
                let e = match bridge.finished().await {
                    Some(Err(b)) => b.to_string(),
                    _ => e,
                };
                links.set(Route::Mqtt, if conn.up_since.is_some() { "reconnecting" } else { "connect_failed" });
                let wait = reconnect_wait(
                    &mut attempt,
                    conn.up_since.map(|t| t.elapsed()),
                    Duration::from_secs(cfg.reconnect_max_s),
                    Duration::from_secs(cfg.drop_delay_max_s),
                );
                tracing::warn!("MQTT link: {e}; reconnecting in {:.1} s", wait.as_secs_f64());
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
            }
        }
    }
}

enum End {
    Shutdown,
    /// Something the connection was made with changed: reconnect at once.
    Renewed(&'static str),
    Dropped(String),
}

/// One connection: its client, the event loop's events, and what is in flight.
struct Connection<'a> {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    poller: tokio::task::JoinHandle<()>,
    topics: &'a Topics,
    inbox: Arc<Inbox>,
    links: Links,
    up_since: Option<Instant>,
    /// Outbox ids of our publishes, in the order they were handed to the client (`None`: a STATE).
    queued: VecDeque<Option<i64>>,
    /// Packet id → outbox id, for publishes the broker has not acknowledged yet.
    pkids: HashMap<u16, i64>,
    in_flight: BTreeSet<i64>,
    /// The last outbox id read (handed to the client).
    read_to: i64,
    /// The last outbox id known delivered with nothing missing below it.
    delivered_to: i64,
}

impl<'a> Connection<'a> {
    async fn new(opts: MqttOptions, topics: &'a Topics, inbox: Arc<Inbox>, links: Links) -> Connection<'a> {
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        // The event loop is polled on its own task, always: publishing never waits on it.
        let (tx, events) = mpsc::channel(1024);
        let poller = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let end = ev.is_err();
                if tx.send(ev).await.is_err() || end {
                    break;
                }
            }
        });
        let cursor = inbox.outbox.cursor(Route::Mqtt).await.unwrap_or(0);
        Connection {
            client,
            events,
            poller,
            topics,
            inbox,
            links,
            up_since: None,
            queued: VecDeque::new(),
            pkids: HashMap::new(),
            in_flight: BTreeSet::new(),
            read_to: cursor,
            delivered_to: cursor,
        }
    }

    async fn serve(
        &mut self,
        shutdown: &CancellationToken,
        files: Option<&TlsFiles>,
        fingerprint: Option<Vec<Option<(std::time::SystemTime, u64)>>>,
    ) -> End {
        let mut committed = self.inbox.outbox.committed(Route::Mqtt);
        let mut tls_check = tokio::time::interval(Duration::from_secs(2));
        let mut device_keys = self.inbox.keys.changes();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                // New device keys: a new connection announces them (birth STATE, a will they sign).
                Ok(()) = device_keys.changed() => return End::Renewed("the device keys changed"),
                _ = tls_check.tick() => {
                    if let (Some(f), Some(fp)) = (files, &fingerprint) {
                        if &tls::fingerprint(f) != fp {
                            return End::Renewed("the TLS files changed");
                        }
                    }
                }
                r = committed.changed(), if self.up_since.is_some() && self.in_flight.len() < IN_FLIGHT => {
                    if r.is_err() {
                        return End::Dropped("the outbox has stopped".into());
                    }
                    if let Err(e) = self.pump().await {
                        return End::Dropped(e.to_string());
                    }
                }
                ev = self.events.recv() => match ev {
                    None => return End::Dropped("the event loop ended".into()),
                    Some(Err(e)) => return End::Dropped(e.to_string()),
                    Some(Ok(ev)) => {
                        if matches!(ev, Event::Incoming(_)) {
                            self.links.heard(Route::Mqtt);
                        }
                        if let Err(e) = self.on_event(ev).await {
                            return End::Dropped(e.to_string());
                        }
                    }
                },
            }
        }
    }

    async fn on_event(&mut self, ev: Event) -> Result<(), LinkError> {
        match ev {
            Event::Incoming(Packet::ConnAck(ack)) => {
                tracing::info!(session_present = ack.session_present, "MQTT link connected");
                self.up_since = Some(Instant::now());
                self.links.set(Route::Mqtt, "connected");
                // rumqttc does not resubscribe: a broker that lost the session needs it again.
                if !ack.session_present {
                    self.client.try_subscribe(&self.topics.commands, QoS::AtLeastOnce).map_err(LinkError::Subscribe)?;
                }
                let birth = link::state(&self.inbox, &self.links.snapshot(), link::Life::Birth).await?;
                self.publish(&self.topics.state.clone(), birth, true, None)?;
                link::report_dropped(&self.inbox).await;
                // What was not acknowledged on the last connection goes again, in order.
                self.read_to = self.delivered_to;
                self.pump().await?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topics.commands => {
                let (inbox, client) = (self.inbox.clone(), self.client.clone());
                tokio::spawn(async move {
                    match inbox.receive_retrying(&p.payload, Route::Mqtt).await {
                        // The reply is stored: now the broker may forget the command.
                        Ok(()) => {
                            let _ = client.ack(&p).await;
                        }
                        Err(e) => tracing::error!("a command could not be handled (store): {e}; left unacknowledged"),
                    }
                });
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some(id)) = self.queued.pop_front() {
                    self.pkids.insert(pkid, id);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(id) = self.pkids.remove(&ack.pkid) {
                    self.in_flight.remove(&id);
                    let to = match self.in_flight.first() {
                        Some(first) => first - 1,
                        None => self.read_to,
                    };
                    if to > self.delivered_to {
                        self.delivered_to = to;
                        self.inbox.outbox.delivered(Route::Mqtt, to);
                    }
                    self.pump().await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands the next rows of the outbox to the client, up to the in-flight limit.
    async fn pump(&mut self) -> Result<(), LinkError> {
        while self.up_since.is_some() && self.in_flight.len() < IN_FLIGHT {
            let seen = self.inbox.outbox.committed_to(Route::Mqtt);
            if seen <= self.read_to {
                return Ok(());
            }
            let room = (IN_FLIGHT - self.in_flight.len()) as i64;
            let rows = self.inbox.outbox.after(Route::Mqtt, self.read_to, room).await?;
            let full = rows.len() as i64 == room;
            for r in rows {
                let topic = self.topics.of(r.kind).to_string();
                self.publish(&topic, r.body, false, Some(r.id))?;
                self.in_flight.insert(r.id);
                self.read_to = r.id;
            }
            if !full {
                // Everything committed up to `seen` is read (rows for other transports included).
                self.read_to = self.read_to.max(seen);
                if self.in_flight.is_empty() && self.read_to > self.delivered_to {
                    self.delivered_to = self.read_to;
                    self.inbox.outbox.delivered(Route::Mqtt, self.read_to);
                }
                return Ok(());
            }
        }
        Ok(())
    }

    fn publish(&mut self, topic: &str, body: String, retain: bool, id: Option<i64>) -> Result<(), LinkError> {
        self.client.try_publish(topic, QoS::AtLeastOnce, retain, body).map_err(LinkError::Publish)?;
        self.queued.push_back(id);
        Ok(())
    }

    /// A clean end: the offline STATE (retained) when `offline`, then DISCONNECT, sent before
    /// returning.
    async fn disconnect(&mut self, offline: bool) {
        if self.up_since.is_some() {
            if offline {
                if let Ok(s) =
                    link::state(&self.inbox, &self.links.with(Route::Mqtt, "offline"), link::Life::Offline).await
                {
                    let _ = self.publish(&self.topics.state.clone(), s, true, None);
                }
            }
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = self.events.recv().await {}
            })
            .await;
        }
        self.poller.abort();
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// The private Unix socket the MQTT client dials (in a fresh 0700 directory, removed on drop).
struct Shim {
    _dir: tempfile::TempDir,
    path: String,
    listener: Arc<UnixListener>,
}

impl Shim {
    fn bind() -> std::io::Result<Shim> {
        let dir = tempfile::Builder::new().prefix("vistter-mqtt-").tempdir()?;
        let path = dir.path().join("broker.sock");
        let listener = Arc::new(UnixListener::bind(&path)?);
        Ok(Shim { path: path.to_string_lossy().into_owned(), _dir: dir, listener })
    }
}

/// A task aborted when its handle is dropped (a connection attempt's bridge ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), LinkError>>);

impl AbortOnDrop {
    /// The task's outcome if it has ended by now.
    async fn finished(&mut self) -> Option<Result<(), LinkError>> {
        if !self.0.is_finished() {
            return None;
        }
        (&mut self.0).await.ok()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection: takes the client's connection on the private socket, dials the broker and
/// passes bytes both ways, trimming oversize PUBLISHes on the way in. Ends when either side does.
async fn bridge(
    listener: Arc<UnixListener>,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_bytes: usize,
) -> Result<(), LinkError> {
    let (mut client, _) =
        listener.accept().await.map_err(|source| LinkError::Io { at: "private socket".into(), source })?;
    let at = format!("{host}:{port}");
    let tcp = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| LinkError::TimedOut(at.clone()))?
        .map_err(|source| LinkError::Io { at: at.clone(), source })?;
    // Small messages (an ACK is ~400 bytes) must not wait for Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    let done = match tls {
        None => tokio::io::copy_bidirectional(&mut client, &mut TrimStream::new(tcp, MqttTrim::new(max_bytes))).await,
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| LinkError::ServerName { host: host.clone(), reason: e.to_string() })?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|source| LinkError::Io { at: format!("{at}: TLS"), source })?;
            tokio::io::copy_bidirectional(&mut client, &mut TrimStream::new(tls, MqttTrim::new(max_bytes))).await
        }
    };
    done.map(|_| ()).map_err(|source| LinkError::Io { at, source })
}

/// The options with TCP_NODELAY on.
pub fn nodelay(mut o: rumqttc::NetworkOptions) -> rumqttc::NetworkOptions {
    o.set_tcp_nodelay(true);
    o
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
        assert_eq!(t.of(Kind::Metrics), "vistter/v1/devices/vs-1/metrics");
        for a in 0..20 {
            assert!(backoff(a, Duration::from_secs(120)) <= Duration::from_secs(120));
        }
        assert!(backoff(0, Duration::from_secs(120)) <= Duration::from_secs(1));
        let mut attempt = 5;
        let w = reconnect_wait(&mut attempt, Some(Duration::from_secs(31)), Duration::from_secs(120), Duration::ZERO);
        assert!(w <= Duration::from_secs(1) && attempt == 1, "reset after 30 s up: {w:?}");
        assert_eq!(host_port("mqtt://127.0.0.1:1884"), Some(("127.0.0.1".into(), 1884)));
        assert_eq!(host_port("mqtts://broker.example"), Some(("broker.example".into(), 8883)));
    }
}
