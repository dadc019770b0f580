//! The TLS library behind every TLS listener and every TLS connection to an origin, and the
//! process-wide policy they share: which key-exchange groups are offered (post-quantum
//! first where the library has them) and whether the library runs in FIPS mode.
//!
//! [`configure`] checks and applies a [`TlsPolicy`] once, at start (and under `-t`), before
//! any listener or upstream connector is built, so an unknown group or a missing FIPS module
//! stops the start with a message naming it, never a failure at the first handshake.
//! Without a call the defaults hold: [`DEFAULT_GROUPS`] where the library has every one of
//! them, else [`CLASSICAL_GROUPS`], and FIPS mode off.
//!
//! Which library: OpenSSL (the system's, or 3.5 built from source with the
//! `vendored-openssl` feature), or BoringSSL with the `boringssl` feature. The differences
//! live in `openssl.rs` and `boring.rs` here; the modules that build contexts
//! ([`listen::tls`](crate::listen::tls), [`upstream::tls`](crate::upstream::tls)) use the
//! library through [`lib`] and [`TlsStream`], and no other module names it.

use std::io;
use std::sync::{OnceLock, RwLock};

use self::backend::lib::error::ErrorStack;
use self::backend::lib::ssl::{SslContext, SslContextBuilder, SslMethod, SslRef, SslVersion};

#[cfg(feature = "boringssl")]
mod boring;
#[cfg(feature = "boringssl")]
use self::boring as backend;
#[cfg(not(feature = "boringssl"))]
mod openssl;
#[cfg(not(feature = "boringssl"))]
use self::openssl as backend;

/// The TLS library's crate (`openssl`, or `boring2` with the `boringssl` feature), for the
/// modules that build contexts: the two libraries' Rust APIs are the same for what they use.
pub(crate) use self::backend::lib;

/// The text of a certificate's string field (a common name), if it is UTF-8 without NUL.
pub(crate) fn text_of(field: &lib::asn1::Asn1StringRef) -> Option<String> {
    backend::text_of(field)
}

/// A TLS connection over `S` (tokio-openssl's or tokio-boring2's stream).
pub type TlsStream<S> = self::backend::tokio_lib::SslStream<S>;

/// The groups offered and accepted by default, in order of preference: the post-quantum
/// hybrid X25519MLKEM768 first, then Mozilla's "intermediate" list (X25519, P-256, P-384).
pub const DEFAULT_GROUPS: &[&str] = &["X25519MLKEM768", "X25519", "P-256", "P-384"];

/// The default where the library has no post-quantum group (OpenSSL before 3.5).
pub const CLASSICAL_GROUPS: &[&str] = &["X25519", "P-256", "P-384"];

/// The groups a FIPS-mode process offers when none are configured: the NIST curves the
/// FIPS provider approves for key agreement (SP 800-56A).
pub const FIPS_GROUPS: &[&str] = &["P-256", "P-384"];

/// TLS 1.2 cipher suites allowed in FIPS mode: ECDHE with AES-GCM (SP 800-52r2).
const FIPS_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
                                  ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

/// The names negotiated groups are reported under (access log, metrics): the groups
/// `tls_groups` may name, then `other` for any the library agreed on outside them, so a
/// metric's label values stay bounded.
pub const GROUP_NAMES: [&str; pingora_dsl_rules::TLS_GROUPS.len() + 1] = {
    let mut names = ["other"; pingora_dsl_rules::TLS_GROUPS.len() + 1];
    let mut i = 0;
    while i < pingora_dsl_rules::TLS_GROUPS.len() {
        names[i] = pingora_dsl_rules::TLS_GROUPS[i];
        i += 1;
    }
    names
};

/// What the process asks of its TLS library, from the declaration and the config file's
/// `[server]` (`tls_groups`, `fips`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Key-exchange groups in order of preference; `None` for the defaults.
    pub groups: Option<Vec<String>>,
    /// Run the library in FIPS mode, refusing to start without its FIPS module.
    pub fips: bool,
}

/// A checked policy, as contexts apply it.
#[derive(Debug, Clone)]
struct Applied {
    /// Colon-separated, as the library takes it.
    groups: String,
    fips: bool,
}

static APPLIED: RwLock<Option<Applied>> = RwLock::new(None);

/// Checks `policy` against the library and makes it the one every TLS context built after
/// this uses. FIPS mode, once on, stays on for the life of the process.
///
/// Errors name what is wrong: a group the library does not know (with the build that has
/// it), a group FIPS mode does not allow, or a FIPS module that cannot be loaded.
pub fn configure(policy: &TlsPolicy) -> io::Result<()> {
    if policy.fips {
        backend::enable_fips()?;
    }
    let groups = match &policy.groups {
        Some(groups) => check_groups(groups, policy.fips)?,
        None if policy.fips => FIPS_GROUPS.join(":"),
        None => default_groups().join(":"),
    };
    let applied = Applied {
        groups,
        fips: policy.fips,
    };
    *APPLIED.write().unwrap_or_else(|e| e.into_inner()) = Some(applied);
    Ok(())
}

/// The groups in effect, in order of preference.
pub fn groups() -> Vec<String> {
    applied().groups.split(':').map(str::to_owned).collect()
}

/// Whether FIPS mode is on.
pub fn fips() -> bool {
    applied().fips
}

/// Whether the TLS library offers the post-quantum hybrid X25519MLKEM768 (OpenSSL 3.5 and
/// later, as the `vendored-openssl` feature builds it; BoringSSL, the `boringssl` feature).
pub fn post_quantum_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| group_known("X25519MLKEM768"))
}

/// The TLS library and its version, e.g. `OpenSSL 3.0.19 27 Jan 2026` or `BoringSSL`.
pub fn library_version() -> &'static str {
    backend::library_version()
}

fn applied() -> Applied {
    if let Some(applied) = APPLIED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return applied.clone();
    }
    Applied {
        groups: default_groups().join(":"),
        fips: false,
    }
}

fn default_groups() -> &'static [&'static str] {
    if post_quantum_available() {
        DEFAULT_GROUPS
    } else {
        CLASSICAL_GROUPS
    }
}

/// Sets what every context shares: TLS 1.2 and later, the groups and, in FIPS mode, the
/// approved cipher suites only.
pub(crate) fn apply_policy(b: &mut SslContextBuilder) -> io::Result<()> {
    let policy = applied();
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| library_error("cannot set the TLS versions", e))?;
    backend::set_groups(b, &policy.groups)
        .map_err(|e| library_error("cannot set the key-exchange groups", e))?;
    if policy.fips {
        b.set_cipher_list(FIPS_TLS12_CIPHERS)
            .map_err(|e| library_error("cannot set the FIPS cipher suites", e))?;
        backend::restrict_to_fips(b)
            .map_err(|e| library_error("cannot set the FIPS cipher suites", e))?;
    }
    Ok(())
}

/// `groups` as the library takes them, or an error for the first one that is unknown,
/// repeated, not approved in FIPS mode, or missing from the library.
fn check_groups(groups: &[String], fips: bool) -> io::Result<String> {
    let list = pingora_dsl_rules::check_tls_groups(groups.iter().map(String::as_str), fips)
        .map_err(|e| invalid(&e))?;
    if let Some(missing) = list.split(':').find(|g| !group_known(g)) {
        let hint = if missing.contains("MLKEM") {
            "post-quantum groups need OpenSSL 3.5 or later (build with \
             `--features vendored-openssl`) or BoringSSL (`--features boringssl`)"
        } else {
            "leave it out"
        };
        return Err(invalid(&format!(
            "TLS key-exchange group `{missing}` is not available in {}: {hint}",
            library_version()
        )));
    }
    Ok(list)
}

/// Whether the library accepts `group` in a groups list.
fn group_known(group: &str) -> bool {
    if group.is_empty() || group.contains(':') {
        return false;
    }
    SslContext::builder(SslMethod::tls())
        .and_then(|mut b| backend::set_groups(&mut b, group))
        .is_ok()
}

/// The key-exchange group a finished handshake agreed on, as named in [`GROUP_NAMES`].
pub(crate) fn negotiated_group(ssl: &SslRef) -> &'static str {
    canonical_group(&backend::negotiated_group_name(ssl).unwrap_or_default())
}

/// `name` as spelled in [`GROUP_NAMES`] (the library may say `secp256r1` or `x25519`).
pub(crate) fn canonical_group(name: &str) -> &'static str {
    let name = match name.to_ascii_lowercase().as_str() {
        "secp256r1" | "prime256v1" => "P-256",
        "secp384r1" => "P-384",
        "secp521r1" => "P-521",
        _ => name,
    };
    GROUP_NAMES
        .iter()
        .find(|g| g.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// The position of `group` (as [`canonical_group`] gives it) in [`GROUP_NAMES`].
pub fn group_index(group: &str) -> usize {
    GROUP_NAMES
        .iter()
        .position(|g| *g == group)
        .unwrap_or(GROUP_NAMES.len() - 1)
}

/// A TLS library error as an I/O error saying what was being done.
pub(crate) fn library_error(what: &str, e: ErrorStack) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_spellings_become_the_settings_names() {
        assert_eq!(canonical_group("secp256r1"), "P-256");
        assert_eq!(canonical_group("x25519"), "X25519");
        assert_eq!(canonical_group("X25519MLKEM768"), "X25519MLKEM768");
        assert_eq!(canonical_group("brainpoolP256r1"), "other");
        assert_eq!(group_index("other"), GROUP_NAMES.len() - 1);
        assert_eq!(group_index("X25519"), 3);
        assert_eq!(GROUP_NAMES[0], "X25519MLKEM768");
    }

    #[test]
    fn unknown_groups_are_named_and_post_quantum_ones_say_which_build_has_them() {
        let e = check_groups(&["X25519".into(), "P-999".into()], false).expect_err("unknown");
        assert!(e.to_string().contains("`P-999`"), "{e}");
        let list = check_groups(&["x25519".into(), "p-256".into()], false).expect("known");
        assert_eq!(list, "X25519:P-256");
        if !post_quantum_available() {
            let e = check_groups(&["X25519MLKEM768".into()], false).expect_err("no PQ");
            assert!(e.to_string().contains("vendored-openssl"), "{e}");
        }
        let e = check_groups(&["X25519".into()], true).expect_err("not FIPS");
        assert!(e.to_string().contains("not approved in FIPS mode"), "{e}");
        assert!(check_groups(&[], false).is_err());
    }
}
