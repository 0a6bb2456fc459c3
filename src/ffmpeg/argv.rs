//! FFmpeg argument lists that know which arguments are secret.
//!
//! An argument carrying a stream key or camera password is stored with a masked rendering for logs
//! (`rtmp://host/app/***`); the real value is exposed only when the process is spawned. The secrets
//! also feed the [`Redactor`] that cleans the job's stderr.

use std::fmt;

use crate::secret::{Redactor, Secret};

#[derive(Clone)]
enum Arg {
    Plain(String),
    Masked { real: Secret, shown: String },
}

#[derive(Clone, Default)]
pub struct Argv {
    args: Vec<Arg>,
    secrets: Vec<Secret>,
}

impl Argv {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(a.into()));
        self
    }

    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, it: I) -> Self {
        self.args.extend(it.into_iter().map(|a| Arg::Plain(a.into())));
        self
    }

    /// An argument containing secrets: `shown` is what logs print, `secrets` are redacted from stderr.
    #[must_use]
    pub fn masked(mut self, real: Secret, shown: impl Into<String>, secrets: &[Secret]) -> Self {
        self.args.push(Arg::Masked { real, shown: shown.into() });
        self.secrets.extend(secrets.iter().cloned());
        self
    }

    /// The real argument values, for spawning only.
    pub fn expose(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| match a {
                Arg::Plain(s) => s.clone(),
                Arg::Masked { real, .. } => real.expose().to_string(),
            })
            .collect()
    }

    pub fn redactor(&self) -> Redactor {
        let mut all: Vec<(Secret, String)> = self.secrets.iter().map(|s| (s.clone(), "***".to_string())).collect();
        for a in &self.args {
            if let Arg::Masked { real, shown } = a {
                all.push((real.clone(), shown.clone()));
            }
        }
        Redactor::with_replacements(all)
    }
}

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match a {
                Arg::Plain(s) => f.write_str(s)?,
                Arg::Masked { shown, .. } => f.write_str(shown)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Argv({self})")
    }
}

/// The options every supervised FFmpeg gets: quiet banner, no keyboard on stdin (SIGINT is the
/// graceful stop), machine-readable progress on fd 3 every half second.
pub fn common_prefix() -> Argv {
    Argv::new().args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats"]).args([
        "-progress",
        "pipe:3",
        "-stats_period",
        "0.5",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_args_never_display() {
        let key = Secret::new("abcd-1234");
        let a = Argv::new().arg("-i").masked(Secret::new("rtmp://h/app/abcd-1234"), "rtmp://h/app/***", &[key]);
        assert_eq!(a.to_string(), "-i rtmp://h/app/***");
        assert_eq!(format!("{a:?}"), "Argv(-i rtmp://h/app/***)");
        assert_eq!(a.expose(), vec!["-i", "rtmp://h/app/abcd-1234"]);
        assert_eq!(a.redactor().redact("x abcd-1234 y"), "x *** y");
    }
}
