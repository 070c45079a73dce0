//! `storage.retention.cleanupSchedule`: a standard five-field cron expression
//! (`minute hour day-of-month month day-of-week`, no seconds field, no year field), evaluated in UTC.
//! The seed's `0 2 * * *` means "every day at 02:00 UTC".
//!
//! Parsing and next-fire times are [croner](https://docs.rs/croner)'s, configured for five fields only. Each
//! field takes `*`, `N`, `N-M`, `*/S`, `N-M/S` and comma lists; months also take `JAN`-`DEC` and days of the week
//! `SUN`-`SAT` (0 and 7 are both Sunday); croner's extensions `L`, `W`, `#` and `?` work too. The macros
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` are accepted. When both
//! day fields are restricted (neither is exactly `*`) a day matches if EITHER matches, as in Vixie cron.
//!
//! This module adds what croner's errors lack: which field is wrong and what that field takes. The retention
//! scheduler (`src/retention/schedule.rs`) asks [`CronSchedule::next_after`] and
//! [`CronSchedule::latest_at_or_before`] for fire times in UTC microseconds.

use std::fmt;

use croner::{
    errors::CronError,
    parser::{CronParser, Seconds, Year},
    Cron,
};

/// The five fields: name and what it takes, for error messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
];

const MACROS: &str = "@yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly";

/// A valid cron schedule; `expr` is the expression as written.
#[derive(Clone)]
pub struct CronSchedule {
    pub expr: String,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.expr)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for CronSchedule {}

/// Parses with croner configured for five fields: no seconds field, no year field. croner knows every macro
/// but `@midnight`, Vixie cron's other spelling of `@daily`.
fn compile(text: &str) -> Result<Cron, CronError> {
    let text = if text.trim().eq_ignore_ascii_case("@midnight") { "@daily" } else { text };
    CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build().parse(text)
}

/// croner's message without its `Component error:`-style prefix and final period.
fn reason(e: &CronError) -> String {
    let text = match e {
        CronError::InvalidPattern(m) | CronError::IllegalCharacters(m) | CronError::ComponentError(m) => {
            m.clone()
        }
        other => other.to_string(),
    };
    text.trim_end_matches('.').to_string()
}

impl CronSchedule {
    /// Parses an expression; the error is a message naming the field, the part that is wrong and what the field
    /// takes (the caller adds the key path).
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        let trimmed = expr.trim();
        let parts: Vec<&str> = trimmed.split_whitespace().collect();
        if !trimmed.starts_with('@') && parts.len() != FIELDS.len() {
            return Err(format!(
                "invalid cron expression {trimmed:?}: expected 5 fields (minute hour day-of-month month \
                 day-of-week), found {}",
                parts.len()
            ));
        }
        let error = match compile(trimmed) {
            Ok(_) => return Ok(CronSchedule { expr: expr.to_string() }),
            Err(e) => e,
        };
        if trimmed.starts_with('@') {
            return Err(format!("unknown cron macro {trimmed:?}; expected {MACROS}, or five fields"));
        }
        // Find the wrong field by parsing each one alone, the others `*`.
        let wrong = (0..FIELDS.len()).find_map(|i| {
            let alone: Vec<&str> = (0..FIELDS.len()).map(|j| if j == i { parts[j] } else { "*" }).collect();
            compile(&alone.join(" ")).err().map(|e| (i, e))
        });
        Err(match wrong {
            Some((i, e)) => {
                let (name, takes) = FIELDS[i];
                format!(
                    "invalid cron expression {trimmed:?}: {name} field {:?}: {}; the {name} field takes {takes} \
                     (N, N-M, */S, N-M/S or a comma list)",
                    parts[i],
                    reason(&e)
                )
            }
            None => format!("invalid cron expression {trimmed:?}: {}", reason(&error)),
        })
    }
}

impl CronSchedule {
    fn fire(&self, micros: i64, forward: bool, inclusive: bool) -> Option<i64> {
        let cron = compile(&self.expr).ok()?;
        let at = jiff::Timestamp::from_microsecond(micros).ok()?.to_zoned(jiff::tz::TimeZone::UTC);
        let found = if forward {
            cron.find_next_occurrence(&at, inclusive)
        } else {
            cron.find_previous_occurrence(&at, inclusive)
        };
        found.ok().map(|z| z.timestamp().as_microsecond())
    }

    /// The first fire time strictly after `micros` (UTC microseconds), if any.
    pub fn next_after(&self, micros: i64) -> Option<i64> {
        self.fire(micros, true, false)
    }

    /// The last fire time at or before `micros`, if any.
    pub fn latest_at_or_before(&self, micros: i64) -> Option<i64> {
        self.fire(micros, false, true)
    }
}

#[cfg(test)]
mod tests {
    use jiff::{civil::date, tz::TimeZone, Timestamp, Zoned};

    use super::*;

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Zoned {
        date(y, mo, d).at(h, mi, s, 0).to_zoned(TimeZone::UTC).unwrap()
    }

    /// The first fire time strictly after `from`, as the retention scheduler will ask for it.
    fn next(expr: &str, from: Zoned) -> Option<Zoned> {
        CronSchedule::parse(expr).unwrap();
        compile(expr).unwrap().find_next_occurrence(&from, false).ok()
    }

    #[test]
    fn fire_times_in_micros() {
        let s = CronSchedule::parse("0 2 * * *").unwrap();
        let micros = |z: Zoned| z.timestamp().as_microsecond();
        let t = micros(at(2024, 1, 15, 10, 30, 0));
        assert_eq!(s.next_after(t), Some(micros(at(2024, 1, 16, 2, 0, 0))));
        assert_eq!(s.latest_at_or_before(t), Some(micros(at(2024, 1, 15, 2, 0, 0))));
        let two = micros(at(2024, 1, 15, 2, 0, 0));
        assert_eq!(s.latest_at_or_before(two), Some(two));
        assert_eq!(s.next_after(two), Some(micros(at(2024, 1, 16, 2, 0, 0))));
    }

    #[test]
    fn seed_schedule_is_daily_at_two_utc() {
        let t = at(2024, 1, 15, 10, 30, 0);
        assert_eq!(next("0 2 * * *", t.clone()), Some(at(2024, 1, 16, 2, 0, 0)));
        assert_eq!(next("0 2 * * *", at(2024, 1, 15, 1, 59, 59)), Some(at(2024, 1, 15, 2, 0, 0)));
        // Strictly after: exactly at the fire time goes to the next day.
        assert_eq!(next("0 2 * * *", at(2024, 1, 15, 2, 0, 0)), Some(at(2024, 1, 16, 2, 0, 0)));
        assert_eq!(next("@daily", t.clone()), Some(at(2024, 1, 16, 0, 0, 0)));
        assert_eq!(next("@midnight", t), Some(at(2024, 1, 16, 0, 0, 0)));
        let now = Timestamp::now().to_zoned(TimeZone::UTC);
        let fire = next("0 2 * * *", now.clone()).unwrap();
        assert!(fire > now && (fire.hour(), fire.minute(), fire.second()) == (2, 0, 0), "{fire}");
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        assert_eq!(next("*/15 * * * *", at(2024, 1, 15, 10, 7, 30)), Some(at(2024, 1, 15, 10, 15, 0)));
        assert_eq!(next("*/15 * * * *", at(2024, 1, 15, 23, 50, 0)), Some(at(2024, 1, 16, 0, 0, 0)));
        assert_eq!(next("10-40/20 9-17 * * *", at(2024, 1, 15, 17, 31, 0)), Some(at(2024, 1, 16, 9, 10, 0)));
        assert_eq!(next("0 0 1 jan,JUL *", at(2024, 2, 1, 0, 0, 0)), Some(at(2024, 7, 1, 0, 0, 0)));
        assert_eq!(next("0 0 * * 7", at(2024, 1, 1, 0, 0, 0)), Some(at(2024, 1, 7, 0, 0, 0)));
        assert_eq!(next("0 0 * * SUN", at(2024, 1, 1, 0, 0, 0)), Some(at(2024, 1, 7, 0, 0, 0)));
        assert_eq!(next("0 0 * * mon-fri", at(2024, 1, 6, 12, 0, 0)), Some(at(2024, 1, 8, 0, 0, 0)));
        assert_eq!(next("@yearly", at(2024, 3, 1, 0, 0, 0)), Some(at(2025, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2024-01-01 is a Monday; Friday the 5th comes before the 13th.
        assert_eq!(next("0 0 13 * FRI", at(2024, 1, 1, 0, 0, 0)), Some(at(2024, 1, 5, 0, 0, 0)));
        // With day-of-week unrestricted only the day of month counts.
        assert_eq!(next("0 0 13 * *", at(2024, 1, 1, 0, 0, 0)), Some(at(2024, 1, 13, 0, 0, 0)));
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(next("0 0 29 2 *", at(2023, 3, 1, 0, 0, 0)), Some(at(2024, 2, 29, 0, 0, 0)));
        assert_eq!(next("0 0 29 2 *", at(2096, 3, 1, 0, 0, 0)), Some(at(2104, 2, 29, 0, 0, 0)));
        assert_eq!(next("0 0 31 2 *", at(2024, 1, 1, 0, 0, 0)), None);
        assert_eq!(next("0 0 31 4,6 *", at(2024, 1, 1, 0, 0, 0)), None);
        assert_eq!(next("30 12 * * *", at(1969, 12, 31, 23, 0, 0)), Some(at(1970, 1, 1, 12, 30, 0)));
    }

    #[test]
    fn errors_name_the_field_the_part_and_what_it_takes() {
        let err = |e: &str| CronSchedule::parse(e).unwrap_err();
        let e = err("0 25 * * *");
        assert!(e.starts_with("invalid cron expression \"0 25 * * *\": hour field \"25\": "), "{e}");
        assert!(e.contains("the hour field takes 0-23"), "{e}");
        assert!(err("60 * * * *").contains("minute field \"60\""));
        assert!(err("* * 0 * *").contains("day-of-month field \"0\""));
        assert!(err("* * * 13 *").contains("month field \"13\""));
        let e = err("* * * FOO *");
        assert!(e.contains("month field \"FOO\"") && e.contains("takes 1-12 or JAN-DEC"), "{e}");
        assert!(err("* * * * 8").contains("day-of-week field \"8\""));
        assert!(err("* * * *").contains("expected 5 fields"));
        // A seconds field is not accepted: five fields only.
        assert!(err("0 * * * * *").contains("found 6"));
        assert!(
            err("*/0 * * * *").contains("minute field \"*/0\": Step cannot be zero"),
            "{}",
            err("*/0 * * * *")
        );
        assert!(err("5/10 * * * *").contains("single number steps"), "{}", err("5/10 * * * *"));
        assert!(err("30-10 * * * *").contains("minute field \"30-10\""));
        assert!(err("a * * * *").contains("minute field \"a\""));
        assert!(err("@reboot").contains("unknown cron macro \"@reboot\""));
        assert_eq!(CronSchedule::parse(" 0 2 * * * ").unwrap().expr, " 0 2 * * * ");
    }
}
