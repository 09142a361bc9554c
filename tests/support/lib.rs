//! Helpers for the integration tests and benchmarks. They run against the emulator that
//! `make test` / `make bench` start (`infra/local/run.sh`), whose environment they inherit:
//! AWS endpoint, table names, allowed origin. Every test makes its own users, organisations
//! and sessions with fresh UUIDs, so tests share one emulator without seeing each other.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use knoq_shared::App;
use knoq_shared::auth::{new_token, token_hash};
use knoq_shared::clock::Instant;
use knoq_shared::config::Config;
use knoq_shared::store::auth_sessions::{AuthRecord, AuthSessionStore};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// The configuration of the local stack, or a panic saying how to get one.
pub fn config() -> Config {
    Config::from_env().unwrap_or_else(|error| {
        panic!("{error}: run the tests through `make test`, which starts the emulator")
    })
}

/// The application state as a function container builds it, against the emulator.
pub async fn app() -> App {
    App::new(config(), &knoq_shared::app::load_sdk_config().await)
}

/// A DynamoDB client against the emulator, for looking at what the code wrote.
pub async fn dynamodb() -> Client {
    Client::new(&knoq_shared::app::load_sdk_config().await)
}

/// A fresh unique id with a readable prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// A caller: a user in an organisation, holding a valid session cookie.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id.
    pub user_id: String,
    /// The organisation id.
    pub org_id: String,
    /// The cookie value.
    pub token: String,
}

/// Issues a session cookie for `user_id` in `org_id`, valid for `ttl_secs` (negative: expired).
pub async fn issue_token(user_id: &str, org_id: &str, ttl_secs: i64) -> String {
    let config = config();
    let store = AuthSessionStore::new(dynamodb().await, config.tables.auth_sessions);
    let token = new_token();
    let record = AuthRecord {
        user_id: user_id.into(),
        org_id: org_id.into(),
        expires_at_secs: Instant::now().epoch_secs() + ttl_secs,
    };
    store.put(&token_hash(&token), &record).await.expect("store the auth session");
    token
}

/// A new user in a new organisation with a cookie valid for an hour.
pub async fn new_caller() -> Caller {
    let (user_id, org_id) = (unique("user"), unique("org"));
    caller_in(&user_id, &org_id).await
}

/// A caller for the given user and organisation with a cookie valid for an hour.
pub async fn caller_in(user_id: &str, org_id: &str) -> Caller {
    let token = issue_token(user_id, org_id, 3600).await;
    Caller { user_id: user_id.into(), org_id: org_id.into(), token }
}

/// The caller's scope as the handlers get it: through authentication of their cookie
/// (only auth can make a `UserScope`). Warms the auth cache where there is one.
pub async fn scope_of(app: &App, caller: &Caller) -> knoq_shared::domain::UserScope {
    let request = post("/", caller.with_origin(&app.config.allowed_origin), "");
    app.auth.authenticate(&request).await.expect("a fresh cookie authenticates")
}

/// How a test request presents itself.
#[derive(Debug, Clone, Default)]
pub struct As<'a> {
    /// Cookie value to send, if any.
    pub token: Option<&'a str>,
    /// `Origin` to send, if any.
    pub origin: Option<&'a str>,
}

impl Caller {
    /// This caller, sending the allowed origin.
    pub fn with_origin<'a>(&'a self, origin: &'a str) -> As<'a> {
        As { token: Some(&self.token), origin: Some(origin) }
    }
}

/// An in-process POST request to `path` with a raw body, as lambda_http hands it to a handler.
pub fn post(path: &str, who: As<'_>, body: impl Into<String>) -> Request {
    let config = config();
    let mut builder = lambda_http::http::Request::builder().method("POST").uri(path);
    if let Some(token) = who.token {
        builder = builder.header("cookie", format!("{}={token}", config.cookie_name));
    }
    if let Some(origin) = who.origin {
        builder = builder.header("origin", origin);
    }
    builder.body(Body::Text(body.into())).expect("valid request")
}

/// Status, `Retry-After` (if any) and JSON body of a handler response.
pub fn read(response: Response<Body>) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    let retry_after =
        response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_string());
    let body = serde_json::from_slice(response.body().as_ref()).expect("a JSON body");
    (status, retry_after, body)
}

/// The session item as stored, if any.
pub async fn session_item(id: &str) -> Option<Item> {
    dynamodb()
        .await
        .get_item()
        .table_name(config().tables.sessions)
        .key("id", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
}

/// Every event item of a session, in key order.
pub async fn event_items(session_id: &str) -> Vec<Item> {
    dynamodb()
        .await
        .query()
        .table_name(config().tables.events)
        .key_condition_expression("session_id = :id")
        .expression_attribute_values(":id", AttributeValue::S(session_id.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("Query")
        .items
        .unwrap_or_default()
}

/// How many sessions the owner index holds for a user in an organisation.
pub async fn sessions_owned(user_id: &str, org_id: &str) -> usize {
    dynamodb()
        .await
        .query()
        .table_name(config().tables.sessions)
        .index_name("by_owner")
        .key_condition_expression("#owner = :owner")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":owner", AttributeValue::S(format!("{org_id}#{user_id}")))
        .send()
        .await
        .expect("Query by_owner")
        .items
        .unwrap_or_default()
        .len()
}

/// Every rate-limit counter of a user (a scan with a filter: fine on a test table).
pub async fn counters_of(user_id: &str) -> Vec<Item> {
    dynamodb()
        .await
        .scan()
        .table_name(config().tables.rate_limits)
        .filter_expression("contains(pk, :user)")
        .expression_attribute_values(":user", AttributeValue::S(format!("#{user_id}#")))
        .send()
        .await
        .expect("Scan")
        .items
        .unwrap_or_default()
}

/// A string attribute of an item.
pub fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|value| value.as_s().ok()).map(String::as_str)
}

/// Waits, if needed, so that at least `secs` seconds remain in the current minute: tests
/// that count requests inside one rate-limit window must not straddle two.
pub async fn with_window_room(secs: u64) {
    let into_minute = (Instant::now().epoch_millis() % 60_000) as u64;
    if 60_000 - into_minute < secs * 1000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into_minute + 200)).await;
    }
}
