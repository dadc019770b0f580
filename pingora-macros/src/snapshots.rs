//! Snapshot tests of the expansion: a few declarations run through the whole macro, their
//! output pretty-printed and compared with the files in `tests/snapshots/`, so a change of
//! generated code shows up as a diff in review. After an intended change, regenerate with
//! `SNAPSHOTS=overwrite cargo test -p pingora-macros` and read the diff.

use std::path::PathBuf;

use quote::quote;

use crate::syntax::Kind;

/// Expands `input` as `kind`'s macro and compares it with `tests/snapshots/{name}.rs`.
fn check(name: &str, kind: Kind, input: proc_macro2::TokenStream) {
    let expanded = crate::expand_tokens(input, kind);
    let text = match syn::parse2::<syn::File>(expanded.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        // Not a file of items (should not happen): the raw tokens still show the change.
        Err(_) => expanded.to_string(),
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.rs"));
    if std::env::var_os("SNAPSHOTS").is_some_and(|v| v == "overwrite") {
        std::fs::write(&path, &text).expect("the snapshot is writable");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "the expansion of `{name}` differs from {}: review it, then regenerate with \
         SNAPSHOTS=overwrite cargo test -p pingora-macros\n--- got ---\n{text}",
        path.display()
    );
}

#[test]
fn minimal_proxy() {
    check(
        "minimal_proxy",
        Kind::Http,
        quote! {
            pub Minimal {
                listen "127.0.0.1:6188";
                upstream origin {
                    peers ["127.0.0.1:8001"];
                }
            }
        },
    );
}

#[test]
fn gateway() {
    check(
        "gateway",
        Kind::Http,
        quote! {
            /// A gateway.
            pub Gateway {
                listen "127.0.0.1:6190";
                listen tls "127.0.0.1:6191" cert "server.crt" key "server.key";
                ctx GatewayCtx;
                upstream web {
                    peers ["127.0.0.1:8001"];
                }
                upstream api {
                    peers ["127.0.0.1:9001", "[::1]:9002" weight 2];
                    select consistent_hash(header "X-User");
                    timeout connect 500ms, read 10s;
                    retry 1 backoff 20ms replay 64KiB;
                    health http "/health" status 200..=299 every 2s;
                    passive failures 3 eject 10s;
                    tls sni "api.local";
                }
                route path "/old-docs" => redirect 301 "/docs/";
                route path "/healthz" method [GET, HEAD] => respond 200 "ok\n";
                route path "/api" => upstream api {
                    set_request_header "x-gateway-route" "api";
                }
                route => upstream web;
                set_response_header "x-served-by" "pingora-dsl-gateway";
                remove_response_header "x-powered-by";
                via "1.1 gateway";
                max_header_bytes 32768;
                client_timeout header_read 10s, body_read 30s;
                rate_limit 50 per 1m by header "x-api-key";
                request_filter(session, ctx) {
                    if session.path() == "/admin" {
                        return respond(403);
                    }
                }
                logging = log_request;
                layer tower::limit::ConcurrencyLimitLayer::new(100);
            }
        },
    );
}

#[test]
fn defaults_of_checks() {
    check(
        "defaults_of_checks",
        Kind::Http,
        quote! {
            pub Checked {
                listen "127.0.0.1:6188";
                admin "127.0.0.1:9100";
                upstream origin {
                    discover dns "backend.internal:8080";
                    health tcp;
                    passive failures 5 eject 30s;
                }
            }
        },
    );
}

#[test]
fn tcp_proxy() {
    check(
        "tcp_proxy",
        Kind::Tcp,
        quote! {
            /// Round robin over TCP echo servers.
            pub TcpEcho {
                listen "127.0.0.1:6193";
                upstream echo {
                    peers ["127.0.0.1:7001", "127.0.0.1:7002"];
                    retry 1;
                    timeout connect 1s;
                }
                idle 5m;
            }
        },
    );
}

#[test]
fn udp_proxy() {
    check(
        "udp_proxy",
        Kind::Udp,
        quote! {
            pub Dns {
                listen "127.0.0.1:5353";
                upstream resolvers {
                    peers ["127.0.0.1:5300"];
                }
            }
        },
    );
}

#[test]
fn one_error() {
    check(
        "one_error",
        Kind::Http,
        quote! {
            pub Broken {
                listen "127.0.0.1:6188";
                upstream origin {
                    peers ["127.0.0.1:8001" weight 0];
                }
            }
        },
    );
}
