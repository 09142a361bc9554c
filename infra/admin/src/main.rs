//! Operator command for local and staging stacks.
//!
//! ```text
//! knoq-admin issue-token --user <id> --org <id> [--ttl-hours <n>]   prints a cookie value
//! knoq-admin cookie-name                                          prints the cookie's name
//! ```
//!
//! `issue-token` stores the SHA-256 of a fresh random token in `AUTH_SESSIONS_TABLE` (with
//! the expiry as TTL) and prints the token, which is the session cookie's value. The AWS
//! endpoint, region and credentials come from the standard environment variables.

use std::process::ExitCode;

use knoq_shared::app::DynamoDbClient;
use knoq_shared::auth::{new_token, token_hash};
use knoq_shared::clock::Timestamp;
use knoq_shared::config::DEFAULT_COOKIE_NAME;
use knoq_shared::store::auth_sessions::{AuthRecord, AuthSessionStore};

const USAGE: &str = "usage:\n  knoq-admin issue-token --user <id> --org <id> [--ttl-hours <n>]\n  knoq-admin cookie-name";
const DEFAULT_TTL_HOURS: i64 = 24;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("issue-token") => issue_token(&args[1..]).await,
        Some("cookie-name") => {
            println!("{}", cookie_name());
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("knoq-admin: {message}");
            ExitCode::from(2)
        }
    }
}

fn cookie_name() -> String {
    std::env::var("SESSION_COOKIE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string())
}

/// The value after `--name`, if given.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2).find(|pair| pair[0] == name).map(|pair| pair[1].as_str())
}

async fn issue_token(args: &[String]) -> Result<(), String> {
    let user_id = flag(args, "--user").filter(|v| !v.is_empty()).ok_or(USAGE)?;
    let org_id = flag(args, "--org").filter(|v| !v.is_empty()).ok_or(USAGE)?;
    let ttl_hours = match flag(args, "--ttl-hours") {
        None => DEFAULT_TTL_HOURS,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|hours| (1..=24 * 90).contains(hours))
            .ok_or("--ttl-hours must be a whole number from 1 to 2160")?,
    };
    let table = std::env::var("AUTH_SESSIONS_TABLE")
        .map_err(|_| "environment variable AUTH_SESSIONS_TABLE is required but not set")?;
    let sdk = knoq_shared::app::load_sdk_config().await;
    let store = AuthSessionStore::new(
        DynamoDbClient::from_conf(knoq_shared::store::dynamodb_config(&sdk).build()),
        table,
    );
    let token = new_token();
    let record = AuthRecord {
        user_id: user_id.to_string(),
        org_id: org_id.to_string(),
        expires_at_secs: Timestamp::now().epoch_secs() + ttl_hours * 3600,
    };
    store.put(&token_hash(&token), &record).await.map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}
