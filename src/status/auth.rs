//! The status page's controls are behind a local admin password.
//!
//! - The password is stored as an argon2id PHC string (`vistter-agent admin set-password`). There
//!   is no default: with none set, the controls are off and the page says how to set one.
//! - A login makes a session: a random token in an `HttpOnly; SameSite=Strict` cookie, held in
//!   memory only (a restart logs everyone out). A session expires after 30 minutes without use
//!   and after 12 hours in any case.
//! - Each session has its own CSRF token, which every control form carries. A control is refused
//!   without the session cookie and without the matching token.
//! - Wrong passwords are slowed down per client: every wrong answer waits
//!   [`WRONG_PASSWORD_DELAY`]; after [`FREE_ATTEMPTS`] of them, the client is locked out for a
//!   doubling time (2 s, 4 s, … up to [`MAX_LOCK`]), during which even the right password is
//!   refused with 429 and `Retry-After`. A client is an IPv4 address or an IPv6 /64 (one home or
//!   one server usually owns a whole /64, so rotating addresses within it gains nothing); an
//!   IPv4-mapped IPv6 address is its IPv4 address.
//! - Guesses spread over many clients meet a bound of their own: after
//!   [`GLOBAL_FAILURES_PER_MINUTE`] wrong passwords from all clients within [`GLOBAL_WINDOW`],
//!   every login (the right password included) is refused with 429 and `Retry-After` until the
//!   oldest of them is a minute old. This caps guessing at 30 a minute whatever the attacker's
//!   address space, at the price that such an attack also keeps the admin out while it lasts. A
//!   warning is logged when the bound is reached, and not again while an attack keeps it reached.
//! - Checking a password is argon2 work (tens of milliseconds, ~19 MiB): it runs on a blocking
//!   thread, one check at a time, so logins cannot crowd out the show.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// The shortest and longest password `admin set-password` accepts (characters).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;

pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 32;

pub const WRONG_PASSWORD_DELAY: Duration = Duration::from_millis(500);
pub const FREE_ATTEMPTS: u32 = 3;
pub const MAX_LOCK: Duration = Duration::from_secs(60);
/// An address's failures are forgotten this long after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_ADDRESSES: usize = 1024;
/// Wrong passwords from all addresses together allowed in any [`GLOBAL_WINDOW`].
pub const GLOBAL_FAILURES_PER_MINUTE: usize = 30;
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(60);

pub const COOKIE: &str = "vsa_session";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD} characters long")]
    TooLong,
    #[error("the password must not contain control characters")]
    ControlCharacter,
    #[error("the password could not be hashed: {0}")]
    Hash(String),
}

/// Checks a new password and hashes it (argon2id, the crate's default cost, a random salt).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    if n > MAX_PASSWORD {
        return Err(PasswordError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::ControlCharacter);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (a broken string matches nothing).
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD * 4 {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

fn token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What the last control did, shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

struct Session {
    token: String,
    csrf: String,
    created: Instant,
    seen: Instant,
    flash: Option<Flash>,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.seen) < SESSION_IDLE && now.duration_since(self.created) < SESSION_MAX
    }
}

#[derive(Clone, Copy)]
struct Attempts {
    failures: u32,
    locked_until: Instant,
    last: Instant,
}

/// The outcome of a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The session token to set as a cookie.
    Ok(String),
    Wrong,
    /// Too many wrong passwords from this address: try again after this long.
    Locked(Duration),
    /// No password is set.
    Off,
}

/// What a request's cookie and form say about its sender.
pub struct Visitor {
    /// The session's CSRF token, when the cookie names a live session.
    pub csrf: Option<String>,
    pub flash: Option<Flash>,
}

pub struct Auth {
    sessions: Mutex<Vec<Session>>,
    /// The password the sessions were made with (its PHC string).
    password: Mutex<Option<String>>,
    /// Keyed by [`client`].
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
    recent: Mutex<Recent>,
    checking: Semaphore,
}

/// The latest wrong passwords from all clients, for the global bound.
#[derive(Default)]
struct Recent {
    /// When each came, oldest first; at most [`GLOBAL_FAILURES_PER_MINUTE`] of them.
    failures: VecDeque<Instant>,
    /// When the bound was last reached: an attack that keeps it reached is logged once.
    reached: Option<Instant>,
}

/// The client an address counts as: an IPv4 address (an IPv4-mapped IPv6 address is one), or an
/// IPv6 address's /64.
pub fn client(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            sessions: Mutex::new(Vec::new()),
            password: Mutex::new(None),
            attempts: Mutex::new(HashMap::new()),
            recent: Mutex::new(Recent::default()),
            checking: Semaphore::new(1),
        }
    }
}

impl Auth {
    /// Tries `password` (from `addr`) against the stored PHC string (`None`: no password set).
    pub async fn login(&self, addr: IpAddr, password: &str, phc: Option<String>) -> Login {
        self.password_is(phc.as_deref());
        let Some(phc) = phc else { return Login::Off };
        if let Some(wait) = self.locked(addr, Instant::now()) {
            return Login::Locked(wait);
        }
        let ok = {
            let Ok(_permit) = self.checking.acquire().await else { return Login::Wrong };
            // Asked again: attempts that queued behind others must not pass a bound those reached.
            if let Some(wait) = self.locked(addr, Instant::now()) {
                return Login::Locked(wait);
            }
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc)).await.unwrap_or(false);
            // Counted before the next check may start, so none slips past a bound this one reaches.
            if !ok {
                self.failed(addr, Instant::now());
            }
            ok
        };
        if !ok {
            tokio::time::sleep(WRONG_PASSWORD_DELAY).await;
            return Login::Wrong;
        }
        self.attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(&client(addr));
        let now = Instant::now();
        let t = token();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.live(now));
        if s.len() >= MAX_SESSIONS {
            s.sort_by_key(|x| x.seen);
            s.remove(0);
        }
        s.push(Session { token: t.clone(), csrf: token(), created: now, seen: now, flash: None });
        Login::Ok(t)
    }

    /// How long logins from `addr` are refused from `now`: its client's lock or the global bound,
    /// whichever lasts longer.
    fn locked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let own = {
            let a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            a.get(&client(addr)).and_then(|x| (x.locked_until > now).then(|| x.locked_until - now))
        };
        let global = {
            let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let f = &r.failures;
            let until = f.front().map(|t| *t + GLOBAL_WINDOW).filter(|_| f.len() >= GLOBAL_FAILURES_PER_MINUTE);
            until.and_then(|u| (u > now).then(|| u - now))
        };
        own.max(global)
    }

    fn failed(&self, addr: IpAddr, now: Instant) {
        {
            let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let f = &mut r.failures;
            while f.front().is_some_and(|t| now.saturating_duration_since(*t) >= GLOBAL_WINDOW) {
                f.pop_front();
            }
            if f.len() >= GLOBAL_FAILURES_PER_MINUTE {
                f.pop_front();
            }
            f.push_back(now);
            let reached = f.len() >= GLOBAL_FAILURES_PER_MINUTE;
            let new_attack = r.reached.is_none_or(|t| now.saturating_duration_since(t) >= GLOBAL_WINDOW);
            if reached {
                r.reached = Some(now);
            }
            if reached && new_attack {
                tracing::warn!(
                    "status page: {GLOBAL_FAILURES_PER_MINUTE} wrong admin passwords within {} s from all addresses; \
                     every login is refused until the oldest is {} s old",
                    GLOBAL_WINDOW.as_secs(),
                    GLOBAL_WINDOW.as_secs()
                );
            }
        }
        let addr = client(addr);
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|_, x| now.duration_since(x.last) < FORGET_AFTER || x.locked_until > now);
        if a.len() >= MAX_ADDRESSES && !a.contains_key(&addr) {
            // Full of addresses failing at once: the oldest is forgotten first.
            if let Some(oldest) = a.iter().min_by_key(|(_, x)| x.last).map(|(k, _)| *k) {
                a.remove(&oldest);
            }
        }
        let x = a.entry(addr).or_insert(Attempts { failures: 0, locked_until: now, last: now });
        x.failures += 1;
        x.last = now;
        if x.failures > FREE_ATTEMPTS {
            let exp = (x.failures - FREE_ATTEMPTS).min(16);
            let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCK);
            x.locked_until = now + lock;
        }
    }

    /// The visitor behind `cookie` (the request's session token, if any); a live session's idle
    /// timer restarts and its flash message is taken.
    pub fn visitor(&self, cookie: Option<&str>) -> Visitor {
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.live(now));
        match cookie.and_then(|c| s.iter_mut().find(|x| same(&x.token, c))) {
            Some(x) => {
                x.seen = now;
                Visitor { csrf: Some(x.csrf.clone()), flash: x.flash.take() }
            }
            None => Visitor { csrf: None, flash: None },
        }
    }

    /// Whether a control request may run: its cookie names a live session and its form's token is
    /// that session's CSRF token.
    pub fn allowed(&self, cookie: Option<&str>, csrf: &str) -> bool {
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.live(now));
        match cookie.and_then(|c| s.iter_mut().find(|x| same(&x.token, c))) {
            Some(x) if same(&x.csrf, csrf) => {
                x.seen = now;
                true
            }
            _ => false,
        }
    }

    pub fn flash(&self, cookie: Option<&str>, flash: Flash) {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = cookie.and_then(|c| s.iter_mut().find(|x| same(&x.token, c))) {
            x.flash = Some(flash);
        }
    }

    pub fn logout(&self, cookie: Option<&str>) {
        if let Some(c) = cookie {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).retain(|x| !same(&x.token, c));
        }
    }

    /// Tells the sessions what the stored password is now: if it changed or was removed since,
    /// every session ends.
    pub fn password_is(&self, phc: Option<&str>) {
        let mut p = self.password.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_deref() != phc {
            if p.is_some() {
                self.logout_all();
            }
            *p = phc.map(str::to_string);
        }
    }

    /// Ends every session.
    pub fn logout_all(&self) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The session token from a `Cookie` header.
pub fn session_cookie(header: Option<&str>) -> Option<&str> {
    header?.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn passwords_are_checked_hashed_and_verified() {
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
        assert_eq!(hash_password(&"x".repeat(MAX_PASSWORD + 1)), Err(PasswordError::TooLong));
        assert_eq!(hash_password("good pass\nword"), Err(PasswordError::ControlCharacter));
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsE", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        assert_eq!(session_cookie(Some("a=b; vsa_session=abc; c=d")), Some("abc"));
        assert_eq!(session_cookie(Some("vsa_sessionx=abc")), None);
        assert_eq!(session_cookie(None), None);
    }

    #[tokio::test]
    async fn wrong_passwords_lock_the_address_out_for_a_doubling_time() {
        let auth = Auth::default();
        let phc = Some(hash_password("correct horse").unwrap());
        assert_eq!(auth.login(addr(), "x", None).await, Login::Off);
        for _ in 0..FREE_ATTEMPTS {
            assert_eq!(auth.login(addr(), "wrong", phc.clone()).await, Login::Wrong);
        }
        assert_eq!(auth.login(addr(), "wrong", phc.clone()).await, Login::Wrong);
        // Locked now: even the right password is refused.
        assert!(
            matches!(auth.login(addr(), "correct horse", phc.clone()).await, Login::Locked(d) if d <= Duration::from_secs(2))
        );
        // Another address is not.
        let other = IpAddr::from([127, 0, 0, 2]);
        assert!(matches!(auth.login(other, "correct horse", phc.clone()).await, Login::Ok(_)));
        let now = Instant::now();
        auth.failed(addr(), now);
        assert!(auth.locked(addr(), now).unwrap() > Duration::from_secs(3));
        for _ in 0..20 {
            auth.failed(addr(), now);
        }
        assert!(auth.locked(addr(), now).unwrap() <= MAX_LOCK);
    }

    #[tokio::test]
    async fn a_control_needs_the_session_and_its_csrf_token() {
        let auth = Auth::default();
        let phc = Some(hash_password("correct horse").unwrap());
        let Login::Ok(t) = auth.login(addr(), "correct horse", phc).await else { panic!("login") };
        let v = auth.visitor(Some(&t));
        let csrf = v.csrf.unwrap();
        assert!(auth.allowed(Some(&t), &csrf));
        assert!(!auth.allowed(Some(&t), "forged"));
        assert!(!auth.allowed(Some(&t), ""));
        assert!(!auth.allowed(None, &csrf));
        assert!(!auth.allowed(Some("someone else's"), &csrf));
        auth.flash(Some(&t), Flash { ok: true, message: "done".into() });
        assert_eq!(auth.visitor(Some(&t)).flash.unwrap().message, "done");
        assert!(auth.visitor(Some(&t)).flash.is_none(), "shown once");
        auth.logout(Some(&t));
        assert!(!auth.allowed(Some(&t), &csrf));
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An attacker who owns a /64 sends each guess from a new address in it: the /64 is one
    /// client, locked out as one; another /64 is not.
    #[tokio::test]
    async fn ipv6_rotation_within_a_64_is_locked_out_together() {
        let auth = Auth::default();
        let phc = Some(hash_password("correct horse").unwrap());
        for i in 1..=FREE_ATTEMPTS + 1 {
            let a = v6(&format!("2001:db8:1:2::{i:x}"));
            assert_eq!(auth.login(a, "wrong", phc.clone()).await, Login::Wrong, "guess {i} from {a}");
        }
        let next = v6("2001:db8:1:2:ffff:ffff:ffff:fffe");
        assert!(
            matches!(auth.login(next, "correct horse", phc.clone()).await, Login::Locked(_)),
            "a fresh address of the same /64 is locked out too"
        );
        assert!(matches!(auth.login(v6("2001:db8:1:3::1"), "correct horse", phc.clone()).await, Login::Ok(_)));
        // An IPv4-mapped address is its IPv4 address.
        let now = Instant::now();
        for _ in 0..=FREE_ATTEMPTS {
            auth.failed(v6("::ffff:192.0.2.7"), now);
        }
        assert!(auth.locked(IpAddr::from([192, 0, 2, 7]), now).is_some(), "mapped and plain are one client");
        assert!(auth.locked(IpAddr::from([192, 0, 2, 8]), now).is_none());
    }

    /// Guesses spread over many addresses (each under the per-address bound) hit the global bound:
    /// then every login is refused, the right password from a new address included, until the
    /// window has passed.
    #[tokio::test]
    async fn a_distributed_guess_hits_the_global_bound() {
        let auth = Auth::default();
        let phc = Some(hash_password("correct horse").unwrap());
        let now = Instant::now();
        for i in 0..GLOBAL_FAILURES_PER_MINUTE - 1 {
            auth.failed(IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1]), now);
        }
        assert!(auth.locked(IpAddr::from([10, 9, 9, 9]), now).is_none(), "under the bound");
        assert_eq!(auth.login(IpAddr::from([10, 9, 9, 9]), "wrong", phc.clone()).await, Login::Wrong);
        let fresh = IpAddr::from([198, 51, 100, 1]);
        match auth.login(fresh, "correct horse", phc.clone()).await {
            Login::Locked(wait) => assert!(wait <= GLOBAL_WINDOW && wait > Duration::from_secs(50), "{wait:?}"),
            other => panic!("the right password from a fresh address: {other:?}"),
        }
        assert!(matches!(auth.login(v6("2001:db8:9::1"), "correct horse", phc.clone()).await, Login::Locked(_)));
        // Once the window has passed, logins are answered again.
        let later = Instant::now() + GLOBAL_WINDOW + Duration::from_millis(1);
        assert!(auth.locked(fresh, later).is_none(), "the bound lasts one window");
    }
}
