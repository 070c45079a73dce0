use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch (UTC).
pub fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// Days-from-civil (proleptic Gregorian, UTC midnight) in microseconds since the Unix epoch.
pub fn civil_to_micros(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 * 1_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_to_micros(1970, 1, 1), 0);
        assert_eq!(super::civil_to_micros(2024, 1, 15), 1_705_276_800 * 1_000_000);
        assert_eq!(super::civil_to_micros(2000, 3, 1), 951_868_800 * 1_000_000);
    }
}
