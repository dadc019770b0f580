use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route path "/beta" => upstream canary;
        route => upstream stable;
        request_filter(session, _ctx) {
            if session.headers().contains_key("x-beta") {
                session.use_pool(Self::POOL_CANRY);
            }
        }
    }
}

fn main() {}
