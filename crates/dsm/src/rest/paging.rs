//! Window planning for klines: which `startTime`/`endTime`/`limit` requests return every candle of
//! `[start, end)` exactly once under Binance's selection rules (spec §3.3). Pure, no I/O.
//!
//! Each window is a half-open span `[start, end)` in which at most `limit` candles open, sent as
//! `startTime = start`, `endTime = end − 1` (Binance's bounds are inclusive on open time). Because
//! no window holds more candles than its limit, both rules select the whole window: spot and USD-M
//! ("first `limit` from startTime") and COIN-M ("last `limit` up to endTime"). COIN-M windows also
//! span at most `cm_max_window` (200 days). Windows of fixed intervals are arithmetic; `1M` steps
//! the calendar. Since the plan is complete up front, the windows can be fetched concurrently.
//!
//! If a page still comes back full (rows equal to its limit: candles off the grid, as in early
//! 2018 data), [`follow_up`] gives the rest of its window, which is fetched next.

use crate::market::{Interval, Market};
use crate::schema::GRID_ENFORCED_FROM;

/// One klines request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First open time asked for (`startTime`).
    pub start: i64,
    /// Exclusive end; `endTime = end − 1`.
    pub end: i64,
    /// `limit` to send (1 ..= the market's maximum).
    pub limit: u32,
}

/// Most candles one window of `interval` may hold on `market`.
fn per_window(market: Market, interval: Interval, cm_max_window_ms: i64) -> u32 {
    let max = market.max_klines_limit();
    if market == Market::CoinM {
        let fit = cm_max_window_ms / interval.max_millis();
        max.min(u32::try_from(fit).unwrap_or(u32::MAX)).max(1)
    } else {
        max
    }
}

/// The open time `n` candles after the aligned open `open`.
fn advance(interval: Interval, open: i64, n: u32) -> i64 {
    match interval.fixed_millis() {
        Some(len) => open.saturating_add(len.saturating_mul(i64::from(n))),
        None => (0..n).fold(open, |t, _| interval.next(t)),
    }
}

fn limit_for(interval: Interval, start: i64, end: i64, per: u32) -> u32 {
    let n = interval.count_in(start, end);
    u32::try_from(n).unwrap_or(u32::MAX).clamp(1, per)
}

/// Plans the windows of `[start, end)`, in ascending order.
pub(crate) fn plan(
    market: Market,
    interval: Interval,
    start: i64,
    end: i64,
    cm_max_window_ms: i64,
) -> Vec<Window> {
    let mut out = Vec::new();
    if start >= end {
        return out;
    }
    let per = per_window(market, interval, cm_max_window_ms);
    let first = interval.ceil(start);
    if first >= end && start >= GRID_ENFORCED_FROM {
        return out;
    }
    let mut ws = start;
    let mut boundary = first;
    while ws < end {
        boundary = advance(interval, boundary, per);
        let we = boundary.min(end);
        let mut s = ws;
        if market == Market::CoinM {
            // The first window may begin before the grid; keep its span within the limit.
            s = s.max(we - cm_max_window_ms);
        }
        out.push(Window {
            start: s,
            end: we,
            limit: limit_for(interval, s, we, per),
        });
        ws = we;
    }
    out
}

/// The rest of `w` still to fetch after a page that returned `rows` open times (ascending), or
/// `None` when the page was complete.
pub(crate) fn follow_up(
    market: Market,
    interval: Interval,
    w: &Window,
    opens: &[i64],
    cm_max_window_ms: i64,
) -> Option<Window> {
    if (opens.len() as u64) < u64::from(w.limit) {
        return None;
    }
    let (first, last) = (*opens.first()?, *opens.last()?);
    // Spot and USD-M return the first `limit` rows, COIN-M the last.
    let (s, e) = if market == Market::CoinM {
        (w.start, first)
    } else {
        (last + 1, w.end)
    };
    // Past the grid-enforcement date every candle is on the grid, so an empty grid count is final.
    if s >= e || (s >= GRID_ENFORCED_FROM && interval.count_in(s, e) == 0) {
        return None;
    }
    let (s, e) = if market == Market::CoinM {
        (s.max(e - cm_max_window_ms), e)
    } else {
        (s, e)
    };
    Some(Window {
        start: s,
        end: e,
        limit: per_window(market, interval, cm_max_window_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY_MS, MINUTE_MS};
    use proptest::prelude::*;

    const T0: i64 = 1_704_067_200_000; // 2024-01-01
    const CM200: i64 = 200 * DAY_MS;

    fn covered(ws: &[Window], interval: Interval, start: i64, end: i64) {
        // Windows tile [start', end) without overlap, start' <= the first candle, and each holds
        // at most its limit; then every candle of the range is in exactly one window.
        if interval.count_in(start, end) == 0 {
            assert!(ws.is_empty(), "{ws:?}");
            return;
        }
        assert!(ws[0].start >= start && ws[0].start <= interval.ceil(start));
        assert_eq!(ws[ws.len() - 1].end, end);
        for pair in ws.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "windows must touch");
        }
        for w in ws {
            assert!(
                interval.count_in(w.start, w.end) <= u64::from(w.limit),
                "{w:?}"
            );
        }
        let sum: u64 = ws.iter().map(|w| interval.count_in(w.start, w.end)).sum();
        assert_eq!(sum, interval.count_in(start, end));
    }

    #[test]
    fn spot_2500_minutes_are_three_pages_of_at_most_1000() {
        let ws = plan(Market::Spot, Interval::M1, T0, T0 + 2500 * MINUTE_MS, CM200);
        assert_eq!(ws.len(), 3);
        assert_eq!(
            ws.iter().map(|w| w.limit).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(ws[0].start, T0);
        assert_eq!(ws[1].start, T0 + 1000 * MINUTE_MS);
    }

    #[test]
    fn futures_pages_hold_1500_and_small_ranges_ask_small_limits() {
        let ws = plan(Market::UsdM, Interval::M1, T0, T0 + 3000 * MINUTE_MS, CM200);
        assert_eq!(ws.len(), 2);
        assert_eq!(ws[0].limit, 1500);
        let small = plan(
            Market::UsdM,
            Interval::M1,
            T0 + 1,
            T0 + 60 * MINUTE_MS,
            CM200,
        );
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].limit, 59);
    }

    #[test]
    fn coin_m_windows_never_exceed_200_days() {
        for interval in [
            Interval::D1,
            Interval::H4,
            Interval::D3,
            Interval::W1,
            Interval::Mo1,
        ] {
            let start = T0 - 3 * 365 * DAY_MS + 12345;
            let end = T0 + 7;
            let ws = plan(Market::CoinM, interval, start, end, CM200);
            for w in &ws {
                assert!(w.end - w.start <= CM200, "{interval}: {w:?}");
                assert!(w.limit <= 1500);
            }
            covered(&ws, interval, start, end);
        }
        let ws = plan(Market::CoinM, Interval::D1, T0, T0 + 400 * DAY_MS, CM200);
        assert_eq!(ws.len(), 2);
        assert_eq!(ws[0].limit, 200);
    }

    #[test]
    fn months_step_the_calendar() {
        let start = T0;
        let end = crate::time::parse_instant("2150-01-01").expect("valid");
        let ws = plan(Market::Spot, Interval::Mo1, start, end, CM200);
        assert_eq!(ws.len(), 2);
        assert_eq!(ws[0].limit, 1000);
        covered(&ws, Interval::Mo1, start, end);
    }

    #[test]
    fn follow_up_only_when_a_page_is_full_and_candles_remain() {
        let w = Window {
            start: T0,
            end: T0 + 10 * MINUTE_MS,
            limit: 10,
        };
        let all: Vec<i64> = (0..10).map(|i| T0 + i * MINUTE_MS).collect();
        assert_eq!(follow_up(Market::Spot, Interval::M1, &w, &all, CM200), None);
        assert_eq!(
            follow_up(Market::Spot, Interval::M1, &w, &all[..5], CM200),
            None
        );
        let w2 = Window { limit: 5, ..w };
        let next = follow_up(Market::Spot, Interval::M1, &w2, &all[..5], CM200).expect("rest");
        assert_eq!((next.start, next.end), (T0 + 4 * MINUTE_MS + 1, w.end));
        let back = follow_up(Market::CoinM, Interval::M1, &w2, &all[5..], CM200).expect("rest");
        assert_eq!((back.start, back.end), (T0, T0 + 5 * MINUTE_MS));
    }

    proptest! {
        #[test]
        fn plans_cover_every_candle_once(
            start in 1_520_000_000_000i64..1_800_000_000_000,
            len in 1i64..20_000_000_000,
            // (1s over the longest span is 20 million candles; 20 000 windows)
            idx in 0usize..16,
            m in 0usize..3,
        ) {
            let interval = Interval::ALL[idx];
            let market = Market::ALL[m];
            let ws = plan(market, interval, start, start + len, CM200);
            covered(&ws, interval, start, start + len);
            for w in &ws {
                prop_assert!(w.start < w.end);
                prop_assert!(w.limit >= 1 && w.limit <= market.max_klines_limit());
                if market == Market::CoinM { prop_assert!(w.end - w.start <= CM200); }
            }
        }
    }
}
