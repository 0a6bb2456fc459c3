//! Destinations: platform, ingest URL, sealed stream key, TLS options, enabled, last used.

use serde::Serialize;
use sqlx::Row;

use super::{now, validate_id, Store, StoreError};
use crate::media::destination::{DestinationSettings, Platform};

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub id: String,
    #[serde(skip)]
    pub settings: DestinationSettings,
    pub platform: Platform,
    /// The ingest URL with the key masked.
    pub url: String,
    pub enabled: bool,
    pub last_used: Option<String>,
}

impl Store {
    pub async fn add_destination(
        &self,
        id: &str,
        s: &DestinationSettings,
        enabled: bool,
    ) -> Result<Destination, StoreError> {
        validate_id("destination", id)?;
        if self.destination(id).await.is_ok() {
            return Err(StoreError::Exists { kind: "destination", id: id.to_string() });
        }
        let sealed = self.key.seal(&s.key, &format!("destination:{id}:key"));
        sqlx::query(
            "INSERT INTO destinations (id, platform, url, stream_key_enc, backup_ingest, ca_file, tls_verify, enabled, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(s.platform.as_str())
        .bind(&s.url)
        .bind(sealed)
        .bind(s.backup_ingest)
        .bind(s.ca_file.as_ref().map(|p| p.to_string_lossy().to_string()))
        .bind(s.tls_verify)
        .bind(enabled)
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.destination(id).await
    }

    pub async fn destination(&self, id: &str) -> Result<Destination, StoreError> {
        let row = sqlx::query("SELECT * FROM destinations WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        let row = row.ok_or_else(|| StoreError::NotFound { kind: "destination", id: id.to_string() })?;
        self.destination_from_row(&row)
    }

    fn destination_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<Destination, StoreError> {
        let id: String = row.get("id");
        let platform: Platform = row
            .get::<String, _>("platform")
            .parse()
            .map_err(|e: crate::media::destination::DestinationError| StoreError::Invalid(e.to_string()))?;
        let key = self.key.open(&row.get::<Vec<u8>, _>("stream_key_enc"), &format!("destination:{id}:key"))?;
        let settings = DestinationSettings {
            platform,
            url: row.get("url"),
            key,
            backup_ingest: row.get("backup_ingest"),
            ca_file: row.get::<Option<String>, _>("ca_file").map(Into::into),
            tls_verify: row.get("tls_verify"),
        };
        Ok(Destination {
            url: settings.shown_url(),
            platform,
            settings,
            enabled: row.get("enabled"),
            last_used: row.get("last_used"),
            id,
        })
    }

    pub async fn destinations(&self) -> Result<Vec<Destination>, StoreError> {
        let rows = sqlx::query("SELECT * FROM destinations ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.destination_from_row(r)).collect()
    }

    /// Removes a destination; streams using it drop it (live pushers are stopped by the daemon).
    pub async fn remove_destination(&self, id: &str) -> Result<(), StoreError> {
        self.destination(id).await?;
        sqlx::query("DELETE FROM destinations WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn touch_destination(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE destinations SET last_used = ? WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
