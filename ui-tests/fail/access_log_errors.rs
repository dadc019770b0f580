use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        access_log "stdout" xml;
    }

    pub Twice {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        access_log "stdout";
        access_log "/var/log/proxy.log" json;
    }

    pub Empty {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        access_log "";
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream pg { peers ["127.0.0.1:5432"]; }
        access_log "stdout";
    }
}

fn main() {}
