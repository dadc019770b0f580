//! Certificates made at run time (nothing private is committed): a test CA issuing server
//! and client certificates, and self-signed ones for examples. EC P-256 keys, PEM files.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// A certificate authority for tests, writing what it issues into a directory.
pub struct TestCa {
    dir: PathBuf,
    cert: X509,
    key: PKey<Private>,
}

impl TestCa {
    /// A new CA whose certificate is written to `dir/ca.crt`.
    pub fn new(dir: &Path) -> std::io::Result<TestCa> {
        std::fs::create_dir_all(dir)?;
        let key = new_key().map_err(io)?;
        let cert = build("pingora-dsl test CA", &[], &key, None, Kind::Ca).map_err(io)?;
        std::fs::write(dir.join("ca.crt"), cert.to_pem().map_err(io)?)?;
        Ok(TestCa {
            dir: dir.to_owned(),
            cert,
            key,
        })
    }

    /// The CA certificate's file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues a server certificate with common name `cn` and DNS names `names`.
    pub fn server(&self, cn: &str, names: &[&str]) -> std::io::Result<CertFiles> {
        self.issue(cn, names, Kind::Server)
    }

    /// Issues a client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> std::io::Result<CertFiles> {
        self.issue(cn, &[], Kind::Client)
    }

    fn issue(&self, cn: &str, names: &[&str], kind: Kind) -> std::io::Result<CertFiles> {
        let key = new_key().map_err(io)?;
        let cert = build(cn, names, &key, Some((&self.cert, &self.key)), kind).map_err(io)?;
        write_pair(&self.dir, cn, &cert, &key)
    }
}

/// A self-signed server certificate for `names` (the first is the common name), written
/// to `dir`.
pub fn self_signed(dir: &Path, names: &[&str]) -> std::io::Result<CertFiles> {
    std::fs::create_dir_all(dir)?;
    let cn = names.first().copied().unwrap_or("localhost");
    let key = new_key().map_err(io)?;
    let cert = build(cn, names, &key, None, Kind::Server).map_err(io)?;
    write_pair(dir, cn, &cert, &key)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ca,
    Server,
    Client,
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn build(
    cn: &str,
    names: &[&str],
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    kind: Kind,
) -> Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))?;
    b.set_pubkey(key)?;
    b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*Asn1Time::days_from_now(30)?)?;
    match kind {
        Kind::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Kind::Server | Kind::Client => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(KeyUsage::new().digital_signature().build()?)?;
            let mut eku = ExtendedKeyUsage::new();
            if kind == Kind::Server {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build()?)?;
        }
    }
    if !names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in names {
            match n.parse::<std::net::IpAddr>() {
                Ok(_) => san.ip(n),
                Err(_) => san.dns(n),
            };
        }
        let ext = san.build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
        b.append_extension(ext)?;
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256())?;
    Ok(b.build())
}

fn write_pair(
    dir: &Path,
    stem: &str,
    cert: &X509,
    key: &PKey<Private>,
) -> std::io::Result<CertFiles> {
    let stem: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert.to_pem().map_err(io)?)?;
    std::fs::write(&files.key, key.private_key_to_pem_pkcs8().map_err(io)?)?;
    Ok(files)
}

fn io(e: ErrorStack) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
