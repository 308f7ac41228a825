//! The HTTP API against a real server: answers, bounds, slow clients, watches, TLS, operators.
//!
//! One test binary per area, so the crate is linked a few times rather than once per file.

#[path = "../server/mod.rs"]
mod server;

mod answer_bounds;
mod http_api;
mod maintenance_http;
mod operator_scope;
mod server_lifecycle;
mod slow_clients;
mod tls;
mod watch_limits;
mod watch_sse;
