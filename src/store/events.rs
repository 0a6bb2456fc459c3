//! The local event log: what happened to cameras, destinations and streams, for `stream status`,
//! the status page and (later) telemetry. Bounded: old rows are pruned.

use serde::Serialize;
use sqlx::Row;

use super::{now, Store, StoreError};

/// Rows kept; older ones are deleted as new ones arrive.
const MAX_EVENTS: i64 = 10_000;
/// The oldest events beyond [`MAX_EVENTS`] go every this many events.
const TRIM_EVERY: i64 = 64;

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
    /// What the event is about: a camera id, a destination id, `program:show`, `agent`.
    pub subject: Option<String>,
    /// The stream it happened in (`program:show`, `relay:r1`) when that is not the subject itself.
    pub scope: Option<String>,
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
        self.add_scoped_event(severity, event_type, None, subject, detail).await
    }

    /// An event about `subject` (a camera id, a destination id) that happened in the stream `scope`
    /// (`program:show`, `relay:r1`): found by a filter on either.
    pub async fn add_scoped_event(
        &self,
        severity: Severity,
        event_type: &str,
        scope: Option<&str>,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        // One commit per event (the data disk is often an SD card): the trim comes once every
        // TRIM_EVERY events. Two single statements, no explicit transaction: a statement that
        // fails (a full disk) can then never leave a write transaction open behind it.
        let id = sqlx::query(
            "INSERT INTO events (at, severity, event_type, subject, scope, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(severity.as_str())
        .bind(event_type)
        .bind(subject)
        .bind(scope)
        .bind(detail)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        if id % TRIM_EVERY == 0 {
            sqlx::query("DELETE FROM events WHERE id <= ? - ?").bind(id).bind(MAX_EVENTS).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Events with an id above `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(event).collect())
    }

    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events").fetch_one(&self.pool).await?.get("m"))
    }

    /// The newest events (newest last), optionally only those whose subject or scope starts with
    /// `prefix` (`relay:r1` finds the relay's camera and destination events too).
    pub async fn events(&self, prefix: Option<&str>, limit: i64) -> Result<Vec<Event>, StoreError> {
        let like = format!("{}%", prefix.unwrap_or(""));
        let rows = sqlx::query("SELECT * FROM events WHERE subject LIKE ?1 OR scope LIKE ?1 ORDER BY id DESC LIMIT ?2")
            .bind(like)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut v: Vec<Event> = rows.iter().map(event).collect();
        v.reverse();
        Ok(v)
    }
}

fn event(r: &sqlx::sqlite::SqliteRow) -> Event {
    Event {
        id: r.get("id"),
        at: r.get("at"),
        severity: r.get("severity"),
        event_type: r.get("event_type"),
        subject: r.get("subject"),
        scope: r.get("scope"),
        detail: r.get("detail"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scoped_event_is_found_by_its_subject_and_by_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.add_scoped_event(Severity::Warning, "camera_down", Some("relay:r1"), "cam1", "gone").await.unwrap();
        store.add_scoped_event(Severity::Info, "destination_up", Some("program:main"), "yt", "").await.unwrap();
        store.add_event(Severity::Info, "stream_started", "relay:r1", "").await.unwrap();
        let types = |v: Vec<Event>| v.into_iter().map(|e| e.event_type).collect::<Vec<_>>();
        assert_eq!(types(store.events(Some("relay:r1"), 10).await.unwrap()), ["camera_down", "stream_started"]);
        assert_eq!(types(store.events(Some("cam1"), 10).await.unwrap()), ["camera_down"]);
        assert_eq!(types(store.events(Some("program:main"), 10).await.unwrap()), ["destination_up"]);
        let all = store.events(None, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].subject.as_deref(), Some("cam1"));
        assert_eq!(all[0].scope.as_deref(), Some("relay:r1"));
        assert_eq!(all[2].scope, None);
        store.close().await;
    }
}
