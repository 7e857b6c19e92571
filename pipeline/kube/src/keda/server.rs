//! The gRPC server on a thread of its own (wfe's embedded runner is not async): bind first,
//! so port 0 is known and a taken port is an error at once; serve until the returned
//! [`KedaServer`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use wfe_contract::{Error, Result};
use wfe_http::ApiState;

use crate::keda::service::{Scaler, ScalerOptions};
use crate::proto::external_scaler_server::ExternalScalerServer;

/// Largest request decoded (bytes): a trigger's metadata is a few short strings, and
/// [`crate::keda::query`] reads at most 16 of 256 bytes each.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Calls in progress on one connection (KEDA polls each trigger every few seconds).
pub const MAX_CALLS_PER_CONNECTION: usize = 64;

/// A running scaler; dropping it stops serving and joins its thread.
pub struct KedaServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KedaServer {
    /// Binds `listen` and serves KEDA's external-scaler calls over `state`.
    pub fn start(listen: &str, state: Arc<ApiState>, opts: ScalerOptions) -> Result<Self> {
        let what = || format!("keda {listen}");
        let listener = std::net::TcpListener::bind(listen).map_err(|e| Error::io(what(), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io(what(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(what(), e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("keda runtime", e))?;
        let service = ExternalScalerServer::new(Scaler::new(state, opts))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keda".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let incoming = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => TcpIncoming::from(l),
                        Err(e) => return tracing::error!("keda: {e}"),
                    };
                    let served = Server::builder()
                        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
                        .serve_with_incoming_shutdown(service, incoming, async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("keda: serving ended: {e}");
                    }
                })
            })
            .map_err(|e| Error::io("keda thread", e))?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens (with port 0, the port chosen).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for KedaServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
