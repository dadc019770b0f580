use pingora_dsl::prelude::*;

// A `claim` condition reads the JWT that the proxy's `auth jwt` verifies before routing.
proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream admin { peers ["127.0.0.1:8002"]; }
        route claim "role" == "admin" => upstream admin { auth bearer ["t0ken"]; }
        route => upstream web;
    }
}

fn main() {}
