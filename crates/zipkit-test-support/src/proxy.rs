//! A TCP forwarder a test can open and close, to make a real service "go away" and "come back"
//! for one component without touching the service other tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct TcpProxy {
    host: &'static str,
    port: u16,
    target: String,
    accepting: Option<JoinHandle<()>>,
    open: Arc<AtomicBool>,
}

impl TcpProxy {
    /// A proxy on a free port, closed: connections to it are refused until `open`.
    pub fn closed(target: impl Into<String>) -> Self {
        Self::closed_on("127.0.0.1", target)
    }

    /// As `closed`, listening on another loopback address (Linux routes all of 127.0.0.0/8 to
    /// the loopback interface), so a service can be reached under an address of its own.
    pub fn closed_on(host: &'static str, target: impl Into<String>) -> Self {
        Self {
            host,
            port: crate::process::free_port(),
            target: target.into(),
            accepting: None,
            open: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` it listens on.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts accepting and forwarding to the target.
    pub async fn open(&mut self) {
        let listener = TcpListener::bind((self.host, self.port))
            .await
            .expect("bind the proxy port");
        let target = self.target.clone();
        let open = Arc::clone(&self.open);
        open.store(true, Ordering::SeqCst);
        self.accepting = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let open = Arc::clone(&open);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        // Copy both ways until either side closes or the proxy is closed.
                        let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                        let closed = async {
                            while open.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        };
                        tokio::select! { _ = copy => {}, () = closed => {} }
                    }
                });
            }
        }));
    }

    /// Stops accepting and cuts every forwarded connection.
    pub fn close(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.close();
    }
}
