//! The WebSocket link, the alternative to MQTT where a broker is not reachable: `wss://HOST/v1/devices/{device_id}/channel` over
//! rustls with the device's client certificate, one envelope per text frame both ways, a ping
//! every `ping_s`. Commands that come in here are answered here; telemetry goes on every link.
//!
//! WebSocket has no per-message acknowledgement: a row counts as delivered once its frame is
//! written and flushed to the socket. The birth STATE is the first frame after connecting; a clean
//! stop sends an offline STATE and a Close frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::link::{self, LinkError, Links};
use super::mqtt::reconnect_wait;
use super::outbox::Route;
use super::tls::{self, TlsFiles};
use super::trim::{TrimStream, WsTrim};
use crate::config::WsConfig;

/// Rows read from the outbox at a time.
const BATCH: i64 = 200;

/// The channel URL for this device.
pub fn channel_url(template: &str, device_id: &str) -> String {
    template.replace("{device_id}", device_id)
}

/// Runs the link until `stop`; reconnects on its own.
pub async fn run(cfg: WsConfig, inbox: Arc<Inbox>, links: Links, stop: CancellationToken) {
    let url = channel_url(&cfg.url, inbox.device_id.as_str());
    let files = TlsFiles { ca: cfg.ca_file.clone(), cert: cfg.cert_file.clone(), key: cfg.key_file.clone() };
    let (max, drop_max) = (Duration::from_secs(cfg.reconnect_max_s), Duration::from_secs(cfg.drop_delay_max_s));
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let fingerprint = tls::fingerprint(&files);
        links.set(Route::Ws, "connecting");
        let mut up_for = None;
        let outcome = match tls::client_config(&files) {
            Err(e) => Err(LinkError::from(e)),
            Ok(tls) => {
                // A message past the limit is cut short in the byte stream (`trim`): it arrives as
                // a marker that is answered, and the connection stays. The client's own limits
                // are a backstop a trimmed stream never reaches.
                let limit = Some(inbox.max_bytes + 64 * 1024);
                let ws_cfg = WebSocketConfig::default().max_message_size(limit).max_frame_size(limit);
                let connect = connect(url.clone(), tls, ws_cfg, inbox.max_bytes);
                match tokio::time::timeout(Duration::from_secs(20), connect).await {
                    Err(_) => Err(LinkError::TimedOut("connect".into())),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok((socket, _))) => {
                        let since = Instant::now();
                        let r = serve(socket, &inbox, &links, &cfg, &stop, &files, &fingerprint).await;
                        up_for = Some(since.elapsed());
                        r
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                links.set(Route::Ws, "offline");
                if stop.is_cancelled() {
                    return;
                }
                tracing::info!("WebSocket link: reconnecting with what changed");
            }
            Err(e) => {
                links.set(Route::Ws, if up_for.is_some() { "reconnecting" } else { "connect_failed" });
                let wait = reconnect_wait(&mut attempt, up_for, max, drop_max);
                tracing::warn!("WebSocket link {url}: {e}; reconnecting in {:.1} s", wait.as_secs_f64());
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<TrimStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, WsTrim>>;

/// TCP (no Nagle delay: replies are small and wanted at once), TLS with the device's
/// certificate, then the WebSocket handshake, with what the server sends read through [`WsTrim`].
async fn connect(
    url: String,
    tls: Arc<rustls::ClientConfig>,
    ws_cfg: WebSocketConfig,
    max_bytes: usize,
) -> Result<(Socket, tokio_tungstenite::tungstenite::handshake::client::Response), LinkError> {
    let u = url::Url::parse(&url).map_err(|e| LinkError::BadUrl { url: url.clone(), reason: e.to_string() })?;
    if u.scheme() != "wss" {
        return Err(LinkError::BadUrl { url, reason: "only wss:// is supported".into() });
    }
    let host = u
        .host_str()
        .ok_or_else(|| LinkError::BadUrl { url: url.clone(), reason: "no host".into() })?
        .trim_matches(['[', ']'])
        .to_string();
    let port = u.port().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| LinkError::Io { at: "connect".into(), source })?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| LinkError::ServerName { host: host.clone(), reason: e.to_string() })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| LinkError::Io { at: "connect: TLS".into(), source })?;
    tokio_tungstenite::client_async_with_config(url, TrimStream::new(stream, WsTrim::new(max_bytes)), Some(ws_cfg))
        .await
        .map_err(LinkError::Handshake)
}

/// One connection. `Ok(())`: a clean end (stop, new TLS files or device keys); `Err`: it dropped.
async fn serve(
    socket: Socket,
    inbox: &Arc<Inbox>,
    links: &Links,
    cfg: &WsConfig,
    stop: &CancellationToken,
    files: &TlsFiles,
    fingerprint: &[Option<(std::time::SystemTime, u64)>],
) -> Result<(), LinkError> {
    tracing::info!("WebSocket link connected");
    links.set(Route::Ws, "connected");
    // The handshake was the server's first word.
    links.heard(Route::Ws);
    let (mut sink, mut stream) = socket.split();
    let birth = link::state(inbox, &links.snapshot(), link::Life::Birth).await?;
    sink.send(Message::text(birth)).await?;
    link::report_dropped(inbox).await;
    let mut delivered = inbox.outbox.cursor(Route::Ws).await?;
    let mut committed = inbox.outbox.committed(Route::Ws);
    let mut ping = tokio::time::interval(Duration::from_secs(cfg.ping_s));
    ping.tick().await;
    let mut heard = Instant::now();
    let mut tls_check = tokio::time::interval(Duration::from_secs(2));
    let mut device_keys = inbox.keys.changes();
    loop {
        // Everything committed and not yet sent goes first.
        loop {
            let seen = *committed.borrow_and_update();
            if seen <= delivered {
                break;
            }
            let rows = inbox.outbox.after(Route::Ws, delivered, BATCH).await?;
            let full = rows.len() as i64 == BATCH;
            for r in rows {
                sink.feed(Message::text(r.body)).await?;
                delivered = r.id;
            }
            sink.flush().await?;
            if !full {
                delivered = delivered.max(seen);
            }
            inbox.outbox.delivered(Route::Ws, delivered);
        }
        tokio::select! {
            _ = stop.cancelled() => {
                if let Ok(s) = link::state(inbox, &links.with(Route::Ws, "offline"), link::Life::Offline).await {
                    let _ = sink.send(Message::text(s)).await;
                }
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
            _ = tls_check.tick() => {
                if tls::fingerprint(files) != fingerprint {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
            // New device keys: a new connection announces them in its birth STATE.
            Ok(()) = device_keys.changed() => {
                tracing::info!("WebSocket link: the device keys changed; reconnecting to announce them");
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
            r = committed.changed() => r.map_err(|_| LinkError::OutboxStopped)?,
            _ = ping.tick() => {
                if heard.elapsed() > Duration::from_secs(cfg.ping_s * 2) {
                    return Err(LinkError::Silent(heard.elapsed().as_secs()));
                }
                sink.send(Message::Ping(Vec::new().into())).await?;
            }
            m = stream.next() => {
                heard = Instant::now();
                links.heard(Route::Ws);
                match m {
                    None => return Err(LinkError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(t))) => {
                        let inbox = inbox.clone();
                        tokio::spawn(async move {
                            if let Err(e) = inbox.receive_retrying(t.as_bytes(), Route::Ws).await {
                                tracing::error!("a command could not be handled (store): {e}");
                            }
                        });
                    }
                    Some(Ok(Message::Binary(b))) => {
                        // One envelope per text frame: a binary frame is answered like bad JSON.
                        let inbox = inbox.clone();
                        tokio::spawn(async move {
                            let _ = inbox.receive_retrying(&b, Route::Ws).await;
                        });
                    }
                    Some(Ok(Message::Close(_))) => return Err(LinkError::Closed),
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_channel_url_names_the_device() {
        assert_eq!(
            super::channel_url("wss://studio.example/v1/devices/{device_id}/channel", "vs-1"),
            "wss://studio.example/v1/devices/vs-1/channel"
        );
    }
}
