//! A read-only look into the store for `vistter-agent doctor`, which must change nothing.
//!
//! [`Store::open`](super::Store::open) is made for writers: it creates the data dir, the device key
//! and the database, and migrates. A look must do none of that, whoever runs it (often root, in a
//! data dir that belongs to the service's user, where a file made by root would lock the service
//! out). So [`Peek`] opens `agent.db` with SQLite's read-only flags, never creates it, and reads
//! only columns that hold no secret: nothing sealed is opened, so the device key is not needed.
//!
//! SQLite's WAL mode keeps recent writes in `agent.db-wal`, and a reader needs the `-shm` index
//! beside it. When both exist (the daemon runs, or ran and was killed) they are used as they are;
//! when they do not, the database is opened `immutable` so that no reader file is made: with no
//! `-wal` there is no write the main file lacks.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use crate::values::CameraId;

/// A configured camera as far as it can be known without its password.
#[derive(Debug, Clone)]
pub struct CameraAddress {
    pub id: CameraId,
    /// The stored RTSP URL (credentials are never stored in it).
    pub url: String,
    /// The URL as shown to people: the user, and `***` for a password if there is one.
    pub shown: String,
}

/// An open read-only connection to `agent.db`.
pub struct Peek {
    conn: Connection,
}

impl Peek {
    /// `None` when there is no database yet (nothing was ever configured).
    pub fn open(data_dir: &Path) -> Result<Option<Peek>, StoreError> {
        let db = data_dir.join("agent.db");
        match std::fs::metadata(&db) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::DataDir { path: db.display().to_string(), source }),
        }
        let readers_exist = ["agent.db-wal", "agent.db-shm"].iter().all(|f| data_dir.join(f).exists());
        let mut uri = url::Url::parse("file:///").expect("a file URL");
        uri.set_path(&db.to_string_lossy());
        uri.query_pairs_mut().append_pair("mode", "ro");
        if !readers_exist {
            uri.query_pairs_mut().append_pair("immutable", "1");
        }
        let conn = Connection::open_with_flags(
            uri.as_str(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        Ok(Some(Peek { conn }))
    }

    /// The cameras, by id, with their URLs masked for showing.
    pub fn cameras(&self) -> Result<Vec<CameraAddress>, StoreError> {
        let mut q = self.conn.prepare("SELECT id, url, username, password_enc IS NOT NULL FROM cameras ORDER BY id")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, bool>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, url, username, has_password) = row?;
            let id = super::stored_id("cameras", "id", id)?;
            let shown = super::cameras::shown_url(&url, username.as_deref(), has_password);
            out.push(CameraAddress { id, url, shown });
        }
        Ok(out)
    }

    /// Whether the status page's admin password is set (its hash is not read).
    pub fn admin_password_set(&self) -> Result<bool, StoreError> {
        Ok(self.conn.query_row("SELECT EXISTS (SELECT 1 FROM admin_password WHERE id = 1)", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peek_reads_cameras_masked_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Peek::open(dir.path()).unwrap().is_none(), "no database: nothing to read");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "and nothing was made");

        let s = super::super::Store::open(dir.path()).await.unwrap();
        s.add_camera(super::super::NewCamera {
            id: CameraId::new("cam1").unwrap(),
            url: "rtsp://admin:S3cret-pw@10.0.0.5:554/s1".into(),
            username: None,
            password: None,
            backup_camera_id: None,
            onvif_host: None,
            onvif_port: None,
        })
        .await
        .unwrap();
        s.close().await;
        let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        let p = Peek::open(dir.path()).unwrap().expect("a database");
        let cams = p.cameras().unwrap();
        assert_eq!(cams.len(), 1);
        assert_eq!(cams[0].url, "rtsp://10.0.0.5:554/s1");
        assert_eq!(cams[0].shown, "rtsp://admin:***@10.0.0.5:554/s1");
        assert!(!p.admin_password_set().unwrap());
        drop(p);
        let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before, after, "a peek leaves the data dir as it was");
    }
}
