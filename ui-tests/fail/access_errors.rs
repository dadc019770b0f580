use pingora_dsl::prelude::*;

proxy! {
    pub Lists {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        allow ["10.0.0.0/8", "10.1.0.1/16", "example.com"];
        deny ["10.0.0.0/8", "192.0.2.0/24", "192.0.2.0/24"];
        trusted_proxies [];
        trusted_proxies ["10.9.0.0/16"];
        route path "/a" => upstream web { deny []; }
        route => upstream web { allow "10.0.0.0/8"; }
    }

    pub Both {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        allow ["10.0.0.0/8", "192.0.2.0/24"];
        deny ["10.0.0.0/8"];
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream pg { peers ["127.0.0.1:5432"]; }
        allow ["10.0.0.0/8"];
        trusted_proxies ["10.0.0.0/8"];
    }
}

fn main() {}
