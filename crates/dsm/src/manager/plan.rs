//! Planning: which parts of a request come from the cache, the Vision archive and the REST API.
//!
//! Pure functions of the request, the cache's coverage, the clock and what the manager has learnt
//! about Vision's publication frontier. No I/O happens here, so every routing decision is unit-tested.

use super::request::SourcePolicy;
use crate::market::{DataKind, Interval};
use crate::time::{TimeRange, day_floor, month_floor, next_month};
use crate::vision::has_daily_files;

/// The inputs of one symbol's plan.
#[derive(Debug, Clone)]
pub(crate) struct PlanInput<'a> {
    /// Parts of the (already clamped) request the cache does not cover.
    pub missing: &'a [TimeRange],
    /// Which sources may be used.
    pub policy: SourcePolicy,
    /// The data kind.
    pub kind: DataKind,
    /// The interval, for kline-class kinds.
    pub interval: Option<Interval>,
    /// Data before this instant is expected to be published on Vision (aligned to a file period).
    pub vision_until: i64,
    /// Whether REST may be asked: the policy allows it and REST serves the kind
    /// (`exec::rest_allowed`).
    pub rest_allowed: bool,
}

/// Where each missing part will come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Ranges to take from Vision, aligned to file periods (days, or months for monthly-only data).
    pub vision: Vec<TimeRange>,
    /// Ranges to take from REST.
    pub rest: Vec<TimeRange>,
    /// Ranges no allowed source can supply (reported to the caller, never invented).
    pub unavailable: Vec<TimeRange>,
}

/// The instant before which Vision files are expected to be published, given the clock, the
/// publication delay and the frontier learnt from recent 404s (the first day found missing).
pub(crate) fn vision_until(
    kind: DataKind,
    interval: Option<Interval>,
    now: i64,
    delay_ms: i64,
    frontier: Option<i64>,
) -> i64 {
    let published = now - delay_ms;
    let until = if !has_daily_files(kind, interval) {
        // A month's file appears after the month ends (plus the delay).
        month_floor(published)
    } else {
        day_floor(published)
    };
    match frontier {
        Some(f) if f < until => {
            if !has_daily_files(kind, interval) {
                month_floor(f)
            } else {
                day_floor(f)
            }
        }
        _ => until,
    }
}

/// Widens `r` to whole file periods (UTC days, or months for monthly-only data).
fn align_to_files(r: TimeRange, monthly: bool) -> TimeRange {
    let (start, end) = if monthly {
        let end = if month_floor(r.end()) == r.end() {
            r.end()
        } else {
            next_month(r.end())
        };
        (month_floor(r.start()), end)
    } else {
        let end_floor = day_floor(r.end());
        let end = if end_floor == r.end() {
            r.end()
        } else {
            end_floor + crate::time::DAY_MS
        };
        (day_floor(r.start()), end)
    };
    TimeRange::new(start, end).unwrap_or(r)
}

/// Routes every missing part to Vision, REST, or "unavailable".
pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    let monthly = !has_daily_files(input.kind, input.interval);
    let vision_allowed = input.policy.uses_vision();
    let rest_allowed = input.rest_allowed;
    for m in input.missing {
        if input.policy == SourcePolicy::Cache {
            out.unavailable.push(*m);
            continue;
        }
        let (old, recent) = split_at(*m, input.vision_until);
        if let Some(old) = old {
            if vision_allowed {
                out.vision.push(align_to_files(old, monthly));
            } else if rest_allowed {
                out.rest.push(old);
            } else {
                out.unavailable.push(old);
            }
        }
        if let Some(recent) = recent {
            if rest_allowed {
                out.rest.push(recent);
            } else {
                out.unavailable.push(recent);
            }
        }
    }
    out.vision = TimeRange::merge_all(out.vision);
    out.rest = TimeRange::merge_all(out.rest);
    out.unavailable = TimeRange::merge_all(out.unavailable);
    out
}

/// Splits `r` at `t` into the part before and the part from `t` on.
fn split_at(r: TimeRange, t: i64) -> (Option<TimeRange>, Option<TimeRange>) {
    (
        TimeRange::new(r.start(), r.end().min(t)).ok(),
        TimeRange::new(r.start().max(t), r.end()).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;
    use crate::time::{DAY_MS, HOUR_MS};

    fn t(s: &str) -> i64 {
        parse_instant(s).expect("valid test time")
    }

    fn r(a: &str, b: &str) -> TimeRange {
        TimeRange::new(t(a), t(b)).expect("valid test range")
    }

    fn input(missing: &[TimeRange], policy: SourcePolicy, until: i64) -> PlanInput<'_> {
        PlanInput {
            missing,
            policy,
            kind: DataKind::Klines,
            interval: Some(Interval::M1),
            vision_until: until,
            rest_allowed: policy.uses_rest(),
        }
    }

    #[test]
    fn old_data_goes_to_vision_and_recent_data_to_rest() {
        let missing = [r("2024-01-10T12:00:00Z", "2024-03-05T06:00:00Z")];
        let p = plan(&input(&missing, SourcePolicy::Auto, t("2024-03-04")));
        // Vision gets whole days: the partial first day is widened to its file.
        assert_eq!(p.vision, vec![r("2024-01-10", "2024-03-04")]);
        assert_eq!(p.rest, vec![r("2024-03-04", "2024-03-05T06:00:00Z")]);
        assert!(p.unavailable.is_empty());
    }

    #[test]
    fn policies_restrict_sources() {
        let missing = [r("2024-01-01", "2024-01-03"), r("2024-03-01", "2024-03-02")];
        let until = t("2024-02-01");
        let cache = plan(&input(&missing, SourcePolicy::Cache, until));
        assert_eq!(
            cache,
            Plan {
                unavailable: missing.to_vec(),
                ..Plan::default()
            }
        );

        let vision = plan(&input(&missing, SourcePolicy::Vision, until));
        assert_eq!(vision.vision, vec![missing[0]]);
        assert!(vision.rest.is_empty());
        // Vision-only never asks for files that cannot be published yet.
        assert_eq!(vision.unavailable, vec![missing[1]]);

        let rest = plan(&input(&missing, SourcePolicy::Rest, until));
        assert_eq!(rest.rest, missing.to_vec());
        assert!(rest.vision.is_empty());
    }

    #[test]
    fn kinds_rest_cannot_serve_are_unavailable_when_recent() {
        let missing = [r("2024-01-30", "2024-02-02")];
        let mut i = input(&missing, SourcePolicy::Auto, t("2024-02-01"));
        i.kind = DataKind::Trades;
        i.interval = None;
        i.rest_allowed = false;
        let p = plan(&i);
        assert_eq!(p.vision, vec![r("2024-01-30", "2024-02-01")]);
        assert_eq!(p.unavailable, vec![r("2024-02-01", "2024-02-02")]);
    }

    #[test]
    fn vision_until_follows_publication_and_the_learnt_frontier() {
        let now = t("2024-03-10T05:00:00Z");
        // Daily files for a day appear the next day after the delay: with 36 h, Mar 8 is not yet due.
        assert_eq!(
            vision_until(
                DataKind::Klines,
                Some(Interval::M1),
                now,
                36 * HOUR_MS,
                None
            ),
            t("2024-03-08")
        );
        // A recent 404 on Mar 5 moves the frontier back so Mar 5 onwards goes to REST.
        let f = Some(t("2024-03-05"));
        assert_eq!(
            vision_until(DataKind::Klines, Some(Interval::M1), now, 36 * HOUR_MS, f),
            t("2024-03-05")
        );
        // Funding is monthly-only: February's file is due, March's is not.
        assert_eq!(
            vision_until(DataKind::FundingRate, None, now, DAY_MS, None),
            t("2024-03-01")
        );
        assert_eq!(
            vision_until(DataKind::Klines, Some(Interval::W1), now, DAY_MS, None),
            t("2024-03-01")
        );
    }

    #[test]
    fn monthly_only_data_is_widened_to_months() {
        let missing = [r("2024-01-15", "2024-02-10")];
        let mut i = input(&missing, SourcePolicy::Auto, t("2024-03-01"));
        i.kind = DataKind::FundingRate;
        i.interval = None;
        let p = plan(&i);
        assert_eq!(p.vision, vec![r("2024-01-01", "2024-03-01")]);
    }
}
