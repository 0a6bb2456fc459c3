//! An RTMP ingest written in the test, for what nginx-rtmp will not do on demand: refuse a publish
//! with an exact status code, accept TCP and then say nothing, or close in the middle of a stream.
//! It is built on `rml_rtmp`'s server session (a second implementation of the server side, beside
//! nginx-rtmp and FFmpeg's `-listen 1`). Listens on 127.0.0.1; its thread ends when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

#[derive(Debug, Clone)]
pub enum FakeMode {
    /// Accept the publish and count what arrives.
    Accept,
    /// Refuse the publish with this status code.
    Refuse(&'static str),
    /// Accept TCP, read, never answer (not even the handshake).
    Silent,
    /// Accept the publish, then close the connection after this many media messages.
    CloseAfter(u64),
}

pub struct FakeIngest {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Publishes accepted.
    pub publishes: Arc<AtomicU64>,
    /// Video messages received.
    pub video: Arc<AtomicU64>,
    /// The stream keys asked for, in order.
    pub keys: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeIngest {
    pub fn start(mode: FakeMode) -> FakeIngest {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let f = FakeIngest {
            port,
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
            publishes: Arc::default(),
            video: Arc::default(),
            keys: Arc::default(),
        };
        let (stop, conns, pubs, video, keys) =
            (f.stop.clone(), f.connections.clone(), f.publishes.clone(), f.video.clone(), f.keys.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (mode, stop, pubs, video, keys) =
                            (mode.clone(), stop.clone(), pubs.clone(), video.clone(), keys.clone());
                        std::thread::spawn(move || {
                            let _ = serve(s, mode, &stop, &pubs, &video, &keys);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        f
    }

    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }
}

impl Drop for FakeIngest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut s: TcpStream,
    mode: FakeMode,
    stop: &AtomicBool,
    pubs: &AtomicU64,
    video: &AtomicU64,
    keys: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let read = |s: &mut TcpStream, buf: &mut [u8]| -> std::io::Result<Option<usize>> {
        match s.read(buf) {
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let FakeMode::Silent = mode {
        while !stop.load(Ordering::Relaxed) {
            read(&mut s, &mut buf)?;
        }
        return Ok(());
    }
    let mut hs = Handshake::new(PeerType::Server);
    let leftover = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(n) = read(&mut s, &mut buf)? else { continue };
        match hs.process_bytes(&buf[..n]).map_err(|e| std::io::Error::other(format!("{e:?}")))? {
            HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes)?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                s.write_all(&response_bytes)?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, first) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut media = 0u64;
    let mut pending: Vec<ServerSessionResult> = first;
    let mut input = leftover;
    loop {
        if !input.is_empty() {
            pending.extend(session.handle_input(&input).map_err(|e| std::io::Error::other(format!("{e:?}")))?);
            input.clear();
        }
        while !pending.is_empty() {
            let results: Vec<ServerSessionResult> = std::mem::take(&mut pending);
            for r in results {
                match r {
                    ServerSessionResult::OutboundResponse(p) => s.write_all(&p.bytes)?,
                    ServerSessionResult::RaisedEvent(ev) => match ev {
                        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                            pending.extend(
                                session
                                    .accept_request(request_id)
                                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?,
                            );
                        }
                        ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                            keys.lock().unwrap().push(stream_key);
                            match mode {
                                FakeMode::Refuse(code) => {
                                    let out = session
                                        .reject_request(request_id, code, "the stream key is not recognised")
                                        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                                    pending.extend(out);
                                }
                                _ => {
                                    pubs.fetch_add(1, Ordering::Relaxed);
                                    pending.extend(
                                        session
                                            .accept_request(request_id)
                                            .map_err(|e| std::io::Error::other(format!("{e:?}")))?,
                                    );
                                }
                            }
                        }
                        ServerSessionEvent::VideoDataReceived { .. } => {
                            video.fetch_add(1, Ordering::Relaxed);
                            media += 1;
                        }
                        ServerSessionEvent::AudioDataReceived { .. } => media += 1,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        if let FakeMode::CloseAfter(n) = mode {
            if media >= n {
                return Ok(()); // dropping the socket closes it mid-stream
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(n) = read(&mut s, &mut buf)? {
            input.extend_from_slice(&buf[..n]);
        }
    }
}
