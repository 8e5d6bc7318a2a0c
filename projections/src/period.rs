//! Billing periods. The anchor is the instant of `subscribe`; period k runs
//! from anchor + k months to anchor + (k+1) months, where "+ n months" keeps
//! the anchor's time of day and clamps the day to the month's length. Each
//! start is computed from the anchor, never from the previous start, so a
//! Jan 31 anchor gives Feb 28 (29), Mar 31, Apr 30, May 31.

use chrono::{DateTime, Months, Utc};

fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).expect("ledger times are in range")
}

/// Start of period `k`, in microseconds.
pub fn period_start_us(anchor_us: i64, k: u32) -> i64 {
    instant(anchor_us).checked_add_months(Months::new(k)).expect("period start in range").timestamp_micros()
}

/// The period holding instant `t_us`; `None` before the anchor.
pub fn period_index(anchor_us: i64, t_us: i64) -> Option<u32> {
    if t_us < anchor_us {
        return None;
    }
    let (a, t) = (instant(anchor_us), instant(t_us));
    use chrono::Datelike;
    let months = (t.year() - a.year()) * 12 + t.month() as i32 - a.month() as i32;
    let mut k = months.max(0) as u32;
    while k > 0 && period_start_us(anchor_us, k) > t_us {
        k -= 1;
    }
    while period_start_us(anchor_us, k + 1) <= t_us {
        k += 1;
    }
    Some(k)
}

/// `[start, end)` of period `k`.
pub fn period_bounds_us(anchor_us: i64, k: u32) -> (i64, i64) {
    (period_start_us(anchor_us, k), period_start_us(anchor_us, k + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
    }

    fn day(us: i64) -> String {
        instant(us).format("%Y-%m-%dT%H:%M").to_string()
    }

    #[test]
    fn month_end_anchor_clamps_each_month_from_the_anchor() {
        let anchor = us("2026-01-31T00:00:00Z");
        let starts: Vec<String> = (0..5).map(|k| day(period_start_us(anchor, k))).collect();
        assert_eq!(
            starts,
            [
                "2026-01-31T00:00",
                "2026-02-28T00:00",
                "2026-03-31T00:00",
                "2026-04-30T00:00",
                "2026-05-31T00:00"
            ]
        );
    }

    #[test]
    fn leap_february_and_time_of_day() {
        let anchor = us("2028-01-30T15:45:00Z");
        assert_eq!(day(period_start_us(anchor, 1)), "2028-02-29T15:45");
        assert_eq!(day(period_start_us(anchor, 2)), "2028-03-30T15:45");
    }

    #[test]
    fn index_finds_the_period_holding_an_instant() {
        let anchor = us("2026-01-31T00:00:00Z");
        let check = |t: &str, k: Option<u32>| assert_eq!(period_index(anchor, us(t)), k, "{t}");
        check("2026-01-30T23:59:59Z", None);
        check("2026-01-31T00:00:00Z", Some(0));
        check("2026-02-27T23:59:59Z", Some(0));
        check("2026-02-28T00:00:00Z", Some(1));
        check("2026-03-30T23:59:59Z", Some(1));
        check("2026-03-31T00:00:00Z", Some(2));
        check("2027-01-31T00:00:00Z", Some(12));
        check("2027-01-30T00:00:00Z", Some(11));
    }
}
