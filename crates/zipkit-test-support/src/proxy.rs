//! A TCP forwarder a test can open and close, to make a real service "go away" and "come back"
//! for one component without touching the service other tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    target: String,
    accepting: Option<JoinHandle<()>>,
    open: Arc<AtomicBool>,
}

impl TcpProxy {
    /// A proxy on a free port, closed: connections to it are refused until `open`.
    pub fn closed(target: impl Into<String>) -> Self {
        Self {
            port: crate::process::free_port(),
            target: target.into(),
            accepting: None,
            open: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts accepting and forwarding to the target.
    pub async fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
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
