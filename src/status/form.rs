//! The status page's controls as commands: a posted form read into the same typed commands the
//! socket and the cloud send, so the page has no checks of its own. Pure (the server looks up the
//! enabled destinations first), so it can be fuzzed with arbitrary request bodies.

use serde_json::json;

use crate::command::{self, Command};

/// Why a control is not a command.
#[derive(Debug)]
pub enum ControlError {
    /// No control of that name (the server answers 404).
    Unknown,
    /// A control whose fields the command's checks refuse.
    Refused(command::Refusal),
}

impl From<command::Refusal> for ControlError {
    fn from(r: command::Refusal) -> Self {
        ControlError::Refused(r)
    }
}

/// The value of the first field called `name`.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Does `action` need the enabled destinations (a go-live that names none)?
pub fn needs_enabled(action: &str, form: &[(String, String)]) -> bool {
    action == "go-live" && field(form, "destination").is_none()
}

/// The command a control stands for. `enabled`: the enabled destinations, used by a go-live
/// that names none.
pub fn command(action: &str, form: &[(String, String)], enabled: &[String]) -> Result<Command, ControlError> {
    let (ty, payload) = match action {
        "go-live" => {
            let mut dests: Vec<&str> =
                form.iter().filter(|(k, _)| k == "destination").map(|(_, v)| v.as_str()).collect();
            if dests.is_empty() {
                dests = enabled.iter().map(String::as_str).collect();
            }
            let timeline = field(form, "timeline_id").unwrap_or_default();
            ("STREAM_CONTROL", json!({"command": "go_live", "timeline_id": timeline, "destination_ids": dests}))
        }
        "stop" => ("STREAM_CONTROL", json!({"command": "stop"})),
        "slate" => {
            let on = match field(form, "on") {
                Some("true") => true,
                Some("false") => false,
                _ => return Err(command::Refusal::field("on", "must be true or false").into()),
            };
            ("STREAM_CONTROL", json!({"command": "emergency_slate", "on": on}))
        }
        "cut" => {
            let (program, camera) = field(form, "target")
                .and_then(|t| t.split_once('|'))
                .ok_or_else(|| command::Refusal::field("target", "pick a camera"))?;
            if program == crate::timeline::director::SHOW_PROGRAM {
                ("TIMELINE_EXECUTE", json!({"action": "pin_camera", "camera_id": camera}))
            } else {
                ("PROGRAM", json!({"action": "cut", "program_id": program, "camera_id": camera}))
            }
        }
        "unpin" => ("TIMELINE_EXECUTE", json!({"action": "unpin"})),
        "clear-overlays" => ("OVERLAY_UPDATE", json!({"action": "clear_all"})),
        _ => return Err(ControlError::Unknown),
    };
    Ok(command::from_parts(ty, payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn controls_become_the_commands_the_cli_sends() {
        let enabled = vec!["yt".to_string()];
        let c = command("go-live", &form(&[("timeline_id", "marina")]), &enabled).unwrap();
        assert_eq!(c.type_name(), "STREAM_CONTROL");
        assert!(needs_enabled("go-live", &form(&[("timeline_id", "marina")])));
        assert!(!needs_enabled("go-live", &form(&[("destination", "d1")])));
        assert_eq!(command("cut", &form(&[("target", "show|cam1")]), &[]).unwrap().type_name(), "TIMELINE_EXECUTE");
        assert_eq!(command("cut", &form(&[("target", "p1|cam1")]), &[]).unwrap().type_name(), "PROGRAM");
        assert!(matches!(command("cut", &form(&[("target", "cam1")]), &[]), Err(ControlError::Refused(_))));
        assert!(matches!(command("slate", &form(&[("on", "yes")]), &[]), Err(ControlError::Refused(_))));
        assert!(matches!(command("reboot", &[], &[]), Err(ControlError::Unknown)));
        assert!(matches!(command("cut", &form(&[("target", "show|../../etc")]), &[]), Err(ControlError::Refused(_))));
    }

    proptest! {
        /// Any posted body, under any control name, is a command or a refusal: never a panic.
        #[test]
        fn any_form_is_a_command_or_a_refusal(action in "[a-z-]{0,16}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            let _ = command(&action, &pairs, &["d1".to_string()]);
        }
    }
}
