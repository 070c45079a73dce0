//! Ages such as `30d`, `12h`, `90m`, `45s`, `2w`, combined (`1d12h`, `1d 12h`) or in ISO 8601 (`P30D`), read
//! with jiff's span parser; a day is 24 hours. A bare number is refused: the seed writes ages with units, and
//! guessing seconds versus days would silently be wrong. Months and years are refused too: their length varies.

use std::time::Duration;

use jiff::{SignedDuration, Span, SpanRelativeTo, SpanRound, Unit};

const UNITS: &str = "units: s, m, h, d, w";

/// Parses an age; the error text is the message only (the caller adds the key path).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected an age such as 30d, 12h, 90m, 45s or 2w, found an empty string".to_string());
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("missing unit in {s:?}; write e.g. {s}d or {s}h ({UNITS})"));
    }
    let span: Span = s.to_ascii_lowercase().parse().map_err(|e| {
        format!("invalid age {s:?}: {e}; write a number followed by a unit ({UNITS}), e.g. 30d or 1d12h")
    })?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "invalid age {s:?}: months and years vary in length; write days instead, e.g. 30d"
        ));
    }
    let age = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("age {s:?} is too large: {e}"))?;
    if age <= SignedDuration::ZERO {
        return Err(format!("age {s:?} must be greater than zero"));
    }
    Duration::try_from(age).map_err(|e| format!("age {s:?} is out of range: {e}"))
}

/// The age in jiff's friendly format, days as the largest unit: 30 days → "30d", 36 hours → "1d 12h",
/// 90 minutes → "1h 30m". [`parse_age`] reads it back.
pub fn format_age(age: Duration) -> String {
    Span::try_from(age)
        .and_then(|span| span.round(SpanRound::new().largest(Unit::Day).days_are_24_hours()))
        .map_or_else(|_| format!("{}s", age.as_secs()), |span| format!("{span:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3_600));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(90 * 60));
        assert_eq!(parse_age("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_age("1d12h").unwrap(), Duration::from_secs(36 * 3_600));
        assert_eq!(parse_age("1d 12h").unwrap(), Duration::from_secs(36 * 3_600));
        assert_eq!(parse_age(" 7D ").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("7 days").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("P30D").unwrap(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn rejects_bad_ages() {
        let err = |s: &str| parse_age(s).unwrap_err();
        assert_eq!(err("30"), "missing unit in \"30\"; write e.g. 30d or 30h (units: s, m, h, d, w)");
        let e = err("30x");
        assert!(e.starts_with("invalid age \"30x\": ") && e.ends_with("e.g. 30d or 1d12h"), "{e}");
        assert!(err("d").starts_with("invalid age \"d\""), "{}", err("d"));
        assert!(err("1d3").starts_with("invalid age \"1d3\""), "{}", err("1d3"));
        assert_eq!(err("0d"), "age \"0d\" must be greater than zero");
        assert_eq!(err("-1d"), "age \"-1d\" must be greater than zero");
        assert!(err("1mo").contains("months and years vary in length"), "{}", err("1mo"));
        assert!(err("2y").contains("write days instead"), "{}", err("2y"));
        assert!(err("99999999999999999999d").starts_with("invalid age"), "{}", err("99999999999999999999d"));
        assert!(err("").contains("found an empty string"));
    }

    #[test]
    fn formats_in_the_friendly_format_and_reads_back() {
        assert_eq!(format_age(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_age(Duration::from_secs(14 * 86_400)), "14d");
        assert_eq!(format_age(Duration::from_secs(90 * 60)), "1h 30m");
        assert_eq!(format_age(Duration::from_secs(45)), "45s");
        for secs in [1, 59, 3_600, 36 * 3_600, 400 * 86_400 + 7] {
            let age = Duration::from_secs(secs);
            assert_eq!(parse_age(&format_age(age)), Ok(age), "{}", format_age(age));
        }
    }
}
