//! `allow [...]`, `deny [...]` and `trusted_proxies [...]`: address blocks that parse, no
//! block both allowed and denied, no empty list.

use std::collections::HashMap;
use std::net::IpAddr;

use syn::{Ident, LitStr};

use crate::diagnostic::Errors;
use crate::model;
use crate::syntax::AccessDecl;

use super::condition::check_blocks;

/// The blocks of every `allow` and `deny` given together (at the proxy or in one route).
pub fn check_access(decls: &[&AccessDecl], errors: &mut Errors) -> Option<model::Access> {
    let mut access = model::Access {
        allow: Vec::new(),
        deny: Vec::new(),
    };
    let mut seen: HashMap<(IpAddr, u8), bool> = HashMap::new();
    let mut valid = true;
    for decl in decls {
        let Some(blocks) =
            non_empty(&decl.keyword, &decl.blocks, errors).and_then(|b| check_blocks(b, errors))
        else {
            valid = false;
            continue;
        };
        for (block, lit) in blocks.into_iter().zip(&decl.blocks) {
            match seen.insert(block, decl.allow) {
                Some(earlier) if earlier != decl.allow => {
                    errors.at(
                        lit.span(),
                        format!("\"{}\" is both allowed and denied: keep it in one list (a more specific block makes an exception, e.g. `deny [\"10.0.0.0/8\"]; allow [\"10.1.0.0/16\"];`)", lit.value()),
                    );
                    valid = false;
                }
                Some(_) => {
                    errors.at(lit.span(), format!("\"{}\" is listed twice", lit.value()));
                    valid = false;
                }
                None if decl.allow => access.allow.push(block),
                None => access.deny.push(block),
            }
        }
    }
    valid.then_some(access)
}

/// `trusted_proxies [...]`: once, with blocks.
pub fn check_trusted_proxies(
    decls: &[(Ident, Vec<LitStr>)],
    errors: &mut Errors,
) -> Vec<(IpAddr, u8)> {
    for (again, _) in decls.iter().skip(1) {
        errors.at(
            again.span(),
            "`trusted_proxies` is declared twice: list every block in one",
        );
    }
    let Some((keyword, blocks)) = decls.first() else {
        return Vec::new();
    };
    non_empty(keyword, blocks, errors)
        .and_then(|b| check_blocks(b, errors))
        .unwrap_or_default()
}

/// `blocks`, unless the list is empty (an error at `keyword`).
fn non_empty<'a>(
    keyword: &Ident,
    blocks: &'a [LitStr],
    errors: &mut Errors,
) -> Option<&'a [LitStr]> {
    if blocks.is_empty() {
        errors.at(
            keyword.span(),
            format!("`{keyword} []` lists no address block: name some (`{keyword} [\"10.0.0.0/8\"];`) or remove it"),
        );
        return None;
    }
    Some(blocks)
}
