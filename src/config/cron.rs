//! Standard five-field cron expressions (`minute hour day-of-month month day-of-week`), evaluated in UTC.
//!
//! Each field accepts `*`, `N`, `N-M`, `*/S`, `N-M/S` and comma lists of those; months also take `JAN`-`DEC`
//! and days of the week `SUN`-`SAT` (0 and 7 are both Sunday). The macros `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` are accepted too. As in Vixie cron, when both
//! day fields are restricted (neither starts with `*`) a day matches if EITHER matches.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for values `min + index` (months) or `index` (weekdays).
    names: &'static [&'static str],
}

const MONTH_NAMES: &[&str] =
    &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const FIELDS: [FieldSpec; 5] = [
    FieldSpec { name: "minute", min: 0, max: 59, names: &[] },
    FieldSpec { name: "hour", min: 0, max: 23, names: &[] },
    FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[] },
    FieldSpec { name: "month", min: 1, max: 12, names: MONTH_NAMES },
    FieldSpec { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES },
];

/// A parsed cron schedule. `expr` is the expression as written; the parsed sets are private so that a
/// schedule can only come from [`CronSchedule::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub expr: String,
    /// Bit sets indexed by value: minutes 0-59, hours 0-23, days 1-31, months 1-12, weekdays 0-6.
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    day_star: bool,
    weekday_star: bool,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.expr)
    }
}

impl CronSchedule {
    /// Parses an expression; the error is a message naming the field and the part that is wrong.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        let trimmed = expr.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => {
                return Err(format!(
                    "unknown cron macro {trimmed:?}; expected @yearly, @annually, @monthly, @weekly, \
                     @daily, @midnight or @hourly, or five fields"
                ))
            }
            _ => trimmed,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "invalid cron expression {trimmed:?}: expected 5 fields (minute hour day-of-month month \
                 day-of-week), found {}",
                parts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for ((set, part), spec) in sets.iter_mut().zip(&parts).zip(&FIELDS) {
            *set = parse_field(part, spec).map_err(|reason| {
                format!("invalid cron expression {trimmed:?}: {} field {part:?}: {reason}", spec.name)
            })?;
        }
        // Sunday may be written 7; fold it onto 0.
        let weekdays = (sets[4] | (sets[4] >> 7)) & 0x7f;
        Ok(CronSchedule {
            expr: expr.to_string(),
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays,
            day_star: parts[2].starts_with('*'),
            weekday_star: parts[4].starts_with('*'),
        })
    }

    /// The first fire time strictly after `t`, in UTC at minute resolution; `None` when the schedule
    /// never fires within the next nine years (e.g. `0 0 31 2 *`; nine years covers
    /// February 29 across a skipped leap year such as 2100).
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).ok()?,
            Err(e) => {
                let before = e.duration();
                -i64::try_from(before.as_secs()).ok()? - i64::from(before.subsec_nanos() > 0)
            }
        };
        let start = secs.div_euclid(60) + 1;
        let first_day = start.div_euclid(1440);
        let first_minute = start.rem_euclid(1440);
        for day in first_day..first_day + 366 * 9 {
            if !self.day_matches(day) {
                continue;
            }
            let from = if day == first_day { first_minute } else { 0 };
            if let Some(minute_of_day) = self.first_time_from(from) {
                let fire = (day * 1440 + minute_of_day) * 60;
                return if fire >= 0 {
                    UNIX_EPOCH.checked_add(Duration::from_secs(fire.unsigned_abs()))
                } else {
                    UNIX_EPOCH.checked_sub(Duration::from_secs(fire.unsigned_abs()))
                };
            }
        }
        None
    }

    fn day_matches(&self, day: i64) -> bool {
        let (_, month, dom) = civil_from_days(day);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday = (day + 4).rem_euclid(7); // 1970-01-01 was a Thursday.
        let dom_ok = self.days & (1 << dom) != 0;
        let dow_ok = self.weekdays & (1 << weekday) != 0;
        if self.day_star || self.weekday_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// The first matching minute of the day at or after `from` (minutes since midnight).
    fn first_time_from(&self, from: i64) -> Option<i64> {
        let (from_hour, from_minute) = (from / 60, from % 60);
        (from_hour..24).filter(|h| self.hours & (1 << h) != 0).find_map(|h| {
            let floor = if h == from_hour { from_minute } else { 0 };
            let candidates = self.minutes & (u64::MAX << floor);
            (candidates != 0).then(|| h * 60 + i64::from(candidates.trailing_zeros()))
        })
    }
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let value = if let Ok(n) = text.parse::<u32>() {
        n
    } else if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        let offset = if spec.names.len() == 12 { spec.min } else { 0 };
        u32::try_from(i).map_err(|e| e.to_string())? + offset
    } else if spec.names.is_empty() {
        return Err(format!("{text:?} is not a number"));
    } else {
        let (first, last) = (spec.names[0], spec.names[spec.names.len() - 1]);
        return Err(format!("{text:?} is neither a number nor a name {first}-{last}"));
    };
    if value < spec.min || value > spec.max {
        return Err(format!("{value} is out of range {}-{}", spec.min, spec.max));
    }
    Ok(value)
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty item in a comma-separated list".to_string());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} in {item:?} is not a positive number"))?;
                if step == 0 || step > spec.max {
                    return Err(format!("step {step} in {item:?} must be between 1 and {}", spec.max));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (lo, hi) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if lo > hi {
                return Err(format!("range {range:?} runs backwards; write the smaller value first"));
            }
            (lo, hi)
        } else if step.is_some() {
            return Err(format!(
                "a step needs `*` or a range before `/`, e.g. */5 or {range}-{}/5",
                spec.max
            ));
        } else {
            let v = parse_value(range, spec)?;
            (v, v)
        };
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> SystemTime {
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    }

    fn next(expr: &str, from: SystemTime) -> Option<SystemTime> {
        CronSchedule::parse(expr).unwrap().next_after(from)
    }

    #[test]
    fn calendar_round_trip() {
        for d in [-800_000, -1, 0, 59, 11_016, 19_782, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(dd)), d);
        }
        assert_eq!(civil_from_days(19_737), (2024, 1, 15));
    }

    #[test]
    fn daily_at_two() {
        let t = at(2024, 1, 15, 10, 30, 0);
        assert_eq!(next("0 2 * * *", t), Some(at(2024, 1, 16, 2, 0, 0)));
        assert_eq!(next("0 2 * * *", at(2024, 1, 15, 1, 59, 59)), Some(at(2024, 1, 15, 2, 0, 0)));
        // Strictly after: exactly at the fire time goes to the next day.
        assert_eq!(next("0 2 * * *", at(2024, 1, 15, 2, 0, 0)), Some(at(2024, 1, 16, 2, 0, 0)));
        assert_eq!(next("@daily", t), Some(at(2024, 1, 16, 0, 0, 0)));
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
        // A `*/2` day-of-month counts as unrestricted, so both must match (Vixie cron rule).
        assert_eq!(next("0 0 */2 * 1", at(2024, 1, 1, 0, 0, 0)), Some(at(2024, 1, 15, 0, 0, 0)));
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(next("0 0 29 2 *", at(2023, 3, 1, 0, 0, 0)), Some(at(2024, 2, 29, 0, 0, 0)));
        assert_eq!(next("0 0 29 2 *", at(2096, 3, 1, 0, 0, 0)), Some(at(2104, 2, 29, 0, 0, 0)));
        assert_eq!(next("0 0 31 2 *", at(2024, 1, 1, 0, 0, 0)), None);
        assert_eq!(next("0 0 31 4,6 *", at(2024, 1, 1, 0, 0, 0)), None);
        assert_eq!(next("30 12 * * *", at(1969, 12, 31, 23, 0, 0)), Some(at(1970, 1, 1, 12, 30, 0)));
        assert_eq!(next("0 0 * * *", at(1960, 5, 5, 5, 5, 5)), Some(at(1960, 5, 6, 0, 0, 0)));
    }

    #[test]
    fn errors_name_the_field_and_part() {
        let err = |e: &str| CronSchedule::parse(e).unwrap_err();
        assert!(
            err("0 25 * * *").contains("hour field \"25\": 25 is out of range 0-23"),
            "{}",
            err("0 25 * * *")
        );
        assert!(err("60 * * * *").contains("minute field"));
        assert!(err("* * 0 * *").contains("day-of-month field \"0\""));
        assert!(err("* * * 13 *").contains("month field"));
        assert!(err("* * * FOO *").contains("neither a number nor a name JAN-DEC"));
        assert!(err("* * * * 8").contains("day-of-week field"));
        assert!(err("* * * *").contains("expected 5 fields"));
        assert!(err("* * * * * *").contains("found 6"));
        assert!(err("*/0 * * * *").contains("step 0"));
        assert!(err("5/10 * * * *").contains("a step needs"));
        assert!(err("30-10 * * * *").contains("backwards"));
        assert!(err("1,,2 * * * *").contains("empty item"));
        assert!(err("a * * * *").contains("not a number"));
        assert!(err("@reboot").contains("unknown cron macro"));
    }
}
