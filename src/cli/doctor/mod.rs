//! `vistter-agent doctor`: checks what an operator of the appliance most often gets wrong and says
//! how to fix each, one line per check (`ok`, `warn` or `fail`, what was found, the fix).
//!
//! It runs before the configuration is loaded, so a missing or broken configuration is one failing
//! check among the others rather than the end of the run; the checks that need the configuration
//! are then left out. It changes nothing: the store is read through [`Peek`] (read-only, nothing
//! created), the hardware encoder verdict is read from its cache and never probed, the daemon is
//! asked only `PING`, and the status server only its status JSON. So it is safe to run as root on
//! a live appliance.
//!
//! The checks, each in the file of its concern: the configuration and the permissions of the
//! files it names, the data dir and the service's user ([`files`]); FFmpeg, its encoders and the
//! overlay font ([`host`]); the daemon, the status page, the cameras and the cloud link ([`reach`]).
//!
//! Exit codes follow the monitoring-plugin convention: 0 when every check is `ok` (or some only
//! `warn`, without `--strict`), 1 ([`EXIT_WARN`]) when one warns with `--strict`, 2 ([`EXIT_FAIL`])
//! when one fails.

mod files;
mod host;
mod reach;

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::error::EXIT_OK;
use crate::store::peek::Peek;

/// With `--strict`, a warning: the same value as [`crate::error::EXIT_FAILURE`].
pub const EXIT_WARN: i32 = 1;
/// A check failed: the same value as [`crate::error::EXIT_USAGE`] (and clap's usage errors).
pub const EXIT_FAIL: i32 = 2;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// One JSON array of {check, status, detail, fix} objects instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when a check warns (without it, warnings exit 0).
    #[arg(long)]
    pub strict: bool,
    /// The user the service runs as (default: `vistter` if that user exists, else the current
    /// user): files must be readable, and the data dir owned, by it.
    #[arg(long, value_name = "USER")]
    pub service_user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `ffmpeg`, `data dir`, `camera cam1`, …
    pub check: String,
    pub status: Status,
    /// What was found. Never a secret: URLs are shown masked.
    pub detail: String,
    /// A command or change that fixes it; `None` when nothing needs fixing.
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }
    pub fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn line(&self) -> String {
        let mut l = format!("{:<4} {}: {}", self.status.as_str(), self.check, self.detail);
        if let Some(fix) = &self.fix {
            l.push_str(" → ");
            l.push_str(fix);
        }
        l
    }
}

/// The exit code of a report (see the module doc).
#[must_use]
pub fn exit_code(checks: &[Check], strict: bool) -> i32 {
    match checks.iter().map(|c| c.status).max() {
        Some(Status::Fail) => EXIT_FAIL,
        Some(Status::Warn) if strict => EXIT_WARN,
        _ => EXIT_OK,
    }
}

/// Runs every check and prints the report; returns the exit code. `loaded` is the configuration as
/// `Config::load` gave it for `--config` (`config_flag`), error included.
pub async fn doctor(args: DoctorArgs, config_flag: Option<&Path>, loaded: Result<Config, ConfigError>) -> i32 {
    let checks = run(&args, config_flag, loaded).await;
    let text = if args.json {
        serde_json::to_string_pretty(&checks).expect("serializes") + "\n"
    } else {
        checks.iter().map(|c| c.line() + "\n").collect()
    };
    // A reader that stops early (`| head`) is not an error of the box.
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    exit_code(&checks, args.strict)
}

async fn run(args: &DoctorArgs, config_flag: Option<&Path>, loaded: Result<Config, ConfigError>) -> Vec<Check> {
    let mut checks = Vec::new();
    let (svc, svc_check) = files::ServiceUser::resolve(args.service_user.as_deref());
    checks.push(svc_check);

    // The file the configuration came from: the flag (or VISTTER_CONFIG), else the default path.
    let config_file: Option<PathBuf> = match config_flag {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Some(PathBuf::from(DEFAULT_CONFIG_PATH)),
        None => None,
    };
    checks.push(files::config_valid(config_file.as_deref(), &loaded));
    if let Some(f) = config_file.as_deref().filter(|f| f.exists()) {
        checks.push(files::config_file(f, &svc));
    }

    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(_) => {
            // Without a configuration the data dir, the cameras and the links are unknown: only
            // what does not depend on it is checked, with the built-in FFmpeg and font.
            checks.extend(host::ffmpeg(&Config::default()).await);
            checks.push(host::fonts());
            return checks;
        }
    };

    checks.extend(host::ffmpeg(&cfg).await);
    checks.push(host::fonts());
    checks.extend(files::data_dir(&cfg.data_dir, &svc));
    checks.extend(files::key_files(&cfg, &svc));

    let daemon = reach::daemon(&cfg.data_dir).await;
    let running = daemon.status == Status::Ok;
    checks.push(daemon);
    let live = if running { super::control::live_status(&cfg).await } else { None };

    let peek = match Peek::open(&cfg.data_dir) {
        Ok(p) => Ok(p),
        Err(e) => Err(e.to_string()),
    };
    checks.push(reach::status_page(&cfg, &peek, running, live.is_some()));
    checks.extend(reach::cameras(&peek).await);
    checks.extend(reach::cloud(&cfg, running, live.as_ref()));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_the_worst_status() {
        let ok = Check::ok("a", "fine");
        let warn = Check::warn("b", "hmm", "do x");
        let fail = Check::fail("c", "bad", "do y");
        assert_eq!(exit_code(&[], false), 0);
        assert_eq!(exit_code(std::slice::from_ref(&ok), true), 0);
        assert_eq!(exit_code(&[ok.clone(), warn.clone()], false), 0, "warnings pass without --strict");
        assert_eq!(exit_code(&[ok.clone(), warn.clone()], true), 1);
        assert_eq!(exit_code(&[fail.clone(), warn.clone()], true), 2);
        assert_eq!(exit_code(&[ok, fail], false), 2);
    }

    #[test]
    fn a_line_holds_the_status_the_check_the_detail_and_the_fix() {
        assert_eq!(Check::ok("ffmpeg", "5.1 with libx264, aac").line(), "ok   ffmpeg: 5.1 with libx264, aac");
        assert_eq!(
            Check::fail("data dir", "/d is owned by root", "sudo chown -R vistter: /d").line(),
            "fail data dir: /d is owned by root → sudo chown -R vistter: /d"
        );
        let json = serde_json::to_value(Check::warn("fonts", "none", "apt")).unwrap();
        assert_eq!(json, serde_json::json!({"check": "fonts", "status": "warn", "detail": "none", "fix": "apt"}));
    }
}
