//! The emulator's DynamoDB fault injection (`infra/local/faults.py`), seen from the SDK the
//! functions use, with its retries off so that every injected answer shows: the right error
//! for the right request only, as many times as asked.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use knoq_tests::*;

/// A client that never retries, so each injected failure reaches the caller.
async fn client_without_retries() -> Client {
    let sdk = knoq_shared::app::load_sdk_config().await;
    let config =
        aws_sdk_dynamodb::config::Builder::from(&sdk).retry_config(RetryConfig::disabled()).build();
    Client::from_conf(config)
}

async fn put(client: &Client, id: &str) -> Result<(), (Option<String>, u16)> {
    client
        .put_item()
        .table_name(config().tables.sessions)
        .item("id", AttributeValue::S(id.into()))
        .send()
        .await
        .map(|_| ())
        .map_err(|error| {
            let status = error.raw_response().map_or(0, |raw| raw.status().as_u16());
            (error.code().map(str::to_owned), status)
        })
}

#[tokio::test]
async fn each_error_is_answered_as_dynamodb_does_to_the_matching_requests_only() {
    let client = client_without_retries().await;
    for (error, status) in [
        ("TransactionConflictException", 400),
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("InternalServerError", 500),
    ] {
        let (target, bystander) = (unique("fault-target"), unique("fault-bystander"));
        let fault = Fault::new("PutItem", "SessionsTable", error)
            .times(2)
            .containing(&target)
            .plant()
            .await;
        assert_eq!(put(&client, &bystander).await, Ok(()), "another item is not hit");
        for _ in 0..2 {
            assert_eq!(put(&client, &target).await, Err((Some(error.to_owned()), status)));
        }
        assert_eq!(put(&client, &target).await, Ok(()), "{error}: only twice");
        assert_eq!(fault.hits().await, 2);
        assert!(session_item(&target).await.is_some());
        fault.clear().await;
    }
}

#[tokio::test]
async fn a_transaction_conflict_cancels_the_transaction_with_its_reason() {
    let client = client_without_retries().await;
    let id = unique("fault-transaction");
    let fault = Fault::new("TransactWriteItems", "EventsTable", "TransactionConflictException")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    let put = |table: String, key: (&str, &str)| {
        let put = Put::builder()
            .table_name(table)
            .item(key.0, AttributeValue::S(key.1.into()))
            .item("event_id", AttributeValue::S("e".into()))
            .build()
            .unwrap();
        TransactWriteItem::builder().put(put).build()
    };
    let items = vec![
        put(config().tables.sessions, ("id", &id)),
        put(config().tables.events, ("session_id", &id)),
    ];
    let error = client
        .transact_write_items()
        .set_transact_items(Some(items.clone()))
        .send()
        .await
        .expect_err("the injected conflict");
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    else {
        panic!("expected TransactionCanceledException, got {error:?}");
    };
    let codes: Vec<_> =
        cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("")).collect();
    assert_eq!(codes, ["None", "TransactionConflict"], "the events table's item conflicts");
    assert!(session_item(&id).await.is_none(), "nothing written");
    client.transact_write_items().set_transact_items(Some(items)).send().await.unwrap();
    fault.clear().await;
}

#[tokio::test]
async fn a_lost_response_is_a_500_for_a_write_that_committed() {
    let client = client_without_retries().await;
    let id = unique("fault-lost");
    let fault = Fault::new("PutItem", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    assert_eq!(put(&client, &id).await, Err((Some("InternalServerError".into()), 500)));
    assert!(session_item(&id).await.is_some(), "the write committed");
    fault.clear().await;
}
