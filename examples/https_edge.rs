//! An HTTPS edge and its port-80 redirector, declared side by side and run as one process
//! (one command line, one config file, one admin listener, one reload, one upgrade):
//! `Redirect` sends every cleartext request to HTTPS; `Edge` terminates TLS and routes
//! gRPC, WebSocket and web traffic to their pools.
//!
//! ```text
//! cargo run --release --example https_edge -- -c edge.toml
//! ```
//!
//! The declared addresses and certificate files are placeholders for the config file, which
//! gives each proxy its own section, e.g.:
//!
//! ```toml
//! [proxy.Redirect]
//! listen = ["0.0.0.0:80"]
//!
//! [proxy.Edge]
//! tls_listen = ["0.0.0.0:443"]
//! certificate = [{ cert = "example.com.crt", key = "example.com.key" },
//!                { cert = "api.example.com.crt", key = "api.example.com.key" }]
//! upstream.web.peers = ["10.0.0.1:8080"]
//! upstream.grpc.peers = ["10.0.0.2:50051"]
//! upstream.ws.peers = ["10.0.0.3:8081"]
//! ```
//!
//! Several certificates are chosen by SNI. Flags that would apply to both proxies
//! (`--listen`, `--upstream`, `--cert`, ...) are refused: give them per proxy in the file.

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::set::ProxySet;

proxy! {
    /// Cleartext: every request to the same URL over HTTPS.
    pub Redirect {
        listen "127.0.0.1:6180";
        route => redirect 308 "https://${host}${request_uri}";
    }
}

proxy! {
    /// HTTPS: gRPC to an HTTP/2 pool, WebSocket upgrades to theirs, the rest to the web.
    pub Edge {
        listen tls "127.0.0.1:6443" cert "edge.crt" key "edge.key";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream grpc {
            peers ["127.0.0.1:8002"];
            http2;
        }
        upstream ws { peers ["127.0.0.1:8003"]; }
        set_response_header "strict-transport-security" "max-age=31536000";
        route header "content-type" ~ "^application/grpc" => upstream grpc;
        route header "upgrade" ~ "(?i)^websocket$" => upstream ws;
        route => upstream web;
    }
}

fn main() -> ExitCode {
    ProxySet::new().with::<Redirect>().with::<Edge>().run()
}
