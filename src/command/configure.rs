//! `CONFIGURE` (local operator): changes to the stored configuration — cameras, destinations,
//! relay streams, timelines, schedules, PTZ presets, the status page's admin password, installed
//! segments.
//!
//! One function, [`apply`], makes every such change, with the rules of what is on air
//! ([`OnAir`]): the dispatcher calls it while the daemon runs (with what is on air now), and the
//! CLI calls it when no daemon runs (with what the store will resume). Either way a refusal
//! changes nothing. The cloud changes the same things through `CAMERA_ACTION` and `DEVICE_CONFIG`,
//! which apply the same rules; `CONFIGURE` itself is refused from any origin but the operator's,
//! because it carries secrets in the clear (over the local socket, mode 0600).

use serde::{Deserialize, Serialize};

use super::on_air::OnAir;
use super::values::{CameraId, DestinationId, PresetId, ScheduleId, StreamId, TimelineId};
use super::{ErrorCode, Output, Refusal};
use crate::config::Config;
use crate::media::destination::{DestinationInput, Platform, Publisher};
use crate::secret::Secret;
use crate::segments::manifest::SegmentId;
use crate::store::cameras::NewCamera;
use crate::store::{Desired, Store, StoreError};
use crate::timeline::model::{self, Inventory};
use crate::timeline::schedule::{self, Schedule};
use crate::trust::{Role, TrustEntry, TrustError, TrustStore};
use crate::values::KeyId;

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
    #[serde(default)]
    pub publisher: Publisher,
}

/// A destination's new stream key, ingest URL or CA file; what is not given stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationUpdate {
    pub destination_id: DestinationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<OperatorSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<Publisher>,
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
    /// Changes a destination's key, URL or CA file; the pushes using it reconnect once.
    DestinationUpdate(DestinationUpdate),
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
    /// Stores a timeline document (checked against the stored cameras and the asset folder).
    TimelineLoad {
        json: String,
        /// The folder the timeline's relative asset paths are read from.
        asset_root: std::path::PathBuf,
    },
    TimelineRemove {
        timeline_id: TimelineId,
    },
    SchedulePut {
        schedule: Schedule,
    },
    ScheduleRemove {
        schedule_id: ScheduleId,
    },
    ScheduleEnable {
        schedule_id: ScheduleId,
        enabled: bool,
    },
    PresetSet {
        camera_id: CameraId,
        preset_id: PresetId,
        token: String,
    },
    PresetRemove {
        camera_id: CameraId,
        preset_id: PresetId,
    },
    /// The status page's admin password, as an Argon2 PHC string (hashed by the CLI: the
    /// password itself never crosses the socket).
    AdminPassword {
        phc: String,
    },
    AdminPasswordClear,
    SegmentRemove {
        segment_id: SegmentId,
    },
    /// Trusts a key for the roles given (the trust store file, written under its lock).
    TrustAdd {
        key_id: KeyId,
        public_key: String,
        roles: Vec<Role>,
    },
    TrustRemove {
        key_id: KeyId,
    },
    /// Activates a version of an installed segment (the previous one when none is given).
    SegmentActivate {
        segment_id: SegmentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
}

fn invalid(field: &str, e: impl std::fmt::Display) -> Refusal {
    Refusal::field(format!("payload.{field}"), e.to_string())
}

/// Makes one change, after every check passed; `on_air` is what the rules are checked against.
/// Answers with a line for the operator.
pub async fn apply(store: &Store, cfg: &Config, on_air: &OnAir, change: Configure) -> Result<Output, Refusal> {
    let data_dir = &cfg.data_dir;
    let done = |summary: String| Ok(Output::Configured { summary });
    match change {
        Configure::CameraAdd(a) => {
            crate::store::cameras::split_camera_url(&a.url).map_err(|e| invalid("url", e))?;
            let c = store
                .add_camera(NewCamera {
                    id: a.camera_id,
                    url: a.url,
                    username: a.username,
                    password: a.password.map(|p| p.0),
                    backup_camera_id: a.backup_camera_id,
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
            store.set_camera_ptz(&camera_id, profile.as_deref(), settle_ms).await?;
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
                publisher: a.publisher,
            }
            .validate()
            .map_err(|e| Refusal::new(ErrorCode::SchemaViolation, e.to_string()))?;
            let d = store.add_destination(&a.destination_id, &settings, a.enabled).await?;
            done(format!("destination {} added: {} {}", d.id, d.platform, d.url))
        }
        Configure::DestinationUpdate(u) => {
            let d = store.destination(&u.destination_id).await?;
            let old = d.settings;
            let settings = DestinationInput {
                platform: old.platform,
                // A preset platform's ingest comes from the preset, never from a stored URL.
                url: u.url.or_else(|| old.platform.ingest_url().is_none().then(|| old.url.clone())),
                key: u.key.map_or(old.key.clone(), |k| k.0),
                backup_ingest: old.backup_ingest,
                ca_file: u.ca_file.or(old.ca_file.clone()),
                tls_verify: old.tls_verify,
                publisher: u.publisher.unwrap_or(old.publisher),
            }
            .validate()
            .map_err(|e| Refusal::new(ErrorCode::SchemaViolation, e.to_string()))?;
            let key_changed = settings.key.expose() != old.key.expose();
            let d = store.update_destination(&u.destination_id, &settings).await?;
            done(format!(
                "destination {} updated: {} {}{}",
                d.id,
                d.platform,
                d.url,
                if key_changed { " (new stream key)" } else { "" }
            ))
        }
        Configure::DestinationRemove { destination_id } => {
            remove_destination(store, on_air, &destination_id).await?;
            done(format!("destination {destination_id} removed"))
        }
        Configure::StreamStart { stream_id, camera_id, destination_ids } => {
            let id = &stream_id;
            let existing = store.relay(id).await.ok();
            let camera = match (camera_id, &existing) {
                (Some(c), _) => c,
                (None, Some(r)) => r.camera_id.clone(),
                (None, None) => return Err(invalid("camera_id", format!("stream {id} is new: give its camera"))),
            };
            let destinations: Vec<DestinationId> = match (destination_ids.is_empty(), &existing) {
                (false, _) => destination_ids,
                (true, Some(r)) => r.destinations.clone(),
                (true, None) => {
                    return Err(invalid("destination_ids", format!("stream {id} is new: give its destinations")))
                }
            };
            store.put_relay(id, &camera, &destinations, Desired::Live).await?;
            let names: Vec<&str> = destinations.iter().map(DestinationId::as_str).collect();
            done(format!("stream {id} set live: camera {camera} → {}", names.join(", ")))
        }
        Configure::StreamStop { stream_id } => {
            store.set_relay_desired(&stream_id, Desired::Stopped).await?;
            done(format!("stream {stream_id} set to stopped"))
        }
        Configure::StreamRemove { stream_id } => {
            on_air.stream_free(stream_id.as_str())?;
            store.remove_relay(&stream_id).await?;
            done(format!("stream {stream_id} removed"))
        }
        Configure::StreamAttach { stream_id, destination_id } => {
            let r = store.relay(&stream_id).await?;
            store.destination(&destination_id).await?;
            let mut ds = r.destinations.clone();
            if !ds.contains(&destination_id) {
                ds.push(destination_id.clone());
            }
            store.put_relay(&stream_id, &r.camera_id, &ds, r.desired).await?;
            done(format!("stream {stream_id}: destination {destination_id} attached"))
        }
        Configure::StreamDetach { stream_id, destination_id } => {
            let r = store.relay(&stream_id).await?;
            let ds: Vec<DestinationId> = r.destinations.iter().filter(|d| **d != destination_id).cloned().collect();
            if ds.len() == r.destinations.len() {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("stream {stream_id} does not use destination {destination_id}"),
                ));
            }
            store.put_relay(&stream_id, &r.camera_id, &ds, r.desired).await?;
            done(format!("stream {stream_id}: destination {destination_id} detached"))
        }
        Configure::TimelineLoad { json, asset_root } => {
            let inv = Inventory { cameras: store.camera_inventory().await?, asset_root: Some(asset_root.clone()) };
            let tl = model::parse(&json, &inv).map_err(|e| Refusal::new(ErrorCode::SchemaViolation, e.to_string()))?;
            let secs = tl.duration as f64 / 1e6;
            store.put_timeline(&tl.id, &tl.name, &json, Some(&asset_root.display().to_string()), secs).await?;
            done(format!(
                "timeline {} loaded ({} video cues, {secs:.1} s{})",
                tl.id,
                tl.video.len(),
                if tl.looping { ", loops" } else { "" }
            ))
        }
        Configure::TimelineRemove { timeline_id } => {
            on_air.timeline_free(timeline_id.as_str())?;
            if let Some(segment) = store.timeline_segment(&timeline_id).await? {
                return Err(StoreError::OwnedBySegment { timeline: timeline_id.to_string(), segment }.into());
            }
            store.remove_timeline(&timeline_id).await?;
            done(format!("timeline {timeline_id} removed"))
        }
        Configure::SchedulePut { schedule: s } => {
            schedule::validate(&s).map_err(|e| Refusal::new(ErrorCode::SchemaViolation, e.to_string()))?;
            for t in &s.timelines {
                store.timeline(t).await?;
            }
            for d in &s.destinations {
                store.destination(d).await?;
            }
            store.put_schedule(&s.id, &serde_json::to_string(&s).expect("serializes")).await?;
            done(format!("schedule {} saved", s.id))
        }
        Configure::ScheduleRemove { schedule_id } => {
            store.remove_schedule(&schedule_id).await?;
            done(format!("schedule {schedule_id} removed"))
        }
        Configure::ScheduleEnable { schedule_id, enabled } => {
            let id = &schedule_id;
            let (_, json) = store
                .schedules()
                .await?
                .into_iter()
                .find(|(i, _)| i == id)
                .ok_or_else(|| StoreError::NotFound { kind: "schedule", id: id.to_string() })?;
            let mut s: Schedule =
                serde_json::from_str(&json).map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?;
            s.enabled = enabled;
            store.put_schedule(id, &serde_json::to_string(&s).expect("serializes")).await?;
            done(format!("schedule {id} {}", if enabled { "enabled" } else { "disabled" }))
        }
        Configure::PresetSet { camera_id, preset_id, token } => {
            store.put_preset(&camera_id, &preset_id, &token).await?;
            done(format!("camera {camera_id}: preset {preset_id} stored"))
        }
        Configure::PresetRemove { camera_id, preset_id } => {
            store.remove_preset(&camera_id, &preset_id).await?;
            done(format!("camera {camera_id}: preset {preset_id} removed"))
        }
        Configure::AdminPassword { phc } => {
            argon2::PasswordHash::new(&phc).map_err(|e| invalid("phc", format!("not an Argon2 PHC string: {e}")))?;
            store.set_admin_password(&phc).await?;
            done("The status page's controls now need this password; sessions made with another one have ended.".into())
        }
        Configure::AdminPasswordClear => {
            let had = store.clear_admin_password().await?;
            done(if had {
                "Password removed: the status page's controls are off.".into()
            } else {
                "No password was set: the status page's controls were already off.".into()
            })
        }
        Configure::SegmentRemove { segment_id } => {
            let lib = crate::segments::library::Library::new(store.clone(), data_dir);
            if let Ok((_, timeline)) = lib.active_timeline(segment_id.as_str()).await {
                on_air.timeline_free(&timeline)?;
            }
            let n =
                lib.remove(segment_id.as_str()).await.map_err(|e| Refusal::new(ErrorCode::NotFound, e.to_string()))?;
            done(format!("segment {segment_id} removed ({n} versions)"))
        }
        Configure::SegmentActivate { segment_id, version } => {
            let lib = crate::segments::library::Library::new(store.clone(), data_dir);
            let v = lib
                .activate(segment_id.as_str(), version)
                .await
                .map_err(|e| Refusal::new(ErrorCode::NotFound, e.to_string()))?;
            done(format!("segment {segment_id}: version {v} is active"))
        }
        Configure::TrustAdd { key_id, public_key, roles } => {
            let entry = TrustEntry::new(key_id.as_str(), &public_key, &roles).map_err(trust_refusal)?;
            change_trust(cfg, move |t| t.add(entry)).await?;
            done(format!("trusted {key_id}"))
        }
        Configure::TrustRemove { key_id } => {
            let id = key_id.clone();
            change_trust(cfg, move |t| t.remove(id.as_str()).map(drop)).await?;
            done(format!("removed {key_id}"))
        }
    }
}

/// Changes the trust store through its one writer (read, change and save under the file's lock).
async fn change_trust(
    cfg: &Config,
    change: impl FnOnce(&mut TrustStore) -> Result<(), TrustError> + Send + 'static,
) -> Result<(), Refusal> {
    let path = cfg.trust_store_path();
    tokio::task::spawn_blocking(move || TrustStore::update(&path, change))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?
        .map(drop)
        .map_err(trust_refusal)
}

fn trust_refusal(e: TrustError) -> Refusal {
    let code = match e {
        TrustError::NotFound(_) => ErrorCode::NotFound,
        TrustError::Conflict(_) | TrustError::LastAdmin(_) => ErrorCode::Conflict,
        TrustError::File { .. } => ErrorCode::Failed,
        _ => ErrorCode::SchemaViolation,
    };
    Refusal::new(code, e.to_string())
}

/// Removes a camera that nothing on air uses (the rule the cloud's `CAMERA_ACTION remove` follows too).
pub async fn remove_camera(store: &Store, on_air: &OnAir, id: &CameraId) -> Result<(), Refusal> {
    on_air.camera_free(id.as_str())?;
    store.remove_camera(id).await?;
    Ok(())
}

/// Removes a destination that nothing on air pushes to.
pub async fn remove_destination(store: &Store, on_air: &OnAir, id: &DestinationId) -> Result<(), Refusal> {
    on_air.destination_free(id.as_str())?;
    store.remove_destination(id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::library::{Import, Source};
    use crate::segments::testkit::Kit;
    use crate::segments::Limits;

    fn timeline_remove(id: &str) -> Configure {
        Configure::TimelineRemove { timeline_id: TimelineId::new(id).unwrap() }
    }

    #[tokio::test]
    async fn a_segments_timeline_goes_only_with_its_segment_and_a_played_timeline_not_at_all() {
        let kit = Kit::new().await;
        let file = kit.dir.path().join("seg-1.vseg");
        kit.package("seg", 1, &file);
        let how = Import {
            trust: &kit.trust,
            device_id: "vs-test",
            now: jiff::Timestamp::now(),
            limits: Limits::default(),
            allow_downgrade: false,
            activate: true,
            source: Source::Usb("stick/seg-1.vseg".into()),
        };
        kit.library.import_file(&file, how, |_| {}).await.expect("the package installs");
        let cfg = Config { data_dir: kit.dir.path().join("data"), ..Config::default() };
        let nothing = OnAir::default();

        let e = apply(&kit.store, &cfg, &nothing, timeline_remove("tl-seg")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict, "{e}");
        assert!(e.message.contains("belongs to segment"), "{e}");
        kit.store.timeline(&TimelineId::new("tl-seg").unwrap()).await.expect("the segment's timeline is still there");

        // The show plays it: neither the timeline nor its segment may go.
        let playing = OnAir {
            users: vec![super::super::on_air::User {
                name: "the show (timeline tl-seg)".into(),
                cameras: Default::default(),
                destinations: Default::default(),
                stream: None,
                timeline: Some(TimelineId::new("tl-seg").unwrap()),
            }],
        };
        let remove_segment = Configure::SegmentRemove { segment_id: SegmentId::new("seg").unwrap() };
        let e = apply(&kit.store, &cfg, &playing, remove_segment.clone()).await.unwrap_err();
        assert!(e.message.contains("timeline tl-seg is on air"), "{e}");
        assert_eq!(kit.active("seg").await, Some(1));

        // Stopped, the segment goes with its timeline.
        apply(&kit.store, &cfg, &nothing, remove_segment).await.expect("the segment is removed");
        assert!(kit.store.timeline(&TimelineId::new("tl-seg").unwrap()).await.is_err(), "its timeline went with it");
    }
}
