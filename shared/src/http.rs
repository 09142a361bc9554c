//! Small HTTP helpers for handlers: JSON bodies in and out, headers, query parameters.

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest request body any route accepts; larger bodies answer 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body.to_string()))
        .expect("a status and a static header always build a response")
}

/// The raw bytes of a request body (text or binary; base64 is already decoded by lambda_http).
fn body_bytes(request: &Request) -> &[u8] {
    match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// A request body that was checked to be a JSON object, with typed field accessors whose
/// errors name the field.
#[derive(Debug)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Parses the request body: over [`MAX_BODY_BYTES`] → 413; empty, not JSON, or not an
    /// object → 400.
    pub fn from_request(request: &Request) -> Result<Self, ApiError> {
        let bytes = body_bytes(request);
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
        if bytes.is_empty() {
            return Err(ApiError::BadRequest("request body is required (a JSON object)".into()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::BadRequest("request body must be a JSON object".into())),
            Err(_) => Err(ApiError::BadRequest("request body is not valid JSON".into())),
        }
    }

    /// A required string field: absent or null → "`name` is required"; another JSON type →
    /// "`name` must be a string".
    pub fn required_string(&self, name: &str) -> Result<String, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(ApiError::BadRequest(format!("{name} is required"))),
            Some(Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(ApiError::BadRequest(format!("{name} must be a string"))),
        }
    }
}

/// A query-string parameter, absent or present (possibly empty). A repeated parameter is
/// refused rather than one of its values picked silently.
pub fn query_param(request: &Request, name: &str) -> Result<Option<String>, ApiError> {
    let parameters = request.query_string_parameters_ref();
    let values = parameters.and_then(|map| map.all(name)).unwrap_or_default();
    match values.as_slice() {
        [] => Ok(None),
        [value] => Ok(Some((*value).to_owned())),
        _ => Err(ApiError::BadRequest(format!("{name} must be given once"))),
    }
}

/// Every value of a header, joined the way HTTP joins repeated headers.
pub fn header_values<'a>(request: &'a Request, name: &str) -> impl Iterator<Item = &'a str> {
    request.headers().get_all(name).into_iter().filter_map(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        lambda_http::http::Request::builder().body(Body::Text(body.to_string())).unwrap()
    }

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn malformed_and_non_object_bodies_are_bad_requests() {
        assert_eq!(
            message(JsonObject::from_request(&request(""))),
            "request body is required (a JSON object)"
        );
        assert_eq!(
            message(JsonObject::from_request(&request("{nope"))),
            "request body is not valid JSON"
        );
        assert_eq!(
            message(JsonObject::from_request(&request("[1,2]"))),
            "request body must be a JSON object"
        );
        assert_eq!(
            message(JsonObject::from_request(&request("\"x\""))),
            "request body must be a JSON object"
        );
    }

    #[test]
    fn oversized_body_is_payload_too_large() {
        let big = format!("{{\"text\":\"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        let err = JsonObject::from_request(&request(&big)).unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn string_fields_name_themselves_in_errors() {
        let body = JsonObject::from_request(&request(r#"{"a":"x","n":5,"z":null}"#)).unwrap();
        assert_eq!(body.required_string("a").unwrap(), "x");
        assert_eq!(message(body.required_string("n")), "n must be a string");
        assert_eq!(message(body.required_string("z")), "z is required");
        assert_eq!(message(body.required_string("missing")), "missing is required");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_a_bad_request_not_a_failure() {
        let req = lambda_http::http::Request::builder()
            .body(Body::Binary(vec![0xff, 0xfe, b'{', 0x80]))
            .unwrap();
        assert_eq!(message(JsonObject::from_request(&req)), "request body is not valid JSON");
    }

    #[test]
    fn binary_bodies_are_read_too() {
        let req = lambda_http::http::Request::builder()
            .body(Body::Binary(br#"{"a":"b"}"#.to_vec()))
            .unwrap();
        assert_eq!(JsonObject::from_request(&req).unwrap().required_string("a").unwrap(), "b");
    }
}
