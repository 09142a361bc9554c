//! The provider emulator's record of model calls, and the faults planted on the AWS emulator.

use super::*;

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
