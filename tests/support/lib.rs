//! Helpers for the integration tests and benchmarks. They run against the emulator that
//! `make test` / `make bench` start (`infra/local/run.sh`), whose environment they inherit:
//! AWS endpoint, table names, allowed origin. Every test makes its own users, organisations
//! and sessions with fresh UUIDs, so tests share one emulator without seeing each other.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use knoq_shared::App;
use knoq_shared::auth::{new_token, token_hash};
use knoq_shared::clock::Timestamp;
use knoq_shared::config::Config;
use knoq_shared::store::auth_sessions::{AuthRecord, AuthSessionStore};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

mod callers;
mod emulators;
mod http;
mod in_process;
mod items;
mod stack;
mod workflow;

pub use callers::*;
pub use emulators::*;
pub use http::*;
pub use in_process::*;
pub use items::*;
pub use stack::*;
pub use workflow::*;
