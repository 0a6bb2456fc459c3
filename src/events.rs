//! The event sink: FFmpeg job events from every subsystem become log lines and rows of the
//! event table (the status page, the CLI's `events` and later the cloud's EVENT read them there).
//!
//! A row says what it is about from the job's typed [`JobKind`], never from its name: a program
//! camera that dies is `camera_down` with the camera id as subject, a pusher is `destination_down`
//! with the destination id, a program's encoder is `encoder_down`. The stream the job runs in
//! (`program:show`, `relay:r1`) is the row's scope, so `stream status` and `events --subject` still
//! find a stream's camera and destination events.
//!
//! [`sentence`] reads the rows back as the words people see on the status page and in the CLI.

pub mod sentence;

use tokio::sync::mpsc;

use crate::ffmpeg::job::{JobEvent, JobKind};
use crate::store::{Severity, Store};

/// One row of the event table, as the sink writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub severity: Severity,
    pub event_type: String,
    /// The stream it happened in, when that is not the subject itself.
    pub scope: Option<String>,
    pub subject: String,
    pub detail: String,
}

impl EventRow {
    /// A row about a job: `{camera,encoder,destination}_{what}`, subject the thing's id.
    fn about(kind: &JobKind, severity: Severity, what: &str, detail: String) -> EventRow {
        let detail = match kind {
            JobKind::Pusher { backup: true, .. } => format!("backup ingest: {detail}"),
            _ => detail,
        };
        EventRow {
            severity,
            event_type: format!("{}_{what}", kind.subject_kind().as_str()),
            scope: Some(kind.owner()),
            subject: kind.subject_id().to_string(),
            detail,
        }
    }
}

/// The row a job event becomes (None: it is only logged). Logs the event as a side effect.
pub fn row(ev: JobEvent) -> Option<EventRow> {
    Some(match ev {
        JobEvent::Started { job, pid, start, .. } => {
            tracing::debug!(%job, pid, start, "started");
            return None;
        }
        // pid 0: the native publisher, a task of the agent rather than a process.
        JobEvent::Healthy { job, kind, pid: 0 } => {
            tracing::info!(%job, "live (native publisher)");
            EventRow::about(&kind, Severity::Info, "up", format!("{job}: publishing"))
        }
        JobEvent::Healthy { job, kind, pid } => {
            tracing::info!(%job, pid, "live");
            EventRow::about(&kind, Severity::Info, "up", format!("{job}: pid {pid}"))
        }
        JobEvent::Failed { job, kind, reason, permanent, retry_in, failures } => {
            let sev = if permanent { Severity::Error } else { Severity::Warning };
            let detail = format!("{job}: {reason}; failure {failures}, retry in {:.1} s", retry_in.as_secs_f64());
            EventRow::about(&kind, sev, "down", detail)
        }
        JobEvent::Degraded { job, kind, failures } => {
            tracing::error!(%job, failures, "degraded: still failing, still retrying");
            EventRow::about(&kind, Severity::Error, "degraded", format!("{job}: {failures} consecutive failures"))
        }
        JobEvent::Recovered { job, kind } => EventRow::about(&kind, Severity::Info, "recovered", job),
        JobEvent::Note { job, event_type, detail, warning } => EventRow {
            severity: if warning { Severity::Warning } else { Severity::Info },
            event_type,
            scope: None,
            subject: job,
            detail,
        },
        JobEvent::Stopped { job, .. } => {
            tracing::debug!(%job, "stopped");
            return None;
        }
    })
}

/// A `*_down` row's detail read back: `[backup ingest: ]{job}: {reason}; failure {n}, retry in {s} s`,
/// as [`row`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DownDetail<'a> {
    pub backup: bool,
    pub job: &'a str,
    pub reason: &'a str,
    pub failures: u32,
    pub retry_in_s: f64,
}

/// Reads a `*_down` detail back (`None`: not in [`row`]'s shape, e.g. an older agent's row).
pub fn down_detail(detail: &str) -> Option<DownDetail<'_>> {
    let (backup, rest) = match detail.strip_prefix("backup ingest: ") {
        Some(r) => (true, r),
        None => (false, detail),
    };
    let (job, rest) = rest.split_once(": ")?;
    let (reason, tail) = rest.rsplit_once("; failure ")?;
    let (failures, retry) = tail.split_once(", retry in ")?;
    let retry_in_s: f64 = retry.strip_suffix(" s")?.parse().ok()?;
    if !retry_in_s.is_finite() || retry_in_s < 0.0 {
        return None;
    }
    Some(DownDetail { backup, job, reason, failures: failures.parse().ok()?, retry_in_s })
}

/// A `*_degraded` row's count of failures in a row (`{job}: {n} consecutive failures`).
pub fn degraded_failures(detail: &str) -> Option<u32> {
    let detail = detail.strip_prefix("backup ingest: ").unwrap_or(detail);
    detail.split_once(": ")?.1.strip_suffix(" consecutive failures")?.parse().ok()
}

/// Job events → log + event table.
pub async fn sink(store: Store, mut rx: mpsc::Receiver<JobEvent>) {
    while let Some(ev) = rx.recv().await {
        let Some(r) = row(ev) else { continue };
        if let Err(e) =
            store.add_scoped_event(r.severity, &r.event_type, r.scope.as_deref(), &r.subject, &r.detail).await
        {
            tracing::warn!("cannot record event: {e}");
        }
    }
    store.close().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(kind: JobKind) -> JobEvent {
        JobEvent::Failed {
            job: kind.to_string(),
            kind,
            reason: "ffmpeg exited (exit status: 0)".into(),
            permanent: false,
            retry_in: Duration::from_secs(2),
            failures: 1,
        }
    }

    fn healthy(kind: JobKind) -> JobEvent {
        JobEvent::Healthy { job: kind.to_string(), kind, pid: 42 }
    }

    #[test]
    fn a_dead_program_camera_is_camera_down_with_its_id() {
        let r = row(failed(JobKind::Camera {
            owner: "program:main".into(),
            camera_id: crate::values::SourceId::new("b").unwrap(),
        }))
        .unwrap();
        assert_eq!(r.event_type, "camera_down");
        assert_eq!(r.subject, "b");
        assert_eq!(r.scope.as_deref(), Some("program:main"));
        assert_eq!(r.severity, Severity::Warning);
        assert!(r.detail.contains("program:main/camera:b") && r.detail.contains("exit status: 0"), "{}", r.detail);
        let up = row(healthy(JobKind::Camera {
            owner: "program:main".into(),
            camera_id: crate::values::SourceId::new("b").unwrap(),
        }))
        .unwrap();
        assert_eq!((up.event_type.as_str(), up.subject.as_str()), ("camera_up", "b"));
    }

    #[test]
    fn a_relay_ingest_is_camera_down_with_the_camera_id_in_the_relay() {
        let r = row(failed(JobKind::RelayIngest {
            stream: crate::values::StreamId::new("r1").unwrap(),
            camera_id: crate::values::SourceId::new("cam1").unwrap(),
        }))
        .unwrap();
        assert_eq!((r.event_type.as_str(), r.subject.as_str()), ("camera_down", "cam1"));
        assert_eq!(r.scope.as_deref(), Some("relay:r1"));
    }

    #[test]
    fn a_pusher_is_destination_down_with_the_destination_id() {
        let primary = JobKind::Pusher {
            owner: "relay:r1".into(),
            destination: crate::values::DestinationId::new("yt").unwrap(),
            backup: false,
        };
        let r = row(failed(primary)).unwrap();
        assert_eq!((r.event_type.as_str(), r.subject.as_str()), ("destination_down", "yt"));
        assert_eq!(r.scope.as_deref(), Some("relay:r1"));
        let backup = JobKind::Pusher {
            owner: "program:main".into(),
            destination: crate::values::DestinationId::new("yt").unwrap(),
            backup: true,
        };
        let r = row(healthy(backup)).unwrap();
        assert_eq!((r.event_type.as_str(), r.subject.as_str()), ("destination_up", "yt"));
        assert!(r.detail.starts_with("backup ingest: "), "{}", r.detail);
    }

    #[test]
    fn an_encoder_is_encoder_down_about_its_program() {
        let k = JobKind::Encoder { owner: "program:main".into() };
        let r = row(failed(k.clone())).unwrap();
        assert_eq!((r.event_type.as_str(), r.subject.as_str()), ("encoder_down", "program:main"));
        let r = row(JobEvent::Degraded { job: k.to_string(), kind: k.clone(), failures: 10 }).unwrap();
        assert_eq!((r.event_type.as_str(), r.severity), ("encoder_degraded", Severity::Error));
        let r = row(JobEvent::Recovered { job: k.to_string(), kind: k }).unwrap();
        assert_eq!(r.event_type, "encoder_recovered");
    }

    #[test]
    fn notes_keep_their_type_and_subject_and_starts_and_stops_are_only_logged() {
        let r = row(JobEvent::Note {
            job: "program:main".into(),
            event_type: "fallback_on".into(),
            detail: "slate".into(),
            warning: true,
        })
        .unwrap();
        assert_eq!(
            r,
            EventRow {
                severity: Severity::Warning,
                event_type: "fallback_on".into(),
                scope: None,
                subject: "program:main".into(),
                detail: "slate".into()
            }
        );
        let k = JobKind::Encoder { owner: "program:main".into() };
        assert!(row(JobEvent::Started { job: k.to_string(), kind: k.clone(), pid: 1, start: 1 }).is_none());
        assert!(row(JobEvent::Stopped { job: k.to_string(), kind: k }).is_none());
    }

    #[test]
    fn down_and_degraded_details_read_back_as_they_were_written() {
        let backup = JobKind::Pusher {
            owner: "program:show".into(),
            destination: crate::values::DestinationId::new("yt").unwrap(),
            backup: true,
        };
        let mut ev = failed(backup.clone());
        if let JobEvent::Failed { reason, retry_in, failures, .. } = &mut ev {
            *reason = "connection refused; peer: gone".into();
            *retry_in = Duration::from_millis(6750);
            *failures = 3;
        }
        let r = row(ev).unwrap();
        let d = down_detail(&r.detail).expect("the writer's shape");
        assert_eq!(
            d,
            DownDetail {
                backup: true,
                job: "program:show/push:yt:backup",
                reason: "connection refused; peer: gone",
                failures: 3,
                retry_in_s: 6.8
            }
        );
        let r = row(JobEvent::Degraded { job: backup.to_string(), kind: backup, failures: 12 }).unwrap();
        assert_eq!(degraded_failures(&r.detail), Some(12));
        assert_eq!(down_detail("camera c1 went away"), None);
        assert_eq!(down_detail("j: r; failure x, retry in 2.0 s"), None);
        assert_eq!(down_detail("j: r; failure 1, retry in NaN s"), None);
        assert_eq!(degraded_failures("j: many consecutive failures"), None);
    }
}
