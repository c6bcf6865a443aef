//! Serving: hyper's HTTP/1 connection builder with a timer, so the header-read
//! timeout is really enforced (slow clients are cut off), and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::auth::PeerAddr;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Longest time a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for up to `drain`.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let ServeLimits {
        header_timeout,
        drain,
        max_connections,
    } = limits;
    let permits = Arc::new(Semaphore::new(max_connections));
    // Each connection task holds a clone of `alive`; when all are gone, `drained`
    // yields None.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, stop accepting: new clients wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req
            },
        ));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let alive = alive.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(alive);
            drop(permit);
        });
    }
    drop(listener);
    drop(alive);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = drained.recv() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!("connections still open after the shutdown deadline; closing");
        }
    }
    Ok(())
}
