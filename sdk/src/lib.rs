//! `zatabase-sdk`: what a Zatabase function can ask of the platform beyond
//! HTTP, typed.
//!
//! - [`sql`]: the function's tenant (its project environment's own schema
//!   and role), rows deserialised into your types;
//! - [`caller`]: who called, when the request carried a token;
//! - [`log`]: lines in the function's logs (`GET /v1/functions/:id/logs`).
//!
//! Write the HTTP side with spin-sdk (`#[http_component]`), which Zatabase
//! runs unchanged, and call this crate from it. The example in
//! `sdk/example` builds with one command:
//!
//! ```sh
//! cargo build --manifest-path sdk/example/Cargo.toml --target wasm32-wasip2 --release
//! ```
//!
//! Key-value and Spin's PostgreSQL interface come through spin-sdk
//! (`spin_sdk::key_value`, `spin_sdk::pg3`); both reach the same tenant.

/// Bindings of the `zatabase:platform/function-imports` world.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "zatabase:platform/function-imports",
        path: "../wit",
        generate_all,
    });
}

pub mod log;
pub mod sql;

pub use bindings::zatabase::platform::session::Principal as Caller;

/// The caller of the current request, if it presented a valid token (a
/// public function's anonymous callers and cron triggers have none).
pub fn caller() -> Option<Caller> {
    bindings::zatabase::platform::session::caller()
}

/// The current request's id, as its response's `x-request-id` says.
pub fn request_id() -> String {
    bindings::zatabase::platform::session::request_id()
}
