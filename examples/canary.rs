//! A canary release declared with `proxy!`: 90% of users to `stable`, 10% to `canary`,
//! sticky by the `uid` cookie (a user stays on one side), and `x-canary: 1` always to the
//! canary (for testers). The example starts demo origins and the proxy in-process, sends
//! demo traffic, and prints the split it observed: per pool, from the proxy's own split
//! counters and from the origins' answers.
//!
//! ```text
//! cargo run --release --example canary            # 2000 users
//! cargo run --release --example canary -- 500     # 500 users
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::RouteAction;
use pingora_dsl_suite::origin::spawn_demo_origins;

proxy! {
    /// Testers to the canary, everyone else split 90/10, sticky per user.
    pub Canary {
        listen "127.0.0.1:6191";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route header "x-canary" == "1" => upstream canary;
        route => split { 90% stable, 10% canary } by cookie "uid";
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let users: usize = match std::env::args().nth(1).map(|n| n.parse()) {
        None => 2000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: canary [USERS]");
            return ExitCode::FAILURE;
        }
    };
    match demo(users).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts origins and the proxy, sends each user's two requests and a tester's, prints.
async fn demo(users: usize) -> Result<(), Box<dyn std::error::Error>> {
    let origins = spawn_demo_origins(&["stable", "canary"])?;
    let mut proxy = Canary::new();
    for (group, addr) in ["stable", "canary"].iter().zip(&origins) {
        if let Some(g) = proxy.router_mut().group_mut(group) {
            g.set_backends(vec![Backend::new(*addr)]);
        }
    }
    let split = proxy
        .router()
        .routes()
        .iter()
        .find_map(|r| match r.action() {
            RouteAction::Split(s) => Some(s.clone()),
            _ => None,
        });
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut moved = 0;
    for user in 0..users {
        let cookie = format!("uid=user-{user}");
        let first = answer_of(&client, running.addr(), Some(&cookie), false).await?;
        let again = answer_of(&client, running.addr(), Some(&cookie), false).await?;
        moved += usize::from(first != again);
        *answered.entry(first).or_default() += 1;
    }
    let tester = answer_of(&client, running.addr(), None, true).await?;
    println!("users: {users}, each sent two requests");
    for (pool, n) in &answered {
        println!(
            "answered by {pool}: {n} users ({:.1}%)",
            *n as f64 * 100.0 / users as f64
        );
    }
    println!("users who changed pool between their requests: {moved}");
    if let Some(split) = split {
        for arm in split.arms() {
            let pool = ["stable", "canary"].get(arm.group).unwrap_or(&"?");
            println!("split counter {pool}: {} requests", arm.requests.get());
        }
    }
    println!("a tester with x-canary: 1 was answered by {tester}");
    running.shutdown().await;
    Ok(())
}

/// The `x-origin` of the answer to `GET /` with `cookie`, and `x-canary: 1` if `tester`.
async fn answer_of(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: std::net::SocketAddr,
    cookie: Option<&str>,
    tester: bool,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut request = http::Request::get(format!("http://{addr}/"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if tester {
        request = request.header("x-canary", "1");
    }
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.request(request.body(Full::new(Bytes::new()))?),
    )
    .await??;
    let origin = response
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    response.into_body().collect().await?;
    Ok(origin)
}
