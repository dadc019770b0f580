use pingora_dsl::prelude::*;

proxy! {
    pub Codings {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        compress { encodings [brotli, gzip, gzip]; types ["text", "application/json"]; level 9; }
        route path "/a" => upstream web { compress { min_size 1KB; } }
        route path "/b" => respond 200 "ok" { compress off; }
        route => upstream web;
    }

    pub Misplaced {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        compress off;
        compress;
    }
}

udp_proxy! {
    pub Dns {
        listen "127.0.0.1:5353";
        upstream dns { peers ["127.0.0.1:53"]; }
        compress;
    }
}

fn main() {}
