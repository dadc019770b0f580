//! `auth basic "REALM" htpasswd "FILE";`: HTTP Basic authentication (RFC 7617) against an
//! htpasswd file of bcrypt hashes (`htpasswd -B`), re-read on SIGHUP.
//!
//! bcrypt is slow on purpose (tens of milliseconds): it runs on tokio's blocking pool,
//! never on a thread serving requests, and a verified `Authorization` value is remembered
//! (by its SHA-256, until the file is reloaded, at most [`MAX_REMEMBERED`]) so a client
//! sending the same credentials on every request pays for bcrypt once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::header::{HeaderMap, HeaderValue};

use super::{challenge, credentials, digest, Identity, Refusal, Verdict};
use crate::watched::Watched;

/// Verified credentials remembered at most; past it the memory starts over.
pub const MAX_REMEMBERED: usize = 4096;

/// Basic authentication against an htpasswd file.
#[derive(Debug, Clone)]
pub struct Basic {
    challenge: HeaderValue,
    users: Arc<Watched<Htpasswd>>,
}

/// An htpasswd file: users and their bcrypt hashes, and the credentials verified so far.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Digest of a verified `Authorization` value → its user.
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl Htpasswd {
    /// Reads `USER:HASH` lines (blank lines and `#` comments skipped); every hash must be
    /// bcrypt (`$2y$`, `$2b$`, `$2a$`).
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected USER:HASH", n + 1))?;
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {}: the hash of {user:?} is not bcrypt: make it with `htpasswd -B` (MD5, SHA-1 and crypt hashes are refused)",
                    n + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::default(),
        })
    }
}

impl Basic {
    /// Checks `Authorization: Basic` against the htpasswd file at `path` (read now and
    /// on every SIGHUP), asking for credentials of `realm`.
    pub fn new(realm: &str, path: &str) -> Self {
        let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
        Basic {
            challenge: challenge(
                &format!("Basic realm=\"{escaped}\", charset=\"UTF-8\""),
                "Basic",
            ),
            users: Watched::open(path, Htpasswd::parse),
        }
    }

    /// The file's load error, if it never loaded.
    pub fn check_files(&self) -> std::io::Result<()> {
        self.users.check()
    }

    /// The verdict when it needs no bcrypt: no or malformed credentials, an unknown user,
    /// or credentials verified before. `None`: [`verify`](Basic::verify) must run.
    pub fn check_cached(&self, headers: &HeaderMap) -> Option<Verdict> {
        let Some(encoded) = credentials(headers, "basic") else {
            return Some(Err(self.refuse("credentials are required")));
        };
        let users = self.users.current();
        let key = digest(encoded.as_bytes());
        let known = users
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(user) = known {
            return Some(Ok(Identity::named(user)));
        }
        match decode(encoded) {
            Some((user, _)) if users.users.contains_key(&user) => None,
            _ => Some(Err(self.refuse("unknown user or bad password"))),
        }
    }

    /// Verifies the credentials with bcrypt on the blocking pool (after
    /// [`check_cached`](Basic::check_cached) returned `None`).
    pub async fn verify(&self, headers: &HeaderMap) -> Verdict {
        let encoded = credentials(headers, "basic").unwrap_or_default().to_owned();
        let users = self.users.current().clone();
        let refusal = self.refuse("unknown user or bad password");
        let verified = tokio::task::spawn_blocking(move || {
            let (user, password) = decode(&encoded)?;
            let hash = users.users.get(&user)?;
            if !bcrypt::verify(password.as_bytes(), hash).unwrap_or(false) {
                return None;
            }
            let mut remembered = users.verified.lock().unwrap_or_else(|e| e.into_inner());
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(digest(encoded.as_bytes()), user.clone());
            Some(user)
        })
        .await;
        match verified {
            Ok(Some(user)) => Ok(Identity::named(user)),
            _ => Err(refusal),
        }
    }

    fn refuse(&self, why: &str) -> Box<Refusal> {
        Refusal::unauthorized(self.challenge.clone(), why)
    }
}

/// `USER:PASSWORD` from base64 (the user has no `:`, the password may).
fn decode(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_takes_bcrypt_only() {
        let ok = Htpasswd::parse(
            "# users\nada:$2y$05$abcdefghijklmnopqrstuu5Rj1r8tOlnYVYLqZ3Ir6eRRKFnQ2Q5C\n\n",
        )
        .expect("parses");
        assert_eq!(ok.users.len(), 1);
        let e = Htpasswd::parse("bob:$apr1$x$y\n").expect_err("md5");
        assert!(e.contains("line 1") && e.contains("htpasswd -B"), "{e}");
        assert!(Htpasswd::parse("no colon\n").is_err());
        assert_eq!(
            decode("YWRhOnMzY3I6ZXQ="),
            Some(("ada".to_owned(), "s3cr:et".to_owned()))
        );
    }
}
