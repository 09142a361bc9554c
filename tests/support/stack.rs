//! The local stack the tests run on: its configuration, the app and clients against it, ids.

use super::*;

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// The configuration of the local stack, or a panic saying how to get one.
pub fn config() -> Config {
    Config::from_env().unwrap_or_else(|error| {
        panic!("{error}: run the tests through `make test`, which starts the emulator")
    })
}

/// The application state as a function container builds it, against the emulator.
pub async fn app() -> App {
    App::new(config(), &knoq_shared::app::load_sdk_config().await)
}

/// A DynamoDB client against the emulator, for looking at what the code wrote.
pub async fn dynamodb() -> Client {
    Client::new(&knoq_shared::app::load_sdk_config().await)
}

/// A fresh unique id with a readable prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Waits, if needed, so that at least `secs` seconds remain in the current minute: tests
/// that count requests inside one rate-limit window must not straddle two.
pub async fn with_window_room(secs: u64) {
    let into_minute = (Timestamp::now().epoch_millis() % 60_000) as u64;
    if 60_000 - into_minute < secs * 1000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into_minute + 200)).await;
    }
}

/// The URL of an API route on the local stack `make test` started.
pub fn api_url(path: &str) -> String {
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    format!("{base}/api/managed-agents/{path}")
}

/// Milliseconds since the epoch, as the provider emulator records times.
pub fn epoch_ms() -> i64 {
    knoq_shared::clock::Timestamp::now().epoch_millis()
}
