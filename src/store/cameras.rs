//! Cameras: RTSP URL (stored without credentials), user, sealed password, backup camera, ONVIF.

use serde::Serialize;
use sqlx::Row;

use super::{id_at, now, opt_id_at, Store, StoreError};
use crate::media::probe::CameraSource;
use crate::secret::Secret;
use crate::values::CameraId;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CameraError {
    #[error("invalid camera URL: {0}")]
    BadUrl(String),
    #[error("unsupported camera URL scheme {0:?}: use rtsp:// or rtsps://")]
    BadScheme(String),
}

/// A camera as entered.
#[derive(Debug, Clone)]
pub struct NewCamera {
    pub id: CameraId,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub backup_camera_id: Option<CameraId>,
    pub onvif_host: Option<String>,
    pub onvif_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Camera {
    pub id: CameraId,
    /// Without credentials.
    pub url: String,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<Secret>,
    pub backup_camera_id: Option<CameraId>,
    pub onvif_host: Option<String>,
    pub onvif_port: Option<u16>,
}

/// Checks an RTSP URL and splits credentials out of it (they are stored apart, sealed).
pub fn split_camera_url(input: &str) -> Result<(String, Option<String>, Option<Secret>), CameraError> {
    let mut u = url::Url::parse(input.trim()).map_err(|e| CameraError::BadUrl(e.to_string()))?;
    match u.scheme() {
        "rtsp" | "rtsps" => {}
        s => return Err(CameraError::BadScheme(s.to_string())),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(CameraError::BadUrl("no host".into()));
    }
    let user = (!u.username().is_empty()).then(|| decode(u.username()));
    let pass = u.password().map(|p| Secret::new(decode(p)));
    let _ = u.set_username("");
    let _ = u.set_password(None);
    Ok((u.to_string(), user, pass))
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

impl Camera {
    /// The URL to open (credentials inserted) and how to show it.
    pub fn source(&self) -> CameraSource {
        let mut real = url::Url::parse(&self.url).expect("validated on insert");
        if let Some(u) = &self.username {
            let _ = real.set_username(u);
        }
        let mut secrets = vec![];
        if let Some(p) = &self.password {
            let _ = real.set_password(Some(p.expose()));
            secrets.push(p.clone());
            // FFmpeg may echo the URL, where the password appears percent-encoded.
            if let Some(enc) = real.password() {
                secrets.push(Secret::new(enc));
            }
        }
        let shown = shown_url(&self.url, self.username.as_deref(), self.password.is_some());
        CameraSource::rtsp(self.id.clone(), Secret::new(real.to_string()), shown, secrets)
    }
}

/// How a camera's URL is shown to people: the stored URL (which holds no credentials) with the
/// user and, if there is a password, `***` in its place.
pub fn shown_url(url: &str, username: Option<&str>, has_password: bool) -> String {
    let Ok(mut shown) = url::Url::parse(url) else {
        return crate::logging::mask_url_passwords(url);
    };
    // Whatever the row holds, no password from it is shown.
    let _ = shown.set_password(None);
    if let Some(u) = username {
        let _ = shown.set_username(u);
    }
    if has_password {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string().replace("%2A%2A%2A", "***")
}

impl Store {
    pub async fn add_camera(&self, c: NewCamera) -> Result<Camera, StoreError> {
        let (url, url_user, url_pass) = split_camera_url(&c.url).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let username = c.username.or(url_user);
        let password = c.password.or(url_pass);
        if let Some(b) = &c.backup_camera_id {
            if b == &c.id {
                return Err(StoreError::Invalid("a camera cannot be its own backup".into()));
            }
            self.camera(b).await?;
        }
        if self.camera(&c.id).await.is_ok() {
            return Err(StoreError::Exists { kind: "camera", id: c.id.to_string() });
        }
        let sealed = password.as_ref().map(|p| self.key.seal(p, &format!("camera:{}:password", c.id)));
        sqlx::query(
            "INSERT INTO cameras (id, url, username, password_enc, backup_camera_id, onvif_host, onvif_port, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.as_str())
        .bind(&url)
        .bind(&username)
        .bind(sealed)
        .bind(c.backup_camera_id.as_ref().map(CameraId::as_str))
        .bind(&c.onvif_host)
        .bind(c.onvif_port.map(i64::from))
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.camera(&c.id).await
    }

    pub async fn camera(&self, id: &CameraId) -> Result<Camera, StoreError> {
        let row =
            sqlx::query("SELECT * FROM cameras WHERE id = ?").bind(id.as_str()).fetch_optional(&self.pool).await?;
        let row = row.ok_or_else(|| StoreError::NotFound { kind: "camera", id: id.to_string() })?;
        self.camera_from_row(&row)
    }

    fn camera_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<Camera, StoreError> {
        let id: CameraId = id_at(row, "cameras", "id")?;
        let sealed: Option<Vec<u8>> = row.get("password_enc");
        let password = match sealed {
            Some(s) => Some(self.key.open(&s, &format!("camera:{id}:password"))?),
            None => None,
        };
        Ok(Camera {
            url: row.get("url"),
            username: row.get("username"),
            password,
            backup_camera_id: opt_id_at(row, "cameras", "backup_camera_id")?,
            onvif_host: row.get("onvif_host"),
            onvif_port: row.get::<Option<i64>, _>("onvif_port").map(|p| p as u16),
            id,
        })
    }

    pub async fn cameras(&self) -> Result<Vec<Camera>, StoreError> {
        let rows = sqlx::query("SELECT * FROM cameras ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.camera_from_row(r)).collect()
    }

    pub async fn remove_camera(&self, id: &CameraId) -> Result<(), StoreError> {
        self.camera(id).await?;
        let users: Vec<String> = sqlx::query_scalar("SELECT id FROM relay_streams WHERE camera_id = ?")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "camera {id:?} is used by stream(s) {}; remove them first (stream remove)",
                users.join(", ")
            )));
        }
        sqlx::query("DELETE FROM cameras WHERE id = ?").bind(id.as_str()).execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_out_of_urls() {
        let (u, user, pass) = split_camera_url("rtsp://admin:p%40ss@10.0.0.5:554/stream1").unwrap();
        assert_eq!(u, "rtsp://10.0.0.5:554/stream1");
        assert_eq!(user.as_deref(), Some("admin"));
        assert_eq!(pass.unwrap().expose(), "p@ss");
        assert_eq!(split_camera_url("http://cam/x"), Err(CameraError::BadScheme("http".into())));
        assert!(matches!(split_camera_url("not a url"), Err(CameraError::BadUrl(_))));
        assert!(matches!(split_camera_url("rtsp://"), Err(CameraError::BadUrl(_))));
    }

    #[test]
    fn source_inserts_and_masks_credentials() {
        let c = Camera {
            id: CameraId::new("a").unwrap(),
            url: "rtsp://10.0.0.5/s".into(),
            username: Some("admin".into()),
            password: Some(Secret::new("p@ss w")),
            backup_camera_id: None,
            onvif_host: None,
            onvif_port: None,
        };
        let s = c.source();
        assert_eq!(s.input().expose(), "rtsp://admin:p%40ss%20w@10.0.0.5/s");
        assert_eq!(s.shown, "rtsp://admin:***@10.0.0.5/s");
        assert!(!format!("{c:?}").contains("p@ss"));
    }
}
