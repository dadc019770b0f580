use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream no_prefix {
            discover etcd "http://127.0.0.1:2379";
        }
        upstream polled {
            discover etcd "http://127.0.0.1:2379" prefix "/services/a/" every 5s;
        }
        upstream tls {
            discover etcd "http://127.0.0.1:2379,https://10.0.0.2:2379" prefix "/services/b/";
        }
        upstream empty {
            discover etcd "http://127.0.0.1:2379" prefix "";
        }
        upstream dns {
            discover dns "api.internal:8080" prefix "/services/c/";
        }
        route path "/a" => upstream no_prefix;
        route path "/b" => upstream polled;
        route path "/c" => upstream tls;
        route path "/d" => upstream empty;
        route => upstream dns;
    }
}

fn main() {}
