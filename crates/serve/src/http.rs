//! The HTTP/1.1 connection loop. axum's own `serve` sets no timer, so a client could hold a
//! connection forever by sending its request head a byte at a time; this loop gives hyper a
//! header read timeout and caps the open connections (further ones wait in the kernel's accept
//! queue until one closes). Each connection is answered by the router with the client's
//! address attached; on shutdown the listener closes and requests in progress are answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tower::Service;

/// What bounds a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a whole request head, from connecting or from the previous answer.
    pub header_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` fires, then waits for the open connections to
/// finish their requests.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits, shutdown: oneshot::Receiver<()>) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = match make_service.call(address).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
