//! `TlsFront`: stunnel terminating TLS in front of a local TCP service (an RTMPS ingest in front of
//! nginx-rtmp), with a throwaway CA made by openssl. `other_ca()` makes a CA that did not sign it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::proc::ProcGuard;

pub struct TlsFront {
    dir: tempfile::TempDir,
    port: u16,
    _proc: ProcGuard,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed P-256 CA in `dir` as `<name>.pem` / `<name>.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-noenc",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    dir.join(pem)
}

impl TlsFront {
    pub fn start(backend_port: u16) -> TlsFront {
        super::require_bin("openssl");
        super::require_bin("stunnel4");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_ca(d, "ca");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-noenc",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        let port = super::free_port();
        std::fs::write(
            d.join("stunnel.conf"),
            format!(
                "foreground = yes\npid =\n[rtmps]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend_port}\ncert = {}\nkey = {}\n",
                d.join("srv.pem").display(),
                d.join("srv.key").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("stunnel4");
        cmd.arg(d.join("stunnel.conf")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let proc = ProcGuard::spawn("stunnel4", &mut cmd);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "stunnel did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFront { dir, port, _proc: proc }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign it.
    pub fn other_ca(&self) -> PathBuf {
        let p = self.dir.path().join("other.pem");
        if !p.exists() {
            make_ca(self.dir.path(), "other");
        }
        p
    }
}
