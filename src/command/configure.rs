//! `CONFIGURE` (local operator): changes to the stored configuration — cameras, destinations,
//! relay streams.
//!
//! One function, [`apply`], makes every such change, with the rules of what is on air
//! ([`OnAir`]): the dispatcher calls it while the daemon runs (with what is on air now), and the
//! CLI calls it when no daemon runs (with what the store will resume). Either way a refusal
//! changes nothing. The cloud changes the same things through `CAMERA_ACTION` and `DEVICE_CONFIG`,
//! which apply the same rules; `CONFIGURE` itself is refused from any origin but the operator's,
//! because it carries secrets in the clear (over the local socket, mode 0600).

use serde::{Deserialize, Serialize};

use super::on_air::OnAir;
use super::values::{CameraId, DestinationId, StreamId};
use super::{ErrorCode, Output, Refusal};
use crate::media::destination::{DestinationInput, Platform};
use crate::secret::Secret;
use crate::store::cameras::NewCamera;
use crate::store::{Desired, Store};

/// A secret the operator typed, on its way over the local socket (the one place it is serialized
/// in the clear; `Debug` still prints `***`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct OperatorSecret(pub Secret);

impl Serialize for OperatorSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

/// A camera as the operator adds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraAdd {
    pub camera_id: CameraId,
    /// `rtsp://` or `rtsps://`; credentials in it are split out and sealed.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<OperatorSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_camera_id: Option<CameraId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif_port: Option<u16>,
}

/// A destination as the operator adds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationAdd {
    pub destination_id: DestinationId,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub key: OperatorSecret,
    #[serde(default)]
    pub backup_ingest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "yes")]
    pub tls_verify: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Every configuration change, tagged by `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Configure {
    CameraAdd(CameraAdd),
    CameraRemove {
        camera_id: CameraId,
    },
    CameraPtz {
        camera_id: CameraId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settle_ms: Option<u64>,
    },
    DestinationAdd(DestinationAdd),
    DestinationRemove {
        destination_id: DestinationId,
    },
    /// Sets a relay stream live (creating it, or changing its camera or destinations).
    StreamStart {
        stream_id: StreamId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        camera_id: Option<CameraId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        destination_ids: Vec<DestinationId>,
    },
    StreamStop {
        stream_id: StreamId,
    },
    StreamRemove {
        stream_id: StreamId,
    },
    StreamAttach {
        stream_id: StreamId,
        destination_id: DestinationId,
    },
    StreamDetach {
        stream_id: StreamId,
        destination_id: DestinationId,
    },
}

fn invalid(field: &str, e: impl std::fmt::Display) -> Refusal {
    Refusal::field(format!("payload.{field}"), e.to_string())
}

/// Makes one change, after every check passed; `on_air` is what the rules are checked against.
/// Answers with a line for the operator.
pub async fn apply(store: &Store, on_air: &OnAir, change: Configure) -> Result<Output, Refusal> {
    let done = |summary: String| Ok(Output::Configured { summary });
    match change {
        Configure::CameraAdd(a) => {
            crate::store::cameras::split_camera_url(&a.url).map_err(|e| invalid("url", e))?;
            let c = store
                .add_camera(NewCamera {
                    id: a.camera_id.to_string(),
                    url: a.url,
                    username: a.username,
                    password: a.password.map(|p| p.0),
                    backup_camera_id: a.backup_camera_id.map(String::from),
                    onvif_host: a.onvif_host,
                    onvif_port: a.onvif_port,
                })
                .await?;
            done(format!("camera {} added: {}", c.id, c.source().shown))
        }
        Configure::CameraRemove { camera_id } => {
            remove_camera(store, on_air, &camera_id).await?;
            done(format!("camera {camera_id} removed"))
        }
        Configure::CameraPtz { camera_id, profile, settle_ms } => {
            store.set_camera_ptz(camera_id.as_str(), profile.as_deref(), settle_ms).await?;
            done(format!("camera {camera_id}: PTZ settings stored"))
        }
        Configure::DestinationAdd(a) => {
            let platform: Platform = a.platform.parse().map_err(|e| invalid("platform", e))?;
            let settings = DestinationInput {
                platform,
                url: a.url,
                key: a.key.0,
                backup_ingest: a.backup_ingest,
                ca_file: a.ca_file,
                tls_verify: a.tls_verify,
            }
            .validate()
            .map_err(|e| Refusal::new(ErrorCode::SchemaViolation, e.to_string()))?;
            let d = store.add_destination(a.destination_id.as_str(), &settings, a.enabled).await?;
            done(format!("destination {} added: {} {}", d.id, d.platform, d.url))
        }
        Configure::DestinationRemove { destination_id } => {
            remove_destination(store, on_air, &destination_id).await?;
            done(format!("destination {destination_id} removed"))
        }
        Configure::StreamStart { stream_id, camera_id, destination_ids } => {
            let id = stream_id.as_str();
            let existing = store.relay(id).await.ok();
            let camera = match (camera_id, &existing) {
                (Some(c), _) => c.to_string(),
                (None, Some(r)) => r.camera_id.clone(),
                (None, None) => return Err(invalid("camera_id", format!("stream {id} is new: give its camera"))),
            };
            let destinations: Vec<String> = match (destination_ids.is_empty(), &existing) {
                (false, _) => destination_ids.iter().map(ToString::to_string).collect(),
                (true, Some(r)) => r.destinations.clone(),
                (true, None) => {
                    return Err(invalid("destination_ids", format!("stream {id} is new: give its destinations")))
                }
            };
            store.put_relay(id, &camera, &destinations, Desired::Live).await?;
            done(format!("stream {id} set live: camera {camera} → {}", destinations.join(", ")))
        }
        Configure::StreamStop { stream_id } => {
            store.set_relay_desired(stream_id.as_str(), Desired::Stopped).await?;
            done(format!("stream {stream_id} set to stopped"))
        }
        Configure::StreamRemove { stream_id } => {
            on_air.stream_free(stream_id.as_str())?;
            store.remove_relay(stream_id.as_str()).await?;
            done(format!("stream {stream_id} removed"))
        }
        Configure::StreamAttach { stream_id, destination_id } => {
            let r = store.relay(stream_id.as_str()).await?;
            store.destination(destination_id.as_str()).await?;
            let mut ds = r.destinations.clone();
            if !ds.iter().any(|d| d.as_str() == destination_id.as_str()) {
                ds.push(destination_id.to_string());
            }
            store.put_relay(stream_id.as_str(), &r.camera_id, &ds, r.desired).await?;
            done(format!("stream {stream_id}: destination {destination_id} attached"))
        }
        Configure::StreamDetach { stream_id, destination_id } => {
            let r = store.relay(stream_id.as_str()).await?;
            let ds: Vec<String> =
                r.destinations.iter().filter(|d| d.as_str() != destination_id.as_str()).cloned().collect();
            if ds.len() == r.destinations.len() {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("stream {stream_id} does not use destination {destination_id}"),
                ));
            }
            store.put_relay(stream_id.as_str(), &r.camera_id, &ds, r.desired).await?;
            done(format!("stream {stream_id}: destination {destination_id} detached"))
        }
    }
}

/// Removes a camera that nothing on air uses (the rule the cloud's `CAMERA_ACTION remove` follows too).
pub async fn remove_camera(store: &Store, on_air: &OnAir, id: &CameraId) -> Result<(), Refusal> {
    on_air.camera_free(id.as_str())?;
    store.remove_camera(id.as_str()).await?;
    Ok(())
}

/// Removes a destination that nothing on air pushes to.
pub async fn remove_destination(store: &Store, on_air: &OnAir, id: &DestinationId) -> Result<(), Refusal> {
    on_air.destination_free(id.as_str())?;
    store.remove_destination(id.as_str()).await?;
    Ok(())
}
