//! Peers given by host name in `proxy!`: resolved before the proxy serves, and again on an
//! interval, so a name that moves takes the traffic with it — through a resolver under the
//! test's control (no system resolver, no DNS), against real origins on two loopback
//! addresses.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_dsl::lb::discovery::{NamedPeers, Resolve, ResolveFuture};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, get, send, wait_until};

proxy! {
    /// A pool named by DNS, weights and an IP literal beside it.
    pub ByName {
        listen "127.0.0.1:6188";
        upstream api { peers ["api.internal:8080" weight 2, "127.0.0.1:9"]; }
    }
}

/// `api.test` resolves to whatever the test says now.
#[derive(Clone)]
struct Table(Arc<Mutex<IpAddr>>);

impl Resolve for Table {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        let answer = match name {
            "api.test" => Ok(vec![*self.0.lock().unwrap_or_else(|p| p.into_inner())]),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name}: no such name"),
            )),
        };
        Box::pin(async move { answer })
    }
}

/// Two origins on one port, one on 127.0.0.1 and one on 127.0.0.2 (a name's addresses
/// share its port). The second port is taken where the first is free; tried a few times.
async fn origin_pair() -> (Origin, Origin) {
    for _ in 0..20 {
        let a = Origin::start_on("127.0.0.1:0", "first")
            .await
            .expect("origin");
        let port = a.addr().port();
        if let Ok(b) = Origin::start_on(&format!("127.0.0.2:{port}"), "second").await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test]
async fn a_host_name_is_resolved_before_serving_and_followed_when_it_moves() {
    let declared = ByName::new();
    let group = declared.router().group("api").expect("declared group");
    assert!(group.has_discovery(), "host names are resolved by DNS");
    assert!(group.backends().is_empty(), "nothing until resolved");

    let (first, second) = origin_pair().await;
    let port = first.addr().port();
    let table = Table(Arc::new(Mutex::new(Ipv4Addr::LOCALHOST.into())));
    let mut proxy = ByName::new();
    proxy
        .router_mut()
        .group_mut("api")
        .expect("group")
        .set_discovery(
            NamedPeers::with_resolver(vec![("api.test".into(), port, 1)], table.clone()),
            Duration::from_millis(100),
        );
    // A clone is a handle to the same live peers.
    let group = proxy.router().group("api").expect("group").clone();
    group.prime().expect("the name resolves");
    assert_eq!(group.backends().len(), 1);
    assert_eq!(group.backends()[0].addr, first.addr());

    let tasks: Vec<_> = proxy
        .router()
        .background_tasks()
        .into_iter()
        .map(|t| tokio::spawn(t.run_forever()))
        .collect();
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let c = client();
    let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
    assert_eq!(resp.headers()["x-origin"], "first");

    *table.0.lock().expect("table") = IpAddr::from([127, 0, 0, 2]);
    let moved: SocketAddr = (IpAddr::from([127, 0, 0, 2]), port).into();
    wait_until(
        Duration::from_secs(5),
        "the name to be resolved again",
        || group.backends().iter().map(|b| b.addr).collect::<Vec<_>>() == vec![moved],
    )
    .await;
    let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
    assert_eq!(resp.headers()["x-origin"], "second");
    assert_eq!(second.requests(), 1);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_name_that_does_not_resolve_stops_the_start_with_its_name() {
    let mut proxy = ByName::new();
    proxy
        .router_mut()
        .group_mut("api")
        .expect("group")
        .set_discovery(
            NamedPeers::with_resolver(
                vec![("nowhere.test".into(), 80, 1)],
                Table(Arc::new(Mutex::new(Ipv4Addr::LOCALHOST.into()))),
            ),
            Duration::from_secs(30),
        );
    let error = proxy
        .router()
        .group("api")
        .expect("group")
        .prime()
        .expect_err("fails");
    let text = error.to_string();
    assert!(
        text.contains("upstream api") && text.contains("nowhere.test"),
        "{text}"
    );
}
