//! The event sink: FFmpeg job events from every subsystem become log lines and rows of the
//! event table (the status page, the CLI's `events` and later the cloud's EVENT read them there).

use tokio::sync::mpsc;

use crate::ffmpeg::job::JobEvent;
use crate::store::{Severity, Store};

/// Job events → log + event table.
pub async fn sink(store: Store, mut rx: mpsc::Receiver<JobEvent>) {
    while let Some(ev) = rx.recv().await {
        let kind = |job: &str| {
            if job.ends_with("/ingest") {
                "camera"
            } else {
                "destination"
            }
        };
        let (sev, ty, subject, detail) = match ev {
            JobEvent::Started { job, pid, start } => {
                tracing::debug!(%job, pid, start, "ffmpeg started");
                continue;
            }
            JobEvent::Healthy { job, pid } => {
                tracing::info!(%job, pid, "live");
                (Severity::Info, format!("{}_up", kind(&job)), job, format!("pid {pid}"))
            }
            JobEvent::Failed { job, reason, permanent, retry_in, failures } => {
                let sev = if permanent { Severity::Error } else { Severity::Warning };
                let detail = format!("{reason}; failure {failures}, retry in {:.1} s", retry_in.as_secs_f64());
                (sev, format!("{}_down", kind(&job)), job, detail)
            }
            JobEvent::Degraded { job, failures } => {
                tracing::error!(%job, failures, "degraded: still failing, still retrying");
                (Severity::Error, "degraded".to_string(), job, format!("{failures} consecutive failures"))
            }
            JobEvent::Recovered { job } => (Severity::Info, "recovered".to_string(), job, String::new()),
            JobEvent::Note { job, event_type, detail, warning } => {
                (if warning { Severity::Warning } else { Severity::Info }, event_type, job, detail)
            }
            JobEvent::Stopped { job } => {
                tracing::debug!(%job, "stopped");
                continue;
            }
        };
        if let Err(e) = store.add_event(sev, &ty, &subject, &detail).await {
            tracing::warn!("cannot record event: {e}");
        }
    }
    store.close().await;
}
