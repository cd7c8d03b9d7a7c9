//! End-to-end tests: the real `zatabase` binary, its embedded Postgres and
//! real components, driven over HTTP. One test binary, many modules.

mod auth;
mod collections;
mod external;
mod functions;
mod hnsw;
mod http;
mod lifecycle;
mod observability;
mod permissions;
mod runtime;
mod sql;
mod zql;
