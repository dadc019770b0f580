//! `auth bearer ["TOKEN", ...];` or `auth bearer file "FILE";`: opaque bearer tokens
//! (RFC 6750), from the declaration or a file (one `TOKEN [NAME]` per line, re-read on
//! SIGHUP). The identity is the token's name (`bearer` when it has none).

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};

use super::{credentials, digest, Identity, Refusal, Verdict};
use crate::watched::Watched;

/// Accepted tokens.
#[derive(Debug, Clone)]
pub struct Bearer {
    tokens: Tokens,
}

#[derive(Debug, Clone)]
enum Tokens {
    Listed(Arc<TokenSet>),
    File(Arc<Watched<TokenSet>>),
}

/// Tokens by digest, with their names.
#[derive(Debug, Default)]
pub struct TokenSet {
    names: HashMap<[u8; 32], String>,
}

impl TokenSet {
    /// `TOKEN [NAME]` lines; blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut names = HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            let name = words.next().unwrap_or("bearer");
            names.insert(digest(token.as_bytes()), name.to_owned());
        }
        Ok(TokenSet { names })
    }
}

impl Bearer {
    /// Accepts the `tokens` given.
    pub fn tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        let names = tokens
            .into_iter()
            .map(|t| (digest(t.as_bytes()), "bearer".to_owned()))
            .collect();
        Bearer {
            tokens: Tokens::Listed(Arc::new(TokenSet { names })),
        }
    }

    /// Accepts the tokens of the file at `path` (read now and on every SIGHUP).
    pub fn file(path: &str) -> Self {
        Bearer {
            tokens: Tokens::File(Watched::open(path, TokenSet::parse)),
        }
    }

    /// The file's load error, if it never loaded.
    pub fn check_files(&self) -> std::io::Result<()> {
        match &self.tokens {
            Tokens::Listed(_) => Ok(()),
            Tokens::File(f) => f.check(),
        }
    }

    /// Whether the request carries an accepted token.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(token) = credentials(headers, "bearer") else {
            return Err(refuse("a bearer token is required", false));
        };
        let key = digest(token.trim().as_bytes());
        let name = match &self.tokens {
            Tokens::Listed(set) => set.names.get(&key).cloned(),
            Tokens::File(file) => file.current().names.get(&key).cloned(),
        };
        name.map(Identity::named)
            .ok_or_else(|| refuse("the token is not valid", true))
    }
}

/// 401 with RFC 6750's challenge (`error="invalid_token"` when a token was given).
pub(crate) fn refuse(why: &str, invalid: bool) -> Box<Refusal> {
    let challenge = if invalid {
        HeaderValue::from_static("Bearer error=\"invalid_token\"")
    } else {
        HeaderValue::from_static("Bearer")
    };
    Refusal::unauthorized(challenge, why)
}
