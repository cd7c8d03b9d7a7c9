//! The shared toolkit of Zatabase's built-in route groups.
//!
//! A route group is a WebAssembly component that the host dispatches a slice
//! of the HTTP API to (see `spin.toml`). This crate gives each one the same
//! shape: WIT bindings for the `zatabase:platform/route-group` world, a
//! buffered [`Request`] and [`Response`], a method-and-path [`Router`], the
//! API error shape [`ApiError`], and the JSON mapping of SQL values.
//!
//! A route group crate implements [`RouteGroup`] and calls [`route_group!`].

pub mod access;
pub mod db;
mod error;
mod http;
mod router;
pub mod tenant;
pub mod values;

pub use error::ApiError;
pub use http::{BodyReader, Request, Response};
pub use router::{Params, Router};

/// Bindings generated from `wit/` for the `route-group` world.
pub mod bindings {
    wit_bindgen::generate!({
        world: "zatabase:platform/route-group",
        path: "../../wit",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_route_group",
        default_bindings_module: "zatabase_guest_kit::bindings",
    });
}

pub use bindings::zatabase::platform::{
    auth, functions, indexes, log, platform_db, session, sql, types,
};

/// A built-in route group: one function from request to response.
pub trait RouteGroup {
    fn handle(request: Request) -> Response;

    /// Whether a request's body is left for the handler to read as it
    /// arrives ([`Request::body_reader`]) rather than read in full first.
    fn streams(_method: &str, _path: &str) -> bool {
        false
    }
}

/// Glue between the exported `wasi:http/incoming-handler` and a
/// [`RouteGroup`]. Used by [`route_group!`]; not called directly.
#[doc(hidden)]
pub fn serve<G: RouteGroup>(
    request: bindings::wasi::http::types::IncomingRequest,
    out: bindings::wasi::http::types::ResponseOutparam,
) {
    let response = match Request::from_incoming(request, G::streams) {
        Ok(request) => {
            let body = request.stream.clone();
            let response = G::handle(request);
            if let Some(body) = body {
                body.discard_rest();
            }
            response
        }
        Err(error) => error.into(),
    };
    response.send(out);
}

/// Glue between the exported `route` interface (a request the host read
/// whole) and a [`RouteGroup`]. Used by [`route_group!`]; not called
/// directly.
#[doc(hidden)]
pub fn serve_buffered<G: RouteGroup>(
    request: bindings::exports::zatabase::platform::route::Request,
) -> bindings::exports::zatabase::platform::route::Response {
    G::handle(Request::from_route(request, G::streams)).into_route()
}

/// Exports a [`RouteGroup`] as the component's `route` interface and its
/// `wasi:http/incoming-handler`.
///
/// The export exists only when building for WebAssembly, so a route group's
/// own unit tests still build and run natively (where nothing calls the route
/// group: its crate says `#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]`).
#[macro_export]
macro_rules! route_group {
    ($group:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for Export {
                fn handle(
                    request: $crate::bindings::wasi::http::types::IncomingRequest,
                    out: $crate::bindings::wasi::http::types::ResponseOutparam,
                ) {
                    $crate::serve::<$group>(request, out)
                }
            }
            impl $crate::bindings::exports::zatabase::platform::route::Guest for Export {
                fn handle(
                    request: $crate::bindings::exports::zatabase::platform::route::Request,
                ) -> $crate::bindings::exports::zatabase::platform::route::Response {
                    $crate::serve_buffered::<$group>(request)
                }
            }
    $crate::bindings::export_route_group!(Export with_types_in $crate::bindings);
        };
    };
}
