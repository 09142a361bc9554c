//! The whole of a function's `main`: build the [`App`] once, then serve requests.

use std::convert::Infallible;
use std::future::Future;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response, service_fn};
use tracing::Instrument;

use crate::agent::provider::{ApiKey, Provider, ProviderConfig};
use crate::agent::runtime::{Worker, WorkerRequest, WorkerSettings};
use crate::agent::tools::{SearchSessions, Tools};
use crate::app::App;
use crate::config::AgentConfig;
use crate::purge::{SWEEP_BUDGET, SWEEP_GRACE, SWEEP_MARGIN, SweepReport, SweepRequest};
use crate::telemetry;
use crate::turn::{Checker, CheckerEvent};

/// Serves `handler` on the Lambda runtime with one [`App`] built for the container; every
/// request goes through [`observe`].
pub async fn serve<H, F>(handler: H) -> Result<(), lambda_http::Error>
where
    H: Fn(&'static App, Request) -> F + Sync + 'static,
    F: Future<Output = Response<Body>> + Send,
{
    crate::telemetry::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    let handler: &'static H = Box::leak(Box::new(handler));
    lambda_http::run(service_fn(move |request| {
        let response = observe(handler, app, request);
        async move { Ok::<_, Infallible>(response.await) }
    }))
    .await
}

/// Runs one request through `handler` inside a `request` span (Lambda request id, route,
/// and the caller's user hash once authenticated), then logs its status, outcome and
/// latency and emits the route's request metrics.
pub async fn observe<H, F>(handler: &H, app: &'static App, request: Request) -> Response<Body>
where
    H: Fn(&'static App, Request) -> F + Sync,
    F: Future<Output = Response<Body>> + Send,
{
    let started = std::time::Instant::now();
    let route = route_of(&request);
    let request_id = crate::routes::request_id(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = %route,
        user = tracing::field::Empty,
    );
    async move {
        let response = handler(app, request).await;
        let status = response.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outcome = telemetry::outcome(status);
        tracing::info!(status, outcome, latency_ms, "request");
        telemetry::emit(&route, &telemetry::request_metrics(status, latency_ms));
        response
    }
    .instrument(span)
    .await
}

/// The route of a request as API Gateway names it (`POST /api/managed-agents/cancel`), or
/// its method and path when it did not come through API Gateway.
pub fn route_of(request: &Request) -> String {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) if context.route_key.is_some() => {
            context.route_key.clone().unwrap_or_default()
        }
        _ => format!("{} {}", request.method(), request.uri().path()),
    }
}

/// Serves the checker (the turn workflow's poll step) on the Lambda runtime.
pub async fn serve_checker() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let app = App::from_env().await?;
    let workflow = &app.config.workflow;
    let checker: &'static Checker = Box::leak(Box::new(Checker::new(
        app.sessions.clone(),
        app.workflow.clone(),
        workflow.worker_start_grace,
        workflow.fault_injection,
    )));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<CheckerEvent>| checker.handle_event(event.payload),
    ))
    .await
}

/// The `Route` dimension of the purge sweeper's metrics.
pub const PURGE_SWEEPER_ROUTE: &str = "purge-sweeper";

/// Serves the purge sweeper (finishes the purges deletes left; run on a schedule) on the
/// Lambda runtime. Each invocation sweeps until the queue is empty or its function's
/// deadline is [`SWEEP_MARGIN`] away, answers its [`SweepReport`], and emits it as metrics
/// (`OldestPendingPurgeSeconds` is the one the backlog alarm watches).
pub async fn serve_purge_sweeper() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SweepRequest>| async move {
            let grace =
                event.payload.grace_seconds.map_or(SWEEP_GRACE, std::time::Duration::from_secs);
            let deadline = sweep_deadline(event.context.deadline);
            let report = app.purger.sweep(crate::clock::Instant::now(), grace, deadline).await?;
            if report == SweepReport::default() {
                // Nothing queued: the common case, once a minute; no line for it.
                tracing::debug!("purge sweep: nothing to do");
            } else {
                tracing::info!(?report, "purge sweep");
            }
            telemetry::emit(
                PURGE_SWEEPER_ROUTE,
                &[
                    ("PurgesFinished", report.finished as f64, telemetry::Unit::Count),
                    ("PurgesLeft", (report.left + report.failed) as f64, telemetry::Unit::Count),
                    ("PurgeEventsDeleted", report.events_deleted as f64, telemetry::Unit::Count),
                    (
                        "OldestPendingPurgeSeconds",
                        report.oldest_pending_secs as f64,
                        telemetry::Unit::Seconds,
                    ),
                ],
            );
            Ok::<SweepReport, lambda_runtime::Error>(report)
        },
    ))
    .await
}

/// When a sweep must stop starting work: [`SWEEP_MARGIN`] before the invocation's deadline
/// (milliseconds since the epoch, as the Lambda runtime gives it), and never later than
/// [`SWEEP_BUDGET`] from now. A deadline already past cannot come from Lambda: `cargo lambda
/// watch` sends its timeout there (600000) rather than a time, and then the budget alone
/// applies.
fn sweep_deadline(deadline_epoch_ms: u64) -> std::time::Instant {
    let now_ms = u64::try_from(crate::clock::Instant::now().epoch_millis()).unwrap_or(0);
    let left = match deadline_epoch_ms.checked_sub(now_ms) {
        Some(left) => std::time::Duration::from_millis(left).saturating_sub(SWEEP_MARGIN),
        None => SWEEP_BUDGET,
    };
    std::time::Instant::now() + left.min(SWEEP_BUDGET)
}

/// Serves the worker (plays one turn against the model provider) on the Lambda runtime. The
/// API key is read from Secrets Manager once, when the container starts.
pub async fn serve_worker() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let sdk = crate::app::load_sdk_config().await;
    let app = App::new(crate::config::Config::from_env()?, &sdk);
    let agent = AgentConfig::from_lookup(|name| std::env::var(name).ok())?;
    let api_key =
        read_api_key(&aws_sdk_secretsmanager::Client::new(&sdk), &agent.api_key_secret).await?;
    let provider = Provider::new(ProviderConfig {
        base_url: agent.base_url.clone(),
        api_key,
        model: agent.model.clone(),
        max_tokens: agent.max_tokens,
        system_prompt: agent.system_prompt.clone(),
        max_attempts: 4,
        retry_base: std::time::Duration::from_millis(500),
        max_retry_wait: std::time::Duration::from_secs(30),
        connect_timeout: std::time::Duration::from_secs(10),
        stall_timeout: crate::agent::provider::STALL_TIMEOUT,
    })?;
    let poll = std::time::Duration::from_secs(app.config.workflow.poll_interval_secs);
    let settings = WorkerSettings {
        max_steps: agent.max_steps,
        heartbeat: poll / 2,
        lease: crate::agent::lease::base_lease(poll),
        fault_injection: app.config.workflow.fault_injection,
    };
    let tools =
        Tools::new(vec![Box::new(SearchSessions::new(app.sessions.clone(), app.events.clone()))]);
    let worker: &'static Worker = Box::leak(Box::new(Worker::new(
        app.sessions.clone(),
        app.events.clone(),
        provider,
        tools,
        settings,
    )));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<WorkerRequest>| worker.handle(event.payload),
    ))
    .await
}

/// The API key stored in the secret `secret_id` (its `SecretString`, trimmed). The error
/// names the secret, never its value.
async fn read_api_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<ApiKey, lambda_runtime::Error> {
    let output = client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
        format!(
            "the API key secret {secret_id} could not be read: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
        )
    })?;
    let key = output.secret_string().map(str::trim).unwrap_or_default();
    if key.is_empty() {
        return Err(format!("the API key secret {secret_id} has no SecretString").into());
    }
    Ok(ApiKey::new(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use lambda_http::http::StatusCode;

    use super::*;
    use crate::config::Config;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn offline_app() -> &'static App {
        let vars = |name: &str| match name {
            "ALLOWED_ORIGIN" => Some("https://knoq.one".to_string()),
            name if name.ends_with("_TABLE") => Some(name.to_lowercase()),
            _ => None,
        };
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let client = crate::app::DynamoDbClient::new(&sdk);
        Box::leak(Box::new(App::with_dynamodb(Config::from_lookup(vars).unwrap(), &sdk, client)))
    }

    #[tokio::test]
    async fn every_request_logs_one_line_with_id_route_status_latency_and_user_hash() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/managed-agents/cancel")
            .header("cookie", "knoq_session=secret-token")
            .body(Body::Text(r#"{"text":"private words"}"#.into()))
            .unwrap();
        let handler = |_app: &'static App, _request: Request| async {
            telemetry::record_user("alice");
            crate::http::json_response(StatusCode::NOT_FOUND, &serde_json::json!({}))
        };
        let response = observe(&handler, offline_app(), request).await;
        assert_eq!(response.status(), 404);

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            output.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{output}");
        let line = &lines[0];
        assert_eq!(line["fields"]["message"], "request");
        assert_eq!(line["fields"]["status"], 404);
        assert_eq!(line["fields"]["outcome"], "client_error");
        assert!(line["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
        let span = &line["span"];
        assert_eq!(span["route"], "POST /api/managed-agents/cancel");
        assert_eq!(span["user"], telemetry::user_hash("alice"));
        assert!(span["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        for secret in ["secret-token", "private words", "alice"] {
            assert!(!output.contains(secret), "{secret} leaked: {output}");
        }
    }

    #[test]
    fn a_sweep_stops_a_margin_before_its_deadline_and_within_its_budget() {
        let now_ms = crate::clock::Instant::now().epoch_millis() as u64;
        let soon = sweep_deadline(now_ms + 20_000) - std::time::Instant::now();
        assert!(soon <= std::time::Duration::from_secs(15), "{soon:?}");
        assert!(soon >= std::time::Duration::from_secs(14), "{soon:?}");
        let later = sweep_deadline(now_ms + 900_000) - std::time::Instant::now();
        assert!(later <= SWEEP_BUDGET && later >= SWEEP_BUDGET - std::time::Duration::from_secs(1));
        // cargo lambda watch's deadline (a duration, in the past as a time): the budget.
        let local = sweep_deadline(600_000) - std::time::Instant::now();
        assert!(local <= SWEEP_BUDGET && local >= SWEEP_BUDGET - std::time::Duration::from_secs(1));
        // Less than the margin left: stop at once.
        assert!(sweep_deadline(now_ms + 1_000) <= std::time::Instant::now());
    }

    #[test]
    fn the_sweeper_takes_eventbridge_scheduled_events_and_an_operator_grace() {
        let scheduled: SweepRequest = serde_json::from_value(serde_json::json!({
            "version": "0", "id": "e", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "1", "time": "2026-11-26T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:1:rule/r"], "detail": {}
        }))
        .unwrap();
        assert_eq!(scheduled.grace_seconds, None);
        let now: SweepRequest = serde_json::from_str(r#"{"graceSeconds": 0}"#).unwrap();
        assert_eq!(now.grace_seconds, Some(0));
        assert!(serde_json::from_str::<SweepRequest>(r#"{"graceSeconds": -1}"#).is_err());
    }
}
