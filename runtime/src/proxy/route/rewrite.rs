//! Path rewrites of a route: what the upstream is asked for instead of what the client
//! asked. Only the request sent upstream changes; the session (and so the access log,
//! metrics and later phases) keeps the client's path. The query is kept as it was.

use http::uri::PathAndQuery;
use http::Uri;
use regex::Regex;

use crate::error::{Error, ErrorKind, Result};

/// How a route rewrites the path sent upstream.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace a leading `from` (at a segment boundary) with `to`; `to` empty strips it.
    Prefix {
        /// The prefix to replace.
        from: String,
        /// What replaces it.
        to: String,
    },
    /// Replace the first match of the regex, `$1`/`${name}` naming its captures.
    Regex {
        /// The pattern.
        pattern: Regex,
        /// The replacement.
        with: String,
    },
    /// Send this path whatever was asked.
    Set(String),
}

impl PathRewrite {
    /// Rewrites the path of `uri` (origin form: path and query); a path the rewrite does
    /// not apply to stays. A result that is not a valid path is an error (500).
    pub fn apply(&self, uri: &mut Uri) -> Result<()> {
        let path = uri.path();
        let new_path = match self {
            PathRewrite::Prefix { from, to } => {
                match pingora_dsl_rules::replace_path_prefix(path, from, to) {
                    Some(p) => p,
                    None => return Ok(()),
                }
            }
            PathRewrite::Regex { pattern, with } => match pattern.find(path) {
                Some(_) => pattern.replace(path, with.as_str()).into_owned(),
                None => return Ok(()),
            },
            PathRewrite::Set(p) => p.clone(),
        };
        let target = match uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let path_and_query = PathAndQuery::try_from(target.as_str())
            .ok()
            .filter(|p| p.path().starts_with('/'))
            .ok_or_else(|| {
                Error::with_source(
                    ErrorKind::Internal,
                    "a route's path rewrite made no valid path",
                    format!("the rewrite made \"{target}\""),
                )
            })?;
        *uri = Uri::from(path_and_query);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(rewrite: &PathRewrite, target: &str) -> String {
        let mut uri: Uri = target.parse().expect("uri");
        rewrite.apply(&mut uri).expect("rewrite");
        uri.to_string()
    }

    #[test]
    fn prefixes_regexes_and_set_paths_keep_the_query() {
        let strip = PathRewrite::Prefix {
            from: "/v1".into(),
            to: String::new(),
        };
        assert_eq!(rewritten(&strip, "/v1/users?page=2"), "/users?page=2");
        assert_eq!(rewritten(&strip, "/v1"), "/");
        assert_eq!(rewritten(&strip, "/v10/x"), "/v10/x");
        let regex = PathRewrite::Regex {
            pattern: Regex::new("^/u/(?P<id>[0-9]+)$").expect("regex"),
            with: "/users/${id}/profile".into(),
        };
        assert_eq!(rewritten(&regex, "/u/42?x=1"), "/users/42/profile?x=1");
        assert_eq!(rewritten(&regex, "/u/abc"), "/u/abc");
        let set = PathRewrite::Set("/fixed".into());
        assert_eq!(rewritten(&set, "/any/thing?q"), "/fixed?q");
    }

    #[test]
    fn a_rewrite_that_makes_no_path_is_an_error() {
        let bad = PathRewrite::Regex {
            pattern: Regex::new("^/(.*)$").expect("regex"),
            with: "$1".into(),
        };
        let mut uri: Uri = "/x".parse().expect("uri");
        assert!(bad.apply(&mut uri).is_err());
    }
}
