//! An `Auth` value for a checked `auth ...` declaration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::{Auth, External, Jwt};

use super::{duration, rt};

/// The runtime's `Auth` for `auth`.
pub fn expand_auth(auth: &Auth) -> TokenStream {
    let rt = rt();
    let a = quote!(#rt::proxy::auth);
    match auth {
        Auth::Basic { realm, file } => quote!(#a::Auth::Basic(#a::Basic::new(#realm, #file))),
        Auth::BearerList(tokens) => quote!(#a::Auth::Bearer(#a::Bearer::tokens([#(#tokens),*]))),
        Auth::BearerFile(file) => quote!(#a::Auth::Bearer(#a::Bearer::file(#file))),
        Auth::Jwt(jwt) => {
            let jwt = expand_jwt(jwt);
            quote!(#a::Auth::Jwt(::std::boxed::Box::new(#jwt)))
        }
        Auth::ApiKey {
            header,
            name,
            file,
            rate,
        } => {
            let source = if *header {
                quote!(#a::KeyIn::Header(#rt::HeaderName::from_static(#name)))
            } else {
                quote!(#a::KeyIn::Query(::std::string::String::from(#name)))
            };
            let rate = match rate {
                Some((n, per)) => {
                    let per = duration(*per);
                    quote!(::std::option::Option::Some((#n, #per)))
                }
                None => quote!(::std::option::Option::None),
            };
            quote!(#a::Auth::ApiKey(#a::ApiKeys::new(#source, #file, #rate)))
        }
        Auth::External(ext) => {
            let ext = expand_external(ext);
            quote!(#a::Auth::External(::std::boxed::Box::new(#ext)))
        }
    }
}

fn expand_jwt(jwt: &Jwt) -> TokenStream {
    let rt = rt();
    let a = quote!(#rt::proxy::auth);
    let keys = jwt.keys.iter().map(|(alg, file)| match alg {
        Some(alg) => {
            let alg = format_ident!("{alg}");
            quote!(#a::JwtKey::File(#a::Algorithm::#alg, ::std::string::String::from(#file)))
        }
        None => quote!(#a::JwtKey::Jwks(::std::string::String::from(#file))),
    });
    let (issuers, audiences, require) = (&jwt.issuers, &jwt.audiences, &jwt.require);
    let issuers = (!issuers.is_empty()).then(|| quote!(.issuers([#(#issuers),*])));
    let audiences = (!audiences.is_empty()).then(|| quote!(.audiences([#(#audiences),*])));
    let require = (!require.is_empty()).then(|| quote!(.require([#(#require),*])));
    let leeway = jwt.leeway.map(|d| {
        let d = duration(d);
        quote!(.leeway(#d))
    });
    quote!(#a::Jwt::new([#(#keys),*]) #issuers #audiences #require #leeway)
}

fn expand_external(ext: &External) -> TokenStream {
    let rt = rt();
    let a = quote!(#rt::proxy::auth);
    let group = ext.group;
    let name = |n: &String| quote!(#rt::HeaderName::from_static(#n));
    let prefix = ext.prefix.as_ref().map(|p| quote!(.prefix(#p)));
    let send = ext.send.as_ref().map(|list| {
        let list = list.iter().map(name);
        quote!(.send_headers([#(#list),*]))
    });
    let copy = (!ext.copy.is_empty()).then(|| {
        let list = ext.copy.iter().map(name);
        quote!(.copy_headers([#(#list),*]))
    });
    let user = ext.user.as_ref().map(|u| {
        let u = name(u);
        quote!(.user_header(#u))
    });
    let timeout = ext.timeout.map(|d| {
        let d = duration(d);
        quote!(.timeout(#d))
    });
    let cache = ext.cache.as_ref().map(|(h, ttl)| {
        let (h, ttl) = (name(h), duration(*ttl));
        quote!(.cache(#h, #ttl))
    });
    quote!(#a::External::new(#group) #prefix #send #copy #user #timeout #cache)
}
