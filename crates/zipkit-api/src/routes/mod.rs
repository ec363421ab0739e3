//! Every route of the API, one module per group, wired in `configure`. The v1 API is served
//! under both `/v1` and `/api/v1`, as the hosted ZipKit documents both.

mod health;
pub mod openapi;
pub(crate) mod zips;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(web::scope("/v1").wrap(from_fn(per_address)).configure(v1))
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(per_address))
                .configure(v1),
        )
        .default_service(web::to(route_not_found));
}

fn v1(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi::document))
        .service(
            web::resource("/zips")
                .route(web::post().to(zips::create))
                .route(web::get().to(zips::list))
                .default_service(web::to(allowing("GET, HEAD, POST"))),
        )
        .service(
            web::resource("/zips/{uuid}")
                .route(web::get().to(zips::get))
                .default_service(web::to(allowing("GET, HEAD"))),
        )
        .service(
            web::resource("/zips/{uuid}/skipped")
                .route(web::get().to(zips::skipped))
                .default_service(web::to(allowing("GET, HEAD"))),
        )
        .service(
            web::resource("/zips/{uuid}/cancel")
                .route(web::post().to(zips::cancel))
                .default_service(web::to(allowing("POST"))),
        );
}

/// Middleware on `/v1`: one request from the client's address.
async fn per_address(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let Some(state) = state
        && let Some(address) = state.rate_limits.client_address(req.request())
        && let Err(refused) = state.rate_limits.check_address(&state.pool, address).await
    {
        return Ok(req.error_response(refused));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

async fn route_not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "route_not_found",
        format!("no route for {} {}", req.method(), req.path()),
        None,
    ))
}

/// The 405 of a resource, with the `Allow` header RFC 9110 requires (HEAD goes wherever GET
/// does, see `middleware::head_as_get`).
fn allowing(
    allow: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            message: format!(
                "{} is not allowed on {}; use {allow}",
                req.method(),
                req.path()
            ),
            allow,
        }))
    }
}
