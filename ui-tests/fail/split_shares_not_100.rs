use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route path "/a" => split { 90% stable, 20% canary };
        route => upstream stable;
    }
}

fn main() {}
