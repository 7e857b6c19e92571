//! An actix-web server on a thread of its own, for the parts of wfe that are not async
//! (the embedded runner's threads): bind first (so port 0 is known and a taken port is an
//! error at once), serve until the returned [`Server`] is dropped.

use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpServer, web};
use wfe_contract::{Error, Result};

/// A running server; dropping it stops accepting and joins its thread.
pub struct Server {
    addr: SocketAddr,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` (`what` names the setting in errors) and serves the routes `configure`
    /// adds, with `workers` threads.
    pub fn start<F>(listen: &str, what: &str, workers: usize, configure: F) -> Result<Self>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let listener =
            TcpListener::bind(listen).map_err(|e| Error::io(format!("{what} {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(what.to_string(), e))?;
        let (htx, hrx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("http-{what}"))
            .spawn(move || {
                let sys = actix_web::rt::System::new();
                let server = HttpServer::new(move || App::new().configure(configure.clone()))
                    .workers(workers.max(1))
                    .disable_signals()
                    .listen(listener);
                match server {
                    Ok(s) => {
                        let s = s.run();
                        let _ = htx.send(Ok(s.handle()));
                        let _ = sys.block_on(s);
                    }
                    Err(e) => {
                        let _ = htx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::io(format!("{what} thread"), e))?;
        let handle = hrx
            .recv()
            .map_err(|_| Error::state(what, "server thread ended"))?
            .map_err(|e| Error::io(format!("{what} server"), e))?;
        Ok(Self {
            addr,
            handle: Some(handle),
            thread: Some(thread),
        })
    }

    /// Where it listens (with port 0, the port chosen).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Stops accepting; the thread's runtime then ends.
            drop(h.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
