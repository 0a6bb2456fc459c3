//! `PackageServer`: an HTTPS file server on 127.0.0.1 (rustls, the dev PKI's server certificate)
//! serving one file with HTTP Range support, the way a CDN serves packages to `TIMELINE_LOAD`.
//! It can drop the first connection halfway through the body, and records every request's Range.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::mqtt::Pki;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Whole,
    /// The first response announces the whole body, sends this many bytes, and closes.
    DropFirstAfter(u64),
}

pub struct PackageServer {
    pub port: u16,
    /// The `Range` header of each request, in order (`None`: no range).
    pub requests: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PackageServer {
    pub fn start(pki: &Pki, file: PathBuf, mode: Mode) -> PackageServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut first = true;
            while !stopping.load(Ordering::SeqCst) {
                let (tcp, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let drop_after = match (mode, first) {
                    (Mode::DropFirstAfter(n), true) => Some(n),
                    _ => None,
                };
                first = false;
                let _ = serve_one(&mut tls, &file, drop_after, &reqs);
                let _ = tls.flush();
                if drop_after.is_none() {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
            }
        });
        PackageServer { port, requests, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/package.vseg", self.port)
    }
}

impl Drop for PackageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    s: &mut (impl Read + Write),
    file: &PathBuf,
    drop_after: Option<u64>,
    reqs: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(&mut *s);
    let mut range = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Range: ").or_else(|| line.strip_prefix("range: ")) {
            range = Some(v.to_string());
        }
    }
    drop(r);
    reqs.lock().unwrap().push(range.clone());
    let body = std::fs::read(file)?;
    let total = body.len() as u64;
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let (status, start) = match from {
        Some(n) if n < total => (format!("206 Partial Content\r\nContent-Range: bytes {n}-{}/{total}", total - 1), n),
        Some(_) => {
            write!(s, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        None => ("200 OK".to_string(), 0),
    };
    let len = total - start;
    write!(s, "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n")?;
    let end = match drop_after {
        Some(n) => (start + n).min(total),
        None => total,
    };
    s.write_all(&body[start as usize..end as usize])?;
    s.flush()
}
