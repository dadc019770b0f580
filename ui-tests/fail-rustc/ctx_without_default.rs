use pingora_dsl::prelude::*;

pub struct NoDefault(u32);

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        ctx NoDefault;
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}
