//! `make bench`: warm cancels through the handler (in-process, no HTTP) against bare
//! `UpdateItem` calls on the same emulator, interleaved in one run so that machine noise hits
//! both alike. Prints medians, their ratio, and DynamoDB round trips per cancel, counted by an
//! SDK interceptor (not assumed).
//!
//! Two cancel variants: with the per-container auth cache warm (a user cancelling again
//! within its TTL) and with the cache disabled (every cancel reads the auth session).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::rate_limit::{Limit, RouteLimits};
use knoq_shared::routes::cancel;
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::json;

/// Users per variant; each makes 30 cancels (the per-minute limit), so N = 30 x USERS.
const USERS: usize = 10;
const CANCELS_PER_USER: usize = 30;

/// Counts every HTTP request the DynamoDB client sends (retries included): the store's own
/// attempt counter, read with `take`.
type RoundTrips = knoq_shared::store::Attempts;

struct Variant {
    name: &'static str,
    app: App,
    trips: RoundTrips,
    /// Round trips counted during the timed loop.
    timed_trips: u64,
    /// (caller, session ids to cancel)
    work: Vec<(Caller, Vec<String>)>,
    latencies: Vec<Duration>,
}

async fn variant(name: &'static str, auth_cache_ttl: Duration) -> Variant {
    let sdk = knoq_shared::app::load_sdk_config().await;
    let trips = RoundTrips::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        knoq_shared::store::dynamodb_config(&sdk).interceptor(trips.clone()).build(),
    );
    let mut config = config();
    config.auth_cache_ttl = auth_cache_ttl;
    let app = App::with_dynamodb(config, &sdk, client);
    let mut work = Vec::new();
    for _ in 0..USERS {
        let caller = new_caller().await;
        let scope = scope_of(&app, &caller).await; // also warms the auth cache
        let mut ids = Vec::new();
        for _ in 0..CANCELS_PER_USER {
            let id = SessionId::new();
            let text = MessageText::parse("benchmark session".into()).unwrap();
            app.sessions
                .create(&scope, &id, &text, &RunId::new(), TURN_TIMEOUT, Timestamp::now())
                .await
                .unwrap();
            ids.push(id.as_string());
        }
        work.push((caller, ids));
    }
    Variant { name, app, trips, timed_trips: 0, work, latencies: Vec::new() }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let mut variants = [
        variant("cancel (auth cache warm)", Duration::from_secs(60)).await,
        variant("cancel (auth cache off)", Duration::ZERO).await,
    ];
    let bare_client = dynamodb().await;
    let sessions_table = config().tables.sessions;
    let bare_keys: Vec<String> = variants[0].work.iter().flat_map(|(_, ids)| ids.clone()).collect();
    let mut bare = Vec::new();
    let mut conditional = Vec::new();
    let mut returning = Vec::new();
    let mut counter = Vec::new();
    let unlimited = RouteLimits {
        route: "bench",
        what: "benchmark requests",
        limits: vec![Limit::per_minute(u32::MAX)],
    };
    let counter_app = app().await; // its own client, so the round-trip counts stay the cancels'
    let counter_scope = scope_of(&counter_app, &variants[0].work[0].0).await;

    // Warm the connection pools of every client.
    for v in &variants {
        scope_of(&v.app, &v.work[0].0).await;
    }
    for v in &variants {
        v.trips.take();
    }

    let started = Instant::now();
    for user in 0..USERS {
        for i in 0..CANCELS_PER_USER {
            for v in variants.iter_mut() {
                let (caller, ids) = &v.work[user];
                let origin = v.app.config.allowed_origin.clone();
                let request = post(
                    "/api/managed-agents/cancel",
                    caller.with_origin(&origin),
                    json!({ "sessionId": ids[i] }).to_string(),
                );
                let t = Instant::now();
                let response = cancel::handle(&v.app, request).await;
                v.latencies.push(t.elapsed());
                let (status, _, body) = read(response);
                assert_eq!((status, body), (200, json!({ "ok": true })), "{}", v.name);
            }
            let key = AttributeValue::S(bare_keys[user * CANCELS_PER_USER + i].clone());
            let touch = || {
                bare_client
                    .update_item()
                    .table_name(&sessions_table)
                    .key("id", key.clone())
                    .update_expression("SET bench_touched_at = :now")
                    .expression_attribute_values(
                        ":now",
                        AttributeValue::S(Timestamp::now().rfc3339()),
                    )
            };
            let t = Instant::now();
            touch().send().await.expect("bare UpdateItem");
            bare.push(t.elapsed());
            // The same write with a condition of the cancel's shape: what the emulator charges
            // for evaluating a condition, apart from anything the handler does.
            let owner = AttributeValue::S(variants[0].work[user].0.user_id.clone());
            let conditional_touch = || {
                touch()
                    .condition_expression(
                        "user_id = :user AND attribute_not_exists(bench_never) \
                         AND attribute_not_exists(bench_never_either)",
                    )
                    .expression_attribute_values(":user", owner.clone())
            };
            let t = Instant::now();
            conditional_touch().send().await.expect("conditional UpdateItem");
            conditional.push(t.elapsed());
            // ...and asking for the updated attributes back, as the cancel does to learn
            // whether a run is live: what the emulator charges for building return values.
            let t = Instant::now();
            conditional_touch()
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await
                .expect("conditional UpdateItem returning values");
            returning.push(t.elapsed());
            // One rate-limit counter update, the cancel's first write.
            let t = Instant::now();
            counter_app.limiter.admit(&counter_scope, &unlimited, Timestamp::now()).await.unwrap();
            counter.push(t.elapsed());
        }
    }
    let elapsed = started.elapsed();
    for v in variants.iter_mut() {
        v.timed_trips = v.trips.take();
    }

    let n = USERS * CANCELS_PER_USER;
    let bare_median = median(&mut bare);
    println!(
        "knoq cancel benchmark: {n} cancels per variant, {n} bare UpdateItem, interleaved; {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>12}",
        "", "median ms", "p90 ms", "ratio", "round trips"
    );
    let row = |name: &str, samples: &mut [Duration], round_trips: f64| {
        let m = median(samples);
        let ratio = m.as_secs_f64() / bare_median.as_secs_f64();
        let p90 = ms(percentile(samples, 0.9));
        println!("{name:<28} {:>10.2} {p90:>10.2} {ratio:>8.2} {round_trips:>12.2}", ms(m));
        ratio
    };
    row("bare UpdateItem", &mut bare, 1.0);
    row("conditional UpdateItem", &mut conditional, 1.0);
    row("  + ReturnValues UPDATED_NEW", &mut returning, 1.0);
    row("rate-limit counter update", &mut counter, 1.0);
    let ratios: Vec<f64> = variants
        .iter_mut()
        .map(|v| row(v.name, &mut v.latencies, v.timed_trips as f64 / n as f64))
        .collect();
    println!("cancel_vs_updateitem_ratio={:.2}", ratios[0]);
    println!("cancel_round_trips={:.2}", variants[0].timed_trips as f64 / n as f64);
}
