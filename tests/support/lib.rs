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

/// A session of `caller` (opening message `text`) whose run has no execution behind it:
/// it holds the session as a live run would, but nothing other than the test writes to it,
/// so faults planted on it meet the test's requests only. Its id.
pub async fn quiet_session(app: &App, caller: &Caller, text: &str) -> String {
    use knoq_shared::domain::{MessageText, RunId, SessionId};
    let scope = scope_of(app, caller).await;
    let id = SessionId::new();
    let text = MessageText::parse(text.into()).expect("a valid text");
    let timeout = knoq_shared::workflow::TURN_TIMEOUT;
    app.sessions
        .create(&scope, &id, &text, &RunId::new(), timeout, Instant::now())
        .await
        .expect("create a session");
    id.as_string()
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

/// An in-process GET request with query parameters (repeats allowed), as lambda_http hands
/// it to a handler.
pub fn get(path: &str, who: As<'_>, query: &[(&str, &str)]) -> Request {
    use lambda_http::RequestExt;
    let config = config();
    let mut builder = lambda_http::http::Request::builder().method("GET").uri(path);
    if let Some(token) = who.token {
        builder = builder.header("cookie", format!("{}={token}", config.cookie_name));
    }
    let mut parameters: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in query {
        parameters.entry(name.to_string()).or_default().push(value.to_string());
    }
    builder.body(Body::Empty).expect("valid request").with_query_string_parameters(parameters)
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

/// Every event item of a session, in key order (every page: one `Query` reads at most 1 MB).
pub async fn event_items(session_id: &str) -> Vec<Item> {
    let db = dynamodb().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .query()
            .table_name(config().tables.events)
            .key_condition_expression("session_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(session_id.into()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Query");
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// How many sessions the owner index holds for a user in an organisation.
pub async fn sessions_owned(user_id: &str, org_id: &str) -> usize {
    sessions_of(user_id, org_id).await.len()
}

/// The session items the owner index holds for a user in an organisation.
pub async fn sessions_of(user_id: &str, org_id: &str) -> Vec<Item> {
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

/// The URL of an API route on the local stack `make test` started.
pub fn api_url(path: &str) -> String {
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    format!("{base}/api/managed-agents/{path}")
}

/// A cookie from the operator command (`knoq-admin issue-token`), as `make token` prints it.
pub fn operator_token(user_id: &str, org_id: &str) -> String {
    let bin = std::env::var("KNOQ_ADMIN_BIN").expect("KNOQ_ADMIN_BIN: run through `make test`");
    let output = Command::new(bin)
        .args(["issue-token", "--user", user_id, "--org", org_id])
        .output()
        .expect("run knoq-admin");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    stdout.trim().to_string()
}

/// A client of the API over real HTTP (`cargo lambda watch` on the local stack).
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    cookie: Option<String>,
    /// The `Origin` sent with POSTs; the allowed one unless a test changes it.
    pub origin: Option<String>,
}

/// Status, `Retry-After` and JSON body of an HTTP answer.
pub type Answer = (reqwest::StatusCode, Option<String>, Value);

impl ApiClient {
    /// A client sending `token` as the session cookie (none: no cookie).
    pub fn new(token: Option<&str>) -> Self {
        let config = config();
        Self {
            http: reqwest::Client::new(),
            cookie: token.map(|t| format!("{}={t}", config.cookie_name)),
            origin: Some(config.allowed_origin),
        }
    }

    /// A client for a new user in a new organisation.
    pub async fn for_new_caller() -> Self {
        Self::new(Some(&new_caller().await.token))
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Answer {
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let idempotent = request
            .try_clone()
            .and_then(|copy| copy.build().ok())
            .is_some_and(|built| built.method() == reqwest::Method::GET);
        let mut response = request.try_clone().expect("a plain request").send().await;
        // `cargo lambda watch` now and then answers a request with a 500 of its own (a problem
        // JSON, never an answer of the API's, which are JSON `{"error"}`), seen a few times in
        // a `make test` of 200 tests: a GET, which changes nothing, is sent once more.
        for _ in 0..2 {
            let local_host_failed = response.as_ref().is_ok_and(|answer| {
                answer.status() == 500
                    && answer.headers().get("content-type").is_some_and(|v| v != "application/json")
            });
            if !(idempotent && local_host_failed) {
                break;
            }
            eprintln!("cargo lambda watch answered its own 500 to a GET: sending it again");
            tokio::time::sleep(Duration::from_millis(200)).await;
            response = request.try_clone().expect("a plain request").send().await;
        }
        let response = response.expect("the local API answers");
        let status = response.status();
        let content_type = response.headers().get("content-type").cloned();
        if content_type.as_ref().is_none_or(|value| value != "application/json") {
            // Not an answer of ours (`cargo lambda watch` answers its own failures in text):
            // say what it was.
            let body = response.text().await.unwrap_or_default();
            panic!("{status} with content-type {content_type:?}: {body:.500}");
        }
        let retry_after =
            response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (status, retry_after, response.json().await.expect("a JSON body"))
    }

    /// POSTs `body` to the route `path`, with the client's Origin.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.post_with(path, body, &[]).await
    }

    /// POSTs `body` to the route `path`, with the client's Origin and `headers`.
    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send(self.mutating(self.http.post(api_url(path)).body(body), headers)).await
    }

    /// GETs the route `path` with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        self.send(self.http.get(api_url(path)).query(query)).await
    }

    /// DELETEs the route `path` with query parameters, with the client's Origin.
    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        self.delete_with(path, query, &[]).await
    }

    /// DELETEs the route `path` with query parameters, the client's Origin and `headers`.
    pub async fn delete_with(
        &self,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send(self.mutating(self.http.delete(api_url(path)).query(query), headers)).await
    }

    /// A mutating request as browsers send it: the client's Origin, plus `headers`.
    fn mutating(
        &self,
        mut request: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        if let Some(origin) = &self.origin {
            request = request.header("origin", origin);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    /// Sends a message to a session; the whole answer.
    pub async fn message(&self, id: &str, text: &str) -> Answer {
        self.post("message", serde_json::json!({ "sessionId": id, "text": text }).to_string()).await
    }

    /// The caller's session summaries (status 200 asserted).
    pub async fn sessions(&self) -> Vec<Value> {
        let (status, _, body) = self.get("sessions", &[]).await;
        assert_eq!(status, 200, "{body}");
        body["sessions"].as_array().expect("sessions").clone()
    }

    /// Creates a session; its id and run id.
    pub async fn create(&self, text: &str) -> (String, String) {
        let (status, _, body) =
            self.post("session", serde_json::json!({ "text": text }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        (body["id"].as_str().unwrap().to_string(), body["runId"].as_str().unwrap().to_string())
    }

    /// Cancels a session; the answer's body (status 200 asserted).
    pub async fn cancel(&self, id: &str) -> Value {
        let (status, _, body) =
            self.post("cancel", serde_json::json!({ "sessionId": id }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The whole transcript answer (first page), status 200 asserted.
    pub async fn transcript(&self, id: &str) -> Value {
        let (status, _, body) = self.get("transcript", &[("sessionId", id)]).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the transcript every `every` until `done` holds for it or `within` passes.
    pub async fn transcript_until(
        &self,
        id: &str,
        every: Duration,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let transcript = self.transcript(id).await;
            if done(&transcript) {
                return transcript;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "transcript of {id} did not get there within {within:?}: {transcript}"
            );
            tokio::time::sleep(every).await;
        }
    }
}

/// A number attribute of an item.
pub fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|value| value.as_n().ok()).and_then(|raw| raw.parse().ok())
}

/// The `type` of every event of a transcript answer, in order.
pub fn event_types(transcript: &Value) -> Vec<String> {
    transcript["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_string())
        .collect()
}

/// How many events of `kind` a transcript answer holds.
pub fn count_of(transcript: &Value, kind: &str) -> usize {
    event_types(transcript).iter().filter(|t| *t == kind).count()
}

/// The status of the turn workflow's execution for `run_id` (`RUNNING`, `SUCCEEDED`,
/// `FAILED`, ...), read from the emulator's Step Functions.
pub async fn execution_status(run_id: &str) -> String {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    let output = sfn.describe_execution().execution_arn(execution).send().await.expect("describe");
    output.status().as_str().to_string()
}

/// Stops the turn workflow's execution for `run_id` from outside (`StopExecution`), as an
/// operator or a failed deployment would: it ends `ABORTED`, without its own last step.
pub async fn stop_execution(run_id: &str) {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    sfn.stop_execution().execution_arn(execution).send().await.expect("stop the execution");
}

/// How many times the execution for `run_id` entered its `Poll` state at or after `since`,
/// read from its Step Functions history. "Within one poll interval" of a cancel means the
/// first poll cycle after it ends the run: at most one `Poll` entered after the cancel,
/// however slow a loaded machine makes that cycle.
pub async fn poll_steps_entered_since(run_id: &str, since: std::time::SystemTime) -> usize {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    let since = aws_sdk_sfn::primitives::DateTime::from(since);
    let pages = sfn.get_execution_history().execution_arn(execution).into_paginator().items();
    let events: Vec<_> = pages.send().collect::<Result<_, _>>().await.expect("execution history");
    let entered_poll = |event: &&aws_sdk_sfn::types::HistoryEvent| {
        let details = event.state_entered_event_details();
        details.is_some_and(|d| d.name() == "Poll") && event.timestamp() >= &since
    };
    events.iter().filter(entered_poll).count()
}

/// Waits until the execution for `run_id` has ended; its final status.
pub async fn execution_end(run_id: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = execution_status(run_id).await;
        if status != "RUNNING" || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bundled provider emulator's base URL (`make test` starts it).
pub fn provider_url() -> String {
    std::env::var("KNOQ_PROVIDER_URL").expect("KNOQ_PROVIDER_URL: run through `make test`")
}

/// What the provider emulator recorded of every model call tagged `tag` (`[[emu tag=...]]` in
/// the conversation's latest user text), oldest first: `startedAtMs`, `closedAtMs`,
/// `closedBy` (`client` when the worker hung up), `textSent`, `messageCount`, ...
pub async fn provider_calls(tag: &str) -> Vec<Value> {
    let url = format!("{}/_emulator/requests", provider_url());
    let response = reqwest::Client::new().get(url).query(&[("tag", tag)]).send().await;
    let calls: Value = response.expect("the provider emulator answers").json().await.unwrap();
    calls.as_array().expect("a list of calls").clone()
}

/// Polls the provider emulator until `done` holds for the calls tagged `tag`.
pub async fn provider_calls_until(
    tag: &str,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let calls = provider_calls(tag).await;
        if done(&calls) {
            return calls;
        }
        assert!(std::time::Instant::now() < deadline, "calls tagged {tag}: {calls:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Invokes the worker directly (the Lambda Invoke API of `cargo lambda watch`), as a second
/// delivery of the state machine's start would: its answer.
pub async fn invoke_worker(session_id: &str, run_id: &str) -> Value {
    invoke("worker", serde_json::json!({ "sessionId": session_id, "runId": run_id })).await
}

/// Invokes the function `name` directly with `payload` (the Lambda Invoke API of
/// `cargo lambda watch`, as the state machine or a schedule would): its answer.
pub async fn invoke(name: &str, payload: Value) -> Value {
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    let url = format!("{base}/2015-03-31/functions/{name}/invocations");
    let response = reqwest::Client::new().post(url).json(&payload).send().await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.unwrap()
}

/// Milliseconds since the epoch, as the provider emulator records times.
pub fn epoch_ms() -> i64 {
    knoq_shared::clock::Instant::now().epoch_millis()
}

/// The texts of a transcript's `agent_message` events, in order.
pub fn agent_texts(transcript: &Value) -> Vec<String> {
    transcript["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["type"] == "agent_message")
        .map(|event| event["payload"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// A DynamoDB fault for the emulator to inject (`infra/local/faults.py`, on the stack
/// `make test` starts): the next `count` requests of `operation` on a table whose name ends
/// with `table` (and whose body contains every text of `contains`) fail with `error`.
#[derive(Debug, Clone)]
pub struct Fault {
    operation: String,
    table: String,
    error: String,
    count: Option<u32>,
    contains: Vec<String>,
    after: u32,
    delay_ms: Option<u64>,
}

impl Fault {
    /// A fault of every `operation` request on `table` (a name or its suffix, e.g.
    /// `SessionsTable`) with `error` (`TransactionConflictException`,
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`,
    /// `InternalServerError` or `CommittedResponseLost`), until cleared.
    pub fn new(operation: &str, table: &str, error: &str) -> Self {
        Self {
            operation: operation.into(),
            table: table.into(),
            error: error.into(),
            count: None,
            contains: Vec::new(),
            after: 0,
            delay_ms: None,
        }
    }

    /// Every `operation` request on `table` held for `delay` before it is served normally
    /// (a store under strain answering late), until cleared.
    pub fn slow(operation: &str, table: &str, delay: Duration) -> Self {
        let mut fault = Self::new(operation, table, "SlowResponse");
        fault.delay_ms = Some(delay.as_millis() as u64);
        fault
    }

    /// Only once `count` matching requests have been served normally.
    pub fn after(mut self, count: u32) -> Self {
        self.after = count;
        self
    }

    /// Only the next `count` matching requests (SDK retries count: each is a request).
    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    /// Only requests whose body contains `text` (a session id: tests run side by side);
    /// called again, requests holding every text given.
    pub fn containing(mut self, text: &str) -> Self {
        self.contains.push(text.into());
        self
    }

    /// Plants the fault on the emulator.
    pub async fn plant(self) -> PlantedFault {
        let body = serde_json::json!({
            "operation": self.operation,
            "table": self.table,
            "error": self.error,
            "count": self.count,
            "contains": (!self.contains.is_empty()).then_some(&self.contains),
            "after": self.after,
            "delayMs": self.delay_ms,
        });
        let response = reqwest::Client::new()
            .post(faults_url())
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            response.status().is_success(),
            "planting {body} failed ({}): run through `make test`, whose emulator injects faults",
            response.status()
        );
        let planted: Value = response.json().await.expect("a JSON answer");
        PlantedFault { id: planted["id"].as_str().expect("a fault id").to_owned() }
    }
}

/// A fault planted on the emulator.
#[derive(Debug)]
pub struct PlantedFault {
    id: String,
}

impl PlantedFault {
    /// How many requests it has failed so far.
    pub async fn hits(&self) -> u64 {
        let listed: Value = reqwest::get(faults_url())
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("a JSON answer");
        listed["faults"]
            .as_array()
            .expect("faults")
            .iter()
            .find(|fault| fault["id"] == self.id.as_str())
            .and_then(|fault| fault["hits"].as_u64())
            .expect("the planted fault is listed")
    }

    /// Removes the fault; later requests are served normally.
    pub async fn clear(self) {
        let response = reqwest::Client::new()
            .delete(faults_url())
            .query(&[("id", &self.id)])
            .send()
            .await
            .expect("the emulator answers");
        assert!(response.status().is_success(), "clearing fault {} failed", self.id);
    }
}

/// Where the emulator takes faults: its own port, path `/_knoq/faults`.
fn faults_url() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .expect("AWS_ENDPOINT_URL: run through `make test`");
    format!("{}/_knoq/faults", endpoint.trim_end_matches('/'))
}

/// The emulator's seeded random fault mode (`/_knoq/chaos`, infra/local/chaos.py), turned on
/// for requests whose body contains `scope` only, at `rates` (every other kind at 0): so a test
/// meets AWS's randomly timed failures, such as a stale read, on its own requests alone.
pub struct ScopedChaos {
    url: String,
}

impl ScopedChaos {
    /// Turns the mode on (seed 1) for `scope` at `rates`.
    pub async fn start(scope: &str, rates: &[(&str, f64)]) -> Self {
        let url = faults_url().replace("/_knoq/faults", "/_knoq/chaos");
        let client = reqwest::Client::new();
        let current: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let mut all: serde_json::Map<String, Value> = current["rates"]
            .as_object()
            .expect("the emulator lists its fault kinds")
            .keys()
            .map(|name| (name.clone(), Value::from(0.0)))
            .collect();
        for (name, rate) in rates {
            assert!(all.contains_key(*name), "no fault kind {name}");
            all.insert((*name).to_owned(), Value::from(*rate));
        }
        let spec = serde_json::json!({ "seed": 1, "rates": all, "scope": scope });
        let response = client.post(&url).json(&spec).send().await.unwrap();
        assert!(response.status().is_success(), "{:?}", response.text().await);
        Self { url }
    }

    /// How many faults of `kind` were injected so far.
    pub async fn injected(&self, kind: &str) -> u64 {
        let state: Value = reqwest::get(&self.url).await.unwrap().json().await.unwrap();
        state["injected"][kind].as_u64().unwrap_or(0)
    }

    /// Turns the mode off.
    pub async fn stop(self) {
        let response = reqwest::Client::new().delete(&self.url).send().await.unwrap();
        assert!(response.status().is_success());
    }
}
