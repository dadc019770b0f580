//! An HTTP/3 load generator for `benches/h3-compare.sh` (h2load speaks no HTTP/3 as
//! Debian builds it): `C` connections with `M` requests in flight each, GETs of one path,
//! for `D` seconds; prints `requests: N ok, E errors, B bytes` and the rate.
//!
//! Run: `cargo bench --bench h3_load -- ADDR CA_FILE PATH CONNECTIONS STREAMS SECONDS`
//! (ADDR the QUIC listener, CA_FILE the certificate to trust, asked for `localhost`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// What the load did.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

struct Args {
    addr: SocketAddr,
    ca: String,
    path: String,
    connections: usize,
    streams: usize,
    seconds: u64,
}

fn args() -> Result<Args, String> {
    // (`cargo bench` adds `--bench`.)
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: h3_load ADDR CA_FILE PATH CONNECTIONS STREAMS SECONDS";
    let [addr, ca, path, connections, streams, seconds] = given.as_slice() else {
        return Err(usage.into());
    };
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("{s:?} is not a number: {usage}"))
    };
    Ok(Args {
        addr: addr.parse().map_err(|e| format!("{addr:?}: {e}"))?,
        ca: ca.clone(),
        path: path.clone(),
        connections: number(connections)? as usize,
        streams: number(streams)? as usize,
        seconds: number(seconds)?,
    })
}

fn client_config(ca: &str) -> Result<quinn::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| e.to_string())?;
    }
    #[allow(deprecated)] // ring, as the proxy's QUIC listener
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// One connection with `streams` loops of requests until `until`.
async fn connection(
    endpoint: quinn::Endpoint,
    args: Arc<Args>,
    until: Instant,
    counts: Arc<Counts>,
) -> Result<(), String> {
    let connecting = endpoint
        .connect(args.addr, "localhost")
        .map_err(|e| e.to_string())?;
    let quic = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "no handshake within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = driver.wait_idle().await;
    });
    let uri = format!("https://localhost{}", args.path);
    let loops: Vec<_> = (0..args.streams)
        .map(|_| {
            let (mut send, uri, counts) = (send.clone(), uri.clone(), counts.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    match request(&mut send, &uri).await {
                        Ok(bytes) => {
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                            counts.bytes.fetch_add(bytes, Ordering::Relaxed);
                        }
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
    Ok(())
}

/// One GET: the body's length, or why it failed (within 10 s).
async fn request(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    uri: &str,
) -> Result<u64, String> {
    let exchange = async {
        let request = http::Request::get(uri)
            .body(())
            .map_err(|e| e.to_string())?;
        let mut stream = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let response = stream.recv_response().await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("status {}", response.status()));
        }
        let mut bytes = 0;
        while let Some(chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
            bytes += chunk.remaining() as u64;
        }
        Ok(bytes)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

async fn run(args: Args) -> Result<(), String> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_config(&args.ca)?);
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let args = Arc::new(args);
    let connections: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(connection(
                endpoint.clone(),
                args.clone(),
                until,
                counts.clone(),
            ))
        })
        .collect();
    for c in connections {
        match c.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("a connection failed: {e}"),
            Err(e) => eprintln!("a connection's task failed: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = counts.ok.load(Ordering::Relaxed);
    println!(
        "requests: {ok} ok, {} errors, {} bytes, {:.0} req/s",
        counts.errors.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed),
        ok as f64 / elapsed
    );
    endpoint.close(0u32.into(), b"");
    Ok(())
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("h3_load: no runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("h3_load: {e}");
        std::process::exit(1);
    }
}
