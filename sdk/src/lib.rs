//! `zatabase-sdk`: what a Zatabase function can ask of the platform beyond
//! HTTP, typed.
//!
//! - [`sql`]: the function's tenant (its project environment's own schema
//!   and role), rows deserialised into your types;
//! - [`caller`]: who called, when the request carried a token, and
//!   [`check`]: whether the caller's grants allow an action. A function's
//!   SQL runs with its tenant's full rights, whoever calls it: a function
//!   that acts for its callers decides what each may do with `check`,
//!   not with `caller().is_some()` (any token of the project passes that);
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
pub use bindings::zatabase::platform::session::{Action, Resource};

/// The caller of the current request, if it presented a valid token (a
/// public function's anonymous callers and cron triggers have none).
pub fn caller() -> Option<Caller> {
    bindings::zatabase::platform::session::caller()
}

/// Whether the caller may take `action` on `resource`: on the one object
/// `resource_id` names, or with `None` on every object of the kind (only a
/// `*` grant allows that). The error is the message to answer with 403
/// ("Insufficient permissions: requires Read on Tables"); a call without a
/// token is refused too.
pub fn check(resource: Resource, resource_id: Option<&str>, action: Action) -> Result<(), String> {
    bindings::zatabase::platform::session::check(resource, resource_id, action)
}

/// The current request's id, as its response's `x-request-id` says.
pub fn request_id() -> String {
    bindings::zatabase::platform::session::request_id()
}
