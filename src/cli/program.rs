//! `program` and `overlay`: programs driven by hand and their overlays, through the running
//! daemon.

use super::*;

pub(super) async fn overlay(cmd: OverlayCmdArgs, cfg: &Config) -> Result<(), CliError> {
    use cmd::{OverlayAction, OverlayUpdate};
    let update = |action, program: ProgramId| OverlayUpdate {
        action,
        vars: None,
        overlay_id: None,
        overlay: None,
        program_id: Some(program),
    };
    let req = match cmd {
        OverlayCmdArgs::Show { overlay, program } => {
            let id = overlay.id.clone();
            let mut request = overlay.request()?;
            // The image is copied where the service can always read it.
            if let Some(image) = &request.image {
                let copy = crate::assets::import_file(&cfg.data_dir, image)
                    .map_err(|e| CliError::Invalid(format!("--image: {e}")))?;
                request.image = Some(copy);
            }
            OverlayUpdate { overlay_id: Some(id), overlay: Some(request), ..update(OverlayAction::Show, program) }
        }
        OverlayCmdArgs::Hide { overlay, program } => {
            OverlayUpdate { overlay_id: Some(overlay), ..update(OverlayAction::Hide, program) }
        }
        OverlayCmdArgs::SetVar { name, value, program } => OverlayUpdate {
            vars: Some([(name, value)].into_iter().collect()),
            ..update(OverlayAction::SetVars, program)
        },
        OverlayCmdArgs::Clear { program } => update(OverlayAction::ClearAll, program),
    };
    ask_daemon(cfg, &cmd::Command::OverlayUpdate(req)).await?;
    outln!("ok");
    Ok(())
}

pub(super) async fn program(args: ProgramCmdArgs, cfg: &Config) -> Result<(), CliError> {
    let p = |action, id: ProgramId| ProgramCommand::new(action, Some(id));
    let (command, json_out) = match args {
        ProgramCmdArgs::Start { cameras, destinations, profile, size, fps, bitrate, slate, ephemeral, id } => {
            let slate = slate
                .map(|s| {
                    crate::assets::import_file(&cfg.data_dir, &std::path::absolute(&s).unwrap_or(s))
                        .map_err(|e| CliError::Invalid(format!("--slate: {e}")))
                })
                .transpose()?
                .map(FilePath::new)
                .transpose()
                .map_err(|e| CliError::Invalid(format!("--slate: {e}")))?;
            let c = ProgramCommand {
                camera_ids: Some(cameras),
                destination_ids: Some(destinations),
                profile,
                size,
                fps,
                bitrate_kbps: bitrate,
                slate_image: slate,
                ephemeral: ephemeral.then_some(true),
                ..p(ProgramVerb::Start, id)
            };
            (c, false)
        }
        ProgramCmdArgs::Cut { camera, at, after, fade, id } => {
            let fade = FadeTime::from_millis(fade).map_err(|e| CliError::Invalid(format!("--fade: {e}")))?;
            let c = ProgramCommand {
                camera_id: Some(camera),
                at_s: at,
                after_s: after,
                fade_s: Some(fade),
                ..p(ProgramVerb::Cut, id)
            };
            (c, false)
        }
        ProgramCmdArgs::Slate { state, id } => {
            (ProgramCommand { on: Some(state == "on"), ..p(ProgramVerb::Slate, id) }, false)
        }
        ProgramCmdArgs::Pin { camera, id } => {
            (ProgramCommand { camera_id: Some(camera), ..p(ProgramVerb::Pin, id) }, false)
        }
        ProgramCmdArgs::Unpin { id } => (p(ProgramVerb::Unpin, id), false),
        ProgramCmdArgs::Preroll { camera, id } => {
            (ProgramCommand { camera_id: Some(camera), ..p(ProgramVerb::Preroll, id) }, false)
        }
        ProgramCmdArgs::Attach { destination, id } => {
            (ProgramCommand { destination_id: Some(destination), ..p(ProgramVerb::Attach, id) }, false)
        }
        ProgramCmdArgs::Detach { destination, id } => {
            (ProgramCommand { destination_id: Some(destination), ..p(ProgramVerb::Detach, id) }, false)
        }
        ProgramCmdArgs::Status { json, id } => (ProgramCommand::new(ProgramVerb::Status, id), json),
        ProgramCmdArgs::Stop { id } => (p(ProgramVerb::Stop, id), false),
        ProgramCmdArgs::Thumbnail { source, out, id } => {
            let c = ProgramCommand { camera_id: source, ..p(ProgramVerb::Thumbnail, id) };
            let Output::Jpeg { jpeg_base64 } = ask_daemon(cfg, &cmd::Command::Program(c)).await? else {
                return Err(CliError::Failed("the agent sent no thumbnail".into()));
            };
            use base64::Engine;
            let jpeg = base64::engine::general_purpose::STANDARD
                .decode(jpeg_base64)
                .map_err(|e| CliError::Failed(format!("bad thumbnail from the agent: {e}")))?;
            std::fs::write(&out, jpeg).map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
            outln!("{}", out.display());
            return Ok(());
        }
    };
    match ask_daemon(cfg, &cmd::Command::Program(command)).await? {
        Output::Programs { programs } if json_out => print_json(&serde_json::to_value(&programs).expect("serializes")),
        Output::Programs { programs } => {
            for p in programs {
                let st = &p.status;
                let on_air = match &st.on_air {
                    crate::media::switcher::Visual::Camera(c) => format!("camera {c}"),
                    crate::media::switcher::Visual::Slate => "slate".to_string(),
                };
                outln!(
                    "program {}: {on_air}{} · t={:.1}s · {} frames, {} dropped · encoder {} {:?}",
                    st.id,
                    if st.holding { " (holding last frame)" } else { "" },
                    st.program_time_s,
                    st.frames,
                    st.dropped_frames,
                    st.encoder_name,
                    st.encoder.phase,
                );
                for c in &st.cameras {
                    let age = c.frame_age_ms.map_or("-".to_string(), |a| a.to_string());
                    outln!("  camera {:<12} {:<9} frame age {age} ms", c.camera, format!("{:?}", c.ingest.phase));
                }
                for o in &st.outputs {
                    outln!("  → {:<14} {:?}", o.destination, o.job.phase);
                }
            }
        }
        Output::Cut { at_s } => outln!("cut at {at_s:.3} s"),
        Output::ProgramStarted { id, ephemeral: false } => {
            outln!("program {id} started (stored: it starts again after a restart, until `program stop`)")
        }
        Output::ProgramStarted { id, ephemeral: true } => {
            outln!("program {id} started (ephemeral: it is not started again after a restart)")
        }
        Output::Destinations { destinations } => outln!("destinations: {}", destinations.join(", ")),
        Output::Done => outln!("ok"),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}
