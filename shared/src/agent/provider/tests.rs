//! The adapter against a scripted provider server (an HTTP server on 127.0.0.1 that plays
//! each test's answers): retries, streaming, cut-offs, bounds, key hygiene.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use reqwest::header::{HeaderMap, HeaderValue};

use super::*;
#[allow(unused_imports)]
use super::{assembler::*, client::*, stream::*};

const KEY: &str = "sk-ant-test-0123456789-SECRET";

/// A text answer as the API streams it (LF line ends), with a ping and non-ASCII text.
const TEXT_ANSWER: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", café ✓ — three\nlines\n"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// Text, then a tool call whose input JSON is split over several deltas.
const TOOL_ANSWER: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me search."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"search_sessions","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"query\": \"quar"}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"terly\", \"limit\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":": 5}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// The start of an answer, cut off by an `error` event.
const OVERLOADED_MID_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_03","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":30,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Partial"}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}

"#;

fn crlf(fixture: &str) -> String {
    fixture.replace('\n', "\r\n")
}

/// Every event of a stream, and the error that ended it if one did.
async fn drain(mut stream: ModelStream) -> (Vec<StreamEvent>, Option<ProviderError>, Usage) {
    let mut events = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None, stream.usage()),
            Err(error) => {
                assert_eq!(stream.next().await.unwrap(), None, "nothing after an error");
                return (events, Some(error), stream.usage());
            }
        }
    }
}

async fn decode(fixture: &str) -> (Vec<StreamEvent>, Option<ProviderError>, Usage) {
    drain(ModelStream::from_chunks([fixture])).await
}

fn assemble(events: Vec<StreamEvent>) -> Result<Vec<Output>, ProviderError> {
    let mut assembler = Assembler::new();
    let mut outputs = Vec::new();
    for event in events {
        outputs.extend(assembler.push(event)?);
    }
    Ok(outputs)
}

fn model_text(outputs: &[Output]) -> String {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn text_answer_decodes_to_its_events_in_order() {
    let (events, error, usage) = decode(TEXT_ANSWER).await;
    assert!(error.is_none(), "{error:?}");
    let expected = vec![
        StreamEvent::MessageStart { usage: Usage { input_tokens: 25, output_tokens: 1 } },
        StreamEvent::BlockStart { index: 0, block: StartedBlock::Text },
        StreamEvent::Ping,
        StreamEvent::TextDelta { index: 0, text: "Hello".into() },
        StreamEvent::TextDelta { index: 0, text: ", café ✓ — three\nlines\n".into() },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::MessageDelta { stop_reason: Some("end_turn".into()), output_tokens: Some(15) },
        StreamEvent::MessageStop,
    ];
    assert_eq!(events, expected);
    assert_eq!(usage, Usage { input_tokens: 25, output_tokens: 15 });
}

#[tokio::test]
async fn crlf_line_ends_decode_like_lf() {
    for fixture in [TEXT_ANSWER, TOOL_ANSWER] {
        let (lf, _, _) = decode(fixture).await;
        let (crlf, error, _) = decode(&crlf(fixture)).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(crlf, lf);
    }
}

#[tokio::test]
async fn events_split_across_chunk_boundaries_decode_alike() {
    for fixture in [TEXT_ANSWER.to_owned(), crlf(TOOL_ANSWER)] {
        let (whole, _, _) = decode(&fixture).await;
        let bytes = fixture.as_bytes();
        for split in 1..bytes.len() {
            let chunks = [bytes[..split].to_vec(), bytes[split..].to_vec()];
            let (events, error, _) = drain(ModelStream::from_chunks(chunks)).await;
            assert!(error.is_none(), "split at {split}: {error:?}");
            assert_eq!(events, whole, "split at {split}");
        }
        let bytewise: Vec<Vec<u8>> = bytes.iter().map(|byte| vec![*byte]).collect();
        assert_eq!(drain(ModelStream::from_chunks(bytewise)).await.0, whole);
    }
}

#[tokio::test]
async fn tool_use_input_split_over_deltas_is_assembled() {
    let (events, error, usage) = decode(&crlf(TOOL_ANSWER)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(usage, Usage { input_tokens: 472, output_tokens: 89 });
    let outputs = assemble(events).unwrap();
    assert_eq!(
        outputs,
        vec![
            Output::Text("Let me search.".into()),
            Output::ToolUse {
                id: "toolu_01".into(),
                name: "search_sessions".into(),
                input: json!({ "query": "quarterly", "limit": 5 }),
            },
            Output::Done {
                stop_reason: "tool_use".into(),
                usage: Usage { input_tokens: 472, output_tokens: 89 },
            },
        ]
    );
}

#[tokio::test]
async fn usage_comes_from_message_start_then_message_delta() {
    let start = TEXT_ANSWER.split("event: content_block_start").next().unwrap();
    let mut stream = ModelStream::from_chunks([start.to_owned()]);
    assert!(matches!(stream.next().await, Ok(Some(StreamEvent::MessageStart { .. }))));
    assert_eq!(stream.usage(), Usage { input_tokens: 25, output_tokens: 1 });
    assert_eq!(decode(TEXT_ANSWER).await.2, Usage { input_tokens: 25, output_tokens: 15 });
}

#[tokio::test]
async fn error_event_mid_stream_is_a_retryable_stream_error_keeping_usage() {
    let (events, error, usage) = decode(OVERLOADED_MID_STREAM).await;
    assert_eq!(events.len(), 3);
    let error = error.expect("an error");
    assert!(matches!(&error, ProviderError::Stream { error_type, message }
            if error_type == "overloaded_error" && message == "Overloaded"));
    assert_eq!(error.error_type(), "overloaded_error");
    assert!(error.is_retryable());
    assert_eq!(usage, Usage { input_tokens: 30, output_tokens: 1 });
}

/// `TEXT_ANSWER` with its `index`-th event (counting from 0) replaced by `event`.
fn with_event(index: usize, event: &str) -> String {
    let mut events: Vec<&str> = TEXT_ANSWER.split("\n\n").collect();
    events[index] = event;
    events.join("\n\n")
}

async fn assert_malformed(fixture: &str, needle: &str) {
    let (_, error, _) = decode(fixture).await;
    match error {
        Some(error @ ProviderError::Malformed(_)) => {
            assert!(error.to_string().contains(needle), "{error}");
            assert_eq!(error.error_type(), "malformed_stream");
            assert!(!error.is_retryable());
        }
        other => panic!("expected Malformed containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn non_json_data_is_malformed() {
    assert_malformed(&with_event(2, "event: ping\ndata: {not json"), "not JSON").await;
}

#[tokio::test]
async fn known_event_of_unknown_shape_is_malformed() {
    let no_index = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\"}";
    assert_malformed(&with_event(5, no_index), "unexpected shape").await;
    let thinking = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\
                        \"index\":0,\"content_block\":{\"type\":\"thinking\"}}";
    assert_malformed(&with_event(1, thinking), "unexpected shape").await;
    let untyped = "event: ping\ndata: {\"kind\":\"ping\"}";
    assert_malformed(&with_event(2, untyped), "event `ping`").await;
}

#[tokio::test]
async fn delta_for_a_block_that_never_started_is_malformed() {
    let stray = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\
                     \"index\":7,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}";
    assert_malformed(&with_event(3, stray), "never started").await;
    let wrong_kind = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\
                     \"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}";
    assert_malformed(&with_event(3, wrong_kind), "wrong kind").await;
}

#[tokio::test]
async fn body_ending_before_message_stop_is_a_connection_error() {
    let cut = TEXT_ANSWER.split("event: message_delta").next().unwrap();
    let (events, error, usage) = decode(cut).await;
    assert_eq!(events.last(), Some(&StreamEvent::BlockStop { index: 0 }));
    let error = error.expect("an error");
    assert!(matches!(error, ProviderError::Connection(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(usage.input_tokens, 25);
    let (_, error, _) = decode("").await;
    assert!(matches!(error, Some(ProviderError::Connection(_))));
}

#[tokio::test]
async fn invalid_utf8_and_events_after_message_stop_are_malformed() {
    let (_, error, _) =
        drain(ModelStream::from_chunks([b"event: ping\ndata: \xff\xfe\n\n".to_vec()])).await;
    assert!(matches!(error, Some(ProviderError::Malformed(_))), "{error:?}");
    let trailing = format!("{TEXT_ANSWER}event: ping\ndata: {{\"type\":\"ping\"}}\n\n");
    let (events, error, _) = decode(&trailing).await;
    assert!(error.is_none(), "the stream ends at message_stop: {error:?}");
    assert_eq!(events.last(), Some(&StreamEvent::MessageStop));
}

#[tokio::test]
async fn unknown_event_types_and_comments_are_skipped() {
    let extra = ": a comment\n\nevent: future_event\ndata: {\"type\":\"future_event\"}\n\n";
    let (events, error, _) = decode(&format!("{extra}{TEXT_ANSWER}")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events, decode(TEXT_ANSWER).await.0);
}

#[tokio::test]
async fn assembler_text_outputs_concatenate_to_the_exact_text() {
    let outputs = assemble(decode(TEXT_ANSWER).await.0).unwrap();
    assert_eq!(model_text(&outputs), "Hello, café ✓ — three\nlines\n");
    assert_eq!(
        outputs.last(),
        Some(&Output::Done {
            stop_reason: "end_turn".into(),
            usage: Usage { input_tokens: 25, output_tokens: 15 },
        })
    );
}

#[test]
fn assembler_tool_call_without_deltas_has_an_empty_object_input() {
    let events = vec![
        StreamEvent::BlockStart {
            index: 0,
            block: StartedBlock::ToolUse { id: "t".into(), name: "now".into() },
        },
        StreamEvent::BlockStop { index: 0 },
    ];
    let outputs = assemble(events).unwrap();
    assert_eq!(
        outputs,
        vec![Output::ToolUse { id: "t".into(), name: "now".into(), input: json!({}) }]
    );
}

#[test]
fn assembler_refuses_unparsable_input_stray_deltas_and_an_unfinished_message() {
    let tool = StreamEvent::BlockStart {
        index: 0,
        block: StartedBlock::ToolUse { id: "t".into(), name: "n".into() },
    };
    let half = StreamEvent::InputJsonDelta { index: 0, partial_json: "{\"a\":".into() };
    let stop = StreamEvent::BlockStop { index: 0 };
    let error = assemble(vec![tool.clone(), half, stop]).unwrap_err();
    assert!(error.to_string().contains("unparsable input"), "{error}");
    let stray = StreamEvent::TextDelta { index: 3, text: "x".into() };
    assert!(matches!(assemble(vec![stray]), Err(ProviderError::Malformed(_))));
    let open = assemble(vec![tool, StreamEvent::MessageStop]);
    assert!(matches!(open, Err(ProviderError::Malformed(_))));
    let no_reason = assemble(vec![StreamEvent::MessageStop]);
    assert!(matches!(no_reason, Err(ProviderError::Malformed(_))));
}

#[test]
fn content_blocks_serialise_to_the_anthropic_json_and_back() {
    let message = Message {
        role: Role::User,
        content: vec![
            ContentBlock::Text { text: "hi".into() },
            ContentBlock::ToolResult {
                tool_use_id: "x".into(),
                content: "...".into(),
                is_error: false,
            },
        ],
    };
    let text = serde_json::to_string(&message).unwrap();
    assert_eq!(
        text,
        r#"{"role":"user","content":[{"type":"text","text":"hi"},{"type":"tool_result","tool_use_id":"x","content":"...","is_error":false}]}"#
    );
    assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), message);
    let call = Message {
        role: Role::Assistant,
        content: vec![ContentBlock::ToolUse {
            id: "toolu_1".into(),
            name: "search".into(),
            input: json!({ "q": 1 }),
        }],
    };
    let value = serde_json::to_value(&call).unwrap();
    assert_eq!(
        value,
        json!({ "role": "assistant", "content": [
            { "type": "tool_use", "id": "toolu_1", "name": "search", "input": { "q": 1 } }
        ]})
    );
    assert_eq!(serde_json::from_value::<Message>(value).unwrap(), call);
}

#[test]
fn error_types_and_retryability() {
    let status = |status: u16, kind: &str| ProviderError::Status {
        status,
        error_type: kind.into(),
        message: String::new(),
    };
    let stream =
        |kind: &str| ProviderError::Stream { error_type: kind.into(), message: String::new() };
    for retryable in [
        status(429, "rate_limit_error"),
        status(529, "overloaded_error"),
        status(500, "api_error"),
        status(503, "api_error"),
        ProviderError::Connection("reset".into()),
        stream("overloaded_error"),
        stream("api_error"),
    ] {
        assert!(retryable.is_retryable(), "{retryable:?}");
    }
    for final_error in [
        status(400, "invalid_request_error"),
        status(401, "authentication_error"),
        status(404, "not_found_error"),
        stream("invalid_request_error"),
        ProviderError::Malformed("x".into()),
        ProviderError::Config("x".into()),
    ] {
        assert!(!final_error.is_retryable(), "{final_error:?}");
    }
    assert_eq!(status(529, "overloaded_error").error_type(), "overloaded_error");
    assert_eq!(ProviderError::Connection("x".into()).error_type(), "connection_error");
}

fn config(base_url: &str) -> ProviderConfig {
    ProviderConfig {
        base_url: base_url.to_owned(),
        api_key: ApiKey::new(KEY.into()),
        model: "claude-test".into(),
        max_tokens: 1024,
        system_prompt: "Be brief.".into(),
        max_attempts: 4,
        retry_base: Duration::from_millis(5),
        max_retry_wait: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        stall_timeout: STALL_TIMEOUT,
    }
}

#[test]
fn backoff_doubles_with_jitter_and_every_wait_is_capped() {
    let mut config = config("http://127.0.0.1:1");
    config.retry_base = Duration::from_millis(500);
    config.max_retry_wait = Duration::from_secs(3);
    let ms = |attempt, unit| backoff(&config, attempt, None, unit).as_millis();
    assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (250, 499));
    assert_eq!((ms(2, 0.0), ms(3, 0.0)), (500, 1_000));
    assert_eq!(ms(4, 0.5), 3_000);
    assert_eq!(ms(40, 0.5), 3_000);
    let asked = |seconds| backoff(&config, 1, Some(Duration::from_secs(seconds)), 0.0);
    assert_eq!(asked(1), Duration::from_secs(1));
    assert_eq!(asked(100), Duration::from_secs(3));
}

#[test]
fn retry_after_reads_seconds_or_milliseconds_and_ignores_dates() {
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    };
    assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
    assert_eq!(
        retry_after(&headers(&[("retry-after", "2"), ("retry-after-ms", "1500")])),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), None);
    assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
    assert_eq!(retry_after(&headers(&[])), None);
}

#[test]
fn invalid_configuration_is_refused() {
    for base_url in ["not a url", "ftp://example.com"] {
        let error = Provider::new(config(base_url)).unwrap_err();
        assert_eq!(error.error_type(), "configuration_error");
    }
    let mut bad_key = config("http://127.0.0.1:1");
    bad_key.api_key = ApiKey::new("line\nbreak".into());
    assert!(matches!(Provider::new(bad_key), Err(ProviderError::Config(_))));
}

// --- A tiny HTTP/1.1 server on 127.0.0.1 that records requests and plays replies. ---

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// What the server answers to one request.
#[derive(Debug, Clone)]
enum Reply {
    /// An error status with a JSON body and extra headers.
    Status { status: u16, headers: Vec<(&'static str, String)>, body: String },
    /// A 200 event stream with this body, written in a few pieces, then closed.
    Stream(String),
    /// A 200 event stream that sends `message_start` then goes silent, and reports when
    /// the client closed the connection.
    Silent(mpsc::UnboundedSender<Instant>),
}

fn error_reply(status: u16, kind: &str, headers: Vec<(&'static str, String)>) -> Reply {
    let body = json!({ "type": "error", "error": { "type": kind, "message": "try later" } });
    Reply::Status { status, headers, body: body.to_string() }
}

struct TestServer {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    /// Answers the n-th request with `replies[n]`, the last reply repeating.
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, replies) = (received.clone(), Arc::new(replies));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, replies.clone(), log.clone()));
            }
        });
        Self { base_url, received }
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(mut socket: TcpStream, replies: Arc<Vec<Reply>>, log: Arc<Mutex<Vec<Received>>>) {
    let Some(request) = read_request(&mut socket).await else { return };
    let reply = {
        let mut log = log.lock().unwrap();
        log.push(request);
        replies[(log.len() - 1).min(replies.len() - 1)].clone()
    };
    let stream_head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    match reply {
        Reply::Status { status, headers, body } => {
            let extra: String =
                headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
            let head = format!(
                "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
        }
        Reply::Stream(body) => {
            let _ = socket.write_all(stream_head.as_bytes()).await;
            for piece in body.as_bytes().chunks(97) {
                let _ = socket.write_all(piece).await;
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Reply::Silent(closed) => {
            let start = TEXT_ANSWER.split("event: content_block_start").next().unwrap();
            let _ = socket.write_all(format!("{stream_head}{start}").as_bytes()).await;
            let mut buffer = [0u8; 64];
            while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            let _ = closed.send(Instant::now());
        }
    }
    let _ = socket.shutdown().await;
}

async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut buffer).await.ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut buffer).await.ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&buffer[..n]);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Received { request_line, headers, body })
}

fn conversation() -> Vec<Message> {
    vec![Message {
        role: Role::User,
        content: vec![ContentBlock::Text { text: "What changed this quarter?".into() }],
    }]
}

fn search_tool() -> ToolSpec {
    ToolSpec {
        name: "search_sessions".into(),
        description: "Searches the caller's sessions.".into(),
        input_schema: json!({ "type": "object", "properties": { "query": { "type": "string" } } }),
    }
}

#[tokio::test]
async fn open_sends_the_anthropic_headers_and_body() {
    let server = TestServer::start(vec![Reply::Stream(TEXT_ANSWER.into())]).await;
    let provider = Provider::new(config(&format!("{}/", server.base_url))).unwrap();
    let stream = provider.open(&conversation(), &[search_tool()]).await.unwrap();
    let (events, error, _) = drain(stream).await;
    assert!(error.is_none() && events.last() == Some(&StreamEvent::MessageStop));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.request_line, "POST /v1/messages HTTP/1.1");
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some(ANTHROPIC_VERSION));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "model": "claude-test",
            "max_tokens": 1024,
            "system": "Be brief.",
            "messages": serde_json::to_value(conversation()).unwrap(),
            "tools": [serde_json::to_value(search_tool()).unwrap()],
            "stream": true,
        })
    );
}

#[tokio::test]
async fn open_leaves_out_an_empty_system_prompt_and_no_tools() {
    let server = TestServer::start(vec![Reply::Stream(TEXT_ANSWER.into())]).await;
    let mut config = config(&server.base_url);
    config.system_prompt.clear();
    let provider = Provider::new(config).unwrap();
    drop(provider.open(&conversation(), &[]).await.unwrap());
    let body = &server.requests()[0].body;
    assert!(body.get("system").is_none() && body.get("tools").is_none(), "{body}");
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn open_retries_two_overloaded_answers_then_streams() {
    let overloaded = error_reply(529, "overloaded_error", vec![]);
    let replies = vec![overloaded.clone(), overloaded, Reply::Stream(TEXT_ANSWER.into())];
    let server = TestServer::start(replies).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let stream = provider.open(&conversation(), &[]).await.unwrap();
    let outputs = assemble(drain(stream).await.0).unwrap();
    assert_eq!(model_text(&outputs), "Hello, café ✓ — three\nlines\n");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn open_waits_as_long_as_retry_after_asks() {
    let limited = error_reply(429, "rate_limit_error", vec![("retry-after", "1".into())]);
    let server = TestServer::start(vec![limited, Reply::Stream(TEXT_ANSWER.into())]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let started = Instant::now();
    provider.open(&conversation(), &[]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_is_capped_by_max_retry_wait() {
    let limited = error_reply(429, "rate_limit_error", vec![("retry-after", "600".into())]);
    let server = TestServer::start(vec![limited, Reply::Stream(TEXT_ANSWER.into())]).await;
    let mut config = config(&server.base_url);
    config.max_retry_wait = Duration::from_millis(50);
    let provider = Provider::new(config).unwrap();
    let started = Instant::now();
    provider.open(&conversation(), &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn open_gives_up_after_max_attempts_of_server_errors() {
    let server = TestServer::start(vec![error_reply(500, "api_error", vec![])]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Status { status: 500, error_type, message }
            if error_type == "api_error" && message == "try later"),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn open_does_not_retry_a_bad_request() {
    let server = TestServer::start(vec![error_reply(400, "invalid_request_error", vec![])]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert!(matches!(error, ProviderError::Status { status: 400, .. }), "{error:?}");
    assert_eq!(error.error_type(), "invalid_request_error");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn open_names_the_status_when_an_error_body_is_not_json() {
    let reply = Reply::Status { status: 503, headers: vec![], body: "<html>down</html>".into() };
    let server = TestServer::start(vec![reply]).await;
    let mut config = config(&server.base_url);
    config.max_attempts = 1;
    let error = Provider::new(config).unwrap().open(&conversation(), &[]).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Status { status: 503, error_type, message }
            if error_type == "api_error" && message == "<html>down</html>"),
        "{error:?}"
    );
}

#[tokio::test]
async fn open_refused_connections_are_a_connection_error_after_max_attempts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut config = config(&base_url);
    config.max_attempts = 3;
    config.retry_base = Duration::from_millis(40);
    let provider = Provider::new(config).unwrap();
    let started = Instant::now();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert!(matches!(error, ProviderError::Connection(_)), "{error:?}");
    assert_eq!(error.error_type(), "connection_error");
    // Two waits of at least half of 40 ms and 80 ms: three attempts were made.
    assert!(started.elapsed() >= Duration::from_millis(60), "{:?}", started.elapsed());
}

#[tokio::test]
async fn dropping_a_model_stream_closes_the_connection_at_once() {
    let (closed, mut closes) = mpsc::unbounded_channel();
    let server = TestServer::start(vec![Reply::Silent(closed)]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let mut stream = provider.open(&conversation(), &[]).await.unwrap();
    assert!(matches!(stream.next().await, Ok(Some(StreamEvent::MessageStart { .. }))));
    let silent = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(silent.is_err(), "the server is silent");
    assert_eq!(stream.usage().input_tokens, 25);
    let dropped = Instant::now();
    drop(stream);
    let seen = tokio::time::timeout(Duration::from_secs(2), closes.recv()).await;
    let seen = seen.expect("the server saw the close").expect("a close time");
    let lag = seen.saturating_duration_since(dropped);
    assert!(lag < Duration::from_millis(100), "closed {lag:?} after the drop");
}

#[tokio::test]
async fn a_stream_silent_past_the_stall_timeout_fails_and_is_closed() {
    let (closed, mut closes) = mpsc::unbounded_channel();
    let server = TestServer::start(vec![Reply::Silent(closed)]).await;
    let mut config = config(&server.base_url);
    config.stall_timeout = Duration::from_millis(300);
    let provider = Provider::new(config).unwrap();
    let mut stream = provider.open(&conversation(), &[]).await.unwrap();
    assert!(matches!(stream.next().await, Ok(Some(StreamEvent::MessageStart { .. }))));
    let started = Instant::now();
    let error = stream.next().await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300), "not before the timeout");
    assert!(error.to_string().contains("sent nothing"), "{error}");
    assert!(error.is_retryable(), "a stalled call may be tried again");
    assert!(matches!(stream.next().await, Ok(None)), "the stream is over");
    let seen = tokio::time::timeout(Duration::from_secs(2), closes.recv()).await;
    assert!(seen.expect("the server saw the close").is_some());
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_so_far_and_cut_short() {
    let body = format!("<html>{}{KEY}</html>", "x".repeat(2_000_000));
    let server =
        TestServer::start(vec![Reply::Status { status: 400, headers: vec![], body }]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    let ProviderError::Status { status, message, .. } = &error else { panic!("{error:?}") };
    assert_eq!(*status, 400);
    assert!(message.chars().count() <= ERROR_MESSAGE_LIMIT + 3, "{} chars", message.len());
    let long = json!({ "type": "error", "error": { "type": "overloaded_error",
            "message": format!("{}{KEY}", "y".repeat(100_000)) } });
    let server = TestServer::start(vec![Reply::Status {
        status: 400,
        headers: vec![],
        body: long.to_string(),
    }])
    .await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert!(error.to_string().len() < 1_000, "{} bytes", error.to_string().len());
    assert!(!error.to_string().contains(KEY));
}

#[test]
fn a_stream_error_is_redacted_and_cut_short_before_anyone_sees_it() {
    let provider = Provider::new(config("http://127.0.0.1:1")).unwrap();
    let error = ProviderError::Stream {
        error_type: "overloaded_error".into(),
        message: format!("echo {KEY} {}", "z".repeat(10_000)),
    };
    let shown = provider.redacted(error).to_string();
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.len() < 1_000);
}

#[test]
fn a_tool_input_over_its_limit_is_refused_while_it_streams() {
    let tool = StreamEvent::BlockStart {
        index: 0,
        block: StartedBlock::ToolUse { id: "t".into(), name: "n".into() },
    };
    let piece = |n: usize| StreamEvent::InputJsonDelta { index: 0, partial_json: "a".repeat(n) };
    let mut assembler = Assembler::new();
    assembler.push(tool).unwrap();
    assembler.push(piece(TOOL_INPUT_LIMIT - 1)).unwrap();
    let error = assembler.push(piece(2)).unwrap_err();
    assert!(error.to_string().contains("over"), "{error}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_is_never_in_debug_output_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = json!({ "type": "error", "error": {
            "type": "authentication_error", "message": format!("invalid x-api-key {KEY}") } });
    let replies = vec![
        error_reply(529, "overloaded_error", vec![]),
        Reply::Status { status: 401, headers: vec![], body: echo.to_string() },
    ];
    let server = TestServer::start(replies).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert_eq!(error.error_type(), "authentication_error");
    assert!(error.to_string().ends_with("invalid x-api-key <redacted>"), "{error}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying") && logs.contains("529"), "{logs}");
    assert!(logs.contains("wait_ms"), "{logs}");
    let texts = [
        format!("{error:?}"),
        error.to_string(),
        format!("{:?}", provider.config()),
        format!("{provider:?}"),
        format!("{:?}", ApiKey::new(KEY.into())),
        logs,
    ];
    for text in texts {
        assert!(!text.contains(KEY), "the key leaked into: {text}");
    }
    assert_eq!(format!("{:?}", ApiKey::new(KEY.into())), "ApiKey(<redacted>)");
}

#[test]
fn the_turn_loop_can_hold_calls_and_streams_across_awaits() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<Provider>();
    let provider = Provider::new(config("http://127.0.0.1:1")).unwrap();
    assert_send(&provider.open(&[], &[]));
    let mut stream = ModelStream::from_chunks([TEXT_ANSWER]);
    assert_send(&stream.next());
}

#[tokio::test]
async fn a_200_that_is_not_an_event_stream_is_malformed() {
    let reply = Reply::Status { status: 200, headers: vec![], body: "{}".into() };
    let server = TestServer::start(vec![reply]).await;
    let provider = Provider::new(config(&server.base_url)).unwrap();
    let error = provider.open(&conversation(), &[]).await.unwrap_err();
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
    assert_eq!(server.requests().len(), 1);
}
