//! The whole of a function's `main`: build the [`App`] once, then serve requests.

use std::convert::Infallible;
use std::future::Future;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response, service_fn};
use tracing::Instrument;

use crate::agent::provider::ApiKey;
use crate::agent::worker::{Worker, WorkerRequest};
use crate::app::App;
use crate::checker::{Checker, CheckerEvent};
use crate::config::AgentConfig;
use crate::purge::{SWEEP_GRACE, SweepReport, SweepRequest, sweep_deadline};
use crate::telemetry;

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
/// its method and path when it did not come through a named route: not through API Gateway,
/// or through a catch-all `$default` route (what `cargo lambda watch` reports locally).
pub fn route_of(request: &Request) -> String {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context))
            if context.route_key.as_deref().is_some_and(|key| key != "$default") =>
        {
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

/// Serves the purge sweeper (finishes the purges deletes left; run on a schedule) on the
/// Lambda runtime. Each invocation sweeps until the queue is empty or its function's
/// deadline is [`crate::purge::SWEEP_MARGIN`] away, answers its [`SweepReport`], and emits it as metrics
/// (`OldestPendingPurgeSeconds` is the one the backlog alarm watches).
pub async fn serve_purge_sweeper() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SweepRequest>| async move {
            let grace =
                event.payload.grace_seconds.map_or(SWEEP_GRACE, std::time::Duration::from_secs);
            let deadline = sweep_deadline(event.context.deadline);
            let report = app.purger.sweep(crate::clock::Timestamp::now(), grace, deadline).await?;
            report.record();
            Ok::<SweepReport, lambda_runtime::Error>(report)
        },
    ))
    .await
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
    let poll = std::time::Duration::from_secs(app.config.workflow.poll_interval_secs);
    let worker: &'static Worker =
        Box::leak(Box::new(Worker::for_app(&app, &agent, api_key, poll)?));
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
