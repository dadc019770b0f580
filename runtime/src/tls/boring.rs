//! BoringSSL (the `boringssl` feature, through the `boring2` crates, whose symbols are
//! prefixed so that a binary may link OpenSSL too): what differs from OpenSSL.

use std::io;

use ::boring2::error::ErrorStack;
use ::boring2::ssl::{CompliancePolicy, SslContextBuilder, SslRef};

pub(crate) use ::boring2 as lib;
pub(crate) use ::tokio_boring2 as tokio_lib;

pub(super) fn library_version() -> &'static str {
    ::boring2::version::version()
}

pub(super) fn text_of(field: &::boring2::asn1::Asn1StringRef) -> Option<String> {
    let text = field.as_utf8().ok()?;
    // `as_utf8` stops at a NUL: a field with one inside is not a name.
    (text.len() == field.len()).then(|| text.to_string())
}

/// `SSL_CTX_set1_curves_list` (BoringSSL's name for the groups list).
pub(super) fn set_groups(b: &mut SslContextBuilder, groups: &str) -> Result<(), ErrorStack> {
    b.set_curves_list(groups)
}

/// BoringSSL's FIPS policy: the TLS 1.3 suites, groups and signature algorithms of
/// SP 800-52r2 (its TLS 1.3 suites cannot be listed one by one).
pub(super) fn restrict_to_fips(b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    b.set_compliance_policy(CompliancePolicy::FIPS_202205)
}

/// FIPS mode needs a FIPS build of BoringSSL; the one built here is not one.
pub(super) fn enable_fips() -> io::Result<()> {
    if ::boring2::fips::enabled() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "FIPS mode: this BoringSSL is not a FIPS build (its FIPS module is built from \
         BoringSSL's validated FIPS branch, with the `boring2` crates' `fips` feature); turn \
         `fips` off — the proxy does not run without it",
    ))
}

pub(super) fn negotiated_group_name(ssl: &SslRef) -> Option<String> {
    ssl.curve_name().map(str::to_owned)
}
