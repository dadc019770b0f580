use pingora_dsl::prelude::*;

proxy! {
    pub Methods {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        auth oauth;
        route path "/a" => upstream web { auth basic "" htpasswd "users"; }
        route path "/b" => upstream web { auth bearer []; }
        route path "/c" => upstream web { auth bearer ["two words"]; }
        route path "/d" => upstream web { auth api_key header "x api key" file "keys" rate 0 per 1m; }
        route path "/e" => upstream web { auth api_key cookie "k" file "keys"; }
        route => upstream web;
    }

    pub Jwt {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        auth jwt { key rs256 "idp.pem"; key XS256 "idp.pem"; issuer []; leeway 5x; audence "api"; }
        route path "/none" => upstream web { auth jwt { issuer "https://idp"; } }
        route => upstream web;
    }

    pub External {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream authz { peers ["127.0.0.1:8002"]; }
        auth external auth { timeout 1s; }
        route path "/x" => upstream web {
            auth external authz { prefix "check"; copy ["x user"]; timeout 1s; timeout 2s; }
        }
        route => upstream web;
    }

    pub Misplaced {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        auth off;
        auth bearer ["t"];
    }
}

tcp_proxy! {
    pub Db {
        listen "127.0.0.1:6432";
        upstream pg { peers ["127.0.0.1:5432"]; }
        auth bearer ["t"];
    }
}

fn main() {}
