use pingora_dsl::prelude::*;

// Claims come from a JWT: a proxy authenticating by bearer tokens has none.
proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream admin { peers ["127.0.0.1:8002"]; }
        auth bearer ["t0ken"];
        route not claim "role" => upstream web;
        route => upstream admin;
    }
}

fn main() {}
