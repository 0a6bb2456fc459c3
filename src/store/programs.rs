//! The operator programs to run: each one's start command (JSON), its destinations kept current.

use sqlx::Row;

use super::{now, Store, StoreError};

impl Store {
    /// Stores (or replaces) what starts program `id` again after a restart.
    pub async fn put_program(&self, id: &str, start_json: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO programs (id, start, updated_at) VALUES (?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET start = excluded.start, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(start_json)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets program `id`; true when it was stored.
    pub async fn remove_program(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM programs WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Forgets every program (kill-all).
    pub async fn remove_programs(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM programs").execute(&self.pool).await?;
        Ok(())
    }

    /// The stored programs: `(id, start command JSON)`, by id.
    pub async fn programs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, start FROM programs ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("start"))).collect())
    }
}
