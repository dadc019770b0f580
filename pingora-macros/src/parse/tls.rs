//! TLS settings: of a listener (`listen tls "ADDR" cert "c" key "k" ...`) and of an
//! upstream (`tls sni "NAME" ca "FILE" ...;`).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, Ident, LitStr, Token};

use crate::syntax::{TlsDecl, UpstreamTlsDecl};

use super::{kw, parse_block, semi};

/// The TLS part of `listen tls "ADDR" ...`: inline up to `;`
/// (`cert "c" key "k" [client_ca "ca"];`) or a block (`{ cert "c" key "k"; client_ca "ca"; }`).
pub fn parse_listener_tls(input: ParseStream<'_>, keyword: Ident) -> syn::Result<TlsDecl> {
    let mut decl = TlsDecl {
        keyword,
        certs: Vec::new(),
        client_ca: Vec::new(),
        proxy_protocol: None,
        malformed: false,
        errors: Vec::new(),
    };
    if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        let mut errors = Vec::new();
        decl.malformed = parse_block(&content, &mut errors, |content| {
            parse_tls_setting(content, &mut decl)?;
            semi(content, "the TLS setting")
        });
        decl.errors = errors;
        let _ = input.parse::<Option<Token![;]>>()?;
        return Ok(decl);
    }
    while !input.peek(Token![;]) && !input.is_empty() {
        parse_tls_setting(input, &mut decl)?;
    }
    semi(input, "listen")?;
    Ok(decl)
}

/// A file name, or an error showing `example`.
fn file(input: ParseStream<'_>, example: &str) -> syn::Result<LitStr> {
    input
        .parse::<LitStr>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected a file name: `{example}`")))
}

/// `cert "FILE" key "FILE"` or `client_ca "FILE"` of a listener.
fn parse_tls_setting(input: ParseStream<'_>, decl: &mut TlsDecl) -> syn::Result<()> {
    if input.peek(kw::cert) {
        input.parse::<kw::cert>()?;
        let cert = file(input, "cert \"server.crt\" key \"server.key\"")?;
        let need_key =
            "expected `key \"FILE\"` after the certificate: each certificate needs its private key";
        if !input.peek(kw::key) {
            let found = Ident::parse_any(input).map_err(|e| syn::Error::new(e.span(), need_key))?;
            return Err(syn::Error::new(found.span(), need_key));
        }
        input.parse::<kw::key>()?;
        let key = file(input, "key \"server.key\"")?;
        decl.certs.push((cert, key));
        return Ok(());
    }
    if input.peek(kw::client_ca) {
        let kw = Ident::parse_any(input)?;
        let ca = file(input, "client_ca \"clients-ca.pem\"")?;
        decl.client_ca.push((kw, ca));
        return Ok(());
    }
    if input.peek(kw::proxy_protocol) {
        let setting = super::item::parse_listener_proxy_protocol(input)?;
        if decl.proxy_protocol.is_some() {
            return Err(syn::Error::new(
                setting.0.span(),
                "`proxy_protocol` is given twice for this listener: keep one",
            ));
        }
        decl.proxy_protocol = Some(setting);
        return Ok(());
    }
    let kw = Ident::parse_any(input)?;
    Err(syn::Error::new(
        kw.span(),
        format!(
            "unknown TLS setting `{kw}`: expected `cert \"FILE\" key \"FILE\"`, `client_ca \"FILE\"` or `proxy_protocol required|optional`"
        ),
    ))
}

/// A string, or an error showing `example`.
fn string(input: ParseStream<'_>, example: &str) -> syn::Result<LitStr> {
    input
        .parse::<LitStr>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected a string: `{example}`")))
}

/// `tls [sni "NAME"] [ca "FILE"] [cert "FILE" key "FILE"] [insecure]` of an upstream
/// (before the `;`), each setting once.
impl Parse for UpstreamTlsDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = Ident::parse_any(input)?;
        let mut decl = UpstreamTlsDecl {
            keyword,
            sni: None,
            ca: None,
            cert: None,
            insecure: None,
        };
        while !input.peek(Token![;]) && !input.is_empty() {
            parse_upstream_tls_setting(input, &mut decl)?;
        }
        Ok(decl)
    }
}

/// One setting of an upstream's `tls`.
fn parse_upstream_tls_setting(
    input: ParseStream<'_>,
    decl: &mut UpstreamTlsDecl,
) -> syn::Result<()> {
    if input.peek(kw::sni) {
        let kw = Ident::parse_any(input)?;
        let value = string(input, "sni \"api.example.com\"")?;
        once(&mut decl.sni, value, &kw)
    } else if input.peek(kw::ca) {
        let kw = Ident::parse_any(input)?;
        let value = string(input, "ca \"origin-ca.pem\"")?;
        once(&mut decl.ca, value, &kw)
    } else if input.peek(kw::cert) {
        let kw = Ident::parse_any(input)?;
        let cert = string(input, "cert \"client.crt\" key \"client.key\"")?;
        if !input.peek(kw::key) {
            let key_kw = Ident::parse_any(input)?;
            return Err(syn::Error::new(
                key_kw.span(),
                "expected `key \"FILE\"` after the client certificate",
            ));
        }
        input.parse::<kw::key>()?;
        let key = string(input, "key \"client.key\"")?;
        once(&mut decl.cert, (cert, key), &kw)
    } else if input.peek(kw::insecure) {
        let kw = Ident::parse_any(input)?;
        once(&mut decl.insecure, kw.clone(), &kw)
    } else {
        let other = Ident::parse_any(input)?;
        Err(syn::Error::new(
            other.span(),
            format!(
                "unknown upstream TLS setting `{other}`: expected `sni \"NAME\"`, `ca \"FILE\"`, \
                 `cert \"FILE\" key \"FILE\"` or `insecure`"
            ),
        ))
    }
}

/// Sets a setting given at most once in a `tls`; the second is an error at its keyword.
fn once<T>(slot: &mut Option<T>, value: T, kw: &Ident) -> syn::Result<()> {
    if slot.replace(value).is_some() {
        return Err(syn::Error::new(
            kw.span(),
            format!("`{kw}` is given twice in this `tls`"),
        ));
    }
    Ok(())
}
