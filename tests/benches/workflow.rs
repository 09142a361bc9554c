//! `make bench-workflow`: how long a cancel takes to end a running turn.
//!
//! Starts [`TURNS`] real turns over HTTP on the local stack (state machine in the emulator,
//! checker and worker under `cargo lambda watch`, the worker streaming a 10 s answer from the
//! bundled provider emulator), [`AT_ONCE`] at a time, cancels each at a random point of its
//! answer, and measures from the cancel's HTTP answer to the moment the `status_terminated`
//! event can be read (a strongly consistent Query every 5 ms), and to the moment the provider
//! emulator saw the worker close the model call's connection (its own clock, same machine).
//! With polling alone, the expected median is about half a poll interval and the maximum
//! about one interval plus the overhead of one poll: the emulator invoking the checker over
//! HTTP, the checker's GetItem and its termination transaction.
//!
//! It also splits each latency in two, from the stored timestamps: `cancelled_at` →
//! the event's `occurred_at` (waiting for the next poll, plus the checker's work up to the
//! write), and the rest (the write committing, plus the 5 ms measurement poll).
//!
//! Each turn also has a follower, as a client showing it live would: waiting transcript
//! reads (`waitSeconds=20`) from the opening message on, already waiting when the cancel is
//! sent. It gives `cancel_to_waiting_reader_terminated_*` (the cancel's answer → the follower
//! holding `status_terminated`) and `delta_to_reader_p50_ms` (a word leaving the provider →
//! the follower holding it; the word's departure is taken as the stream's first byte plus
//! its index times the word delay, which the emulator's sleeps only make later, so the
//! figure errs high).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use knoq_tests::*;

/// Turns measured.
const TURNS: usize = 20;
/// Turns running at the same time.
const AT_ONCE: usize = 4;

struct Sample {
    visible: Duration,
    server: Duration,
    provider_closed: Duration,
    follower_terminated: Duration,
    /// Per word the follower held: from its departure at the provider to its arrival.
    word_latencies: Vec<Duration>,
}

/// The word delay of the benchmark's answers.
const WORD_DELAY_MS: i64 = 50;

/// Follows session `id` with waiting reads from `cursor` until `status_terminated` (or 60 s);
/// each event with the epoch ms at which its answer arrived.
async fn follow(
    client: ApiClient,
    id: String,
    mut cursor: String,
) -> Vec<(i64, serde_json::Value)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        let (status, _, page) = client.wait_for_events(&id, &cursor, 20).await;
        let arrived = epoch_ms();
        assert_eq!(status, 200, "{page}");
        for event in page["events"].as_array().unwrap() {
            cursor = event["id"].as_str().unwrap().to_owned();
            seen.push((arrived, event.clone()));
        }
        if seen.iter().any(|(_, event)| event["type"] == "status_terminated") {
            break;
        }
    }
    seen
}

/// A pseudo-random fraction in [0, 1) from a fresh UUID (no extra dependency).
fn fraction() -> f64 {
    let bytes = uuid::Uuid::new_v4().as_u128();
    (bytes % 1_000_000) as f64 / 1_000_000.0
}

fn millis_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
}

async fn terminated_event(db: &aws_sdk_dynamodb::Client, table: &str, id: &str) -> Option<String> {
    let output = db
        .query()
        .table_name(table)
        .key_condition_expression("session_id = :id")
        .filter_expression("#type = :terminated")
        .expression_attribute_names("#type", "type")
        .expression_attribute_values(":id", AttributeValue::S(id.into()))
        .expression_attribute_values(":terminated", AttributeValue::S("status_terminated".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output.items().first().map(|item| attr(item, "occurred_at").unwrap().to_owned())
}

/// How long each benchmark answer streams: 200 words, [`WORD_DELAY_MS`] each.
const ANSWER: Duration = Duration::from_secs(10);

async fn one_turn(client: &ApiClient) -> Sample {
    let db = dynamodb().await;
    let events = config().tables.events;
    let tag = unique("bench");
    let (id, _) = client
        .create(&format!(
            "Benchmark turn [[emu tag={tag} notool=1 words=200 delay_ms={WORD_DELAY_MS}]]"
        ))
        .await;
    let opening = client.transcript(&id).await["events"][0]["id"].as_str().unwrap().to_owned();
    let follower = tokio::spawn(follow(client.clone(), id.clone(), opening));
    provider_calls_until(&tag, Duration::from_secs(30), |calls| !calls.is_empty()).await;
    // Cancel somewhere inside the streamed answer.
    let window = ANSWER.as_secs_f64() - 2.0;
    tokio::time::sleep(Duration::from_secs_f64(0.5 + window * fraction())).await;
    client.cancel(&id).await;
    let answered = Instant::now();
    let answered_ms = epoch_ms();
    let occurred_at = loop {
        if let Some(at) = terminated_event(&db, &events, &id).await {
            break at;
        }
        assert!(answered.elapsed() < Duration::from_secs(30), "session {id} never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let visible = answered.elapsed();
    let session = session_item(&id).await.unwrap();
    let cancelled_at = millis_of(attr(&session, "cancelled_at").unwrap());
    let server = Duration::from_millis((millis_of(&occurred_at) - cancelled_at).max(0) as u64);
    let calls = provider_calls_until(&tag, Duration::from_secs(10), |calls| {
        calls.iter().all(|call| !call["closedAtMs"].is_null())
    })
    .await;
    let closed_ms = calls.last().unwrap()["closedAtMs"].as_i64().unwrap();
    assert_eq!(calls.last().unwrap()["closedBy"], "client", "{calls:?}");
    let provider_closed = Duration::from_millis((closed_ms - answered_ms).max(0) as u64);
    let seen = follower.await.unwrap();
    let terminated_at = seen
        .iter()
        .find(|(_, event)| event["type"] == "status_terminated")
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("the follower of {id} never held status_terminated"));
    let follower_terminated = Duration::from_millis((terminated_at - answered_ms).max(0) as u64);
    let first_byte = calls[0]["firstByteAtMs"].as_i64().unwrap();
    let mut words = 0;
    let mut word_latencies = Vec::new();
    for (arrived, event) in &seen {
        if event["type"] != "agent_message" {
            continue;
        }
        for _ in event["payload"]["text"].as_str().unwrap().split_whitespace() {
            words += 1;
            let left = first_byte + words * WORD_DELAY_MS;
            word_latencies.push(Duration::from_millis((arrived - left).max(0) as u64));
        }
    }
    Sample { visible, server, provider_closed, follower_terminated, word_latencies }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn row(name: &str, mut samples: Vec<Duration>, interval: Duration) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p95, max) =
        (percentile(&samples, 50.0), percentile(&samples, 95.0), *samples.last().unwrap());
    println!(
        "{name:<40} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms  (max / interval {:.2})",
        ms(p50),
        ms(p95),
        ms(max),
        max.as_secs_f64() / interval.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let workflow = config().workflow;
    let interval = Duration::from_secs(workflow.poll_interval_secs);
    let started = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..TURNS.div_ceil(AT_ONCE) {
        let client = ApiClient::for_new_caller().await;
        let batch = join_all((0..AT_ONCE).map(|_| one_turn(&client))).await;
        samples.extend(batch);
    }
    println!(
        "{} turns, {} at a time, poll interval {} ms, cancelled at a random point of each ({:.0} s)",
        samples.len(),
        AT_ONCE,
        interval.as_millis(),
        started.elapsed().as_secs_f64()
    );
    row(
        "cancel answer -> status_terminated read",
        samples.iter().map(|s| s.visible).collect(),
        interval,
    );
    row(
        "  cancelled_at -> event occurred_at",
        samples.iter().map(|s| s.server).collect(),
        interval,
    );
    row(
        "cancel answer -> provider connection closed",
        samples.iter().map(|s| s.provider_closed).collect(),
        interval,
    );
    let mut closed: Vec<Duration> = samples.iter().map(|s| s.provider_closed).collect();
    closed.sort();
    let mut visible: Vec<Duration> = samples.iter().map(|s| s.visible).collect();
    visible.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("cancel_to_terminated_p50_ms={:.0}", ms(percentile(&visible, 50.0)));
    println!("cancel_to_terminated_p95_ms={:.0}", ms(percentile(&visible, 95.0)));
    println!("cancel_to_terminated_max_ms={:.0}", ms(*visible.last().unwrap()));
    println!("cancel_to_provider_closed_p50_ms={:.0}", ms(percentile(&closed, 50.0)));
    println!("cancel_to_provider_closed_p95_ms={:.0}", ms(percentile(&closed, 95.0)));
    println!("cancel_to_provider_closed_max_ms={:.0}", ms(*closed.last().unwrap()));
    row(
        "cancel answer -> waiting reader holds it",
        samples.iter().map(|s| s.follower_terminated).collect(),
        interval,
    );
    let mut followed: Vec<Duration> = samples.iter().map(|s| s.follower_terminated).collect();
    followed.sort();
    let mut words: Vec<Duration> = samples.iter().flat_map(|s| s.word_latencies.clone()).collect();
    words.sort();
    println!("cancel_to_waiting_reader_terminated_p50_ms={:.0}", ms(percentile(&followed, 50.0)));
    println!("cancel_to_waiting_reader_terminated_max_ms={:.0}", ms(*followed.last().unwrap()));
    println!("delta_to_reader_p50_ms={:.0} ({} words)", ms(percentile(&words, 50.0)), words.len());
    println!("delta_to_reader_p95_ms={:.0}", ms(percentile(&words, 95.0)));
    println!("poll_interval_ms={}", interval.as_millis());
}
