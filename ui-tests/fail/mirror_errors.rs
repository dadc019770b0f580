use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream live { peers ["127.0.0.1:8001"]; }
        upstream shadow { peers ["127.0.0.1:8002"]; }
        route path "/a" => upstream live { mirror shadw; }
        route path "/b" => upstream live { mirror shadow 0%; }
        route path "/c" => upstream live {
            mirror shadow;
            mirror shadow 50%;
        }
        route path "/d" => respond 200 { mirror shadow; }
        route => upstream live;
    }
}

fn main() {}
