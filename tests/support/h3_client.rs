//! An HTTP/3 client for the tests (the `h3` crate's, over quinn with rustls/ring): connect
//! trusting a test certificate, exchange requests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// An HTTP/3 connection to `addr` trusting `ca` (the server's self-signed certificate),
/// asking for `localhost`; the driver runs on its own task.
pub async fn connect(
    addr: SocketAddr,
    ca: &Path,
) -> (
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    quinn::Endpoint,
) {
    connect_within(addr, ca, Duration::from_secs(10))
        .await
        .expect("an HTTP/3 connection within 10 s")
}

/// [`connect`], with the handshake's failure or timeout (`within`) as an error.
pub async fn connect_within(
    addr: SocketAddr,
    ca: &Path,
    within: Duration,
) -> Result<
    (
        h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        quinn::Endpoint,
    ),
    String,
> {
    let endpoint = client_endpoint(ca);
    let send = connect_with(&endpoint, addr, within).await?;
    Ok((send, endpoint))
}

/// An HTTP/3 connection to `addr` (as `localhost`) from `endpoint`, within `within`; its
/// driver runs on its own task.
pub async fn connect_with(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    within: Duration,
) -> Result<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, String> {
    let connecting = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(within, connecting)
        .await
        .map_err(|_| format!("no handshake within {within:?}"))?
        .map_err(|e| e.to_string())?;
    over(connection).await
}

/// HTTP/3 over an established QUIC `connection`; its driver runs on its own task.
pub async fn over(
    connection: quinn::Connection,
) -> Result<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, String> {
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = driver.wait_idle().await;
    });
    Ok(send)
}

/// A QUIC client endpoint trusting `ca`, offering `h3`.
pub fn client_endpoint(ca: &Path) -> quinn::Endpoint {
    client_endpoint_with(ca, None)
}

/// [`client_endpoint`], presenting the client certificate `identity` (certificate and key
/// files) when the server asks for one.
pub fn client_endpoint_with(ca: &Path, identity: Option<(&Path, &Path)>) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    #[allow(deprecated)] // ring: the provider the proxy's QUIC listener uses too
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("the client certificate file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("the client key");
            tls.with_client_auth_cert(chain, key)
                .expect("a client identity")
        }
        None => tls.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// What an HTTP/3 exchange returned.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `method path` with `body` on `send`, reads the whole answer (within 30 s).
pub async fn exchange(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Answer {
    let talk = async {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        let mut stream = send.send_request(request).await.expect("request sent");
        if !body.is_empty() {
            stream.send_data(body).await.expect("body sent");
        }
        stream.finish().await.expect("request ended");
        let response = stream.recv_response().await.expect("a response");
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("body") {
            received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: received,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .expect("an answer within 30 s")
}
