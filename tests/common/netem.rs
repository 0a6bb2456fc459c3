//! `Impaired`: a TCP proxy on loopback that can add latency, jitter and stalls to a link, for
//! machines whose kernel has no `tc netem`. Each direction is a reader and a writer thread joined
//! by a bounded queue of chunks, each chunk released at its own time (order kept), so a peer that
//! stops reading still pushes back on the sender once about 1 MiB is queued. With no impairment it
//! only copies. A dead target closes the client's connection, as the target itself would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What the link does to each chunk of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Added to every chunk.
    pub delay: Duration,
    /// Plus a random 0..jitter (chunks never overtake each other).
    pub jitter: Duration,
    /// Chance (0..1) that a chunk is held `stall` longer: what a lost packet costs a TCP stream
    /// (a retransmission timeout).
    pub stall_chance: f64,
    pub stall: Duration,
}

pub struct Impaired {
    pub port: u16,
    now: Arc<Mutex<Impairment>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

/// xorshift64*, per direction.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn pipe(mut from: TcpStream, to: TcpStream, now: Arc<Mutex<Impairment>>, seed: u64) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(64);
    let mut out = to.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for (at, chunk) in rx {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if out.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = out.shutdown(Shutdown::Write);
    });
    let mut rng = seed | 1;
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let imp = *now.lock().unwrap_or_else(|e| e.into_inner());
        let mut hold = imp.delay;
        if !imp.jitter.is_zero() {
            hold += Duration::from_micros(next(&mut rng) % imp.jitter.as_micros().max(1) as u64);
        }
        if imp.stall_chance > 0.0 && (next(&mut rng) % 1_000_000) as f64 / 1e6 < imp.stall_chance {
            hold += imp.stall;
        }
        let at = (Instant::now() + hold).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Impaired {
    /// A proxy on 127.0.0.1 (a free port) to 127.0.0.1:`target`, passing bytes unchanged.
    pub fn start(target: u16) -> Impaired {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let now: Arc<Mutex<Impairment>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (n, s, c) = (now.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            let mut seed = u64::from(port) << 16;
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = server.set_nodelay(true);
                        let mut g = c.lock().unwrap_or_else(|e| e.into_inner());
                        // Forget connections that are gone (a peer_addr on a closed socket fails).
                        g.retain(|t: &TcpStream| t.peer_addr().is_ok());
                        g.push(client.try_clone().unwrap());
                        g.push(server.try_clone().unwrap());
                        drop(g);
                        for (a, b) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                            seed += 1;
                            let (n, sd) = (n.clone(), seed);
                            std::thread::spawn(move || pipe(a, b, n, sd));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Impaired { port, now, stop, conns }
    }

    /// From now on, chunks are treated so (`Impairment::default()`: passed unchanged).
    pub fn set(&self, imp: Impairment) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = imp;
    }
}

impl Drop for Impaired {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}
