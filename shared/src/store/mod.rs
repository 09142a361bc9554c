//! DynamoDB storage, one module per table, all through `aws-sdk-dynamodb`.
//!
//! Every conditional behaviour the API promises (first cancel wins, session and first event
//! written together, counters that never pass their limit) is a DynamoDB condition here, so it
//! holds across every container at once.

pub mod auth_sessions;
pub mod events;
pub mod organisations;
pub mod sessions;
pub mod turn_worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

/// A DynamoDB item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SDK call failed for good (a missing table, a malformed request, ...).
    #[error("DynamoDB {operation} failed: {message}")]
    Sdk {
        /// The DynamoDB operation, e.g. `UpdateItem`.
        operation: &'static str,
        /// The SDK's full error text.
        message: String,
    },
    /// DynamoDB was busy or failing (throttling, its own 5xx, no answer, transactions
    /// holding the item) after every retry: the same request may well succeed a little
    /// later. Nothing was written by the failed call.
    #[error("DynamoDB {operation} unavailable: {message}")]
    Unavailable {
        /// The DynamoDB operation, e.g. `UpdateItem`.
        operation: &'static str,
        /// The SDK's full error text.
        message: String,
    },
    /// An item did not have the shape this code writes.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    /// DynamoDB kept refusing part of the work (unprocessed items, writes racing a guard)
    /// after every retry.
    #[error("DynamoDB did not finish: {0}")]
    Unfinished(String),
}

/// Error codes that say DynamoDB is busy rather than that the request is wrong. The SDK's
/// standard retry already retried the throttling ones ([`dynamodb_retry_config`]); a
/// conflict with a transaction is retried by [`retry_conflicts`] and [`transact`].
const BUSY_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "ServiceUnavailable",
];

impl StoreError {
    /// Wraps an SDK error of `operation` with its full context: [`StoreError::Unavailable`]
    /// when DynamoDB was busy, failing or unreachable, [`StoreError::Sdk`] otherwise.
    pub fn sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let busy = matches!(error, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_))
            || error.code().is_some_and(|code| BUSY_CODES.contains(&code))
            || error.raw_response().is_some_and(|raw| raw.status().is_server_error());
        let message = DisplayErrorContext(error).to_string();
        if busy {
            Self::Unavailable { operation, message }
        } else {
            Self::Sdk { operation, message }
        }
    }

    /// Whether retrying the same request a little later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A string attribute value.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The string attribute `name` of `item`, if present and a string.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|value| value.as_s().ok()).map(String::as_str)
}

/// The number attribute `name` of `item` as an `i64`, if present and numeric.
pub fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|value| value.as_n().ok()).and_then(|raw| raw.parse().ok())
}

/// The string attribute `name`, or [`StoreError::Corrupt`] naming it.
pub fn require_s(item: &Item, name: &str) -> Result<String, StoreError> {
    get_s(item, name)
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} missing or not a string")))
}

/// An `UpdateItem`'s outcome as an answer: `true` when written, `false` when its condition
/// refused (an answer, not a failure), any other error as [`StoreError`].
pub(crate) fn updated<O>(
    result: Result<
        O,
        SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    >,
) -> Result<bool, StoreError> {
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    match result {
        Ok(_) => Ok(true),
        Err(error) => match error.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
            _ => Err(StoreError::sdk("UpdateItem", error)),
        },
    }
}

/// How a transaction ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    /// Every item was written.
    Committed,
    /// Nothing was written: the condition of the item at this index was false.
    ConditionFailed(usize),
}

/// How many HTTP attempts the SDK makes for one DynamoDB request before a throttling answer,
/// a 5xx or a timeout is reported ([`StoreError::Unavailable`], a 503 at the API). The SDK's
/// default of 3 is spent by a short burst: at the local stack's chaos rates, three busy
/// answers in a row met a worker's text flush (chaos seed 612: a whole answer ended
/// `store_error`) and a delete's mark whose first answer was lost (seed 613: the mark
/// committed, the route answered 503). 9 is what the AWS SDK for Java v2 has long given
/// DynamoDB (8 retries from 25 ms).
pub const DYNAMODB_MAX_ATTEMPTS: u32 = 9;

/// The retry policy of every DynamoDB client the functions build: the SDK's standard mode
/// (exponential backoff with full jitter) with [`DYNAMODB_MAX_ATTEMPTS`] attempts, from
/// 25 ms and capped at 2 s, so that a request whose every attempt fails answers after at
/// most 5.2 s of backoff (2.6 s on average), well inside API Gateway's 29 s and a worker's
/// lease, where the SDK's default start of 1 s would stretch to over a minute.
pub fn dynamodb_retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(DYNAMODB_MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(25))
        .with_max_backoff(Duration::from_secs(2))
}

/// The DynamoDB client configuration the functions use: region, credentials and endpoint
/// from `sdk`, and [`dynamodb_retry_config`]. Tests and benchmarks add interceptors to it.
pub fn dynamodb_config(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::from(sdk).retry_config(dynamodb_retry_config())
}

/// How many times keys or items that DynamoDB left unprocessed (`BatchGetItem`,
/// `BatchWriteItem`) are sent again.
pub(crate) const UNPROCESSED_RETRIES: u32 = 8;

/// The wait before sending unprocessed keys or items again: 40 ms doubling to 1.28 s.
pub(crate) async fn pause_before_resend(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
}

/// Counts the HTTP attempts the SDK makes for one request, its own retries included. A
/// conditional write whose condition fails on a later attempt may have been refused by its
/// own earlier attempt, which committed but whose response was lost (a 5xx, a timeout):
/// [`Attempts::retried`] says when to look for that. Attach it with
/// `.customize().interceptor(attempts.clone())`, after [`Attempts::reset`].
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<AtomicU32>);

impl Attempts {
    /// Starts counting a new request.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// How many HTTP requests were sent since the last reset (or `take`), and starts again:
    /// also how tests and benchmarks count a client's round trips.
    pub fn take(&self) -> u64 {
        u64::from(self.0.swap(0, Ordering::Relaxed))
    }

    /// Whether the SDK sent the request more than once.
    pub fn retried(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 1
    }
}

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "Attempts"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// How many times a write that met a transaction in flight on its item is sent again.
const CONFLICT_RETRIES: u32 = 6;

/// The wait before sending a write that lost a conflict again: "full jitter" (a random
/// share of 40 ms doubling per attempt, at most 640 ms), so writers that collided do not
/// collide again in step. At most about 1.9 s over [`CONFLICT_RETRIES`] attempts; a
/// DynamoDB transaction holds its items for tens of milliseconds.
async fn pause_after_conflict(attempt: u32) {
    let ceiling_ms = 20u64 << attempt.clamp(1, 5);
    let random = getrandom::u64().unwrap_or(u64::MAX / 2);
    tokio::time::sleep(Duration::from_millis(random % (ceiling_ms + 1))).await;
}

/// Sends a single-item write (`UpdateItem`, `PutItem`, `DeleteItem`) built by `send`, and
/// sends it again, after a short jittered wait and a bounded number of times, while DynamoDB
/// refuses it with `TransactionConflictException`: on DynamoDB a plain write to an item that
/// a `TransactWriteItems` in flight holds fails that way, and the SDK does not retry it.
/// Every write to a session item goes through here (the run appends a transaction every
/// poll, every message is one). A refused write changed nothing, so sending it again is
/// safe; when the conflicts outlast the retries, the last error is returned, which
/// [`StoreError::sdk`] reports as [`StoreError::Unavailable`].
pub async fn retry_conflicts<T, E, F, Fut>(mut send: F) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata,
{
    let mut attempt = 0;
    loop {
        match send().await {
            Err(error)
                if error.code() == Some("TransactionConflictException")
                    && attempt < CONFLICT_RETRIES =>
            {
                attempt += 1;
                pause_after_conflict(attempt).await;
            }
            result => return result,
        }
    }
}

/// Runs `TransactWriteItems`, telling a false condition (an answer, not a failure) from an
/// error, and retrying with a short jittered backoff when it only lost a conflict with a
/// concurrent transaction or write on the same item. Conflicts that outlast the retries,
/// and cancellations for throttling, are [`StoreError::Unavailable`].
///
/// Every attempt of one call carries the same `ClientRequestToken`, made here, so the write
/// is idempotent on DynamoDB: when a committed write's response is lost and the SDK sends
/// it again, DynamoDB answers success without writing twice (for 10 minutes; a cancelled
/// attempt is not remembered, so the conflict retries are applied). Emulators may ignore
/// the token: the event appends also recognise their own earlier write when a condition
/// refuses (`SessionStore`).
pub async fn transact(
    client: &Client,
    items: Vec<TransactWriteItem>,
) -> Result<Transaction, StoreError> {
    let token = uuid::Uuid::new_v4().hyphenated().to_string(); // 36 characters, the limit
    let mut attempt = 0;
    loop {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .client_request_token(&token)
            .send();
        let error = match result.await {
            Ok(_) => return Ok(Transaction::Committed),
            Err(error) => error,
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            error.as_service_error()
        else {
            return Err(StoreError::sdk("TransactWriteItems", error));
        };
        let codes: Vec<&str> =
            cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
        if let Some(index) = codes.iter().position(|code| *code == "ConditionalCheckFailed") {
            return Ok(Transaction::ConditionFailed(index));
        }
        let conflict = codes.contains(&"TransactionConflict");
        if conflict && attempt < CONFLICT_RETRIES {
            attempt += 1;
            pause_after_conflict(attempt).await;
            continue;
        }
        let busy = conflict
            || codes
                .iter()
                .any(|code| matches!(*code, "ThrottlingError" | "ProvisionedThroughputExceeded"));
        let message = DisplayErrorContext(&error).to_string();
        return Err(if busy {
            StoreError::Unavailable { operation: "TransactWriteItems", message }
        } else {
            StoreError::Sdk { operation: "TransactWriteItems", message }
        });
    }
}
