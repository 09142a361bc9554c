//! Requests as lambda_http hands them to a handler, and reading a handler's answer.

use super::*;

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
