//! `vistter-agent admin …`: the status page's admin password.

use std::io::{BufRead, IsTerminal, Read};

use clap::Subcommand;

use super::CliError;
use crate::command::configure::Configure;
use crate::config::Config;
use crate::status::auth::{hash_password, MAX_PASSWORD};

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Set (or change) the password of the status page's controls. Asks twice on a terminal;
    /// otherwise reads one line from standard input. Everyone logged in is logged out.
    SetPassword {
        /// Read the password from standard input even on a terminal (one line).
        #[arg(long)]
        stdin: bool,
    },
    /// Remove the password: the status page's controls are off until one is set again.
    ClearPassword,
}

pub async fn admin(cmd: AdminCmd, cfg: &Config) -> Result<(), CliError> {
    match cmd {
        AdminCmd::SetPassword { stdin } => {
            let password = if stdin || !std::io::stdin().is_terminal() {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .take((MAX_PASSWORD * 4 + 2) as u64)
                    .read_line(&mut line)
                    .map_err(|e| CliError::Failed(format!("reading the password: {e}")))?;
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                let first = rpassword::prompt_password("New admin password: ")
                    .map_err(|e| CliError::Failed(format!("reading the password: {e}")))?;
                let again = rpassword::prompt_password("Again: ")
                    .map_err(|e| CliError::Failed(format!("reading the password: {e}")))?;
                if first != again {
                    return Err(CliError::Invalid("the two passwords differ; nothing was changed".into()));
                }
                first
            };
            let phc = hash_password(&password).map_err(|e| CliError::Invalid(format!("{e}; nothing was changed")))?;
            super::configure_change(cfg, Configure::AdminPassword { phc }).await
        }
        AdminCmd::ClearPassword => super::configure_change(cfg, Configure::AdminPasswordClear).await,
    }
}
