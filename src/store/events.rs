//! The local event log: what happened to cameras, destinations and streams, for `stream status`,
//! the status page and (later) telemetry. Bounded: old rows are pruned.

use serde::Serialize;
use sqlx::Row;

use super::{now, Store, StoreError};

/// Rows kept; older ones are deleted as new ones arrive.
const MAX_EVENTS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub severity: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub detail: Option<String>,
}

impl Store {
    pub async fn add_event(
        &self,
        severity: Severity,
        event_type: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO events (at, severity, event_type, subject, detail) VALUES (?, ?, ?, ?, ?)")
            .bind(now())
            .bind(severity.as_str())
            .bind(event_type)
            .bind(subject)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?")
            .bind(MAX_EVENTS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest events (newest last), optionally only those whose subject starts with `prefix`.
    pub async fn events(&self, prefix: Option<&str>, limit: i64) -> Result<Vec<Event>, StoreError> {
        let like = format!("{}%", prefix.unwrap_or(""));
        let rows = sqlx::query("SELECT * FROM events WHERE subject LIKE ? ORDER BY id DESC LIMIT ?")
            .bind(like)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut v: Vec<Event> = rows
            .iter()
            .map(|r| Event {
                id: r.get("id"),
                at: r.get("at"),
                severity: r.get("severity"),
                event_type: r.get("event_type"),
                subject: r.get("subject"),
                detail: r.get("detail"),
            })
            .collect();
        v.reverse();
        Ok(v)
    }
}
