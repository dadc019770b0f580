//! A crate whose only dependency is `pingora-dsl`, declaring proxies with most of the
//! language. That it builds (and its test passes) under `cargo test --workspace` proves
//! the macro's expansion needs no other crate in the user's `Cargo.toml`.

use pingora_dsl::prelude::*;

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    checked: bool,
}

proxy! {
    /// A small gateway.
    pub Edge {
        listen "127.0.0.1:6188";
        ctx Ctx;
        upstream web {
            peers ["127.0.0.1:8001", "127.0.0.1:8002" weight 2];
            select random;
            timeout connect 1s, read 10s;
            retry 1;
        }
        route path "/healthz" => respond 200 "ok";
        route path "/old" => redirect 301 "/new";
        route => upstream web { set_request_header "x-edge" "1"; }
        set_response_header "server" "edge";
        via "1.1 edge";
        request_filter(session, ctx) {
            ctx.checked = true;
            if session.path() == "/admin" {
                return Ok(Flow::respond(StatusCode::FORBIDDEN));
            }
        }
        fail_to_connect(_session, _peer, _ctx, error) { error }
        logging(_session, _error, ctx) {
            let _ = ctx.checked;
        }
    }

    /// A proxy choosing peers in code.
    pub Picker {
        listen "127.0.0.1:6189";
        upstream_peer(_session, _ctx) {
            HttpPeer::new(([127, 0, 0, 1], 8001).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_proxies_build_with_one_dependency() {
        let edge = Edge::new();
        assert_eq!(edge.router().routes().len(), 3);
        assert_eq!(edge.router().groups()[0].backends()[1].weight, 2);
        let service = edge.service();
        assert_eq!(service.tcp_addrs(), ["127.0.0.1:6188"]);
        let _ = Picker::new().pipeline();
    }
}
