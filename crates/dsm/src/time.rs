//! Time in dsm: UTC instants as milliseconds since the Unix epoch, and the half-open [`TimeRange`].
//!
//! Every range in dsm is `[start, end)` on open time, UTC: a row belongs to a range when
//! `start <= open_time < end`. This module owns that rule and the calendar arithmetic (days, months)
//! that the archive layout and the cache partitions need. It never reads the clock itself except in
//! [`now_ms`], so everything else is deterministic and testable.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// A second, a minute, an hour, a day and a week in milliseconds.
pub(crate) const SECOND_MS: i64 = 1_000;
pub(crate) const MINUTE_MS: i64 = 60 * SECOND_MS;
pub(crate) const HOUR_MS: i64 = 60 * MINUTE_MS;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;
pub(crate) const WEEK_MS: i64 = 7 * DAY_MS;

/// A time or range that is not valid: the bottom of dsm's error ladder (wrapped by
/// [`crate::InputError::Time`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// `start >= end`.
    #[error("empty time range: start {} must be before end {}", format_ms(*start), format_ms(*end))]
    EmptyRange {
        /// Start (ms).
        start: i64,
        /// End (ms).
        end: i64,
    },
    /// Unparseable time.
    #[error("invalid time {input:?}: {reason}")]
    InvalidTime {
        /// The text given.
        input: String,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// 00:00 UTC of the day that contains `ts`.
pub fn day_floor(ts: i64) -> i64 {
    ts - ts.rem_euclid(DAY_MS)
}

/// 00:00 UTC on the 1st of the month that contains `ts`.
pub fn month_floor(ts: i64) -> i64 {
    let d = to_datetime(ts);
    month_start(d.year(), d.month())
}

/// 00:00 UTC on the 1st of the month after the one that contains `ts`.
pub fn next_month(ts: i64) -> i64 {
    let d = to_datetime(ts);
    if d.month() == 12 {
        month_start(d.year() + 1, 1)
    } else {
        month_start(d.year(), d.month() + 1)
    }
}

/// 00:00 UTC on January 1st of the year that contains `ts`.
pub fn year_floor(ts: i64) -> i64 {
    month_start(to_datetime(ts).year(), 1)
}

/// 00:00 UTC on the 1st of `month` (1-12) of `year`.
pub fn month_start(year: i32, month: u32) -> i64 {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(0, |d| d.timestamp_millis())
}

/// Converts milliseconds since the epoch to a UTC date-time (clamped to chrono's range).
pub fn to_datetime(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ts).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Formats `ts` as RFC 3339 UTC with millisecond precision, e.g. `2024-01-01T00:00:00.000Z`.
pub fn format_ms(ts: i64) -> String {
    to_datetime(ts).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a user-supplied instant: RFC 3339 (`2024-01-01T12:00:00Z`), a date (`2024-01-01`, meaning
/// 00:00 UTC), or epoch milliseconds (`1704067200000`).
///
/// Epoch values that look like seconds (10 digits or fewer) are rejected: passing seconds where
/// milliseconds are expected silently asks for 1970.
///
/// ```
/// use dsm::time::parse_instant;
/// assert_eq!(parse_instant("2024-01-01").unwrap(), 1_704_067_200_000);
/// assert_eq!(parse_instant("2024-01-01T00:00:00+01:00").unwrap(), 1_704_063_600_000);
/// assert_eq!(parse_instant("1704067200000").unwrap(), 1_704_067_200_000);
/// assert!(parse_instant("1704067200").is_err());
/// ```
pub fn parse_instant(s: &str) -> Result<i64, TimeError> {
    let s = s.trim();
    let bad = |reason: &'static str| TimeError::InvalidTime {
        input: s.to_owned(),
        reason,
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if s.len() <= 10 {
            return Err(bad(
                "it looks like epoch seconds; give epoch milliseconds (13 digits)",
            ));
        }
        if s.len() > 13 {
            return Err(bad("epoch values must be milliseconds (13 digits)"));
        }
        return s.parse::<i64>().map_err(|_| bad("not a number"));
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis()));
    }
    Err(bad(
        "use RFC 3339 (2024-01-01T00:00:00Z), a date (2024-01-01) or epoch milliseconds",
    ))
}

/// A half-open UTC time range `[start, end)` in milliseconds since the epoch, with `start < end`.
///
/// ```
/// use dsm::TimeRange;
/// let r = TimeRange::new(1_704_067_200_000, 1_704_153_600_000).unwrap();
/// assert!(r.contains(1_704_067_200_000));
/// assert!(!r.contains(1_704_153_600_000)); // the end is excluded
/// assert!(TimeRange::new(5, 5).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeRange {
    start: i64,
    end: i64,
}

impl TimeRange {
    /// A range `[start, end)`; fails unless `start < end`.
    pub fn new(start: i64, end: i64) -> Result<TimeRange, TimeError> {
        if start >= end {
            return Err(TimeError::EmptyRange { start, end });
        }
        Ok(TimeRange { start, end })
    }

    /// A range from two UTC date-times.
    pub fn from_datetimes(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<TimeRange, TimeError> {
        TimeRange::new(start.timestamp_millis(), end.timestamp_millis())
    }

    /// Inclusive start.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Exclusive end.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Length in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.end - self.start
    }

    /// Whether `ts` lies in `[start, end)`.
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether the two ranges share at least one instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The common part of the two ranges, if any.
    pub fn intersect(&self, other: &TimeRange) -> Option<TimeRange> {
        TimeRange::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &TimeRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The UTC days (as `[00:00, next 00:00)` ranges) that overlap this range, in order.
    pub fn days(&self) -> impl Iterator<Item = TimeRange> + '_ {
        let first = day_floor(self.start);
        (0..)
            .map(move |i| first + i * DAY_MS)
            .take_while(move |d| *d < self.end)
            .map(|d| TimeRange {
                start: d,
                end: d + DAY_MS,
            })
    }

    /// The calendar months (as `[1st, next 1st)` ranges) that overlap this range, in order.
    pub fn months(&self) -> impl Iterator<Item = TimeRange> + '_ {
        let mut m = month_floor(self.start);
        std::iter::from_fn(move || {
            (m < self.end).then(|| {
                let r = TimeRange {
                    start: m,
                    end: next_month(m),
                };
                m = r.end;
                r
            })
        })
    }

    /// The parts of this range not covered by any of `covered` (which may be unsorted and overlap).
    ///
    /// ```
    /// use dsm::TimeRange;
    /// let r = TimeRange::new(0, 100).unwrap();
    /// let gaps = r.subtract(&[TimeRange::new(10, 20).unwrap(), TimeRange::new(15, 30).unwrap()]);
    /// assert_eq!(gaps, vec![TimeRange::new(0, 10).unwrap(), TimeRange::new(30, 100).unwrap()]);
    /// ```
    pub fn subtract(&self, covered: &[TimeRange]) -> Vec<TimeRange> {
        let mut cs: Vec<TimeRange> = covered.iter().filter_map(|c| c.intersect(self)).collect();
        cs.sort();
        let mut out = Vec::new();
        let mut cursor = self.start;
        for c in cs {
            if c.start > cursor {
                out.push(TimeRange {
                    start: cursor,
                    end: c.start,
                });
            }
            cursor = cursor.max(c.end);
        }
        if cursor < self.end {
            out.push(TimeRange {
                start: cursor,
                end: self.end,
            });
        }
        out
    }

    /// Sorts and merges touching or overlapping ranges.
    pub fn merge_all(ranges: Vec<TimeRange>) -> Vec<TimeRange> {
        TimeRange::merge_within(ranges, 0)
    }

    /// Sorts and merges ranges less than `max_gap` ms apart (touching or overlapping ones too),
    /// spanning the gaps between them: fewer, longer ranges, e.g. to ask for in fewer requests.
    ///
    /// ```
    /// use dsm::TimeRange;
    /// let r = |a, b| TimeRange::new(a, b).unwrap();
    /// let holes = vec![r(50, 60), r(0, 10), r(200, 210)];
    /// assert_eq!(TimeRange::merge_within(holes.clone(), 40), vec![r(0, 60), r(200, 210)]);
    /// assert_eq!(TimeRange::merge_all(holes).len(), 3);
    /// ```
    pub fn merge_within(mut ranges: Vec<TimeRange>, max_gap: i64) -> Vec<TimeRange> {
        ranges.sort();
        let mut out: Vec<TimeRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match out.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(max_gap.max(0)) => {
                    last.end = last.end.max(r.end)
                }
                _ => out.push(r),
            }
        }
        out
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", format_ms(self.start), format_ms(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn months_and_days_cover_the_range_exactly() {
        let r = TimeRange::new(
            parse_instant("2024-01-31T12:00:00Z").unwrap(),
            parse_instant("2024-03-01").unwrap(),
        )
        .unwrap();
        let months: Vec<_> = r.months().collect();
        assert_eq!(months.len(), 2);
        assert_eq!(months[1].start(), parse_instant("2024-02-01").unwrap());
        assert_eq!(months[1].end(), parse_instant("2024-03-01").unwrap());
        // Leap year: 30 days from Jan 31 through Feb 29.
        assert_eq!(r.days().count(), 30);
    }

    #[test]
    fn parse_instant_rejects_garbage_with_guidance() {
        let err = parse_instant("yesterday").unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        assert!(parse_instant("2024-13-01").is_err());
        assert_eq!(parse_instant("2024-02-29").unwrap(), 1_709_164_800_000);
    }

    proptest! {
        #[test]
        fn subtract_and_covered_partition_the_range(
            start in 0i64..1000, len in 1i64..1000,
            cov in proptest::collection::vec((0i64..2000, 1i64..300), 0..6)
        ) {
            let r = TimeRange::new(start, start + len).unwrap();
            let covered: Vec<TimeRange> = cov.iter().map(|(s, l)| TimeRange::new(*s, s + l).unwrap()).collect();
            let gaps = r.subtract(&covered);
            for t in r.start()..r.end() {
                let in_gap = gaps.iter().any(|g| g.contains(t));
                let in_cov = covered.iter().any(|c| c.contains(t));
                prop_assert!(in_gap != in_cov, "t={} gap={} cov={}", t, in_gap, in_cov);
            }
            for w in gaps.windows(2) { prop_assert!(w[0].end() < w[1].start()); }
        }

        #[test]
        fn month_floor_and_next_month_bracket(ts in 0i64..4_102_444_800_000) {
            let m = month_floor(ts);
            prop_assert!(m <= ts && ts < next_month(m));
            prop_assert_eq!(to_datetime(m).day(), 1);
            prop_assert_eq!(day_floor(m), m);
        }

        #[test]
        fn intersect_is_contained_in_both(a in 0i64..100, al in 1i64..100, b in 0i64..100, bl in 1i64..100) {
            let x = TimeRange::new(a, a + al).unwrap();
            let y = TimeRange::new(b, b + bl).unwrap();
            match x.intersect(&y) {
                Some(i) => { prop_assert!(x.covers(&i) && y.covers(&i)); prop_assert!(x.overlaps(&y)); }
                None => prop_assert!(!x.overlaps(&y)),
            }
        }
    }
}
