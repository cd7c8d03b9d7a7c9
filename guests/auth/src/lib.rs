//! The `auth` route group: accounts, sessions and permissions.
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/auth/signup` | [`accounts::signup`] |
//! | `POST /v1/auth/login` | [`accounts::login`] |
//! | `POST /v1/auth/refresh` | [`sessions::refresh`] |
//! | `POST /v1/auth/logout` | [`sessions::logout`] |
//! | `POST /v1/auth/switch` | [`sessions::switch`] |
//! | `GET /v1/whoami` | [`me::whoami`] |
//! | `GET /v1/environments` | [`me::environments`] |
//! | `GET /v1/permissions` | [`permissions::list`] |
//! | `PUT /v1/permissions` | [`permissions::put`] |
//! | `GET /v1/permissions/effective` | [`permissions::effective`] |
//!
//! The host verifies tokens before this component runs (signup, login and
//! refresh are public in spin.toml); the caller arrives as a principal.
//! Passwords are hashed and tokens signed by the host (`auth` capability);
//! the platform tables are reached through `platform-db`.

// Natively (unit tests, lints) nothing calls the route group: its entry
// point is the component export, which exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod accounts;
mod me;
mod permissions;
mod sessions;
mod validate;

use zatabase_guest_kit::{Request, Response, RouteGroup, Router};

struct Auth;

impl RouteGroup for Auth {
    fn handle(request: Request) -> Response {
        Router::new()
            .route("POST", "/v1/auth/signup", accounts::signup)
            .route("POST", "/v1/auth/login", accounts::login)
            .route("POST", "/v1/auth/refresh", sessions::refresh)
            .route("POST", "/v1/auth/logout", sessions::logout)
            .route("POST", "/v1/auth/switch", sessions::switch)
            .route("GET", "/v1/whoami", me::whoami)
            .route("GET", "/v1/environments", me::environments)
            .route("GET", "/v1/permissions", permissions::list)
            .route("PUT", "/v1/permissions", permissions::put)
            .route("GET", "/v1/permissions/effective", permissions::effective)
            .handle(&request)
    }
}

zatabase_guest_kit::route_group!(Auth);
