//! HTTP authentication as cameras ask for it: reading `WWW-Authenticate` challenges, and answering a
//! Digest one (RFC 7616).
//!
//! How it works: [`parse_challenges`] reads one header value into the challenges it holds (a camera may offer
//! `Digest …` and `Basic …` side by side, in one header or several). It is a small tokenizer over the value —
//! tokens, quoted strings with `\` escapes, `=` and `,` — that never slices inside a character, caps the value
//! at [`MAX_CHALLENGE`] bytes and the number of parameters, and answers anything it cannot read with an error
//! that names the problem but never repeats the value (it holds the server's nonce). A [`DigestChallenge`] is
//! then answered by a [`DigestSession`], which hands the computation to the `digest_auth` crate (MD5,
//! SHA-256, SHA-512-256 and their `-sess` forms; `qop=auth`, or `auth-int` when that is all the camera offers,
//! or RFC 2069 without a qop): the session keeps the server nonce and counts `nc` up with each request, and the
//! crate draws a fresh random cnonce for every answer. A `stale=true` challenge is the camera saying the nonce
//! expired but the credentials were right: the caller starts a new session from it and retries once.
//!
//! Neither the nonce nor the computed response is ever in `Debug` output or an error.

use std::fmt;

/// Longest `WWW-Authenticate` value read. Real ones are 100–300 bytes.
pub const MAX_CHALLENGE: usize = 4096;
/// More parameters than this in one value is not a camera talking.
const MAX_PARAMS: usize = 32;

/// Hash function of a Digest challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
    Sha512_256,
}

/// Which quality of protection the answer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestQop {
    /// `qop=auth`: the usual, preferred whenever offered.
    Auth,
    /// `qop=auth-int` (the body is hashed too): only when the camera offers nothing else.
    AuthInt,
    /// No qop parameter: RFC 2069 compatibility (no nc, no cnonce).
    None,
}

/// A `Digest` challenge. `Debug` shows the realm and the options, never the nonce or the opaque value.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// `MD5-sess`, `SHA-256-sess`…
    pub sess: bool,
    pub qop: DigestQop,
    /// The nonce expired; the credentials were fine.
    pub stale: bool,
    pub userhash: bool,
}

impl fmt::Debug for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestChallenge")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("sess", &self.sess)
            .field("qop", &self.qop)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

/// One challenge of a `WWW-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Digest(DigestChallenge),
    Basic {
        realm: String,
    },
    /// A scheme we do not speak (`Bearer`, `Negotiate`…), or a Digest we cannot answer (named in `why`).
    Other {
        scheme: String,
        why: String,
    },
}

/// Why a `WWW-Authenticate` value could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("WWW-Authenticate longer than {MAX_CHALLENGE} bytes")]
    TooLong,
    #[error("WWW-Authenticate has more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("WWW-Authenticate is malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    Comma,
    /// Whitespace between two items: it separates a scheme from its first parameter.
    Space,
}

/// Splits a header value into tokens. Any character that is not a delimiter is part of a word, so hostile
/// input gives odd words, never a panic.
fn tokenize(s: &str) -> Result<Vec<Tok>, ChallengeError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                    chars.next();
                }
                out.push(Tok::Space);
            }
            '=' => out.push(Tok::Eq),
            ',' => out.push(Tok::Comma),
            '"' => {
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(ChallengeError::Malformed("unterminated quoted string")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => v.push(c),
                            None => return Err(ChallengeError::Malformed("unterminated quoted string")),
                        },
                        Some(c) => v.push(c),
                    }
                }
                out.push(Tok::Quoted(v));
            }
            c => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if matches!(n, ' ' | '\t' | '=' | ',' | '"') {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

/// A scheme and its parameters (names lower-cased), before interpretation.
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// Reads the challenges of one `WWW-Authenticate` value (RFC 7235 §4.1: `scheme [ token68 / #auth-param ]`,
/// challenges separated by commas).
pub fn parse_challenges(value: &str) -> Result<Vec<Challenge>, ChallengeError> {
    if value.len() > MAX_CHALLENGE {
        return Err(ChallengeError::TooLong);
    }
    let toks = tokenize(value)?;
    // Spaces matter only right after a scheme; elsewhere (around `=` and `,`) they are noise.
    let mut raw: Vec<RawChallenge> = Vec::new();
    let mut nparams = 0usize;
    let mut i = 0;
    let next_solid = |mut j: usize| {
        while matches!(toks.get(j), Some(Tok::Space)) {
            j += 1;
        }
        j
    };
    while i < toks.len() {
        i = next_solid(i);
        let Some(tok) = toks.get(i) else { break };
        match tok {
            Tok::Comma => i += 1,
            Tok::Word(w) => {
                let after = next_solid(i + 1);
                if matches!(toks.get(after), Some(Tok::Eq)) {
                    // name = value: a parameter of the current challenge, or a token68 (`abc==`) after a scheme.
                    let Some(current) = raw.last_mut() else {
                        return Err(ChallengeError::Malformed("a parameter before any scheme"));
                    };
                    let v = next_solid(after + 1);
                    let value = match toks.get(v) {
                        Some(Tok::Word(x)) | Some(Tok::Quoted(x)) => {
                            i = v + 1;
                            x.clone()
                        }
                        // `name=` followed by `=`, `,` or the end: a token68; skip its padding.
                        _ => {
                            i = after;
                            while matches!(toks.get(i), Some(Tok::Eq | Tok::Space)) {
                                i += 1;
                            }
                            continue;
                        }
                    };
                    nparams += 1;
                    if nparams > MAX_PARAMS {
                        return Err(ChallengeError::TooManyParams);
                    }
                    current.params.push((w.to_ascii_lowercase(), value));
                } else {
                    // A word not followed by `=`: a new scheme at the start or after a comma, else a token68
                    // (`Basic abc`), which no camera challenge carries and we ignore.
                    if raw.is_empty() || after_comma(&toks, i) {
                        raw.push(RawChallenge { scheme: w.clone(), params: Vec::new() });
                    }
                    i += 1;
                }
            }
            Tok::Quoted(_) => return Err(ChallengeError::Malformed("a quoted string where a name belongs")),
            Tok::Eq => return Err(ChallengeError::Malformed("'=' without a name")),
            Tok::Space => i += 1,
        }
    }
    if raw.is_empty() {
        return Err(ChallengeError::Malformed("no scheme"));
    }
    Ok(raw.into_iter().map(interpret).collect())
}

/// The nearest non-space token before `i` is a comma (a new challenge after a list) or there is none.
fn after_comma(toks: &[Tok], i: usize) -> bool {
    toks[..i].iter().rev().find(|t| **t != Tok::Space).is_none_or(|t| *t == Tok::Comma)
}

fn interpret(r: RawChallenge) -> Challenge {
    let get = |name: &str| r.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if r.scheme.eq_ignore_ascii_case("Basic") {
        return Challenge::Basic { realm: get("realm").unwrap_or_default() };
    }
    if !r.scheme.eq_ignore_ascii_case("Digest") {
        return Challenge::Other {
            scheme: scheme_name(&r.scheme),
            why: "not an authentication scheme we speak".into(),
        };
    }
    let other = |why: &str| Challenge::Other { scheme: "Digest".into(), why: why.to_string() };
    let Some(nonce) = get("nonce").filter(|n| !n.is_empty()) else { return other("no nonce") };
    let alg = get("algorithm").unwrap_or_else(|| "MD5".into());
    let (name, sess) = match alg.len().checked_sub(5) {
        Some(cut) if alg.is_char_boundary(cut) && alg[cut..].eq_ignore_ascii_case("-sess") => (&alg[..cut], true),
        _ => (alg.as_str(), false),
    };
    let algorithm = if name.eq_ignore_ascii_case("MD5") {
        DigestAlgorithm::Md5
    } else if name.eq_ignore_ascii_case("SHA-256") {
        DigestAlgorithm::Sha256
    } else if name.eq_ignore_ascii_case("SHA-512-256") {
        DigestAlgorithm::Sha512_256
    } else {
        return other("an algorithm we do not support");
    };
    let qop = match get("qop") {
        None => DigestQop::None,
        Some(list) => {
            let offered: Vec<String> = list.split(',').map(|q| q.trim().to_ascii_lowercase()).collect();
            if offered.iter().any(|q| q == "auth") {
                DigestQop::Auth
            } else if offered.iter().any(|q| q == "auth-int") {
                DigestQop::AuthInt
            } else {
                return other("no qop we support");
            }
        }
    };
    let flag = |name: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Challenge::Digest(DigestChallenge {
        realm: get("realm").unwrap_or_default(),
        nonce,
        opaque: get("opaque"),
        algorithm,
        sess,
        qop,
        stale: flag("stale"),
        userhash: flag("userhash"),
    })
}

/// A scheme name fit for an error: short, printable.
fn scheme_name(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(20).collect()
}

/// Answers one Digest challenge for as long as the camera accepts its nonce: each [`DigestSession::authorize`]
/// counts `nc` up and draws a new cnonce. `Debug` shows neither the nonce nor anything computed.
pub struct DigestSession {
    prompt: digest_auth::WwwAuthenticateHeader,
    qop: DigestQop,
}

impl fmt::Debug for DigestSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestSession")
            .field("realm", &self.prompt.realm)
            .field("qop", &self.qop)
            .field("nc", &self.prompt.nc)
            .finish_non_exhaustive()
    }
}

impl DigestSession {
    pub fn new(c: &DigestChallenge) -> DigestSession {
        use digest_auth::{Algorithm, AlgorithmType, Charset, Qop};
        let algo = match c.algorithm {
            DigestAlgorithm::Md5 => AlgorithmType::MD5,
            DigestAlgorithm::Sha256 => AlgorithmType::SHA2_256,
            DigestAlgorithm::Sha512_256 => AlgorithmType::SHA2_512_256,
        };
        let qop = match c.qop {
            DigestQop::Auth => Some(vec![Qop::AUTH]),
            DigestQop::AuthInt => Some(vec![Qop::AUTH_INT]),
            DigestQop::None => None,
        };
        let prompt = digest_auth::WwwAuthenticateHeader {
            domain: None,
            realm: c.realm.clone(),
            nonce: c.nonce.clone(),
            opaque: c.opaque.clone(),
            stale: c.stale,
            algorithm: Algorithm::new(algo, c.sess),
            qop,
            userhash: c.userhash,
            charset: Charset::UTF8,
            nc: 0,
        };
        DigestSession { prompt, qop: c.qop }
    }

    /// How many requests this nonce has signed.
    pub fn nc(&self) -> u32 {
        self.prompt.nc
    }

    /// The `Authorization` header value for one request (`uri` is the request target: path and query).
    pub fn authorize(&mut self, method: &str, uri: &str, user: &str, password: &str, body: &[u8]) -> String {
        let ctx = digest_auth::AuthContext::new_with_method(
            user,
            password,
            uri,
            Some(body),
            digest_auth::HttpMethod::from(method.to_string()),
        );
        match self.prompt.respond(&ctx) {
            Ok(h) => h.to_header_string(),
            // Only a qop list without auth or auth-int fails, and `new` never builds one.
            Err(_) => String::new(),
        }
    }
}

/// The `Authorization` value for HTTP Basic (only ever sent where the camera asked for Basic and nothing else).
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}
