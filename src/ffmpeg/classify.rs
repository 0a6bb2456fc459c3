//! Sorting FFmpeg failures into "retry with backoff" and "a human must fix this".
//!
//! A permanent failure (the platform refused the stream key, the camera refused the password, the
//! URL or an option is wrong) is reported as such and retried only at the slowest pace; hammering an
//! ingest with a bad key can get a channel rate-limited, and hides the real problem from the operator.

/// Why a job failed, as far as its stderr tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// Network, peer restart, stall: retry with backoff.
    Transient,
    /// Needs a configuration change; carries a short human reason.
    Permanent { reason: String, line: String },
}

const PERMANENT: &[(&str, &str)] = &[
    ("401 unauthorized", "authentication refused (check the camera user and password)"),
    ("403 forbidden", "access forbidden (check credentials / stream key)"),
    ("404 not found", "not found (check the URL path)"),
    ("publish.badname", "publish refused by the ingest (check the stream key)"),
    ("publish.denied", "publish refused by the ingest (check the stream key)"),
    ("netconnection.connect.rejected", "connection rejected by the ingest (check the URL and key)"),
    ("authentication failed", "authentication failed"),
    ("protocol not found", "unsupported URL scheme in this FFmpeg build"),
    ("unknown encoder", "encoder not available in this FFmpeg build"),
    ("unrecognized option", "FFmpeg rejected an option (incompatible FFmpeg version)"),
    ("option not found", "FFmpeg rejected an option (incompatible FFmpeg version)"),
    ("invalid argument", "invalid argument (check the URL)"),
    ("certificate failed verification", "the ingest's TLS certificate is not trusted (check --ca-file)"),
    ("certificate verify failed", "the ingest's TLS certificate is not trusted (check --ca-file)"),
];

/// Classifies from the last stderr lines (most recent last).
pub fn classify(stderr_tail: &[String]) -> FailureKind {
    for line in stderr_tail.iter().rev().take(20) {
        let l = line.to_ascii_lowercase();
        // nginx-rtmp refuses a second publisher of a live stream; that clears when the old one leaves.
        if l.contains("already publishing") {
            return FailureKind::Transient;
        }
        for (needle, reason) in PERMANENT {
            if l.contains(needle) {
                return FailureKind::Permanent { reason: (*reason).to_string(), line: line.clone() };
            }
        }
    }
    FailureKind::Transient
}

/// Start-up hints FFmpeg prints while it analyses an input, which say nothing about why it
/// later exited (a quick start skips the analysis on purpose; see `media::ingest`).
const HINTS: &[&str] = &[
    "consider increasing the value for the 'analyzeduration'",
    "not enough frames to estimate rate",
    "could not find codec parameters for stream",
    "guessed channel layout",
];

/// The stderr line that best says why a job ended: the last one that is not a start-up hint
/// (the last line of all when every line is one; empty when there are none).
pub fn telling_line(tail: &[String]) -> String {
    let is_hint = |l: &String| {
        let l = l.to_ascii_lowercase();
        HINTS.iter().any(|h| l.contains(h))
    };
    tail.iter().rev().find(|l| !is_hint(l)).or(tail.last()).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn classifies_known_messages() {
        assert_eq!(
            classify(&lines(&["[tcp @ 0x1] Connection to tcp://127.0.0.1:1 failed: Connection refused"])),
            FailureKind::Transient
        );
        assert!(matches!(
            classify(&lines(&["[rtsp @ 0x55] method DESCRIBE failed: 401 Unauthorized"])),
            FailureKind::Permanent { reason, .. } if reason.contains("password")
        ));
        assert!(matches!(
            classify(&lines(&["Server error: NetStream.Publish.BadName"])),
            FailureKind::Permanent { .. }
        ));
        let tls = lines(&["[tls @ 0x1] Peer certificate failed verification", "rtmps://h/app/***: Input/output error"]);
        assert!(
            matches!(classify(&tls), FailureKind::Permanent { reason, line } if reason.contains("TLS") && line.contains("Peer"))
        );
        assert_eq!(classify(&lines(&["Server error: Already publishing"])), FailureKind::Transient);
        assert_eq!(classify(&[]), FailureKind::Transient);
    }

    #[test]
    fn the_telling_line_passes_over_start_up_hints() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let tail = lines(&[
            "[rtsp @ 0x1] method SETUP failed: 461 Unsupported transport",
            "[rtsp @ 0x1] Stream #0: not enough frames to estimate rate; consider increasing probesize",
            "Consider increasing the value for the 'analyzeduration' (0) and 'probesize' (32) options",
        ]);
        assert_eq!(telling_line(&tail), tail[0]);
        let hints =
            lines(&["Consider increasing the value for the 'analyzeduration' (0) and 'probesize' (32) options"]);
        assert_eq!(telling_line(&hints), hints[0], "only hints: the last one");
        assert_eq!(telling_line(&[]), "");
    }
}
