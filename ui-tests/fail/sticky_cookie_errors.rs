use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app {
            peers ["127.0.0.1:8001"];
            sticky cookie "my server";
            sticky cookie "srv";
        }
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:5432";
        upstream db {
            peers ["127.0.0.1:5433"];
            sticky cookie "srv";
        }
    }
}

fn main() {}
