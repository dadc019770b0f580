use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        listen "127.0.0.1:6189" proxy_protocol sometimes;
        listen tls "127.0.0.1:6190" cert "a.crt" key "a.key" proxy_protocol required proxy_protocol optional;
        proxy_protocol always;
        upstream web {
            peers ["127.0.0.1:8001"];
            proxy_protocol v1;
        }
    }
}

// Datagrams carry no PROXY header.
udp_proxy! {
    pub Dns {
        listen "127.0.0.1:5353" proxy_protocol required;
        proxy_protocol optional;
        upstream resolvers {
            peers ["127.0.0.1:53"];
            proxy_protocol v2;
        }
    }
}

fn main() {}
