use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream cleartext {
            peers ["127.0.0.1:8080"];
            http2 negotiate;
        }
        upstream twice {
            peers ["127.0.0.1:8081"];
            http2;
            http2 prior_knowledge;
        }
        route path "/a" => upstream cleartext;
        route => upstream twice;
    }
}

fn main() {}
