//! The client-side request-weight budget: one per market, shared by every clone of a client (it
//! lives in an `Arc`), plus the 429 pause and the 418 ban of each market.
//!
//! Binance counts weight in fixed windows aligned to the wall-clock minute (spec §3.5). The budget
//! mirrors that: a request is charged to the window it is sent in, and — because the server counts
//! it when it *arrives* and the two clocks are never exactly equal — also to the neighbouring
//! window when it is sent within a small guard of a boundary. The `X-MBX-USED-WEIGHT-1M` header of
//! each answer corrects the count upwards (other processes on the same IP spend the same budget).
//! It never lets a request through that would take a window over the limit, so a client alone on
//! its IP never sees a 429.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::market::Market;

/// Weight of one futures klines-class request by its `limit` (spec §3.2): `[1,100)` 1,
/// `[100,500)` 2, `[500,1000]` 5, above 10.
///
/// ```
/// assert_eq!(dsm::rest::futures_klines_weight(99), 1);
/// assert_eq!(dsm::rest::futures_klines_weight(100), 2);
/// assert_eq!(dsm::rest::futures_klines_weight(1000), 5);
/// assert_eq!(dsm::rest::futures_klines_weight(1500), 10);
/// ```
pub fn futures_klines_weight(limit: u32) -> u32 {
    match limit {
        0..100 => 1,
        100..500 => 2,
        500..=1000 => 5,
        _ => 10,
    }
}

/// Weight of one klines-class request with `limit` on `market` (spot: always 2).
pub fn klines_weight(market: Market, limit: u32) -> u32 {
    if market.is_futures() {
        futures_klines_weight(limit)
    } else {
        2
    }
}

/// Weight of `exchangeInfo` (spot 20, futures 1).
pub(crate) fn exchange_info_weight(market: Market) -> u32 {
    if market.is_futures() { 1 } else { 20 }
}

/// Why a request may not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The market is banned until this local wall-clock time (ms).
    Banned { until_ms: i64 },
}

/// What [`WeightBudget::try_acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Charged; the windows the weight was charged to.
    Granted(Ticket),
    /// Not now: try again at this instant.
    WaitUntil(Instant),
}

/// The windows one request was charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    first: i64,
    last: i64,
}

#[derive(Debug, Default)]
struct MarketState {
    /// Weight used per window id.
    used: BTreeMap<i64, u32>,
    /// No request before this (after a 429).
    paused_until: Option<Instant>,
    /// Banned until (instant, local wall ms) after a 418.
    banned_until: Option<(Instant, i64)>,
}

/// The weight budget of all three markets.
#[derive(Debug)]
pub(crate) struct WeightBudget {
    limits: [u32; 3],
    window_ms: i64,
    guard_ms: i64,
    origin: Instant,
    origin_wall_ms: i64,
    state: [Mutex<MarketState>; 3],
}

fn idx(m: Market) -> usize {
    match m {
        Market::Spot => 0,
        Market::UsdM => 1,
        Market::CoinM => 2,
    }
}

impl WeightBudget {
    /// A budget with `spot` and `futures` weight per `window`.
    pub(crate) fn new(spot: u32, futures: u32, window: Duration) -> WeightBudget {
        let window_ms = (window.as_millis() as i64).max(1);
        // Requests sent this close to a window boundary count in both windows: the server may see
        // them on the other side (travel time, clock offset). 1/20 of the window, at most 1 s.
        let guard_ms = (window_ms / 20).min(1000);
        WeightBudget {
            limits: [spot, futures, futures],
            window_ms,
            guard_ms,
            origin: Instant::now(),
            origin_wall_ms: crate::time::now_ms(),
            state: Default::default(),
        }
    }

    fn wall_ms(&self, t: Instant) -> i64 {
        self.origin_wall_ms + t.saturating_duration_since(self.origin).as_millis() as i64
    }

    fn instant_at(&self, wall_ms: i64) -> Instant {
        self.origin + Duration::from_millis((wall_ms - self.origin_wall_ms).max(0) as u64)
    }

    fn lock(&self, m: Market) -> std::sync::MutexGuard<'_, MarketState> {
        self.state[idx(m)].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured limit of `market`.
    pub(crate) fn limit(&self, m: Market) -> u32 {
        self.limits[idx(m)]
    }

    /// Charges `weight` to `market` if every window it may land in has room.
    pub(crate) fn try_acquire(&self, m: Market, weight: u32) -> Result<Acquire, Refusal> {
        let now = Instant::now();
        let limit = self.limit(m);
        let mut st = self.lock(m);
        if let Some((until, until_ms)) = st.banned_until {
            if until > now {
                return Err(Refusal::Banned { until_ms });
            }
            st.banned_until = None;
        }
        if let Some(p) = st.paused_until {
            if p > now {
                return Ok(Acquire::WaitUntil(p));
            }
            st.paused_until = None;
        }
        let wall = self.wall_ms(now);
        let first = (wall - self.guard_ms).div_euclid(self.window_ms);
        let last = (wall + self.guard_ms).div_euclid(self.window_ms);
        st.used.retain(|id, _| *id >= first - 1);
        // A request heavier than the whole budget can only go into an empty window.
        let fits = |used: u32| used == 0 || used.saturating_add(weight) <= limit;
        if let Some(full) = (first..=last)
            .rev()
            .find(|id| !fits(st.used.get(id).copied().unwrap_or(0)))
        {
            // Wait until the full window is over and the guard after it has passed.
            let at = (full + 1) * self.window_ms + self.guard_ms + 1;
            return Ok(Acquire::WaitUntil(self.instant_at(at)));
        }
        for id in first..=last {
            *st.used.entry(id).or_default() += weight;
        }
        Ok(Acquire::Granted(Ticket { first, last }))
    }

    /// Records the server's count (`X-MBX-USED-WEIGHT-1M`) of an answer to a request charged by
    /// `ticket`. It is trusted only when the request and the answer fell in one window.
    pub(crate) fn observe(&self, m: Market, ticket: Ticket, server_used: u32) {
        let wall = self.wall_ms(Instant::now());
        let first = (wall - self.guard_ms).div_euclid(self.window_ms);
        let last = (wall + self.guard_ms).div_euclid(self.window_ms);
        if ticket.first == ticket.last && first == last && first == ticket.first {
            let mut st = self.lock(m);
            let used = st.used.entry(first).or_default();
            *used = (*used).max(server_used);
        }
    }

    /// After a 429: nothing goes to `market` before `until` (the server's `Retry-After`, which is
    /// authoritative: Binance bans an IP that sends anything earlier).
    pub(crate) fn pause(&self, m: Market, until: Instant) {
        let mut st = self.lock(m);
        st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
    }

    /// After a 418: `market` is banned for `retry_after`; returns the end of the ban (local ms).
    pub(crate) fn ban(&self, m: Market, retry_after: Duration) -> i64 {
        let now = Instant::now();
        let until = now + retry_after;
        let until_ms = self.wall_ms(until);
        let mut st = self.lock(m);
        match st.banned_until {
            Some((u, ms)) if u >= until => ms,
            _ => {
                st.banned_until = Some((until, until_ms));
                until_ms
            }
        }
    }

    /// Weight used in the current window of `market` (local count, corrected by the server's).
    pub(crate) fn used(&self, m: Market) -> u32 {
        let wall = self.wall_ms(Instant::now());
        let st = self.lock(m);
        st.used
            .get(&wall.div_euclid(self.window_ms))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_spec_brackets() {
        assert_eq!(klines_weight(Market::Spot, 1000), 2);
        assert_eq!(klines_weight(Market::Spot, 1), 2);
        assert_eq!(klines_weight(Market::UsdM, 1), 1);
        assert_eq!(klines_weight(Market::CoinM, 499), 2);
        assert_eq!(klines_weight(Market::UsdM, 500), 5);
        assert_eq!(klines_weight(Market::UsdM, 1001), 10);
        assert_eq!(exchange_info_weight(Market::Spot), 20);
        assert_eq!(exchange_info_weight(Market::CoinM), 1);
    }

    #[tokio::test]
    async fn budget_refuses_over_the_limit_and_frees_in_the_next_window() {
        let b = WeightBudget::new(10, 4, Duration::from_secs(3600));
        for _ in 0..5 {
            assert!(matches!(
                b.try_acquire(Market::Spot, 2),
                Ok(Acquire::Granted(_))
            ));
        }
        assert_eq!(b.used(Market::Spot), 10);
        let Ok(Acquire::WaitUntil(at)) = b.try_acquire(Market::Spot, 2) else {
            panic!("an exhausted window must make the caller wait");
        };
        assert!(at > Instant::now());
        // Markets are independent; futures have their own limit.
        assert!(matches!(
            b.try_acquire(Market::UsdM, 4),
            Ok(Acquire::Granted(_))
        ));
        assert!(matches!(
            b.try_acquire(Market::UsdM, 1),
            Ok(Acquire::WaitUntil(_))
        ));
        assert!(matches!(
            b.try_acquire(Market::CoinM, 4),
            Ok(Acquire::Granted(_))
        ));
    }

    #[tokio::test]
    async fn header_corrects_the_count_upwards_only() {
        let b = WeightBudget::new(100, 100, Duration::from_secs(3600));
        let Ok(Acquire::Granted(t)) = b.try_acquire(Market::Spot, 2) else {
            panic!("granted");
        };
        b.observe(Market::Spot, t, 50);
        assert_eq!(b.used(Market::Spot), 50);
        b.observe(Market::Spot, t, 3);
        assert_eq!(b.used(Market::Spot), 50);
    }

    #[tokio::test]
    async fn ban_refuses_and_pause_waits() {
        let b = WeightBudget::new(100, 100, Duration::from_secs(3600));
        let until = b.ban(Market::UsdM, Duration::from_secs(60));
        assert_eq!(
            b.try_acquire(Market::UsdM, 1),
            Err(Refusal::Banned { until_ms: until })
        );
        assert!(matches!(
            b.try_acquire(Market::Spot, 1),
            Ok(Acquire::Granted(_))
        ));
        b.pause(Market::Spot, Instant::now() + Duration::from_secs(5));
        assert!(matches!(
            b.try_acquire(Market::Spot, 1),
            Ok(Acquire::WaitUntil(_))
        ));
    }
}
