//! The API over real HTTP (`cargo lambda watch`), and reading transcript answers.

use super::*;

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

    /// One waiting transcript read: the events after `since` as soon as one exists, else an
    /// empty page after `wait_seconds`.
    pub async fn wait_for_events(&self, id: &str, since: &str, wait_seconds: u64) -> Answer {
        let wait = wait_seconds.to_string();
        self.get(
            "transcript",
            &[("sessionId", id), ("sinceEventId", since), ("waitSeconds", &wait)],
        )
        .await
    }

    /// Follows the transcript with waiting reads (20 s each) from `since` until an event of
    /// type `kind` arrives or `within` passes; every event read, in order, and when each
    /// answer arrived (epoch ms).
    pub async fn follow_until(
        &self,
        id: &str,
        since: &str,
        kind: &str,
        within: Duration,
    ) -> Vec<(i64, Value)> {
        let deadline = std::time::Instant::now() + within;
        let mut cursor = since.to_owned();
        let mut seen = Vec::new();
        loop {
            let (status, _, page) = self.wait_for_events(id, &cursor, 20).await;
            let arrived = epoch_ms();
            assert_eq!(status, 200, "{page}");
            for event in page["events"].as_array().expect("events") {
                cursor = event["id"].as_str().expect("an id").to_owned();
                seen.push((arrived, event.clone()));
            }
            if seen.iter().any(|(_, event)| event["type"] == kind) {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {kind} in {id} within {within:?}: {seen:?}"
            );
        }
    }

    /// Polls the transcript every 100 ms until the session's turn has ended (`status_idle`
    /// or `error`), or `within` passes; the transcript.
    pub async fn until_turn_ends(&self, id: &str, within: Duration) -> Value {
        self.transcript_until(id, Duration::from_millis(100), within, |t| {
            count_of(t, "status_idle") + count_of(t, "error") > 0
        })
        .await
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
