//! Relay streams: the desired state (written by the CLI, survives restarts) and the state the daemon
//! last reported.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{id_at, now, Store, StoreError};
use crate::values::{CameraId, DestinationId, StreamId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Live,
    Stopped,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Live => "live",
            Desired::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayRow {
    pub id: StreamId,
    pub camera_id: CameraId,
    pub destinations: Vec<DestinationId>,
    pub desired: Desired,
    /// As last reported by the daemon.
    pub state: String,
    #[serde(skip)]
    pub status_json: Option<String>,
    pub updated_at: String,
}

impl Store {
    /// Creates or updates a relay stream and sets it to `desired`.
    pub async fn put_relay(
        &self,
        id: &StreamId,
        camera_id: &CameraId,
        destinations: &[DestinationId],
        desired: Desired,
    ) -> Result<(), StoreError> {
        self.camera(camera_id).await?;
        if destinations.is_empty() {
            return Err(StoreError::Invalid("a stream needs at least one destination".into()));
        }
        for d in destinations {
            self.destination(d).await?;
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO relay_streams (id, camera_id, desired, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET camera_id = excluded.camera_id, desired = excluded.desired,
             updated_at = excluded.updated_at",
        )
        .bind(id.as_str())
        .bind(camera_id.as_str())
        .bind(desired.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM relay_destinations WHERE relay_id = ?").bind(id.as_str()).execute(&mut *tx).await?;
        for d in destinations {
            sqlx::query("INSERT INTO relay_destinations (relay_id, destination_id) VALUES (?, ?)")
                .bind(id.as_str())
                .bind(d.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_relay_desired(&self, id: &StreamId, desired: Desired) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE relay_streams SET desired = ?, updated_at = ? WHERE id = ?")
            .bind(desired.as_str())
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "stream", id: id.to_string() });
        }
        Ok(())
    }

    /// Sets every stream to stopped (emergency stop); returns how many were live.
    pub async fn stop_all_relays(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE relay_streams SET desired = 'stopped', updated_at = ? WHERE desired = 'live'")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn remove_relay(&self, id: &StreamId) -> Result<(), StoreError> {
        let r = sqlx::query("DELETE FROM relay_streams WHERE id = ?").bind(id.as_str()).execute(&self.pool).await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "stream", id: id.to_string() });
        }
        Ok(())
    }

    pub async fn relays(&self) -> Result<Vec<RelayRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM relay_streams ORDER BY id").fetch_all(&self.pool).await?;
        let links = sqlx::query("SELECT relay_id, destination_id FROM relay_destinations ORDER BY destination_id")
            .fetch_all(&self.pool)
            .await?;
        let mut by_relay: HashMap<StreamId, Vec<DestinationId>> = HashMap::new();
        for l in &links {
            let d = id_at(l, "relay_destinations", "destination_id")?;
            by_relay.entry(id_at(l, "relay_destinations", "relay_id")?).or_default().push(d);
        }
        rows.iter()
            .map(|r| {
                let id: StreamId = id_at(r, "relay_streams", "id")?;
                Ok(RelayRow {
                    destinations: by_relay.remove(id.as_str()).unwrap_or_default(),
                    camera_id: id_at(r, "relay_streams", "camera_id")?,
                    desired: if r.get::<String, _>("desired") == "live" { Desired::Live } else { Desired::Stopped },
                    state: r.get("state"),
                    status_json: r.get("status_json"),
                    updated_at: r.get("updated_at"),
                    id,
                })
            })
            .collect()
    }

    pub async fn relay(&self, id: &StreamId) -> Result<RelayRow, StoreError> {
        self.relays()
            .await?
            .into_iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| StoreError::NotFound { kind: "stream", id: id.to_string() })
    }

    /// Forgets every report (at daemon start: the previous reports describe processes now gone).
    pub async fn clear_relay_reports(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE relay_streams SET state = 'stopped', status_json = NULL").execute(&self.pool).await?;
        Ok(())
    }

    /// The daemon's report; does not touch `updated_at` (that tracks the desired state).
    pub async fn report_relay(&self, id: &StreamId, state: &str, status_json: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE relay_streams SET state = ?, status_json = ? WHERE id = ?")
            .bind(state)
            .bind(status_json)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
