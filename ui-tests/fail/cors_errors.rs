use pingora_dsl::prelude::*;

proxy! {
    pub Typo {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cors { orgins ["https://app.example.com"]; }
    }

    pub BadValues {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cors {
            origins ["app.example.com", "https://app.example.com/", "https://a.*.example.com"];
            methods [GET, FETCH];
            headers ["content type"];
            max_age 0s;
        }
    }

    pub CredentialsForAll {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cors { origins any; credentials on; }
    }

    pub NoOrigins {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cors { methods [GET]; }
    }

    pub Misplaced {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        cors off;
        route path "/a" => upstream web { cors { origins any; origins any; } }
        route => upstream web { cors [GET]; }
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream pg { peers ["127.0.0.1:5432"]; }
        cors { origins any; }
    }
}

fn main() {}
