use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        admin "127.0.0.1:6188";
        admin "127.0.0.1:9100";
    }

    pub NoPort {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        admin "localhost";
    }

    pub NotAString {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        admin 9100;
    }
}

fn main() {}
