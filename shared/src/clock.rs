//! Wall-clock time in the two shapes the store uses: epoch milliseconds and RFC 3339 text.
//! [`Timestamp`] is what is written and compared across machines (a stamp, a lease's end);
//! durations measured within one process use `std::time::Instant` / `tokio::time::Instant`.

use chrono::{DateTime, SecondsFormat, Utc};

/// A wall-clock instant in UTC, to the millisecond: read once per request so that every
/// attribute written for it agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now())
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub fn from_epoch_millis(millis: i64) -> Self {
        Self(DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    /// Milliseconds since the Unix epoch.
    pub fn epoch_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// Whole seconds since the Unix epoch (the unit DynamoDB TTL attributes use).
    pub fn epoch_secs(self) -> i64 {
        self.0.timestamp()
    }

    /// RFC 3339 in UTC with exactly three fractional digits, e.g. `2026-11-25T17:06:14.123Z`.
    /// The fixed width makes these strings sort in time order, so they can be sort keys.
    pub fn rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The instant an RFC 3339 text names (as [`Timestamp::rfc3339`] writes it), if it is one.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|t| Self(t.with_timezone(&Utc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_fixed_width_utc_millis() {
        let t = Timestamp::from_epoch_millis(1_700_000_000_005);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.005Z");
        assert_eq!(t.epoch_secs(), 1_700_000_000);
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
