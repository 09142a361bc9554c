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

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

/// A DynamoDB item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SDK call failed (network, throttling, missing table, ...).
    #[error("DynamoDB {operation} failed: {message}")]
    Sdk {
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

impl StoreError {
    /// Wraps an SDK error of `operation` with its full context.
    pub fn sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Self::Sdk { operation, message: DisplayErrorContext(error).to_string() }
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

/// How a transaction ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    /// Every item was written.
    Committed,
    /// Nothing was written: the condition of the item at this index was false.
    ConditionFailed(usize),
}

/// How many times keys or items that DynamoDB left unprocessed (`BatchGetItem`,
/// `BatchWriteItem`) are sent again.
pub(crate) const UNPROCESSED_RETRIES: u32 = 8;

/// The wait before sending unprocessed keys or items again: 40 ms doubling to 1.28 s.
pub(crate) async fn pause_before_resend(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
}

/// How many times a transaction that lost a conflict with a concurrent write is retried.
const TRANSACTION_CONFLICT_RETRIES: u32 = 5;

/// Runs `TransactWriteItems`, telling a false condition (an answer, not a failure) from an
/// error, and retrying with a short backoff when it only lost a conflict with a concurrent
/// transaction on the same item.
pub async fn transact(
    client: &Client,
    items: Vec<TransactWriteItem>,
) -> Result<Transaction, StoreError> {
    let mut attempt = 0;
    loop {
        let result = client.transact_write_items().set_transact_items(Some(items.clone())).send();
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
        if codes.contains(&"TransactionConflict") && attempt < TRANSACTION_CONFLICT_RETRIES {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            continue;
        }
        return Err(StoreError::sdk("TransactWriteItems", error));
    }
}
