//! The status page's admin password, stored as an argon2id PHC string (never the password).

use sqlx::Row;

use super::{now, Store, StoreError};

impl Store {
    /// The stored PHC string, or `None`: no password was set and the page's controls are off.
    pub async fn admin_password(&self) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT phc FROM admin_password WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(r.map(|r| r.get("phc")))
    }

    /// Replaces the password (a PHC string made by `status::auth::hash_password`).
    pub async fn set_admin_password(&self, phc: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_password (id, phc, set_at) VALUES (1, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET phc = excluded.phc, set_at = excluded.set_at",
        )
        .bind(phc)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the password: the page's controls are off again. True if one was set.
    pub async fn clear_admin_password(&self) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM admin_password").execute(&self.pool).await?.rows_affected();
        Ok(n > 0)
    }
}
