//! `admin` and `access_log` in every kind of proxy where they apply.
use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        admin "127.0.0.1:9100";
        access_log "stdout" json;
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        admin "[::1]:9101";
        upstream pg { peers ["127.0.0.1:5432"]; }
    }
}

fn main() {
    let options = Edge::options();
    let log = options.access_log.expect("declared access log");
    assert_eq!(log.format(), pingora_dsl::observe::access_log::AccessLogFormat::Json);
    let _ = Db::new();
}
