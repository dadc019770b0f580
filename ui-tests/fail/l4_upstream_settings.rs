use pingora_dsl::prelude::*;

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream primary {
            peers ["127.0.0.1:5432", "127.0.0.1:5433"];
            timeout connect 1s, read 30s, idle 1m;
            retry 1 backoff 10ms;
        }
    }
}

udp_proxy! {
    pub Dns {
        listen "127.0.0.1:5353";
        upstream dns {
            peers ["127.0.0.1:53"];
            timeout connect 1s;
            retry 1;
        }
    }
}

fn main() {}
