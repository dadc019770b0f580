use pingora_dsl::prelude::*;

proxy! {
    pub NotApproved {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        fips on;
        tls_groups ["P-256", "X25519"];
    }

    pub NotASwitch {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        fips yes;
    }
}

tcp_proxy! {
    /// The TLS policy is the process's: a layer-4 proxy may declare it too.
    pub Db {
        listen tls "127.0.0.1:6432" cert "db.crt" key "db.key";
        upstream pg { peers ["127.0.0.1:5432"]; }
        fips on;
        tls_groups ["ffdhe2048"];
    }
}

fn main() {}
