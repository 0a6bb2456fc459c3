//! Host names as the status server compares them, and the check of each `[status] allowed_hosts`
//! entry at config load. The status server's `Host` check (`status::host`) uses the same rule, so
//! a name the config accepts is a name the server can match.

/// The longest name DNS allows (without the trailing dot).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A bad `[status] allowed_hosts` entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostNameError {
    #[error("status.allowed_hosts: {0:?} is not a host name (letters, digits, '-', '_' and dots; no port, no scheme)")]
    Invalid(String),
}

/// A host name as it is compared: lowercase, without one trailing dot. `None` when `name` is not a
/// DNS name (labels of 1 to 63 letters, digits, `-` or `_`, not starting or ending with `-`; at
/// most 253 characters).
pub fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then(|| name.to_ascii_lowercase())
}

/// Checks one `[status] allowed_hosts` entry (config load).
pub fn check_name(name: &str) -> Result<String, HostNameError> {
    normalize(name).ok_or_else(|| HostNameError::Invalid(name.to_string()))
}
