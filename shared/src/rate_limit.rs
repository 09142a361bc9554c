//! Per-user rate limits kept as DynamoDB counters, exact across every container.
//!
//! Each limit counts requests in fixed windows aligned to the Unix epoch (a minute window
//! runs from :00 to :59). A counter item `pk = <route>#<user>#<window secs>#<window index>`
//! is incremented with `ADD hits :one` under the condition `hits < max`, so the increment
//! and the check are one atomic step: under any concurrency exactly `max` requests per
//! window get through. Items carry `expires_at` (the table's TTL) a minute past their window,
//! and a single-limit counter also `last_request`, the name of the request that counted last,
//! so that the SDK's resend of a write whose answer was lost never counts a request twice.
//!
//! A route with several limits (create session: 10 a minute AND 20 an hour) updates all its
//! counters in one transaction: a request refused by one limit consumes none of the others.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};

use crate::clock::Timestamp;
use crate::domain::UserScope;
use crate::error::ApiError;
use crate::store::{Attempts, StoreError, Transaction, get_s, n, retry_conflicts, s, transact};

/// At most `max` requests per window of `window_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests admitted per window.
    pub max: u32,
    /// Window length in seconds.
    pub window_secs: u32,
}

impl Limit {
    /// `max` requests a minute.
    pub const fn per_minute(max: u32) -> Self {
        Self { max, window_secs: 60 }
    }

    /// `max` requests an hour.
    pub const fn per_hour(max: u32) -> Self {
        Self { max, window_secs: 3600 }
    }

    /// The window in words, for error messages.
    pub fn window_name(&self) -> &'static str {
        match self.window_secs {
            60 => "minute",
            3600 => "hour",
            _ => "window",
        }
    }

    /// The window that contains `now`.
    pub fn window_at(&self, now: Timestamp) -> Window {
        let length_ms = i64::from(self.window_secs) * 1000;
        let index = now.epoch_millis().div_euclid(length_ms);
        Window { index, ends_at_ms: (index + 1) * length_ms }
    }
}

/// One fixed window of a [`Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Windows since the epoch; part of the counter key.
    pub index: i64,
    /// When the window ends, in epoch milliseconds.
    pub ends_at_ms: i64,
}

impl Window {
    /// Whole seconds from `now` until this window ends, rounded up and at least 1: the
    /// `Retry-After` a refused request is told.
    pub fn retry_after_secs(&self, now: Timestamp) -> u64 {
        let remaining_ms = (self.ends_at_ms - now.epoch_millis()).max(0) as u64;
        remaining_ms.div_ceil(1000).max(1)
    }

    /// When DynamoDB may delete the counter: a minute after the window ends.
    pub fn expires_at_secs(&self) -> i64 {
        self.ends_at_ms / 1000 + 60
    }
}

/// The limits of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimits {
    /// The route's short name, part of the counter key.
    pub route: &'static str,
    /// What is counted, in words, for error messages.
    pub what: &'static str,
    /// Every limit that applies; all must admit the request.
    pub limits: Vec<Limit>,
}

/// The maximum of every limit, by name: what configuration sets (`config.rs`) and tests
/// override, e.g. `Maxima { reads_per_minute: 3, ..Maxima::default() }`. Named fields, so two
/// numbers cannot trade places the way positional arguments can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maxima {
    /// Cancel requests per user per minute.
    pub cancel_per_minute: u32,
    /// New sessions per user per minute.
    pub sessions_per_minute: u32,
    /// New sessions per user per hour.
    pub sessions_per_hour: u32,
    /// Messages per user per minute.
    pub messages_per_minute: u32,
    /// Transcript and session-list reads per user per minute, the two routes together.
    pub reads_per_minute: u32,
}

impl Default for Maxima {
    /// The contract's limits: 30 cancels a minute; 10 sessions a minute and 20 an hour;
    /// 60 messages a minute; 300 reads (transcript and list together) a minute.
    fn default() -> Self {
        Self {
            cancel_per_minute: 30,
            sessions_per_minute: 10,
            sessions_per_hour: 20,
            messages_per_minute: 60,
            reads_per_minute: 300,
        }
    }
}

/// The limits of every rate-limited route (configurable; defaults are the contract's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /cancel`: 30 a minute per user by default.
    pub cancel: RouteLimits,
    /// `POST /session`: 10 a minute and 20 an hour per user by default.
    pub create_session: RouteLimits,
    /// `POST /message`: 60 a minute per user by default.
    pub message: RouteLimits,
    /// `GET /transcript` and `GET /sessions`: one counter for both, 300 a minute per user by
    /// default, so a client cannot double its polling by alternating the two.
    pub reads: RouteLimits,
}

impl RateLimits {
    /// The limits with these maxima.
    pub fn new(maxima: Maxima) -> Self {
        Self {
            message: RouteLimits {
                route: "message",
                what: "messages",
                limits: vec![Limit::per_minute(maxima.messages_per_minute)],
            },
            cancel: RouteLimits {
                route: "cancel",
                what: "cancel requests",
                limits: vec![Limit::per_minute(maxima.cancel_per_minute)],
            },
            create_session: RouteLimits {
                route: "create-session",
                what: "new sessions",
                limits: vec![
                    Limit::per_minute(maxima.sessions_per_minute),
                    Limit::per_hour(maxima.sessions_per_hour),
                ],
            },
            reads: RouteLimits {
                route: "reads",
                what: "transcript and session-list reads",
                limits: vec![Limit::per_minute(maxima.reads_per_minute)],
            },
        }
    }
}

impl Default for RateLimits {
    /// The contract's limits ([`Maxima::default`]).
    fn default() -> Self {
        Self::new(Maxima::default())
    }
}

/// Counts requests against [`RouteLimits`] in the rate-limits table.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    client: Client,
    table: String,
}

impl RateLimiter {
    /// A limiter over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Counts this request; `Ok` when every limit admits it, otherwise 429 with the
    /// `Retry-After` of the limit that refused it.
    pub async fn admit(
        &self,
        scope: &UserScope,
        route: &RouteLimits,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        match route.limits.as_slice() {
            [] => Ok(()),
            [limit] => self.admit_one(scope, route, *limit, now).await,
            limits => self.admit_all(scope, route, limits, now).await,
        }
    }

    /// The update that counts one request on `limit`'s current counter, if that counter is
    /// below its maximum. With `request` (a name unique to this request), the update also
    /// records it and refuses to count the same name twice (see [`Self::admit_one`]).
    fn counter_update(
        &self,
        scope: &UserScope,
        route: &RouteLimits,
        limit: Limit,
        now: Timestamp,
        request: Option<&str>,
    ) -> Update {
        let window = limit.window_at(now);
        // Every request of a window computes the same `expires_at`, so a plain SET (no
        // `if_not_exists`) keeps it unchanged; one function fewer for DynamoDB to evaluate.
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(counter_key(scope, route, limit, window)))
            .expression_attribute_values(":exp", n(window.expires_at_secs()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(limit.max));
        let update = match request {
            None => update
                .update_expression("SET expires_at = :exp ADD hits :one")
                .condition_expression("attribute_not_exists(hits) OR hits < :max"),
            Some(request) => update
                .update_expression("SET expires_at = :exp, last_request = :request ADD hits :one")
                .condition_expression(
                    "(attribute_not_exists(hits) OR hits < :max) \
                     AND (attribute_not_exists(last_request) OR last_request <> :request)",
                )
                .expression_attribute_values(":request", s(request)),
        };
        update.build().expect("table, key and update expression are always set")
    }

    async fn admit_one(
        &self,
        scope: &UserScope,
        route: &RouteLimits,
        limit: Limit,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        // One limit needs no transaction: the counter update as a plain UpdateItem (one round
        // trip, half the write cost of a transaction), naming this request. When the write
        // commits and its answer is lost, the SDK's resend is refused for that name, and the
        // old item it brings back shows the name: the request was counted once, and admitted.
        // (Create's several limits go in one transaction, which a ClientRequestToken makes
        // safe to resend.) A conflict is not expected here, since no transaction holds a
        // single-limit counter; retried all the same, as every plain write is.
        let request = uuid::Uuid::new_v4().to_string();
        let update = self.counter_update(scope, route, limit, now, Some(&request));
        let attempts = Attempts::default();
        let result = retry_conflicts(|| {
            attempts.reset();
            self.client
                .update_item()
                .table_name(&update.table_name)
                .set_key(Some(update.key.clone()))
                .update_expression(&update.update_expression)
                .set_condition_expression(update.condition_expression.clone())
                .set_expression_attribute_values(update.expression_attribute_values.clone())
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .interceptor(attempts.clone())
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let last = failed.item().and_then(|old| get_s(old, "last_request"));
                    if attempts.retried() && last == Some(request.as_str()) {
                        Ok(())
                    } else {
                        Err(refused(route, limit, now))
                    }
                }
                _ => Err(StoreError::sdk("UpdateItem", error).into()),
            },
        }
    }

    async fn admit_all(
        &self,
        scope: &UserScope,
        route: &RouteLimits,
        limits: &[Limit],
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let items: Vec<TransactWriteItem> = limits
            .iter()
            .map(|limit| {
                TransactWriteItem::builder()
                    .update(self.counter_update(scope, route, *limit, now, None))
                    .build()
            })
            .collect();
        match transact(&self.client, items).await? {
            Transaction::Committed => Ok(()),
            Transaction::ConditionFailed(index) => Err(refused(route, limits[index], now)),
        }
    }
}

/// The counter item's key for `limit`'s current `window`.
pub fn counter_key(scope: &UserScope, route: &RouteLimits, limit: Limit, window: Window) -> String {
    format!("{}#{}#{}#{}", route.route, scope.user_id(), limit.window_secs, window.index)
}

fn refused(route: &RouteLimits, limit: Limit, now: Timestamp) -> ApiError {
    ApiError::RateLimited {
        limit: limit.max,
        what: route.what,
        window: limit.window_name(),
        retry_after_secs: limit.window_at(now).retry_after_secs(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_the_epoch() {
        let limit = Limit::per_minute(30);
        let at = |ms| limit.window_at(Timestamp::from_epoch_millis(ms));
        assert_eq!(at(0), Window { index: 0, ends_at_ms: 60_000 });
        assert_eq!(at(59_999), Window { index: 0, ends_at_ms: 60_000 });
        assert_eq!(at(60_000), Window { index: 1, ends_at_ms: 120_000 });
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let limit = Limit::per_minute(30);
        let now = |ms| Timestamp::from_epoch_millis(ms);
        assert_eq!(limit.window_at(now(0)).retry_after_secs(now(0)), 60);
        assert_eq!(limit.window_at(now(58_001)).retry_after_secs(now(58_001)), 2);
        assert_eq!(limit.window_at(now(59_999)).retry_after_secs(now(59_999)), 1);
        let hour = Limit::per_hour(20);
        assert_eq!(hour.window_at(now(1_000)).retry_after_secs(now(1_000)), 3599);
    }

    #[test]
    fn counters_expire_a_minute_after_their_window() {
        let window = Limit::per_minute(1).window_at(Timestamp::from_epoch_millis(61_000));
        assert_eq!(window.expires_at_secs(), 120 + 60);
    }

    #[test]
    fn counter_keys_separate_routes_users_and_windows() {
        let scope = UserScope::from_auth_record("u1".into(), "o1".into());
        let RateLimits { cancel, create_session, message, reads } = RateLimits::default();
        let minute = Limit::per_minute(10);
        let window = minute.window_at(Timestamp::from_epoch_millis(120_000));
        assert_eq!(counter_key(&scope, &create_session, minute, window), "create-session#u1#60#2");
        assert_eq!(counter_key(&scope, &cancel, minute, window), "cancel#u1#60#2");
        assert_eq!(counter_key(&scope, &message, minute, window), "message#u1#60#2");
        assert_eq!(counter_key(&scope, &reads, minute, window), "reads#u1#60#2");
    }

    #[test]
    fn each_maximum_sets_its_own_limit() {
        let limits = RateLimits::new(Maxima {
            cancel_per_minute: 1,
            sessions_per_minute: 2,
            sessions_per_hour: 3,
            messages_per_minute: 4,
            reads_per_minute: 5,
        });
        assert_eq!(limits.cancel.limits, [Limit::per_minute(1)]);
        assert_eq!(limits.create_session.limits, [Limit::per_minute(2), Limit::per_hour(3)]);
        assert_eq!(limits.message.limits, [Limit::per_minute(4)]);
        assert_eq!(limits.reads.limits, [Limit::per_minute(5)]);
    }

    #[test]
    fn route_limits_match_the_contract() {
        let limits = RateLimits::default();
        assert_eq!(limits.cancel.limits, [Limit { max: 30, window_secs: 60 }]);
        assert_eq!(limits.create_session.limits, [Limit::per_minute(10), Limit::per_hour(20)]);
        assert_eq!(limits.message.limits, [Limit::per_minute(60)]);
        assert_eq!(limits.reads.limits, [Limit::per_minute(300)]);
        assert_eq!(Limit::per_hour(1).window_name(), "hour");
    }
}
