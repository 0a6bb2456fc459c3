//! Secrets (stream keys, camera passwords) as a type that cannot be printed.
//!
//! `Secret<String>` prints `***` through `Debug` and `Display`, so a secret that ends up in a log line,
//! an error message or CLI output is masked by construction. The only way to the value is
//! [`Secret::expose`], which is grep-able and used where the value must leave the process (an FFmpeg
//! argument, the encrypted store). Text that may echo a secret back to us (FFmpeg's stderr quotes the
//! URL it failed to open) goes through a [`Redactor`] before it is kept or logged.

use std::fmt;

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call only where it must leave the process (FFmpeg argv, encrypted store).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every known secret in a piece of text with `***`.
///
/// Secrets shorter than 4 characters are not redacted by substring (they would mangle ordinary text
/// and are rejected at input anyway).
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    /// (secret, what to print instead), longest secret first.
    secrets: Vec<(Secret, String)>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Self {
        Self::with_replacements(secrets.into_iter().map(|s| (s, "***".to_string())))
    }

    /// Secrets with their own masked rendering (a URL with a key becomes the URL with `***`).
    pub fn with_replacements(secrets: impl IntoIterator<Item = (Secret, String)>) -> Self {
        let mut secrets: Vec<(Secret, String)> = secrets.into_iter().filter(|(s, _)| s.0.len() >= 4).collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.0.len()));
        secrets.dedup_by(|a, b| a.0 == b.0);
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (s, shown) in &self.secrets {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), shown);
            }
            // FFmpeg and URL parsers may print the percent-encoded form.
            let enc = url::form_urlencoded::byte_serialize(s.expose().as_bytes()).collect::<String>();
            if enc != s.0 && out.contains(&enc) {
                out = out.replace(&enc, shown);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask() {
        let s = Secret::new("abcd-efgh-ijkl");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "abcd-efgh-ijkl");
    }

    #[test]
    fn redactor_masks_plain_and_encoded() {
        let r = Redactor::new([Secret::new("p@ss word"), Secret::new("key123")]);
        assert_eq!(r.redact("rtmp://x/app/key123: refused"), "rtmp://x/app/***: refused");
        assert_eq!(r.redact("rtsp://u:p%40ss+word@h"), "rtsp://u:***@h");
        assert_eq!(r.redact("user p@ss word"), "user ***");
        let url = Redactor::with_replacements([
            (Secret::new("rtmp://h/app/key123"), "rtmp://h/app/***".to_string()),
            (Secret::new("key123"), "***".to_string()),
        ]);
        assert_eq!(url.redact("rtmp://h/app/key123: I/O error; key123"), "rtmp://h/app/***: I/O error; ***");
    }
}
