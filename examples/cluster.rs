//! One proxy run as several instances: the API's peers are watched in etcd (a change
//! reaches every instance as etcd reports it) and its rate limit is one budget for all
//! instances, counted in Redis. See `docs/cluster.md` for running a fleet.
//!
//! Run Redis and etcd, register a peer, then start as many instances as you like on one
//! port (`SO_REUSEPORT`), each with its own admin port and upgrade socket:
//!
//! ```text
//! redis-server --port 6379 &
//! etcd --data-dir /tmp/etcd &
//! curl -s http://127.0.0.1:2379/v3/kv/put \
//!   -d '{"key":"'$(printf /services/api/a | base64)'","value":"'$(printf 127.0.0.1:8001 | base64)'"}'
//! cargo run --release --example cluster -- --reuse-port --admin 127.0.0.1:9101 &
//! cargo run --release --example cluster -- --reuse-port --admin 127.0.0.1:9102 \
//!   -c second.toml &   # [server] upgrade_socket = "/tmp/cluster-2.sock"
//! curl -i -H 'x-api-key: team-a' http://127.0.0.1:6190/   # 100 a minute in all, then 429
//! ```
//!
//! A config file (`-c`) moves the shared parts: `[proxy.Cluster.shared_limits] redis`,
//! `timeout`, `fallback`; `[proxy.Cluster.upstream.api] etcd = { endpoints, prefix }`.

use std::process::ExitCode;

use pingora_dsl::prelude::*;

proxy! {
    /// An API edge meant to run as N instances: peers from etcd, a shared rate limit.
    pub Cluster {
        listen "127.0.0.1:6190";

        upstream api {
            discover etcd "http://127.0.0.1:2379" prefix "/services/api/";
            select round_robin;
        }

        // One budget per API key for every instance together; when Redis cannot answer
        // within 5 ms, each instance counts alone (`fallback local`).
        rate_limit 100 per 1m by header "x-api-key"
            shared "redis://127.0.0.1:6379/0" timeout 5ms fallback local;
    }
}

fn main() -> ExitCode {
    Cluster::run()
}
