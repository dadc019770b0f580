//! IP access lists: `allow` and `deny` address blocks for the proxy or a route, evaluated
//! on the client's address (the real one, behind [trusted proxies](crate::proxy::TrustedProxies)).
//!
//! The most specific block that holds the address decides, whatever the order written, so
//! an exception reads as one: `deny ["10.0.0.0/8"]; allow ["10.1.2.0/24"];` refuses 10/8
//! except 10.1.2/24. An address no block holds is allowed when the list has no `allow`
//! block, refused when it has one (an allow list names everyone it lets in).

use std::net::IpAddr;

use pingora_dsl_rules::Cidr;

/// Address blocks allowed and denied. Built with [`AccessList::new`] or declared with
/// `allow [...]; deny [...];` in `proxy!`.
///
/// ```
/// use pingora_dsl_runtime::proxy::route::{AccessList, Cidr};
///
/// let block = |s| Cidr::parse(s).expect("block");
/// let list = AccessList::new([block("10.1.2.0/24")], [block("10.0.0.0/8")]);
/// assert!(list.allows("10.1.2.3".parse().unwrap()));
/// assert!(!list.allows("10.9.9.9".parse().unwrap()));
/// assert!(!list.allows("192.0.2.1".parse().unwrap()), "an allow list refuses the rest");
/// ```
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    /// Every block with whether it allows, the longest prefixes first.
    blocks: Vec<(Cidr, bool)>,
    /// What an address in no block gets: allowed unless some block allows.
    otherwise: bool,
}

impl AccessList {
    /// A list allowing the `allow` blocks and denying the `deny` ones.
    pub fn new(
        allow: impl IntoIterator<Item = Cidr>,
        deny: impl IntoIterator<Item = Cidr>,
    ) -> Self {
        let mut blocks: Vec<(Cidr, bool)> = allow.into_iter().map(|c| (c, true)).collect();
        let otherwise = blocks.is_empty();
        blocks.extend(deny.into_iter().map(|c| (c, false)));
        // Stable: for one block in both lists (which the macro refuses), allow comes first.
        blocks.sort_by_key(|(c, _)| std::cmp::Reverse(c.prefix()));
        AccessList { blocks, otherwise }
    }

    /// A list from the text of blocks (`"10.0.0.0/8"`, `"::1"`), as a config file gives
    /// them; the error names the first block that does not parse.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| -> Result<Vec<Cidr>, String> {
            list.iter()
                .map(|text| {
                    Cidr::parse(text).map_err(|e| format!("{text:?} is not an address block: {e}"))
                })
                .collect()
        };
        Ok(AccessList::new(parse(allow)?, parse(deny)?))
    }

    /// Whether a client at `ip` may be served.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.blocks
            .iter()
            .find(|(block, _)| block.contains(ip))
            .map_or(self.otherwise, |(_, allow)| *allow)
    }

    /// The blocks as `(block, allowed)`, most specific first.
    pub fn blocks(&self) -> &[(Cidr, bool)] {
        &self.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> AccessList {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AccessList::parse(&own(allow), &own(deny)).expect("blocks")
    }

    #[test]
    fn the_most_specific_block_decides() {
        let l = list(&["10.1.2.0/24"], &["10.0.0.0/8", "10.1.2.66"]);
        assert!(l.allows("10.1.2.3".parse().expect("ip")));
        assert!(!l.allows("10.1.2.66".parse().expect("ip")));
        assert!(!l.allows("10.200.0.1".parse().expect("ip")));
        assert!(!l.allows("192.0.2.1".parse().expect("ip")));
        let deny_only = list(&[], &["192.0.2.0/24", "2001:db8::/32"]);
        assert!(!deny_only.allows("192.0.2.9".parse().expect("ip")));
        assert!(!deny_only.allows("2001:db8::1".parse().expect("ip")));
        assert!(deny_only.allows("198.51.100.1".parse().expect("ip")));
        assert!(
            !deny_only.allows("::ffff:192.0.2.9".parse().expect("ip")),
            "an IPv4-mapped address is its IPv4 one"
        );
        assert!(AccessList::parse(&["10.0.0.1/8".into()], &[]).is_err());
    }
}
