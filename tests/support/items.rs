//! What the code wrote, read straight from the tables.

use super::*;

/// The session item as stored, if any.
pub async fn session_item(id: &str) -> Option<Item> {
    dynamodb()
        .await
        .get_item()
        .table_name(config().tables.sessions)
        .key("id", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
}

/// Every event item of a session, in key order (every page: one `Query` reads at most 1 MB).
pub async fn event_items(session_id: &str) -> Vec<Item> {
    let db = dynamodb().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .query()
            .table_name(config().tables.events)
            .key_condition_expression("session_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(session_id.into()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Query");
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// How many sessions the owner index holds for a user in an organisation.
pub async fn sessions_owned(user_id: &str, org_id: &str) -> usize {
    sessions_of(user_id, org_id).await.len()
}

/// The session items the owner index holds for a user in an organisation.
pub async fn sessions_of(user_id: &str, org_id: &str) -> Vec<Item> {
    dynamodb()
        .await
        .query()
        .table_name(config().tables.sessions)
        .index_name("by_owner")
        .key_condition_expression("#owner = :owner")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":owner", AttributeValue::S(format!("{org_id}#{user_id}")))
        .send()
        .await
        .expect("Query by_owner")
        .items
        .unwrap_or_default()
}

/// Every rate-limit counter of a user (a scan with a filter: fine on a test table).
pub async fn counters_of(user_id: &str) -> Vec<Item> {
    dynamodb()
        .await
        .scan()
        .table_name(config().tables.rate_limits)
        .filter_expression("contains(pk, :user)")
        .expression_attribute_values(":user", AttributeValue::S(format!("#{user_id}#")))
        .send()
        .await
        .expect("Scan")
        .items
        .unwrap_or_default()
}

/// A string attribute of an item.
pub fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|value| value.as_s().ok()).map(String::as_str)
}

/// A number attribute of an item.
pub fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|value| value.as_n().ok()).and_then(|raw| raw.parse().ok())
}
