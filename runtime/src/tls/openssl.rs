//! OpenSSL 3 (the system's, or 3.5+ built from source with the `vendored-openssl`
//! feature; 1.1.1 lacks the providers FIPS mode loads): what differs from BoringSSL.

use std::ffi::CStr;
use std::io;
use std::sync::OnceLock;

use ::openssl::error::ErrorStack;
use ::openssl::provider::Provider;
use ::openssl::ssl::{SslContextBuilder, SslRef};

pub(crate) use ::openssl as lib;
pub(crate) use ::tokio_openssl as tokio_lib;

/// TLS 1.3 cipher suites allowed in FIPS mode (no ChaCha20-Poly1305).
const FIPS_TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";

pub(super) fn library_version() -> &'static str {
    ::openssl::version::version()
}

pub(super) fn text_of(field: &::openssl::asn1::Asn1StringRef) -> Option<String> {
    field.to_string().ok()
}

/// `SSL_CTX_set1_groups_list`.
pub(super) fn set_groups(b: &mut SslContextBuilder, groups: &str) -> Result<(), ErrorStack> {
    b.set_groups_list(groups)
}

/// The TLS 1.3 suites FIPS mode allows (TLS 1.2's are set by cipher list for both
/// libraries).
pub(super) fn restrict_to_fips(b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    b.set_ciphersuites(FIPS_TLS13_SUITES)
}

/// Loads the FIPS provider (and the base provider, for reading keys) and makes FIPS
/// implementations the default for every algorithm fetched after this.
pub(super) fn enable_fips() -> io::Result<()> {
    static PROVIDERS: OnceLock<(Provider, Provider)> = OnceLock::new();
    if PROVIDERS.get().is_some() {
        return Ok(());
    }
    let fips = Provider::load(None, "fips").map_err(|e| {
        let dir = std::env::var("OPENSSL_MODULES")
            .unwrap_or_else(|_| "the library's modules directory".to_owned());
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "FIPS mode: the OpenSSL FIPS provider could not be loaded from {dir} ({e}); \
                 install a validated OpenSSL 3 FIPS provider (fips.so and its \
                 fipsmodule.cnf) or turn `fips` off — the proxy does not run without it"
            ),
        )
    })?;
    let base = Provider::load(None, "base").map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("FIPS mode: cannot load the base provider: {e}"),
        )
    })?;
    set_default_fips_properties()?;
    let _ = PROVIDERS.set((fips, base));
    Ok(())
}

/// `EVP_default_properties_enable_fips(NULL, 1)`: algorithms are fetched from the FIPS
/// provider only.
#[allow(unsafe_code)]
fn set_default_fips_properties() -> io::Result<()> {
    // SAFETY: a NULL library context means the default one; the call only sets a property
    // string on it and reports failure by its return value.
    let ok = unsafe { openssl_sys::EVP_default_properties_enable_fips(std::ptr::null_mut(), 1) };
    if ok == 1 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "FIPS mode: cannot make the FIPS provider the default: {}",
            ErrorStack::get()
        ),
    ))
}

/// `SSL_group_to_name(ssl, SSL_get_negotiated_group(ssl))`.
#[allow(unsafe_code)]
pub(super) fn negotiated_group_name(ssl: &SslRef) -> Option<String> {
    use foreign_types::ForeignTypeRef;
    /// `SSL_CTRL_GET_NEGOTIATED_GROUP` from `ssl.h` (OpenSSL 3.0 and later).
    const GET_NEGOTIATED_GROUP: std::os::raw::c_int = 134;
    extern "C" {
        fn SSL_group_to_name(
            ssl: *mut openssl_sys::SSL,
            id: std::os::raw::c_int,
        ) -> *const std::os::raw::c_char;
    }
    // SAFETY: `ssl` is a live SSL object for the duration of the borrow; the control call
    // reads its session state; the name returned points into the library's static group
    // table (or is NULL) and is copied before the borrow ends.
    unsafe {
        let id = openssl_sys::SSL_ctrl(ssl.as_ptr(), GET_NEGOTIATED_GROUP, 0, std::ptr::null_mut());
        let id = std::os::raw::c_int::try_from(id).ok()?;
        let name = SSL_group_to_name(ssl.as_ptr(), id);
        if name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}
