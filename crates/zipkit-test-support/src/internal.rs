//! A stand-in for a service inside the operator's network: a listener on 127.0.0.2, which the
//! egress policy treats as internal. Tests aim a customer's address (a bucket endpoint, a
//! source, a webhook) at it and then check that nothing ever connected.

use std::time::Duration;

use tokio::net::TcpListener;

#[derive(Debug)]
pub struct InternalService {
    listener: TcpListener,
}

impl InternalService {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2 (all of 127.0.0.0/8 is loopback)");
        Self { listener }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("a bound address").port()
    }

    /// `http://127.0.0.2:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.2:{}", self.port())
    }

    /// Panics if anything connected; a connection made earlier still waits in the backlog, so a
    /// short wait is enough.
    pub async fn assert_untouched(&self) {
        let accepted =
            tokio::time::timeout(Duration::from_millis(300), self.listener.accept()).await;
        assert!(
            accepted.is_err(),
            "something connected to the internal service on port {}",
            self.port()
        );
    }
}
