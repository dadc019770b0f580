use pingora_dsl::prelude::*;

proxy! {
    pub NoTls {
        listen "127.0.0.1:6188";
        listen quic "127.0.0.1:6189";
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

tcp_proxy! {
    pub Db {
        listen tls "127.0.0.1:6432" cert "db.crt" key "db.key";
        listen quic "127.0.0.1:6432";
        upstream db { peers ["127.0.0.1:5432"]; }
    }
}

fn main() {}
