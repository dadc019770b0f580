//! A real gRPC client and server (tonic's client and server dispatch, with a codec that
//! carries raw bytes) talking through the proxy: HTTP/2 on both sides, a unary call, a
//! bidirectional stream, and an error status that must arrive as sent.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_dsl::prelude::*;
use pingora_dsl::upstream::UpstreamHttp;
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::{Code, Status};

const WAIT: Duration = Duration::from_secs(10);

/// Messages are raw bytes: no protobuf needed to exercise the transport.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// A gRPC server (tonic's server dispatch on hyper's HTTP/2): `Upper` (unary, uppercases),
/// `Chat` (bidirectional, reverses each message), `Missing` (fails with NOT_FOUND).
async fn grpc_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                let response = match req.uri().path() {
                    "/test.Echo/Upper" => {
                        let upper = tower::service_fn(|r: tonic::Request<Bytes>| async move {
                            let text = String::from_utf8_lossy(r.get_ref()).to_uppercase();
                            Ok::<_, Status>(tonic::Response::new(Bytes::from(text)))
                        });
                        grpc.unary(upper, req).await
                    }
                    "/test.Echo/Chat" => {
                        let chat =
                            tower::service_fn(|r: tonic::Request<Streaming<Bytes>>| async move {
                                let replies = r.into_inner().map(|m| {
                                    m.map(|b| {
                                        Bytes::from(b.iter().rev().copied().collect::<Vec<u8>>())
                                    })
                                });
                                Ok::<_, Status>(tonic::Response::new(replies))
                            });
                        grpc.streaming(chat, req).await
                    }
                    _ => {
                        let missing = tower::service_fn(|_r: tonic::Request<Bytes>| async move {
                            Err::<tonic::Response<Bytes>, _>(Status::not_found(
                                "no such method here",
                            ))
                        });
                        grpc.unary(missing, req).await
                    }
                };
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// Forwards everything over HTTP/2 to one peer.
struct ToGrpc(SocketAddr);

impl ProxyHttp for ToGrpc {
    type Ctx = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.0).with_http(UpstreamHttp::Http2))
    }
}

/// hyper's HTTP/2 client as the transport of tonic's client.
#[derive(Clone)]
struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut sender = self.0.clone();
        Box::pin(async move { sender.send_request(request).await })
    }
}

async fn grpc_client(proxy: SocketAddr) -> tonic::client::Grpc<H2> {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tonic::client::Grpc::with_origin(H2(sender), "http://grpc.test".parse().expect("origin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_unary_streaming_and_error_calls_pass_through_the_proxy() {
    let server = grpc_server().await;
    let mut service = http_proxy_service("grpc-proxy", ToGrpc(server));
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    let mut client = grpc_client(proxy.addr()).await;

    // Unary.
    client.ready().await.expect("ready");
    let reply = tokio::time::timeout(
        WAIT,
        client.unary(
            tonic::Request::new(Bytes::from_static(b"hello")),
            "/test.Echo/Upper".parse().expect("path"),
            RawCodec,
        ),
    )
    .await
    .expect("in time")
    .expect("unary call");
    assert_eq!(reply.get_ref(), &Bytes::from_static(b"HELLO"));

    // Bidirectional streaming: each reply arrives before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    client.ready().await.expect("ready");
    tx.send(Bytes::from_static(b"abc0")).await.expect("send");
    let response = tokio::time::timeout(
        WAIT,
        client.streaming(
            tonic::Request::new(outbound),
            "/test.Echo/Chat".parse().expect("path"),
            RawCodec,
        ),
    )
    .await
    .expect("in time")
    .expect("streaming call");
    let mut inbound = response.into_inner();
    for i in 0..5 {
        if i > 0 {
            tx.send(Bytes::from(format!("abc{i}"))).await.expect("send");
        }
        let reply = tokio::time::timeout(WAIT, inbound.message())
            .await
            .expect("reply in time")
            .expect("no error")
            .expect("a reply");
        assert_eq!(reply, Bytes::from(format!("{i}cba")));
    }
    drop(tx);
    // The stream ends with the server's OK status, carried in the trailers.
    let end = tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");

    // An error status arrives as the server sent it.
    client.ready().await.expect("ready");
    let err = tokio::time::timeout(
        WAIT,
        client.unary(
            tonic::Request::new(Bytes::from_static(b"?")),
            "/test.Echo/Missing".parse().expect("path"),
            RawCodec,
        ),
    )
    .await
    .expect("in time")
    .expect_err("NOT_FOUND");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such method here");
    proxy.shutdown().await;
}
