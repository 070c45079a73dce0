//! Time in the plugin: instants are microseconds since the Unix epoch (UTC) everywhere; `jiff` converts them at
//! the edges (calendar dates for file names, RFC 3339 text, the `run_on` column of Diesel's migration table).

use jiff::{civil::DateTime, SignedDuration, Timestamp};

/// Now, in microseconds since the Unix epoch (UTC).
pub fn now_micros() -> i64 {
    Timestamp::now().as_microsecond()
}

/// The Unix epoch as a UTC calendar date and time. Conversions go through civil (UTC) date-times, not jiff's
/// `Timestamp`, whose range stops a day short of 9999-12-31 (so that every offset fits) while stored timestamps
/// may reach 9999-12-31T23:59:59.999999Z.
const EPOCH: DateTime = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);

/// The UTC calendar date and time of `micros`, clamped into years -9999 to 9999 (stored timestamps are validated
/// to 1970-9999, so clamping only ever touches values that are refused elsewhere).
pub fn utc(micros: i64) -> DateTime {
    EPOCH.checked_add(SignedDuration::from_micros(micros)).unwrap_or(if micros < 0 {
        DateTime::MIN
    } else {
        DateTime::MAX
    })
}

/// Microseconds since the epoch of a UTC calendar date and time; `None` when the sub-microsecond digits are
/// not zero (a value this plugin never writes).
pub fn utc_micros(dt: DateTime) -> Option<i64> {
    let since = dt.duration_since(EPOCH);
    if since.subsec_nanos() % 1000 != 0 {
        return None;
    }
    i64::try_from(since.as_micros()).ok()
}

/// RFC 3339 UTC with microseconds: `2024-01-15T10:30:00.000000Z`.
pub fn rfc3339(micros: i64) -> String {
    utc(micros).strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses what [`rfc3339`] writes; the fraction may have 0 to 6 digits.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    utc_micros(DateTime::strptime("%Y-%m-%dT%H:%M:%S%.fZ", s).ok()?)
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    #[test]
    fn micros_and_calendar_dates() {
        assert_eq!(utc_micros(date(1970, 1, 1).at(0, 0, 0, 0)), Some(0));
        assert_eq!(utc_micros(date(2024, 1, 15).at(0, 0, 0, 0)), Some(1_705_276_800_000_000));
        assert_eq!(utc_micros(date(2000, 3, 1).at(0, 0, 0, 1000)), Some(951_868_800_000_001));
        assert_eq!(utc_micros(date(2000, 3, 1).at(0, 0, 0, 1)), None);
        assert_eq!(utc(1_705_314_615_123_456), date(2024, 1, 15).at(10, 30, 15, 123_456_000));
        assert_eq!(utc(-1), date(1969, 12, 31).at(23, 59, 59, 999_999_000));
        assert_eq!(utc(253_402_300_799_999_999), date(9999, 12, 31).at(23, 59, 59, 999_999_000));
        assert_eq!(utc_micros(utc(253_402_300_799_999_999)), Some(253_402_300_799_999_999));
        assert_eq!(utc(i64::MAX), DateTime::MAX);
        assert_eq!(utc(i64::MIN), DateTime::MIN);
        let now = now_micros();
        assert!(now > 1_705_276_800_000_000, "{now}");
    }
}
