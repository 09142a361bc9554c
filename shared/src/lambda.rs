//! The whole of a function's `main`: build the [`App`] once, then serve requests.

use std::convert::Infallible;
use std::future::Future;

use lambda_http::{Body, Request, Response, service_fn};

use crate::agent::ScriptedAgent;
use crate::app::App;
use crate::turn::{Checker, CheckerRequest};

/// Serves `handler` on the Lambda runtime with one [`App`] built for the container.
pub async fn serve<H, F>(handler: H) -> Result<(), lambda_http::Error>
where
    H: Fn(&'static App, Request) -> F,
    F: Future<Output = Response<Body>> + Send,
{
    crate::telemetry::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_http::run(service_fn(move |request| {
        let response = handler(app, request);
        async move { Ok::<_, Infallible>(response.await) }
    }))
    .await
}

/// Serves the checker (the turn workflow's poll step) on the Lambda runtime, driving the
/// built-in scripted agent.
pub async fn serve_checker() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let app = App::from_env().await?;
    let workflow = &app.config.workflow;
    let agent = ScriptedAgent { min_turn: workflow.scripted_turn };
    let checker: &'static Checker<ScriptedAgent> =
        Box::leak(Box::new(Checker::new(app.sessions.clone(), agent, workflow.fault_injection)));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<CheckerRequest>| checker.handle(event.payload),
    ))
    .await
}
