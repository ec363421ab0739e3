//! How every test server starts: on a free port of a loopback address, run on the test's own
//! Tokio runtime, stopped through its handle (or with the runtime).

use std::fmt;

use actix_http::{Request, Response};
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServerHandle, Service, ServiceFactory};
use actix_web::{Error, HttpServer};

/// Binds `server` to a port of its own on `host`, spawns it, and answers the port and the handle;
/// `what` names it if the bind fails.
pub fn on_loopback<F, I, S, B>(
    server: HttpServer<F, I, S, B>,
    host: &str,
    what: &str,
) -> (u16, ServerHandle)
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let server = server
        .disable_signals()
        .bind((host, 0))
        .unwrap_or_else(|e| panic!("bind {what} on {host}: {e}"));
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, handle)
}
