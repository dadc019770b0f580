use pingora_dsl::prelude::*;

proxy! {
    pub Cached {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cache { memory 0; ttl 5 ; stale_if_error 1m; stale_if_error 2m; max_age 10s; }
        route path "/a" => upstream web { cache { key query "q"; status_header "x cache"; } }
        route path "/b" => upstream web { cache { memory 1MiB; max_object 2MiB; } }
        route path "/d" => upstream web { cache { disk "" 1GiB; } }
        route path "/e" => upstream web { cache { disk "/var/cache/edge" 0; } }
        route path "/f" => upstream web { cache { key "fixed"; } }
        route path "/g" => upstream web { cache { key "${nope}"; } }
        route path "/c" => respond 200 "ok" { cache off; }
        route => upstream web;
    }

    pub Misplaced {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cache off;
        cache;
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream db { peers ["127.0.0.1:5432"]; }
        cache;
    }
}

fn main() {}
