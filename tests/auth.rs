//! Authentication declared in `proxy!`, over real sockets: an htpasswd file of bcrypt
//! hashes made here, bearer tokens from a list and a file, API keys with their own rates,
//! JWTs signed here (RS256, ES256, HS256 with PEM and secret files, and a JWKS file), and a
//! real external authorization service — each refusal with its status and challenge, the
//! identity forwarded upstream and written to the access log, files reloaded.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, point, send, wait_until, TestClient};

/// Where the credentials files live (relative to the package, as the declaration names
/// them); written once per test process.
const DIR: &str = "target/tmp/auth-test";

proxy! {
    /// Every method, one route each; JWTs signed by any of three keys elsewhere.
    pub Secured {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        upstream authz { peers ["127.0.0.1:8002"]; }
        upstream staff { peers ["127.0.0.1:8003"]; }
        cors { origins ["https://app.example.com"]; }
        access_log "target/tmp/auth-test/access.log" json;
        set_request_header "x-auth-user" "${user}";
        set_request_header "x-tenant" "${claim.tenant}";
        auth jwt {
            key RS256 "target/tmp/auth-test/rsa.pem";
            key ES256 "target/tmp/auth-test/ec.pem";
            key HS256 "target/tmp/auth-test/hmac.secret";
        }
        route path "/public" => upstream app { auth off; }
        route path "/admin" claim "role" == "admin" => upstream staff;
        route path "/admin" => respond 403 "admins only\n";
        route path "/ops" claim "groups" == "ops" => upstream staff;
        route path "/write" claim "scope" ~ "(^| )write( |$)" claim "level" == "3" => upstream staff;
        route path "/open" claim "role" => upstream staff { auth off; }
        route path "/basic" => upstream app {
            auth basic "Staff" htpasswd "target/tmp/auth-test/users.htpasswd";
        }
        route path "/tokens" => upstream app { auth bearer file "target/tmp/auth-test/tokens"; }
        route path "/listed" => upstream app { auth bearer ["t0ken-one", "t0ken-two"]; }
        route path "/keys" => upstream app {
            auth api_key header "x-api-key" file "target/tmp/auth-test/keys" rate 3 per 1m;
        }
        route path "/query-keys" => upstream app {
            auth api_key query "key" file "target/tmp/auth-test/keys";
        }
        route path "/sso" => upstream app {
            auth external authz {
                prefix "/check";
                copy ["x-user-id"];
                user "x-user-id";
                timeout 300ms;
                cache 1m by header "authorization";
            }
        }
        route path "/jwks" => upstream app {
            auth jwt {
                jwks "target/tmp/auth-test/jwks.json";
                issuer "https://idp.test";
                audience "api";
                require ["tenant"];
                leeway 5s;
            }
        }
        route => upstream app;
    }
}

proxy! {
    /// A proxy of its own for the reload test, whose files change under it.
    pub Reloading {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        auth basic "Reload" htpasswd "target/tmp/auth-test/reload.htpasswd";
    }
}

/// The signing keys the files hold the public halves of.
struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    hmac: EncodingKey,
    jwks_rsa: EncodingKey,
    other_rsa: EncodingKey,
    /// The RSA public key's PEM (for the algorithm-confusion attempt).
    rsa_public_pem: Vec<u8>,
}

/// Writes the credential files once and returns the signing keys.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::fs::create_dir_all(DIR).expect("dir");
        let write =
            |name: &str, data: &[u8]| std::fs::write(format!("{DIR}/{name}"), data).expect("write");
        let hash = |p: &str| bcrypt::hash(p, 4).expect("bcrypt");
        write(
            "users.htpasswd",
            format!(
                "# staff\nada:{}\nbob:{}\n",
                hash("lovelace"),
                hash("builder")
            )
            .as_bytes(),
        );
        write(
            "reload.htpasswd",
            format!("old:{}\n", hash("pw")).as_bytes(),
        );
        write("tokens", b"tk-file-1 deploy-bot\n# retired\ntk-file-2\n");
        write("keys", b"k-acme acme\nk-big big 100/1m\n");
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let rsa_public_pem = rsa.public_key_to_pem().expect("pem");
        write("rsa.pem", &rsa_public_pem);
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .expect("curve");
        let ec = openssl::ec::EcKey::generate(&group).expect("ec");
        write("ec.pem", &ec.public_key_to_pem().expect("pem"));
        let secret = "a-secret-of-at-least-thirty-two-bytes!";
        write("hmac.secret", secret.as_bytes());
        let jwks_rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "idp-1", "alg": "RS256", "use": "sig",
            "n": b64(jwks_rsa.n().to_vec()), "e": b64(jwks_rsa.e().to_vec()),
        }]});
        write("jwks.json", jwks.to_string().as_bytes());
        let pkcs8 = |key: openssl::pkey::PKey<openssl::pkey::Private>| {
            key.private_key_to_pem_pkcs8().expect("pem")
        };
        let other = openssl::rsa::Rsa::generate(2048).expect("rsa");
        Keys {
            rsa: EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().expect("pem")).expect("key"),
            ec: EncodingKey::from_ec_pem(&pkcs8(
                openssl::pkey::PKey::from_ec_key(ec).expect("pkey"),
            ))
            .expect("key"),
            hmac: EncodingKey::from_secret(secret.as_bytes()),
            jwks_rsa: EncodingKey::from_rsa_pem(&jwks_rsa.private_key_to_pem().expect("pem"))
                .expect("key"),
            other_rsa: EncodingKey::from_rsa_pem(&other.private_key_to_pem().expect("pem"))
                .expect("key"),
            rsa_public_pem,
        }
    })
}

/// A token signed with `key` and `alg` over `claims` (plus `exp` an hour ahead unless set).
fn token(
    alg: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    mut claims: serde_json::Value,
) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = serde_json::json!(now() + 3600);
    }
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the authorization service saw and how often it was asked.
#[derive(Default)]
struct AuthzSeen {
    asked: AtomicUsize,
    last: Mutex<Option<(String, String, Option<String>)>>,
}

/// A real authorization service: `Bearer good` is allowed (as user 42), `Bearer denied`
/// refused 403, `Bearer slow` answered after 5 s, `Bearer broken` 500, no token 401.
async fn start_authz() -> (SocketAddr, Arc<AuthzSeen>) {
    let seen = Arc::new(AuthzSeen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(decide(&state, req).await) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn decide(state: &AuthzSeen, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    state.asked.fetch_add(1, Ordering::SeqCst);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *state.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((
        req.method().to_string(),
        req.uri().to_string(),
        auth.clone(),
    ));
    let answer = |status: u16, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        r
    };
    match auth.as_deref() {
        Some("Bearer good") => {
            let mut r = answer(200, "");
            r.headers_mut()
                .insert("x-user-id", "42".parse().expect("value"));
            r.headers_mut()
                .insert("x-not-copied", "1".parse().expect("value"));
            r
        }
        Some("Bearer denied") => answer(403, "not for you\n"),
        Some("Bearer slow") => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            answer(200, "")
        }
        Some("Bearer broken") => answer(500, "oops\n"),
        _ => {
            let mut r = answer(401, "log in first\n");
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"sso\"".parse().expect("value"),
            );
            r
        }
    }
}

struct Setup {
    app: Origin,
    staff: Origin,
    authz: Arc<AuthzSeen>,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

async fn setup() -> Setup {
    keys();
    let app = Origin::start("app").await.expect("origin");
    let staff = Origin::start("staff").await.expect("origin");
    let (authz_addr, authz) = start_authz().await;
    let mut proxy = Secured::new();
    point(proxy.router_mut(), "app", &[app.addr()]);
    point(proxy.router_mut(), "authz", &[authz_addr]);
    point(proxy.router_mut(), "staff", &[staff.addr()]);
    proxy
        .router()
        .check_auth()
        .expect("every credentials file loads");
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    Setup {
        app,
        staff,
        authz,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    }
}

impl Setup {
    /// `GET path` with `headers`: the answer, its body.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (Response<()>, String) {
        let mut req = Request::get(format!("http://{}{path}", self.proxy.addr()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (r, body) = send(
            &self.client,
            req.body(Full::new(Bytes::new())).expect("request"),
        )
        .await;
        (r, String::from_utf8_lossy(&body).into_owned())
    }

    /// The status of `GET path` with `headers`, and the `x-auth-user` the origin received.
    async fn status(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let before = self.app.requests();
        let (r, _) = self.get(path, headers).await;
        let user = (self.app.requests() > before)
            .then(|| self.app.last_headers())
            .flatten()
            .and_then(|h| {
                h.get("x-auth-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
        (r.status().as_u16(), user)
    }
}

fn header<'a>(r: &'a Response<()>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_against_an_htpasswd_file() {
    let s = setup().await;
    let origin = ("origin", "https://app.example.com");
    let (r, body) = s.get("/basic/x", &[origin]).await;
    assert_eq!(r.status(), 401, "{body}");
    assert_eq!(
        header(&r, "www-authenticate"),
        "Basic realm=\"Staff\", charset=\"UTF-8\""
    );
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com",
        "the 401 carries CORS"
    );
    let wrong = basic("ada", "babbage");
    assert_eq!(
        s.status("/basic/x", &[("authorization", &wrong)]).await.0,
        401
    );
    let unknown = basic("eve", "lovelace");
    assert_eq!(
        s.status("/basic/x", &[("authorization", &unknown)]).await.0,
        401
    );
    let right = basic("ada", "lovelace");
    for _ in 0..2 {
        let (status, user) = s.status("/basic/x", &[("authorization", &right)]).await;
        assert_eq!((status, user.as_deref()), (200, Some("ada")));
    }
    assert_eq!(s.status("/public", &[]).await.0, 200, "`auth off`");
    assert_eq!(s.app.requests(), 3, "refused requests never went upstream");
}

#[tokio::test]
async fn a_reloaded_file_replaces_its_users_and_a_bad_one_keeps_them() {
    keys();
    let app = Origin::start("app").await.expect("origin");
    let mut proxy = Reloading::new();
    point(proxy.router_mut(), "app", &[app.addr()]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let (_authz, authz) = start_authz().await;
    let s = Setup {
        app,
        staff: Origin::start("staff").await.expect("origin"),
        authz,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    };
    let (old, new) = (basic("old", "pw"), basic("new", "pw2"));
    assert_eq!(s.status("/reload", &[("authorization", &old)]).await.0, 200);
    let file = format!("{DIR}/reload.htpasswd");
    std::fs::write(
        &file,
        format!("new:{}\n", bcrypt::hash("pw2", 4).expect("bcrypt")),
    )
    .expect("write");
    let outcome = pingora_dsl::watched::reload_files();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(s.status("/reload", &[("authorization", &old)]).await.0, 401);
    assert_eq!(s.status("/reload", &[("authorization", &new)]).await.0, 200);
    std::fs::write(&file, "new:$apr1$not-bcrypt\n").expect("write");
    let outcome = pingora_dsl::watched::reload_files();
    assert!(
        outcome
            .failed
            .iter()
            .any(|e| e.contains("reload.htpasswd") && e.contains("not bcrypt")),
        "{:?}",
        outcome.failed
    );
    assert_eq!(
        s.status("/reload", &[("authorization", &new)]).await.0,
        200,
        "the previous users stay"
    );
}

#[tokio::test]
async fn bearer_tokens_from_a_list_and_a_file() {
    let s = setup().await;
    let (r, _) = s.get("/listed", &[]).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "www-authenticate")),
        (401, "Bearer")
    );
    let (r, _) = s.get("/listed", &[("authorization", "Bearer nope")]).await;
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(
        s.status("/listed", &[("authorization", "Bearer t0ken-two")])
            .await
            .0,
        200
    );
    assert_eq!(
        s.status("/listed", &[("authorization", "bearer t0ken-one")])
            .await
            .0,
        200,
        "the scheme is case-insensitive"
    );
    let (status, user) = s
        .status("/tokens", &[("authorization", "Bearer tk-file-1")])
        .await;
    assert_eq!((status, user.as_deref()), (200, Some("deploy-bot")));
    assert_eq!(
        s.status("/tokens", &[("authorization", "Bearer t0ken-one")])
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn api_keys_with_their_own_rates() {
    let s = setup().await;
    let (r, _) = s.get("/keys", &[]).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "www-authenticate")),
        (401, "ApiKey header=\"x-api-key\"")
    );
    assert_eq!(s.status("/keys", &[("x-api-key", "k-wrong")]).await.0, 401);
    for _ in 0..3 {
        let (status, user) = s.status("/keys", &[("x-api-key", "k-acme")]).await;
        assert_eq!((status, user.as_deref()), (200, Some("acme")));
    }
    let (r, body) = s.get("/keys", &[("x-api-key", "k-acme")]).await;
    assert_eq!(r.status(), 429, "the declared rate: 3 per minute ({body})");
    assert!(header(&r, "retry-after")
        .parse::<u64>()
        .is_ok_and(|s| (1..=60).contains(&s)));
    for _ in 0..5 {
        assert_eq!(
            s.status("/keys", &[("x-api-key", "k-big")]).await.0,
            200,
            "its own rate: 100 per minute"
        );
    }
    let (status, user) = s.status("/query-keys?key=k-big&x=1", &[]).await;
    assert_eq!((status, user.as_deref()), (200, Some("big")));
}

#[tokio::test]
async fn an_external_service_decides() {
    let s = setup().await;
    let good = [("authorization", "Bearer good")];
    let (status, user) = s.status("/sso/items?page=2", &good).await;
    assert_eq!((status, user.as_deref()), (200, Some("42")));
    let seen = s.app.last_headers().expect("forwarded");
    assert_eq!(
        seen.get("x-user-id").map(|v| v.as_bytes()),
        Some(&b"42"[..]),
        "copied from the verdict"
    );
    assert!(seen.get("x-not-copied").is_none());
    let asked = s
        .authz
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        asked,
        Some((
            "GET".to_owned(),
            "/check/sso/items?page=2".to_owned(),
            Some("Bearer good".to_owned())
        ))
    );
    let n = s.authz.asked.load(Ordering::SeqCst);
    assert_eq!(s.status("/sso/other", &good).await.0, 200);
    assert_eq!(
        s.authz.asked.load(Ordering::SeqCst),
        n,
        "the allow verdict was cached"
    );

    let (r, body) = s.get("/sso", &[("authorization", "Bearer denied")]).await;
    assert_eq!((r.status().as_u16(), body.as_str()), (403, "not for you\n"));
    let (r, body) = s.get("/sso", &[]).await;
    assert_eq!(
        (r.status().as_u16(), body.as_str()),
        (401, "log in first\n")
    );
    assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"sso\"");
    for failing in ["Bearer slow", "Bearer broken"] {
        let started = std::time::Instant::now();
        let (r, _) = s.get("/sso", &[("authorization", failing)]).await;
        assert_eq!(r.status(), 503, "{failing}: fails closed");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{failing}: within the timeout"
        );
    }
    let refused = s.authz.asked.load(Ordering::SeqCst);
    assert_eq!(
        s.get("/sso", &[("authorization", "Bearer denied")])
            .await
            .0
            .status(),
        403
    );
    assert_eq!(
        s.authz.asked.load(Ordering::SeqCst),
        refused + 1,
        "refusals are never cached"
    );
}

#[tokio::test]
async fn jwts_signed_with_each_key() {
    let s = setup().await;
    let k = keys();
    let claims = serde_json::json!({"sub": "ada", "tenant": "t-1"});
    for (alg, key) in [
        (Algorithm::RS256, &k.rsa),
        (Algorithm::ES256, &k.ec),
        (Algorithm::HS256, &k.hmac),
    ] {
        let bearer = format!("Bearer {}", token(alg, key, None, claims.clone()));
        let (status, user) = s.status("/anything", &[("authorization", &bearer)]).await;
        assert_eq!((status, user.as_deref()), (200, Some("ada")), "{alg:?}");
        let tenant = s
            .app
            .last_headers()
            .and_then(|h| h.get("x-tenant").cloned());
        assert_eq!(
            tenant.as_ref().map(|v| v.as_bytes()),
            Some(&b"t-1"[..]),
            "a claim forwarded as a header"
        );
    }
    let refused = |claims: serde_json::Value, alg: Algorithm, key: &EncodingKey| {
        token(alg, key, None, claims)
    };
    for (what, jwt, why) in [
        (
            "expired",
            refused(
                serde_json::json!({"sub": "a", "exp": now() - 600}),
                Algorithm::RS256,
                &k.rsa,
            ),
            "expired",
        ),
        (
            "not yet",
            refused(
                serde_json::json!({"sub": "a", "nbf": now() + 600}),
                Algorithm::RS256,
                &k.rsa,
            ),
            "not valid yet",
        ),
        (
            "another key",
            refused(claims.clone(), Algorithm::RS256, &k.other_rsa),
            "signature",
        ),
        (
            "no exp",
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &serde_json::json!({"sub": "a"}),
                &k.rsa,
            )
            .expect("sign"),
            "claim",
        ),
        // The RSA public key used as an HMAC secret: the RS256 key verifies RS256 only.
        (
            "HS256 with the public key",
            refused(
                claims.clone(),
                Algorithm::HS256,
                &EncodingKey::from_secret(&k.rsa_public_pem),
            ),
            "signature",
        ),
    ] {
        let (r, _) = s
            .get("/anything", &[("authorization", &format!("Bearer {jwt}"))])
            .await;
        assert_eq!(r.status(), 401, "{what}");
        let challenge = header(&r, "www-authenticate");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(why),
            "{what}: {challenge}"
        );
    }
    let (r, _) = s
        .get("/anything", &[("authorization", "Bearer not.a.jwt")])
        .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn routes_chosen_by_jwt_claims() {
    let s = setup().await;
    let k = keys();
    let bearer = |claims: serde_json::Value| {
        format!("Bearer {}", token(Algorithm::HS256, &k.hmac, None, claims))
    };
    // Which origin answered `GET path` with `authorization`, and the status.
    let ask = |path: &'static str, authorization: String| {
        let s = &s;
        async move {
            let (app, staff) = (s.app.requests(), s.staff.requests());
            let (r, body) = s.get(path, &[("authorization", &authorization)]).await;
            let by = match (s.app.requests() > app, s.staff.requests() > staff) {
                (false, true) => "staff",
                (true, false) => "app",
                (false, false) => "proxy",
                (true, true) => "both",
            };
            (r.status().as_u16(), by, body)
        }
    };
    let admin = bearer(serde_json::json!({"sub": "ada", "role": "admin"}));
    assert_eq!(ask("/admin/users", admin.clone()).await.0, 200);
    assert_eq!(ask("/admin/users", admin).await.1, "staff");
    let user = bearer(serde_json::json!({"sub": "bob", "role": "user"}));
    let (status, by, body) = ask("/admin", user).await;
    assert_eq!((status, by, body.as_str()), (403, "proxy", "admins only\n"));
    // A token that does not verify has no claims: the next route, whose authentication
    // answers 401.
    let expired = bearer(serde_json::json!({"sub": "eve", "role": "admin", "exp": now() - 600}));
    assert_eq!(ask("/admin", expired).await.0, 401);
    assert_eq!(ask("/admin", String::new()).await.0, 401);
    // An array claim holds when one element does.
    let ops = bearer(serde_json::json!({"sub": "cy", "groups": ["dev", "ops"]}));
    assert_eq!(ask("/ops", ops).await.1, "staff");
    let dev = bearer(serde_json::json!({"sub": "dee", "groups": ["dev"]}));
    assert_eq!(ask("/ops", dev).await.1, "app");
    // A regex over a space-separated scope, and a number compared as its JSON text.
    let writer =
        |level: u8| bearer(serde_json::json!({"sub": "wu", "scope": "read write", "level": level}));
    assert_eq!(ask("/write", writer(3)).await.1, "staff");
    assert_eq!(ask("/write", writer(2)).await.1, "app");
    let reader = bearer(serde_json::json!({"sub": "rae", "scope": "read rewrite", "level": 3}));
    assert_eq!(ask("/write", reader).await.1, "app");
    // A route without authentication still sees the claims of a valid token.
    let role = bearer(serde_json::json!({"sub": "ola", "role": "any"}));
    assert_eq!(ask("/open", role).await.1, "staff");
    assert_eq!(
        ask("/open", String::new()).await.0,
        401,
        "no claim: the catch-all route"
    );
    // The identity found before routing reaches the origin as the user.
    let admin = bearer(serde_json::json!({"sub": "ada", "role": "admin"}));
    ask("/admin", admin).await;
    let user = s
        .staff
        .last_headers()
        .and_then(|h| h.get("x-auth-user").cloned());
    assert_eq!(user.as_ref().map(|v| v.as_bytes()), Some(&b"ada"[..]));
}

#[tokio::test]
async fn jwts_from_a_jwks_with_issuer_audience_and_required_claims() {
    let s = setup().await;
    let k = keys();
    let sign = |claims: serde_json::Value| {
        format!(
            "Bearer {}",
            token(Algorithm::RS256, &k.jwks_rsa, Some("idp-1"), claims)
        )
    };
    let good = sign(
        serde_json::json!({"sub": "svc", "iss": "https://idp.test", "aud": "api", "tenant": "t-9"}),
    );
    let (status, user) = s.status("/jwks", &[("authorization", &good)]).await;
    assert_eq!((status, user.as_deref()), (200, Some("svc")));
    for (what, claims) in [
        (
            "issuer",
            serde_json::json!({"sub": "svc", "iss": "https://evil.test", "aud": "api", "tenant": "t"}),
        ),
        (
            "audience",
            serde_json::json!({"sub": "svc", "iss": "https://idp.test", "aud": "web", "tenant": "t"}),
        ),
        (
            "tenant",
            serde_json::json!({"sub": "svc", "iss": "https://idp.test", "aud": "api"}),
        ),
        (
            "no issuer",
            serde_json::json!({"sub": "svc", "aud": "api", "tenant": "t"}),
        ),
    ] {
        assert_eq!(
            s.status("/jwks", &[("authorization", &sign(claims))])
                .await
                .0,
            401,
            "{what}"
        );
    }
    // A token the proxy-wide keys accept is not one the JWKS route accepts.
    let other = format!(
        "Bearer {}",
        token(
            Algorithm::RS256,
            &k.rsa,
            None,
            serde_json::json!({"sub": "a"})
        )
    );
    assert_eq!(s.status("/jwks", &[("authorization", &other)]).await.0, 401);
}

#[tokio::test]
async fn the_access_log_names_the_user() {
    let s = setup().await;
    let marker = format!("who-{}", std::process::id());
    let path = format!("/basic/{marker}");
    assert_eq!(
        s.status(&path, &[("authorization", &basic("bob", "builder"))])
            .await
            .0,
        200
    );
    let log = format!("{DIR}/access.log");
    wait_until(Duration::from_secs(10), "the access log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&marker))
    })
    .await;
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text.lines().find(|l| l.contains(&marker)).expect("line");
    let entry: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(entry["user"], "bob", "{line}");
}
