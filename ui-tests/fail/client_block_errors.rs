use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route client ["10.0.0.1/8", "10.0.0.0/33", "ten.0.0.0/8"] => upstream canary;
        route => upstream stable;
    }
}

fn main() {}
