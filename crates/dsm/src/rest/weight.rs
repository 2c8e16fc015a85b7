//! The client-side request-weight budget: one per market, shared by every clone of a client (it
//! lives in an `Arc`) and — through a small state file per market in a directory (the cache's) —
//! by every dsm process on the machine, plus the 429 pause and the 418 ban of each market.
//!
//! Binance counts weight per IP in fixed windows aligned to the wall clock (spec §3.5). The budget
//! mirrors that: a request is charged before it is sent to the window it is sent in, and — because
//! the server counts it when it *arrives* and the two clocks are never exactly equal — also to the
//! neighbouring window when it is sent within a small guard of a boundary. Its limit is the
//! server's own (`exchangeInfo.rateLimits`, learnt once a day and remembered in the state file)
//! less a safety margin, unless the user sets one. The used-weight header of each answer corrects
//! the count upwards (other software on the same IP spends the same budget). The first 429 pauses
//! the market for every task and process until its `Retry-After` has passed, then the market runs at
//! half its limit for a few windows; a 418 ban is remembered until it ends.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::market::Market;
use crate::time::now_ms;

/// Share (percent) of a server-given limit the budget spends; the rest is left for other software
/// on the IP and for requests the server counts in a window other than the one they were sent in.
const MARGIN_PERCENT: u64 = 90;
/// After a 429 the market runs at this share (percent) of its limit ...
const SLOW_PERCENT: u64 = 50;
/// ... for this many windows.
const SLOW_WINDOWS: i64 = 5;
/// How long a learnt server limit is trusted before `exchangeInfo` is asked again.
pub(crate) const LIMIT_TTL_MS: i64 = 86_400_000;

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

/// A market's `REQUEST_WEIGHT` limit as the server states it in `exchangeInfo.rateLimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerLimit {
    /// Weight allowed per window.
    pub weight: u32,
    /// Window length (ms).
    pub window_ms: i64,
    /// When it was learnt (ms since the epoch).
    pub learned_ms: i64,
}

impl Ticket {
    /// The window length the request was charged in (ms).
    pub(crate) fn window_ms(&self) -> i64 {
        self.window_ms
    }
}

/// Why a request may not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The market is banned until this wall-clock time (ms).
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
    window_ms: i64,
}

/// One market's state: what the state file holds. Times are wall-clock ms, shared by processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MarketState {
    /// The server's limit, when learnt.
    #[serde(default)]
    learned: Option<ServerLimit>,
    /// The window length `used` is counted in.
    #[serde(default)]
    window_ms: i64,
    /// Weight used per window id.
    #[serde(default)]
    used: BTreeMap<i64, u32>,
    /// No request before this (after a 429).
    #[serde(default)]
    paused_until_ms: Option<i64>,
    /// Half the limit until this (after a 429).
    #[serde(default)]
    slow_until_ms: Option<i64>,
    /// Banned until this (after a 418).
    #[serde(default)]
    banned_until_ms: Option<i64>,
}

/// The state files of the three markets in one directory, locked per market across processes.
#[derive(Debug)]
struct StateFiles {
    dir: PathBuf,
    /// Set after the first failure: the budget then lives in memory only (one warning).
    broken: AtomicBool,
}

impl StateFiles {
    fn paths(&self, m: Market) -> (PathBuf, PathBuf) {
        let name = m.as_str();
        (
            self.dir.join(format!("{name}.json")),
            self.dir.join(format!("{name}.lock")),
        )
    }

    /// Runs `f` on `m`'s state as stored, under the market's file lock, and stores the result;
    /// `mem` keeps a copy. When the directory cannot be used, `f` runs on `mem` alone.
    fn update<T>(
        &self,
        m: Market,
        mem: &mut MarketState,
        f: impl FnOnce(&mut MarketState) -> T,
    ) -> T {
        if self.broken.load(Ordering::Relaxed) {
            return f(mem);
        }
        let (mut st, lock) = match self.load(m) {
            Ok(x) => x,
            Err(e) => {
                self.fail(&e);
                return f(mem);
            }
        };
        // What this process knows and the file does not (it was removed, say) is kept.
        merge_into(&mut st, mem);
        let out = f(&mut st);
        if let Err(e) = self.store(m, &st) {
            self.fail(&e);
        }
        drop(lock);
        *mem = st;
        out
    }

    fn load(&self, m: Market) -> std::io::Result<(MarketState, std::fs::File)> {
        let (state, lock) = self.paths(m);
        std::fs::create_dir_all(&self.dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)?;
        lock.lock()?;
        let mut text = Vec::new();
        match std::fs::File::open(&state) {
            // A state file is a few hundred bytes; read at most 1 MiB of anything else.
            Ok(file) => {
                file.take(1 << 20).read_to_end(&mut text)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok((serde_json::from_slice(&text).unwrap_or_default(), lock))
    }

    fn store(&self, m: Market, st: &MarketState) -> std::io::Result<()> {
        let (state, _) = self.paths(m);
        let tmp = state.with_extension(format!("json.{}.tmp", std::process::id()));
        let mut w = std::fs::File::create(&tmp)?;
        w.write_all(&serde_json::to_vec(st).map_err(std::io::Error::other)?)?;
        drop(w);
        std::fs::rename(&tmp, &state)
    }

    fn fail(&self, e: &std::io::Error) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "cannot keep the REST weight budget and bans in this directory; keeping them in memory (other dsm processes on this IP are not counted); use --cache-dir to choose a writable directory"
            );
        }
    }
}

/// Keeps in `st` (the stored state) everything `mem` knows that is stricter or newer.
fn merge_into(st: &mut MarketState, mem: &MarketState) {
    let later = |a: Option<i64>, b: Option<i64>| a.max(b);
    st.paused_until_ms = later(st.paused_until_ms, mem.paused_until_ms);
    st.slow_until_ms = later(st.slow_until_ms, mem.slow_until_ms);
    st.banned_until_ms = later(st.banned_until_ms, mem.banned_until_ms);
    if st.window_ms == mem.window_ms {
        for (id, w) in &mem.used {
            let u = st.used.entry(*id).or_default();
            *u = (*u).max(*w);
        }
    }
    if let Some(l) = mem.learned
        && st.learned.is_none_or(|s| s.learned_ms < l.learned_ms)
    {
        st.learned = Some(l);
    }
}

/// The weight budget of all three markets.
#[derive(Debug)]
pub(crate) struct WeightBudget {
    /// The limits assumed until the server's is known (Binance's own), per market.
    defaults: [u32; 4],
    /// The window assumed until the server's is known.
    default_window_ms: i64,
    /// The user's limit: used as given (no margin), instead of the server's.
    fixed: Option<u32>,
    state: [Mutex<MarketState>; 4],
    files: Option<StateFiles>,
}

/// The index of `m` in per-market arrays.
pub(crate) fn market_index(m: Market) -> usize {
    match m {
        Market::Spot => 0,
        Market::UsdM => 1,
        Market::CoinM => 2,
        Market::Option => 3,
    }
}

/// The instant at wall-clock time `ms`.
fn instant_at(ms: i64) -> Instant {
    Instant::now() + Duration::from_millis((ms - now_ms()).max(0) as u64)
}

/// Requests sent this close to a window boundary count in both windows: the server may see them on
/// the other side (travel time, clock offset). 1/20 of the window, at most 1 s.
fn guard_ms(window_ms: i64) -> i64 {
    (window_ms / 20).min(1000)
}

impl WeightBudget {
    /// A budget assuming `spot` and `futures` weight per `window` until the server's limit is
    /// learnt, or `fixed` per window whatever the server says; shared with other processes through
    /// `dir` when given.
    pub(crate) fn new(
        spot: u32,
        futures: u32,
        window: Duration,
        fixed: Option<u32>,
        dir: Option<PathBuf>,
    ) -> WeightBudget {
        WeightBudget {
            defaults: [spot, futures, futures, futures],
            default_window_ms: (window.as_millis() as i64).max(1),
            fixed,
            state: Default::default(),
            files: dir.map(|dir| StateFiles {
                dir,
                broken: AtomicBool::new(false),
            }),
        }
    }

    /// Runs `f` on `m`'s state (the shared one when there is a state directory).
    fn with<T>(&self, m: Market, f: impl FnOnce(&mut MarketState) -> T) -> T {
        let mut mem = self.state[market_index(m)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &self.files {
            Some(files) => files.update(m, &mut mem, f),
            None => f(&mut mem),
        }
    }

    /// The limit and window in force for `m` at `now`.
    fn limit_of(&self, m: Market, st: &MarketState, now: i64) -> (u32, i64) {
        // A limit learnt more than a day ago is asked again, and used until then: the server's
        // last word is a better guess than the documented limit.
        let learned = st.learned.filter(|l| l.weight > 0 && l.window_ms > 0);
        let window_ms = learned.map_or(self.default_window_ms, |l| l.window_ms);
        let mut limit = match (self.fixed, learned) {
            (Some(n), _) => u64::from(n),
            (None, Some(l)) => u64::from(l.weight) * MARGIN_PERCENT / 100,
            (None, None) => u64::from(self.defaults[market_index(m)]) * MARGIN_PERCENT / 100,
        };
        if st.slow_until_ms.is_some_and(|s| s > now) {
            limit = limit * SLOW_PERCENT / 100;
        }
        (limit.clamp(1, u64::from(u32::MAX)) as u32, window_ms)
    }

    /// The limit and window in force for `m` now.
    pub(crate) fn limit(&self, m: Market) -> (u32, i64) {
        let now = now_ms();
        self.with(m, |st| self.limit_of(m, st, now))
    }

    /// Whether `m`'s limit is settled: set by the user, or learnt from the server less than a day
    /// ago (by this process or another sharing the state directory).
    pub(crate) fn knows_limit(&self, m: Market) -> bool {
        let now = now_ms();
        self.fixed.is_some()
            || self.with(m, |st| {
                st.learned
                    .is_some_and(|l| now - l.learned_ms < LIMIT_TTL_MS)
            })
    }

    /// Records the server's limit of `m`.
    pub(crate) fn learn(&self, m: Market, limit: ServerLimit) {
        self.with(m, |st| st.learned = Some(limit));
    }

    /// Charges `weight` to `market` if every window it may land in has room.
    pub(crate) fn try_acquire(&self, m: Market, weight: u32) -> Result<Acquire, Refusal> {
        let now = now_ms();
        self.with(m, |st| {
            if let Some(until_ms) = st.banned_until_ms {
                if until_ms > now {
                    return Err(Refusal::Banned { until_ms });
                }
                st.banned_until_ms = None;
            }
            if let Some(p) = st.paused_until_ms {
                if p > now {
                    return Ok(Acquire::WaitUntil(instant_at(p)));
                }
                st.paused_until_ms = None;
            }
            let (limit, window_ms) = self.limit_of(m, st, now);
            if st.window_ms != window_ms {
                st.used.clear();
                st.window_ms = window_ms;
            }
            let guard = guard_ms(window_ms);
            let first = (now - guard).div_euclid(window_ms);
            let last = (now + guard).div_euclid(window_ms);
            st.used.retain(|id, _| *id >= first - 1);
            // A request heavier than the whole budget can only go into an empty window.
            let fits = |used: u32| used == 0 || used.saturating_add(weight) <= limit;
            if let Some(full) = (first..=last)
                .rev()
                .find(|id| !fits(st.used.get(id).copied().unwrap_or(0)))
            {
                // Wait until the full window is over and the guard after it has passed.
                let at = (full + 1) * window_ms + guard + 1;
                return Ok(Acquire::WaitUntil(instant_at(at)));
            }
            for id in first..=last {
                *st.used.entry(id).or_default() += weight;
            }
            Ok(Acquire::Granted(Ticket {
                first,
                last,
                window_ms,
            }))
        })
    }

    /// Records the server's count (the used-weight header) of an answer to a request charged by
    /// `ticket`. It is trusted only when the request and the answer fell in one window.
    pub(crate) fn observe(&self, m: Market, ticket: Ticket, server_used: u32) {
        let now = now_ms();
        let guard = guard_ms(ticket.window_ms);
        let first = (now - guard).div_euclid(ticket.window_ms);
        let last = (now + guard).div_euclid(ticket.window_ms);
        if ticket.first != ticket.last || first != last || first != ticket.first {
            return;
        }
        self.with(m, |st| {
            if st.window_ms == ticket.window_ms {
                let used = st.used.entry(first).or_default();
                *used = (*used).max(server_used);
            }
        });
    }

    /// After a 429: nothing goes to `market` before `until_ms` (the server's `Retry-After`, which
    /// is authoritative: Binance bans an IP that sends anything earlier), then the market runs at
    /// half its limit for a few windows.
    pub(crate) fn pause(&self, m: Market, until_ms: i64) {
        self.with(m, |st| {
            let window_ms = st.window_ms.max(1);
            st.paused_until_ms = st.paused_until_ms.max(Some(until_ms));
            st.slow_until_ms = st
                .slow_until_ms
                .max(Some(until_ms + SLOW_WINDOWS * window_ms));
        });
    }

    /// After a 418: `market` is banned until `until_ms`; returns the end of the ban (the later of
    /// this one and one already known).
    pub(crate) fn ban(&self, m: Market, until_ms: i64) -> i64 {
        self.with(m, |st| {
            let until = st.banned_until_ms.unwrap_or(0).max(until_ms);
            st.banned_until_ms = Some(until);
            until
        })
    }

    /// The end of `market`'s ban (wall-clock ms), if one is in force.
    pub(crate) fn banned_until(&self, m: Market) -> Option<i64> {
        let now = now_ms();
        self.with(m, |st| st.banned_until_ms.filter(|u| *u > now))
    }

    /// Weight used in the current window of `market` (local count, corrected by the server's).
    pub(crate) fn used(&self, m: Market) -> u32 {
        let now = now_ms();
        self.with(m, |st| {
            st.used
                .get(&now.div_euclid(st.window_ms.max(1)))
                .copied()
                .unwrap_or(0)
        })
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

    fn granted(r: Result<Acquire, Refusal>) -> bool {
        matches!(r, Ok(Acquire::Granted(_)))
    }

    #[tokio::test]
    async fn budget_keeps_a_margin_below_the_limit_and_markets_apart() {
        // Until the server's limit is known, 90% of the documented one: 18 of 20, 9 of 10.
        let b = WeightBudget::new(20, 10, Duration::from_secs(3600), None, None);
        for _ in 0..9 {
            assert!(granted(b.try_acquire(Market::Spot, 2)));
        }
        assert_eq!(b.used(Market::Spot), 18);
        let Ok(Acquire::WaitUntil(at)) = b.try_acquire(Market::Spot, 2) else {
            panic!("an exhausted window must make the caller wait");
        };
        assert!(at > Instant::now());
        assert_eq!(b.limit(Market::UsdM), (9, 3_600_000));
        assert!(granted(b.try_acquire(Market::UsdM, 9)));
        assert!(!granted(b.try_acquire(Market::UsdM, 1)));
        assert!(granted(b.try_acquire(Market::CoinM, 9)));
    }

    #[tokio::test]
    async fn a_learnt_limit_replaces_the_documented_one_and_a_users_limit_wins() {
        let b = WeightBudget::new(6000, 2400, Duration::from_secs(60), None, None);
        assert!(!b.knows_limit(Market::Spot));
        b.learn(
            Market::Spot,
            ServerLimit {
                weight: 300,
                window_ms: 10_000,
                learned_ms: now_ms(),
            },
        );
        assert!(b.knows_limit(Market::Spot));
        assert_eq!(b.limit(Market::Spot), (270, 10_000));
        // A limit learnt more than a day ago is asked again (and used until then).
        b.learn(
            Market::UsdM,
            ServerLimit {
                weight: 1200,
                window_ms: 60_000,
                learned_ms: now_ms() - LIMIT_TTL_MS - 1,
            },
        );
        assert!(!b.knows_limit(Market::UsdM));
        assert_eq!(b.limit(Market::UsdM), (1080, 60_000));
        let fixed = WeightBudget::new(6000, 2400, Duration::from_secs(60), Some(500), None);
        assert!(fixed.knows_limit(Market::CoinM));
        assert_eq!(fixed.limit(Market::CoinM), (500, 60_000));
    }

    #[tokio::test]
    async fn header_corrects_the_count_upwards_only() {
        let b = WeightBudget::new(100, 100, Duration::from_secs(3600), None, None);
        let Ok(Acquire::Granted(t)) = b.try_acquire(Market::Spot, 2) else {
            panic!("granted");
        };
        b.observe(Market::Spot, t, 50);
        assert_eq!(b.used(Market::Spot), 50);
        b.observe(Market::Spot, t, 3);
        assert_eq!(b.used(Market::Spot), 50);
    }

    #[tokio::test]
    async fn a_429_pauses_then_slows_and_a_ban_refuses() {
        let b = WeightBudget::new(100, 100, Duration::from_secs(3600), None, None);
        let until = b.ban(Market::UsdM, now_ms() + 60_000);
        assert_eq!(
            b.try_acquire(Market::UsdM, 1),
            Err(Refusal::Banned { until_ms: until })
        );
        assert_eq!(b.banned_until(Market::UsdM), Some(until));
        // An earlier end does not shorten a ban.
        assert_eq!(b.ban(Market::UsdM, now_ms() + 1000), until);
        assert!(granted(b.try_acquire(Market::Spot, 1)));
        b.pause(Market::Spot, now_ms() + 5000);
        assert!(matches!(
            b.try_acquire(Market::Spot, 1),
            Ok(Acquire::WaitUntil(_))
        ));
        // After the pause, half the limit for a few windows.
        assert_eq!(b.limit(Market::Spot).0, 45);
    }

    #[tokio::test]
    async fn processes_sharing_a_directory_share_the_budget_and_the_bans() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = || Some(dir.path().join("rest"));
        let one = WeightBudget::new(20, 20, Duration::from_secs(3600), None, path());
        let two = WeightBudget::new(20, 20, Duration::from_secs(3600), None, path());
        for _ in 0..3 {
            assert!(granted(one.try_acquire(Market::Spot, 5)));
        }
        assert_eq!(two.used(Market::Spot), 15);
        assert!(
            !granted(two.try_acquire(Market::Spot, 5)),
            "18 allowed, 15 used by the other"
        );
        let until = one.ban(Market::CoinM, now_ms() + 60_000);
        let three = WeightBudget::new(20, 20, Duration::from_secs(3600), None, path());
        assert_eq!(
            three.try_acquire(Market::CoinM, 1),
            Err(Refusal::Banned { until_ms: until }),
            "a ban outlives the process that received it"
        );
        one.learn(
            Market::UsdM,
            ServerLimit {
                weight: 50,
                window_ms: 3_600_000,
                learned_ms: now_ms(),
            },
        );
        assert!(three.knows_limit(Market::UsdM));
    }

    #[tokio::test]
    async fn an_unusable_directory_keeps_the_budget_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let b = WeightBudget::new(20, 20, Duration::from_secs(3600), None, Some(file));
        assert!(granted(b.try_acquire(Market::Spot, 5)));
        assert!(granted(b.try_acquire(Market::Spot, 5)));
        assert_eq!(b.used(Market::Spot), 10);
    }
}
