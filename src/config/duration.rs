//! Ages such as `30d`, `12h`, `90m`, `45s`, `2w`, or combined (`1d12h`). A bare number is refused: the
//! seed writes ages with units, and guessing seconds versus days would silently be wrong.

use std::time::Duration;

const UNITS: &[(char, u64)] = &[('w', 604_800), ('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses an age; the error text is the message only (the caller adds the key path).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected an age such as 30d, 12h, 90m, 45s or 2w, found an empty string".to_string());
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("missing unit in {s:?}; write e.g. {s}d or {s}h (units: s, m, h, d, w)"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some((_, secs)) = UNITS.iter().find(|(u, _)| *u == c.to_ascii_lowercase()) else {
            return Err(format!(
                "invalid age {s:?}: unexpected {c:?}; write a number followed by a unit s, m, h, d or w, \
                 e.g. 30d"
            ));
        };
        if digits.is_empty() {
            return Err(format!("invalid age {s:?}: unit {c:?} without a number before it"));
        }
        let n: u64 = digits.parse().map_err(|_| format!("age {s:?} is too large"))?;
        total = n
            .checked_mul(*secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("age {s:?} is too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("invalid age {s:?}: {digits} at the end has no unit (units: s, m, h, d, w)"));
    }
    if total == 0 {
        return Err(format!("age {s:?} must be greater than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// The shortest single-unit spelling: 30 days → "30d", 14 days → "2w", 90 minutes → "90m".
pub fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    for (unit, size) in UNITS {
        if secs > 0 && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
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
        assert_eq!(parse_age(" 7D ").unwrap(), Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn rejects_bad_ages() {
        assert!(parse_age("30").unwrap_err().contains("missing unit"));
        assert!(parse_age("30x").unwrap_err().contains("unexpected 'x'"));
        assert!(parse_age("d").unwrap_err().contains("without a number"));
        assert!(parse_age("1d3").unwrap_err().contains("has no unit"));
        assert!(parse_age("0d").unwrap_err().contains("greater than zero"));
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("99999999999999999999d").unwrap_err().contains("too large"));
        assert!(parse_age("").is_err());
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_age(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_age(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(format_age(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format_age(Duration::from_secs(45)), "45s");
    }
}
