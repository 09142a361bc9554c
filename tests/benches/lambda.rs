//! `make bench`, second part: the `cancel` function as Lambda runs it. The release binary
//! is started as a process under a minimal Lambda Runtime API emulator written here (plain
//! HTTP/1.1 on `tokio::net::TcpListener`, 127.0.0.1 only), with the local stack's function
//! environment plus the variables Lambda sets, and measured three ways:
//!
//! - `cold_start_init_ms`: from spawning the process to the emulator receiving the response of
//!   its first invocation (a valid cancel: fresh cookie, fresh session that a run holds),
//!   median of [`COLD_STARTS`] starts after one untimed start that warms the page cache;
//! - `peak_rss_mb`: the process's `VmHWM` after a bounded load ([`LOAD_SECS`] seconds or
//!   [`LOAD_USERS`] x [`REQUESTS_PER_USER`] invocations, whichever ends first) fed back to
//!   back: first cancels of fresh sessions and repeats, every one answered 200;
//! - `bootstrap_zip_kb`: the size of the deployment zip named by `KNOQ_CANCEL_ZIP`
//!   (`infra/local/run.sh bench` builds it with `cargo lambda build --arm64`), if set.
//!
//! Inputs (set by `infra/local/run.sh bench`): the emulator's environment (as for the other
//! benchmarks), `KNOQ_CANCEL_BIN` (the host release build of `cancel`) and
//! `KNOQ_FUNCTION_ENV_FILE` (the function environment, `.local/bench.env`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Timed cold starts (after one untimed start).
const COLD_STARTS: usize = 15;
/// The load's time bound.
const LOAD_SECS: u64 = 30;
/// Users in the load; each is a fresh caller with its own rate-limit counters.
const LOAD_USERS: usize = 100;
/// Invocations per user: the per-minute cancel limit, so that none is refused.
const REQUESTS_PER_USER: usize = 30;
/// Every tenth invocation of a user is the first cancel of a fresh session, the rest are
/// repeats (few sessions: creating one is slow on the emulator, whose transactions copy the
/// tables, so the setup time grows with every session).
const FRESH_EVERY: usize = 10;
/// Longest wait for one invocation's answer (the function's timeout in the template, and
/// the deadline the emulator gives it).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on what the emulator accepts from the function: connections open at once, bytes.
const MAX_CONNECTIONS: usize = 16;
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// What Lambda reports for the function.
const FUNCTION_NAME: &str = "knoq-bench-cancel";
const MEMORY_MB: &str = "256";

// --- Runtime API emulator ---------------------------------------------------------------

/// One event to deliver, and where its outcome goes.
struct Invocation {
    event: Vec<u8>,
    outcome: oneshot::Sender<Outcome>,
}

/// What the function answered, and when.
#[derive(Debug)]
struct Outcome {
    /// When `GET /next` handed the event over.
    polled_at: Instant,
    /// When the emulator had read the whole response (or error) body.
    answered_at: Instant,
    /// `/response` (Ok) or `/error` (Err), with the body.
    result: Result<Vec<u8>, String>,
}

struct State {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, (oneshot::Sender<Outcome>, Instant)>>,
    init_error: Mutex<Option<oneshot::Sender<String>>>,
    next_id: AtomicU64,
    function_arn: String,
}

/// The Runtime API of one execution environment: one function process talks to it.
struct RuntimeApi {
    port: u16,
    invocations: mpsc::Sender<Invocation>,
    init_error: oneshot::Receiver<String>,
    server: tokio::task::JoinHandle<()>,
    /// Connections the function opened.
    connections: Arc<AtomicU64>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    async fn start(region: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Runtime API");
        let port = listener.local_addr().unwrap().port();
        let (invocations, queue) = mpsc::channel(1);
        let (init_tx, init_error) = oneshot::channel();
        let state = Arc::new(State {
            queue: tokio::sync::Mutex::new(queue),
            pending: Mutex::new(HashMap::new()),
            init_error: Mutex::new(Some(init_tx)),
            next_id: AtomicU64::new(0),
            function_arn: format!("arn:aws:lambda:{region}:000000000000:function:{FUNCTION_NAME}"),
        });
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let server = tokio::spawn(async move {
            // The runtime client opens a new connection now and then (it does not always
            // reuse one), so the bound is on connections open at once.
            let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(permit) = open.clone().acquire_owned().await else { return };
                let Ok((stream, _)) = listener.accept().await else { return };
                counted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    serve_connection(stream, state).await;
                    drop(permit);
                });
            }
        });
        Self { port, invocations, init_error, server, connections }
    }

    /// Delivers one event and waits for its outcome. When the function reports an init
    /// error, stops answering or exits, stops it and panics with the tail of its log.
    async fn invoke(&mut self, event: &Value, child: &mut Child, log: &Path) -> Outcome {
        let (outcome, answer) = oneshot::channel();
        let invocation = Invocation { event: serde_json::to_vec(event).unwrap(), outcome };
        let failure = tokio::select! {
            biased;
            sent = self.invocations.send(invocation) => match sent {
                Ok(()) => None,
                Err(_) => Some("the emulator stopped".to_string()),
            },
            _ = tokio::time::sleep(INVOCATION_TIMEOUT) => Some("no GET /next".to_string()),
        };
        let failure = match failure {
            Some(failure) => failure,
            None => {
                let mut exited = tokio::time::interval(Duration::from_millis(100));
                let deadline = tokio::time::sleep(INVOCATION_TIMEOUT);
                tokio::pin!(deadline, answer);
                loop {
                    tokio::select! {
                        outcome = &mut answer => match outcome {
                            Ok(outcome) => return outcome,
                            Err(_) => break "the emulator dropped the invocation".to_string(),
                        },
                        error = &mut self.init_error => {
                            break format!("init error: {}", error.unwrap_or_default());
                        }
                        _ = exited.tick() => {
                            if let Ok(Some(status)) = child.try_wait() {
                                break format!("the function exited: {status}");
                            }
                        }
                        _ = &mut deadline => break "no answer within the timeout".to_string(),
                    }
                }
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "cancel under the Runtime API: {failure}; its log ({}):\n{}",
            log.display(),
            tail.join("\n")
        );
    }
}

/// A parsed HTTP/1.1 request.
struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn read_line_bounded(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    budget: &mut usize,
) -> std::io::Result<usize> {
    line.clear();
    let read = (&mut *reader).take(*budget as u64 + 1).read_line(line).await?;
    if read > *budget {
        return Err(std::io::Error::other("request head too large"));
    }
    *budget -= read;
    Ok(read)
}

/// Reads one request (`None` at a clean end of the connection). Bodies come with
/// `Content-Length` or chunked; both are bounded.
async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<HttpRequest>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut budget = MAX_HEADER_BYTES;
    let mut line = String::new();
    if read_line_bounded(reader, &mut line, &mut budget).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        if read_line_bounded(reader, &mut line, &mut budget).await? == 0 {
            return Err(bad("connection closed inside the head"));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').ok_or_else(|| bad("malformed header"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = HttpRequest { method, path, headers, body: Vec::new() };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            read_line_bounded(reader, &mut line, &mut budget).await?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while read_line_bounded(reader, &mut line, &mut budget).await? > 0
                    && !line.trim().is_empty()
                {}
                break;
            }
            if request.body.len() + size > MAX_BODY_BYTES {
                return Err(bad("body too large"));
            }
            let start = request.body.len();
            request.body.resize(start + size, 0);
            reader.read_exact(&mut request.body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("bad content-length"))?;
        if length > MAX_BODY_BYTES {
            return Err(bad("body too large"));
        }
        request.body.resize(length, 0);
        reader.read_exact(&mut request.body).await?;
    }
    Ok(Some(request))
}

async fn write_response(
    stream: &mut BufReader<TcpStream>,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = stream.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader).await {
        let received = Instant::now();
        let accepted = br#"{"status":"OK"}"#;
        let path = request.path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
        let written = match (request.method.as_str(), path) {
            ("GET", "invocation/next") => {
                // Long poll until the benchmark has an event (or is done).
                let Some(invocation) = state.queue.lock().await.recv().await else { return };
                let id = format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    std::process::id(),
                    state.next_id.fetch_add(1, Ordering::Relaxed)
                );
                state
                    .pending
                    .lock()
                    .unwrap()
                    .insert(id.clone(), (invocation.outcome, Instant::now()));
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                let trace = format!(
                    "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
                    now.as_secs(),
                    now.as_nanos(),
                    now.as_nanos() as u64
                );
                let headers = [
                    ("Lambda-Runtime-Aws-Request-Id", id),
                    (
                        "Lambda-Runtime-Deadline-Ms",
                        (now + INVOCATION_TIMEOUT).as_millis().to_string(),
                    ),
                    ("Lambda-Runtime-Invoked-Function-Arn", state.function_arn.clone()),
                    ("Lambda-Runtime-Trace-Id", trace),
                ];
                write_response(&mut reader, 200, &headers, &invocation.event).await
            }
            ("POST", "init/error") => {
                let error_type = request.header("lambda-runtime-function-error-type");
                let message = format!("{error_type:?} {}", String::from_utf8_lossy(&request.body));
                if let Some(tx) = state.init_error.lock().unwrap().take() {
                    let _ = tx.send(message);
                }
                write_response(&mut reader, 202, &[], accepted).await
            }
            ("POST", path) if path.starts_with("invocation/") => {
                let rest = &path["invocation/".len()..];
                let (id, kind) = rest.rsplit_once('/').unwrap_or((rest, ""));
                let result = match kind {
                    "response" => Some(Ok(request.body)),
                    "error" => Some(Err(format!(
                        "{:?} {}",
                        request.header("lambda-runtime-function-error-type"),
                        String::from_utf8_lossy(&request.body)
                    ))),
                    _ => None,
                };
                let waiting = match result {
                    Some(_) => state.pending.lock().unwrap().remove(id),
                    None => None,
                };
                match (result, waiting) {
                    (Some(result), Some((outcome, polled_at))) => {
                        let _ = outcome.send(Outcome { polled_at, answered_at: received, result });
                        write_response(&mut reader, 202, &[], accepted).await
                    }
                    (None, _) => write_response(&mut reader, 404, &[], b"{}").await,
                    (Some(_), None) => {
                        let body = br#"{"errorType":"InvalidRequestID","errorMessage":"unknown request id"}"#;
                        write_response(&mut reader, 400, &[], body).await
                    }
                }
            }
            _ => write_response(&mut reader, 404, &[], b"{}").await,
        };
        if written.is_err() {
            return;
        }
    }
}

// --- The function process ---------------------------------------------------------------

/// `KEY=VALUE` lines (the format `infra/local/stack.py` writes).
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!("{}: {error}: run the benchmark through `make bench`", path.display())
    });
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.to_string()))
        .collect()
}

struct Function {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    region: String,
}

impl Function {
    /// Starts the binary as Lambda would: only the function's environment and the variables
    /// the Lambda service sets (no inherited environment, so no `HOME` and no profile files).
    fn spawn(&self, api: &RuntimeApi, starts: usize) -> Child {
        let log: File = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let lambda_vars = [
            ("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port)),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_MB.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{FUNCTION_NAME}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", format!("2026/01/01/[$LATEST]{starts:032x}")),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
            ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_string()),
            ("_HANDLER", "bootstrap".to_string()),
            ("TZ", ":UTC".to_string()),
            ("LANG", "en_US.UTF-8".to_string()),
            ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".to_string()),
        ];
        Command::new(&self.bin)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(lambda_vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.bin.display()))
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `VmHWM` (peak resident set) of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

// --- Requests ---------------------------------------------------------------------------

/// An API Gateway HTTP API (payload 2.0) event for `POST /api/managed-agents/cancel`.
fn cancel_event(app: &App, caller: &Caller, session_id: &str, seq: usize) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let body = json!({ "sessionId": session_id }).to_string();
    let origin = &app.config.allowed_origin;
    let host = origin.split("://").nth(1).unwrap_or("localhost");
    json!({
        "version": "2.0",
        "routeKey": "POST /api/managed-agents/cancel",
        "rawPath": "/api/managed-agents/cancel",
        "rawQueryString": "",
        "cookies": [format!("{}={}", app.config.cookie_name, caller.token)],
        "headers": {
            "accept": "*/*",
            "content-length": body.len().to_string(),
            "content-type": "application/json",
            "host": host,
            "origin": origin,
            "user-agent": "knoq-bench",
            "x-amzn-trace-id": format!("Root=1-{:08x}-{:024x}", now.as_secs(), seq),
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "knoqbench",
            "domainName": host,
            "domainPrefix": "knoq",
            "http": {
                "method": "POST",
                "path": "/api/managed-agents/cancel",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "knoq-bench"
            },
            "requestId": format!("bench{seq:010}="),
            "routeKey": "POST /api/managed-agents/cancel",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": now.as_millis() as u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// Checks that the function answered 200 with `expected` as the JSON body.
fn expect_answer(outcome: &Outcome, expected: &Value) {
    let body = outcome.result.as_ref().unwrap_or_else(|error| panic!("function error: {error}"));
    let response: Value = serde_json::from_slice(body).expect("a JSON response");
    let inner: Value = response["body"]
        .as_str()
        .and_then(|body| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    assert_eq!((&response["statusCode"], &inner), (&json!(200), expected), "{response}");
}

async fn fresh_session(app: &App, caller: &Caller) -> String {
    let scope = scope_of(app, caller).await;
    let id = SessionId::new();
    let text = MessageText::parse("benchmark session".into()).unwrap();
    app.sessions
        .create(&scope, &id, &text, &RunId::new(), TURN_TIMEOUT, Timestamp::now())
        .await
        .expect("create a session");
    id.as_string()
}

// --- Statistics -------------------------------------------------------------------------

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stats_row(name: &str, samples: &[Duration]) -> Duration {
    let median = percentile(samples, 0.5);
    println!(
        "  {name:<38} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        ms(median),
        ms(percentile(samples, 0.9)),
        ms(percentile(samples, 0.0)),
        ms(percentile(samples, 1.0))
    );
    median
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// --- The benchmark ----------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let var_path = |name: &str, default: PathBuf| {
        std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or(default)
    };
    let bin = var_path("KNOQ_CANCEL_BIN", root.join("target/release/cancel"));
    let env_file = var_path("KNOQ_FUNCTION_ENV_FILE", root.join(".local/bench.env"));
    let log = root.join(".local/bench-lambda-cancel.log");
    File::create(&log).expect("create the function log");
    let env = read_env_file(&env_file);
    let region = env
        .iter()
        .find(|(key, _)| key == "AWS_REGION")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| "us-east-1".into());
    let function = Function { bin: bin.clone(), env, log: log.clone(), region };
    let binary_bytes = std::fs::metadata(&bin)
        .unwrap_or_else(|error| {
            panic!("{}: {error}: build it with `cargo build --release -p cancel`", bin.display())
        })
        .len();
    let app = app().await;
    let mut starts = 0;

    // Cold starts: a fresh process, execution environment and caller each time.
    let mut init = Vec::new();
    let mut first = Vec::new();
    let mut total = Vec::new();
    for round in 0..=COLD_STARTS {
        let caller = new_caller().await;
        let session = fresh_session(&app, &caller).await;
        let event = cancel_event(&app, &caller, &session, round);
        let mut api = RuntimeApi::start(&function.region).await;
        let started = Instant::now();
        let mut child = function.spawn(&api, starts);
        starts += 1;
        let outcome = api.invoke(&event, &mut child, &log).await;
        stop(child);
        expect_answer(&outcome, &json!({ "ok": true }));
        if round > 0 {
            init.push(outcome.polled_at - started);
            first.push(outcome.answered_at - outcome.polled_at);
            total.push(outcome.answered_at - started);
        }
    }

    // The load: every user's sequence is (first cancel of a fresh session, then repeats of
    // it and of the user's first session) x 3; users take turns, so their cookies stay in
    // the auth cache.
    let setup = Instant::now();
    let callers: Vec<Caller> =
        futures::stream::iter(0..LOAD_USERS).map(|_| new_caller()).buffered(4).collect().await;
    let fresh_per_user = REQUESTS_PER_USER.div_ceil(FRESH_EVERY);
    let sessions: Vec<Vec<String>> = futures::stream::iter(&callers)
        .map(|caller| {
            let app = &app;
            async move {
                let mut ids = Vec::with_capacity(fresh_per_user);
                for _ in 0..fresh_per_user {
                    ids.push(fresh_session(app, caller).await);
                }
                ids
            }
        })
        .buffered(4)
        .collect()
        .await;
    let setup = setup.elapsed();
    let mut api = RuntimeApi::start(&function.region).await;
    let mut child = function.spawn(&api, starts);
    let pid = child.id();
    let mut warm = Vec::new();
    let mut hwm_after_first = 0;
    let (mut fresh, mut repeats) = (0, 0);
    let load = Instant::now();
    'load: for i in 0..REQUESTS_PER_USER {
        for (user, caller) in callers.iter().enumerate() {
            if load.elapsed() >= Duration::from_secs(LOAD_SECS) {
                break 'load;
            }
            let ids = &sessions[user];
            let repeat = json!({ "ok": true, "alreadyCancelled": true });
            let (session, expected) = match i % FRESH_EVERY {
                0 => (&ids[i / FRESH_EVERY], json!({ "ok": true })),
                odd if odd % 2 == 1 => (&ids[i / FRESH_EVERY], repeat),
                _ => (&ids[0], repeat),
            };
            let seq = 1000 + i * LOAD_USERS + user;
            let outcome =
                api.invoke(&cancel_event(&app, caller, session, seq), &mut child, &log).await;
            expect_answer(&outcome, &expected);
            if i % FRESH_EVERY == 0 {
                fresh += 1;
            } else {
                repeats += 1;
            }
            if hwm_after_first == 0 {
                hwm_after_first = vm_hwm_kib(pid);
            } else {
                warm.push(outcome.answered_at - outcome.polled_at);
            }
        }
    }
    let load = load.elapsed();
    let hwm = vm_hwm_kib(pid);
    stop(child);
    let connections = api.connections.load(Ordering::Relaxed);
    drop(api);

    let zip = std::env::var_os("KNOQ_CANCEL_ZIP").filter(|v| !v.is_empty()).map(PathBuf::from);
    let zip_bytes = zip.as_ref().map(|zip| {
        std::fs::metadata(zip).unwrap_or_else(|error| panic!("{}: {error}", zip.display())).len()
    });

    println!(
        "knoq cancel function under a Lambda Runtime API emulator ({} release build, binary {:.1} MiB)",
        std::env::consts::ARCH,
        mib(binary_bytes / 1024)
    );
    println!(
        "cold start: {COLD_STARTS} starts after 1 untimed; first invocation a valid cancel \
         (fresh cookie, fresh session a run holds) -> 200"
    );
    println!("  {:<38} {:>9} {:>9} {:>9} {:>9}", "", "median ms", "p90 ms", "min ms", "max ms");
    stats_row("spawn -> first GET /next (init)", &init);
    stats_row("GET /next -> response (1st cancel)", &first);
    let cold = stats_row("spawn -> first response", &total);
    println!(
        "load: {} invocations in {:.1} s ({fresh} first cancels of fresh sessions, {repeats} \
         repeats; all 200), {LOAD_USERS} users taking turns; setup {:.1} s",
        fresh + repeats,
        load.as_secs_f64(),
        setup.as_secs_f64()
    );
    stats_row("warm invocation GET /next -> response", &warm);
    println!("  the runtime client opened {connections} connections to the Runtime API");
    println!(
        "  VmHWM after the first invocation {:.1} MiB, after the load {:.1} MiB",
        mib(hwm_after_first),
        mib(hwm)
    );
    if let (Some(zip), Some(bytes)) = (&zip, zip_bytes) {
        println!("deployment zip {} {} bytes", zip.display(), bytes);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "cold_start_init_ms={:.1}", ms(cold)).unwrap();
    writeln!(stdout, "peak_rss_mb={:.1}", mib(hwm)).unwrap();
    if let Some(bytes) = zip_bytes {
        writeln!(stdout, "bootstrap_zip_kb={}", bytes.div_ceil(1024)).unwrap();
    }
}
