//! `vistter-agent camera discover`: finds the ONVIF cameras on the LAN ([`crate::ptz::discover`]) and prints,
//! for each, its address, model, ONVIF endpoint and stream URLs, with the `camera add` line to paste.
//!
//! A read-only probe of the network: it changes no state, so it runs here rather than in the daemon. The
//! password (asked on the terminal, or read from standard input with `--password-stdin`) only ever goes
//! into WS-Security digests; it is never printed, and the `camera add` lines say `--password-stdin`.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use clap::Args;

use super::{print_json, read_stdin_secret, CliError};
use crate::config::Config;
use crate::ptz::discover::{self, Credentials, DiscoveredCamera, Discovery, ProbeOptions};
use crate::secret::Secret;

#[derive(Args, Debug)]
pub struct CameraDiscover {
    /// How long to wait for cameras to answer, ms.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=30_000))]
    pub wait_ms: u64,
    /// Probe from the interface with this IPv4 address (repeat for several). Default: the config's
    /// `[discovery] interfaces`, else every IPv4 interface that is up and not loopback.
    #[arg(long = "interface", value_name = "ADDRESS")]
    pub interfaces: Vec<Ipv4Addr>,
    /// ONVIF user to ask each camera for its model and stream URLs; the password is asked on the
    /// terminal (or read with --password-stdin).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn discover(a: CameraDiscover, cfg: &Config) -> Result<(), CliError> {
    let creds = match a.username {
        Some(username) => Some(Credentials { password: password(&username, a.password_stdin)?, username }),
        None => None,
    };
    let opts = ProbeOptions {
        wait: Duration::from_millis(a.wait_ms),
        target: SocketAddrV4::new(*discover::WS_DISCOVERY.ip(), cfg.discovery.port),
        interfaces: if a.interfaces.is_empty() { cfg.discovery.interfaces.clone() } else { a.interfaces },
    };
    let found = discover::discover(&opts, creds.as_ref()).await.map_err(|e| match e {
        discover::DiscoverError::Wait(_) => CliError::Invalid(e.to_string()),
        _ => CliError::Failed(e.to_string()),
    })?;
    if a.json {
        print_json(&found);
    } else {
        out!("{}", render(&found, opts.wait, creds.is_some()));
    }
    Ok(())
}

fn password(username: &str, from_stdin: bool) -> Result<Secret, CliError> {
    if from_stdin {
        return read_stdin_secret("password");
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Invalid("no terminal to ask the password on: use --password-stdin".into()));
    }
    rpassword::prompt_password(format!("Password of {username} on the cameras: "))
        .map(Secret::new)
        .map_err(|e| CliError::Failed(format!("reading the password: {e}")))
}

/// The listing for people.
pub fn render(d: &Discovery, wait: Duration, with_credentials: bool) -> String {
    let mut out = String::new();
    if d.cameras.is_empty() {
        out.push_str(&format!("no camera answered within {:.1} s\n", wait.as_secs_f64()));
    } else {
        out.push_str(&format!("{} camera(s) found\n", d.cameras.len()));
    }
    for c in &d.cameras {
        out.push('\n');
        out.push_str(&camera(c));
    }
    if d.ignored_answers > 0 {
        out.push_str(&format!(
            "\n{} answer(s) ignored (malformed, oversized or not for this probe)\n",
            d.ignored_answers
        ));
    }
    if !with_credentials && d.cameras.iter().any(|c| c.streams.is_empty()) {
        out.push_str("\ngive --username (the password is asked) to list the cameras' stream URLs\n");
    }
    out
}

fn camera(c: &DiscoveredCamera) -> String {
    let mut s = String::new();
    let make = [c.manufacturer.as_deref(), c.model.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let name = c.scopes.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
    s.push_str(&format!("{}  {}{name}\n", c.address, if make.is_empty() { "(model unknown)" } else { &make }));
    s.push_str(&format!("  endpoint: {}\n", c.endpoint));
    s.push_str(&format!("  onvif:    {}\n", c.onvif_url.as_deref().unwrap_or(&c.xaddrs.join(" "))));
    for p in &c.streams {
        let mut what = vec![p.name.clone().unwrap_or_else(|| p.profile.clone())];
        if let Some(e) = &p.encoding {
            what.push(e.clone());
        }
        if let (Some(w), Some(h)) = (p.width, p.height) {
            what.push(format!("{w}x{h}"));
        }
        s.push_str(&format!("  stream:   {}  ({})\n", p.url, what.join(", ")));
    }
    if let Some(n) = &c.note {
        s.push_str(&format!("  note:     {n}\n"));
    }
    if let Some(cmd) = &c.add_command {
        s.push_str(&format!("  add:      {cmd}\n"));
    }
    s
}
