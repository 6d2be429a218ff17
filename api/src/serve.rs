//! The api's HTTP server: `axum::serve` with the read buffer bounded.
//!
//! hyper reads a connection into a buffer that grows to ~408 KiB while a
//! body streams in, and keeps it for the connection's life; axum's `serve`
//! has no setting for it. With 200 PATCHes streaming at once that was
//! ~80 MiB held outside the api's body budget (`video::budget`). Here an
//! HTTP/1.1 connection reads into at most [`READ_BUFFER`] bytes, which also
//! bounds a request's head (431 past it); everything else is as
//! `axum::serve` does it: the same connection builder (HTTP/1.1 with
//! upgrades, or HTTP/2 with prior knowledge), the peer's address as
//! `ConnectInfo`, and a graceful shutdown that stops accepting, lets each
//! connection finish its request in progress, and waits for all of them.

use std::{future::Future, pin::pin, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

/// The most a connection reads ahead: a request head must fit (hyper's
/// minimum is 8 KiB), and a body arrives in frames of at most this much.
pub const READ_BUFFER: usize = 64 * 1024;

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connections watch `stop` for the shutdown and hold `open` until they
    // end: when every holder is gone, every connection has ended.
    let (stop, stopping) = watch::channel(false);
    let (open, all_closed) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            // The peer address keys the public endpoints' rate limits.
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let mut stopping = stopping.clone();
        let closed = all_closed.clone();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().max_buf_size(READ_BUFFER);
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
            drop(closed);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(all_closed);
    open.closed().await;
    Ok(())
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
