use pingora_dsl::prelude::*;

proxy! {
    pub Typo {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        tls_groups ["X25519MLKEM786", "X25519"];
    }

    pub Twice {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        tls_groups ["X25519", "P-256", "x25519"];
    }

    pub Empty {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        tls_groups [];
    }

    pub NotAList {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        tls_groups "X25519";
    }
}

fn main() {}
