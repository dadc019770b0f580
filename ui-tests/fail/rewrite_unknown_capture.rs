use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route path "/u" => upstream canary {
            rewrite_path "^/u/([0-9]+)$" "/users/$2";
        }
        route path "/p" => upstream canary {
            rewrite_path "^/p/(?P<id>[0-9]+)$" "/people/${name}";
        }
        route => upstream stable;
    }
}

fn main() {}
