//! The `functions` route group: users' serverless functions.
//!
//! | route | handler |
//! |---|---|
//! | `GET /v1/functions/templates` | [`templates::list`] |
//! | `POST /v1/functions/templates/:name/install` | [`templates::install`] |
//! | `POST /v1/functions` | [`functions::create`] |
//! | `GET /v1/functions` | [`functions::list`] |
//! | `GET /v1/functions/:id` | [`functions::get`] |
//! | `PUT /v1/functions/:id` | [`functions::update`] |
//! | `DELETE /v1/functions/:id` | [`functions::delete`] |
//! | `POST /v1/functions/:id/deployments` | [`deployments::create`] |
//! | `GET /v1/functions/:id/deployments` | [`deployments::list`] |
//! | `POST /v1/functions/:id/deployments/:deployment/activate` | [`deployments::activate`] |
//! | `POST /v1/functions/:id/triggers` | [`triggers::create`] |
//! | `GET /v1/functions/:id/triggers` | [`triggers::list`] |
//! | `DELETE /v1/functions/:id/triggers/:trigger` | [`triggers::delete`] |
//! | `GET /v1/functions/:id/logs` | [`telemetry::logs`] |
//! | `GET /v1/functions/:id/metrics` | [`telemetry::metrics`] |
//!
//! Running a function (`/fn/:name/*`, `POST /v1/functions/:id/invoke`) is
//! the host's (`host/src/api/functions.rs`). This route group keeps the
//! platform tables (`zatabase.functions`, `function_deployments`,
//! `function_blobs`) and asks the host (`functions` capability) to check and
//! compile an uploaded component before it is stored.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod deployments;
mod functions;
mod settings;
mod telemetry;
mod templates;
mod triggers;

use zatabase_guest_kit::{Request, Response, RouteGroup, Router};

struct Functions;

impl RouteGroup for Functions {
    fn handle(request: Request) -> Response {
        Router::new()
            .route("GET", "/v1/functions/templates", templates::list)
            .route(
                "POST",
                "/v1/functions/templates/:name/install",
                templates::install,
            )
            .route("POST", "/v1/functions", functions::create)
            .route("GET", "/v1/functions", functions::list)
            .route("GET", "/v1/functions/:id", functions::get)
            .route("PUT", "/v1/functions/:id", functions::update)
            .route("DELETE", "/v1/functions/:id", functions::delete)
            .route("POST", "/v1/functions/:id/deployments", deployments::create)
            .route("GET", "/v1/functions/:id/deployments", deployments::list)
            .route(
                "POST",
                "/v1/functions/:id/deployments/:deployment/activate",
                deployments::activate,
            )
            .route("POST", "/v1/functions/:id/triggers", triggers::create)
            .route("GET", "/v1/functions/:id/triggers", triggers::list)
            .route(
                "DELETE",
                "/v1/functions/:id/triggers/:trigger",
                triggers::delete,
            )
            .route("GET", "/v1/functions/:id/logs", telemetry::logs)
            .route("GET", "/v1/functions/:id/metrics", telemetry::metrics)
            .handle(&request)
    }
}

zatabase_guest_kit::route_group!(Functions);
