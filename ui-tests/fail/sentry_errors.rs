use pingora_dsl::prelude::*;

proxy! {
    pub NoKey {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        sentry "https://o0.ingest.sentry.io/42";
    }

    pub BadRate {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        sentry "https://key@o0.ingest.sentry.io/42" sample 2.5;
    }

    pub Twice {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        sentry "https://key@o0.ingest.sentry.io/42";
        sentry "https://key@o0.ingest.sentry.io/43";
    }

    pub UnknownOption {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        sentry "https://key@o0.ingest.sentry.io/42" rate 0.5;
    }

    pub NotANumber {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        sentry "ftp://key@o0.ingest.sentry.io/project";
    }
}

fn main() {}
