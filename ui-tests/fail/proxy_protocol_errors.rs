use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        proxy_protocol always;
        upstream web {
            peers ["127.0.0.1:8001"];
            proxy_protocol v1;
        }
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream pg {
            peers ["127.0.0.1:5432"];
            proxy_protocol v2;
        }
    }
}

fn main() {}
