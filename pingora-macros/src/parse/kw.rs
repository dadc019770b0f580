//! The language's keywords, as `syn` custom keywords: a parser peeks for one by type
//! (`input.peek(kw::listen)`) instead of comparing strings, and the parsed keyword keeps
//! its span for the errors about it.

syn::custom_keyword!(listen);
syn::custom_keyword!(tls);
syn::custom_keyword!(cert);
syn::custom_keyword!(key);
syn::custom_keyword!(client_ca);
syn::custom_keyword!(idle);
syn::custom_keyword!(ctx);
syn::custom_keyword!(upstream);
syn::custom_keyword!(route);
syn::custom_keyword!(layer);
syn::custom_keyword!(via);
syn::custom_keyword!(forwarded_for);
syn::custom_keyword!(keepalive);
syn::custom_keyword!(max_header_bytes);
syn::custom_keyword!(max_idle_per_peer);
syn::custom_keyword!(client_timeout);
syn::custom_keyword!(tunnel_idle);
syn::custom_keyword!(allow_upgrade);
syn::custom_keyword!(access_log);
syn::custom_keyword!(rate_limit);
syn::custom_keyword!(per);
syn::custom_keyword!(by);
syn::custom_keyword!(header);
syn::custom_keyword!(admin);
syn::custom_keyword!(on);
syn::custom_keyword!(off);
syn::custom_keyword!(set_request_header);
syn::custom_keyword!(remove_request_header);
syn::custom_keyword!(set_response_header);
syn::custom_keyword!(remove_response_header);
// Upstream settings.
syn::custom_keyword!(peers);
syn::custom_keyword!(weight);
syn::custom_keyword!(select);
syn::custom_keyword!(custom);
syn::custom_keyword!(timeout);
syn::custom_keyword!(retry);
syn::custom_keyword!(backoff);
syn::custom_keyword!(replay);
syn::custom_keyword!(any_method);
syn::custom_keyword!(health);
syn::custom_keyword!(passive);
syn::custom_keyword!(failures);
syn::custom_keyword!(eject);
syn::custom_keyword!(fail_open);
syn::custom_keyword!(discover);
syn::custom_keyword!(every);
syn::custom_keyword!(http2);
syn::custom_keyword!(negotiate);
syn::custom_keyword!(sni);
syn::custom_keyword!(ca);
syn::custom_keyword!(insecure);
// Routes.
syn::custom_keyword!(host);
syn::custom_keyword!(path);
syn::custom_keyword!(method);
syn::custom_keyword!(respond);
syn::custom_keyword!(redirect);
