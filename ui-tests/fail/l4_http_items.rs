use pingora_dsl::prelude::*;

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream primary { peers ["127.0.0.1:5432"]; http2; }
        upstream replica { peers ["127.0.0.1:5433"]; }
        route => upstream primary;
        via "1.1 db";
        idle 10m;
        idle 5m;
    }
}

udp_proxy! {
    pub Dns {
        listen tls "127.0.0.1:5353" cert "a.crt" key "a.key";
        upstream dns { peers ["127.0.0.1:53"]; tls sni "dns.example"; }
    }
}

proxy! {
    pub Web {
        listen "127.0.0.1:8080";
        upstream web { peers ["127.0.0.1:8001"]; }
        idle 1m;
    }
}

fn main() {}
