//! Collecting every error of an invocation, and "did you mean" suggestions.

use proc_macro2::{Span, TokenStream};
use std::fmt::Display;

/// All errors found so far; each is reported at its own span.
#[derive(Default)]
pub struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    /// Records an error at `span`.
    pub fn at(&mut self, span: Span, message: impl Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an already built error (e.g. from syn).
    pub fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every error as `compile_error!` invocations.
    pub fn into_compile_errors(self) -> TokenStream {
        self.errors
            .into_iter()
            .map(|e| e.to_compile_error())
            .collect()
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.len() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " — did you mean `x`?" or a list of what is valid.
pub fn hint(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!("expected one of: {}", candidates.join(", ")),
    }
}

/// Edit distance over bytes (keywords are ASCII), counting a swap of two neighbours as one
/// edit (optimal string alignment), since `paht` for `path` is the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 {
                j
            } else if j == 0 {
                i
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keywords_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("listn", &["listen", "layer"]), Some("listen"));
        assert_eq!(
            closest("round_robbin", &["round_robin", "random"]),
            Some("round_robin")
        );
        assert_eq!(closest("zzz", &["listen", "layer"]), None);
        assert_eq!(closest("paht", &["host", "path", "method"]), Some("path"));
    }
}
