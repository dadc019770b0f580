use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        access_log "syslog:udp://logs.internal:514?facility=local3";
    }
}

proxy! {
    pub Other {
        listen "127.0.0.1:6189";
        upstream app { peers ["127.0.0.1:8001"]; }
        access_log "syslog:udp://127.0.0.1:514?facility=local9&tag=edge" json;
    }
}

fn main() {}
