//! Everything the Knoq managed-agents functions share: configuration, AWS clients, domain
//! types, authentication, rate limiting, the DynamoDB store and the route handlers.
//!
//! A function's `main` only calls [`lambda::serve`] with one handler from [`routes`]; the
//! handler turns the HTTP request into typed domain values, calls the store, and lets
//! [`error::ApiError`] turn any failure into a status and `{"error": ...}` body in one place.

#![warn(missing_docs)]

pub mod agent;
pub mod app;
pub mod auth;
pub mod checker;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod lambda;
pub mod purge;
pub mod rate_limit;
pub mod routes;
pub mod store;
pub mod telemetry;
pub mod test_hooks;
pub mod workflow;

pub use app::App;
pub use config::Config;
