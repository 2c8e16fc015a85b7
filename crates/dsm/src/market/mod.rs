//! The market model every other module speaks: which markets, data kinds, intervals and symbols exist,
//! and which combinations Binance actually offers.
//!
//! This module owns validation of user input. Everything here is pure (no I/O), so bad input is rejected
//! before any network call, with a message that says what is valid. It must never accept a symbol that
//! could escape a path: symbols become directory names in the cache and in archive URLs.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, TimeZone, Utc};

mod error;
pub use error::InputError;

use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, WEEK_MS};

/// A Binance market.
///
/// ```
/// use dsm::Market;
/// let m: Market = "um".parse().unwrap();
/// assert_eq!(m, Market::UsdM);
/// assert_eq!(m.vision_path(), "futures/um");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Market {
    /// Spot (`api.binance.com`, `data/spot/...`).
    Spot,
    /// USD-M futures (`fapi.binance.com`, `data/futures/um/...`).
    UsdM,
    /// COIN-M futures (`dapi.binance.com`, `data/futures/cm/...`).
    CoinM,
    /// Options (`eapi.binance.com`, `data/option/...`): only the archive's BVOL index and EOH
    /// summaries, which dsm serves from Vision.
    Option,
}

impl Market {
    /// All markets, in a stable order.
    pub const ALL: [Market; 4] = [Market::Spot, Market::UsdM, Market::CoinM, Market::Option];

    /// Short name used on the command line and in cache paths: `spot`, `um`, `cm`, `option`.
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::UsdM => "um",
            Market::CoinM => "cm",
            Market::Option => "option",
        }
    }

    /// The market's directory in the Vision archive (`spot`, `futures/um`, `futures/cm`,
    /// `option`).
    pub fn vision_path(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::UsdM => "futures/um",
            Market::CoinM => "futures/cm",
            Market::Option => "option",
        }
    }

    /// Whether this is a futures market (USD-M or COIN-M).
    pub fn is_futures(self) -> bool {
        matches!(self, Market::UsdM | Market::CoinM)
    }

    /// Maximum `limit` of one klines request on this market (1000 spot, 1500 futures).
    pub fn max_klines_limit(self) -> u32 {
        match self {
            Market::Spot => 1000,
            Market::UsdM | Market::CoinM | Market::Option => 1500,
        }
    }

    /// Whether Binance offers `kind` on this market (spec §1.3: the archive's table).
    pub fn supports_kind(self, kind: DataKind) -> bool {
        match kind {
            DataKind::Klines | DataKind::AggTrades | DataKind::Trades => self != Market::Option,
            DataKind::MarkPriceKlines
            | DataKind::IndexPriceKlines
            | DataKind::PremiumIndexKlines
            | DataKind::FundingRate
            | DataKind::Metrics
            | DataKind::BookDepth
            | DataKind::BookTicker => self.is_futures(),
            // USD-M snapshots existed only briefly in 2023 and are gone from the archive.
            DataKind::Liquidations => self == Market::CoinM,
            DataKind::BvolIndex | DataKind::EohSummary => self == Market::Option,
        }
    }

    /// Whether Binance offers `interval` for kline-class kinds on this market (`1s` is spot only).
    pub fn supports_interval(self, interval: Interval) -> bool {
        interval != Interval::S1 || self == Market::Spot
    }

    /// Checks that `kind` and (for kline-class kinds) `interval` are offered on this market.
    pub fn check(self, kind: DataKind, interval: Option<Interval>) -> Result<(), InputError> {
        if !self.supports_kind(kind) {
            return Err(InputError::KindNotOnMarket { kind, market: self });
        }
        match (kind.has_interval(), interval) {
            (true, None) => Err(InputError::MissingInterval { kind }),
            (true, Some(i)) if !self.supports_interval(i) => Err(InputError::IntervalNotOnMarket {
                interval: i,
                market: self,
            }),
            (false, Some(i)) => Err(InputError::UnexpectedInterval { kind, interval: i }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Market {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "spot" => Ok(Market::Spot),
            "um" | "usdm" | "usd-m" | "futures/um" => Ok(Market::UsdM),
            "cm" | "coinm" | "coin-m" | "futures/cm" => Ok(Market::CoinM),
            "option" | "options" | "eoptions" => Ok(Market::Option),
            _ => Err(InputError::UnknownMarket(s.to_owned())),
        }
    }
}

/// A kind of market data.
///
/// ```
/// use dsm::DataKind;
/// let k: DataKind = "mark-klines".parse().unwrap();
/// assert_eq!(k.vision_name(), "markPriceKlines");
/// assert!(k.has_interval());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataKind {
    /// Trade klines (candlesticks).
    Klines,
    /// Mark-price klines (futures only).
    MarkPriceKlines,
    /// Index-price klines (futures only).
    IndexPriceKlines,
    /// Premium-index klines (futures only).
    PremiumIndexKlines,
    /// Funding-rate history (futures only; Vision publishes it monthly).
    FundingRate,
    /// Aggregate trades.
    AggTrades,
    /// Raw trades.
    Trades,
    /// Open interest and long/short ratios every 5 minutes (futures; daily archive files).
    Metrics,
    /// Cumulative order-book depth per ±% band from the mark price (futures; daily files).
    BookDepth,
    /// Best bid and ask on every change (futures; ended on 2024-03-30).
    BookTicker,
    /// Liquidation orders (COIN-M; daily files from 2023-06-25 to 2024-10-14).
    Liquidations,
    /// Binance's BVOL volatility index (options; `BTCBVOLUSDT`, `ETHBVOLUSDT`; from 2023-06-20).
    BvolIndex,
    /// Hourly summaries of every option of an underlying (options; `BTCUSDT`, `ETHUSDT`, ...).
    EohSummary,
}

impl DataKind {
    /// All kinds, in a stable order.
    pub const ALL: [DataKind; 13] = [
        DataKind::Klines,
        DataKind::MarkPriceKlines,
        DataKind::IndexPriceKlines,
        DataKind::PremiumIndexKlines,
        DataKind::FundingRate,
        DataKind::AggTrades,
        DataKind::Trades,
        DataKind::Metrics,
        DataKind::BookDepth,
        DataKind::BookTicker,
        DataKind::Liquidations,
        DataKind::BvolIndex,
        DataKind::EohSummary,
    ];

    /// The data-type directory name on Vision (`klines`, `markPriceKlines`, `fundingRate`, ...).
    pub fn vision_name(self) -> &'static str {
        match self {
            DataKind::Klines => "klines",
            DataKind::MarkPriceKlines => "markPriceKlines",
            DataKind::IndexPriceKlines => "indexPriceKlines",
            DataKind::PremiumIndexKlines => "premiumIndexKlines",
            DataKind::FundingRate => "fundingRate",
            DataKind::AggTrades => "aggTrades",
            DataKind::Trades => "trades",
            DataKind::Metrics => "metrics",
            DataKind::BookDepth => "bookDepth",
            DataKind::BookTicker => "bookTicker",
            DataKind::Liquidations => "liquidationSnapshot",
            DataKind::BvolIndex => "BVOLIndex",
            DataKind::EohSummary => "EOHSummary",
        }
    }

    /// The command-line name (`klines`, `mark-klines`, `index-klines`, `premium-klines`, `funding`,
    /// `aggtrades`, `trades`, `metrics`, `book-depth`, `book-ticker`, `liquidations`,
    /// `bvol-index`, `eoh-summary`).
    pub fn cli_name(self) -> &'static str {
        match self {
            DataKind::Klines => "klines",
            DataKind::MarkPriceKlines => "mark-klines",
            DataKind::IndexPriceKlines => "index-klines",
            DataKind::PremiumIndexKlines => "premium-klines",
            DataKind::FundingRate => "funding",
            DataKind::AggTrades => "aggtrades",
            DataKind::Trades => "trades",
            DataKind::Metrics => "metrics",
            DataKind::BookDepth => "book-depth",
            DataKind::BookTicker => "book-ticker",
            DataKind::Liquidations => "liquidations",
            DataKind::BvolIndex => "bvol-index",
            DataKind::EohSummary => "eoh-summary",
        }
    }

    /// Whether rows are archive tables (metrics, book depth and ticker, liquidations, BVOL, EOH
    /// summaries): only Vision has them, several rows may share one time, and they are kept as
    /// the archive has them, sorted by time and with exact repeats dropped.
    pub fn is_table(self) -> bool {
        matches!(
            self,
            DataKind::Metrics
                | DataKind::BookDepth
                | DataKind::BookTicker
                | DataKind::Liquidations
                | DataKind::BvolIndex
                | DataKind::EohSummary
        )
    }

    /// Whether Vision publishes monthly files for this kind (the archive tables are daily only,
    /// but for the book ticker).
    pub fn has_monthly_files(self) -> bool {
        !self.is_table() || self == DataKind::BookTicker
    }

    /// The part of time in which the archive publishes this kind on `market`, where it is
    /// documented as bounded (spec §1.3, §3 #26): `(first, end)` in ms, `end` exclusive. A day
    /// outside it is not missing: the series does not exist there, and its 404 is the end of the
    /// series, not an error.
    ///
    /// ```
    /// use dsm::{DataKind, Market};
    /// let (_, end) = DataKind::BookTicker.archive_life(Market::UsdM);
    /// assert_eq!(end, Some(1_711_843_200_000)); // 2024-03-31T00:00:00Z
    /// ```
    pub fn archive_life(self, market: Market) -> (Option<i64>, Option<i64>) {
        match (self, market) {
            // Daily files end 2024-03-30 (monthly 2024-05, which holds no later days).
            (DataKind::BookTicker, _) => (None, Some(1_711_843_200_000)),
            // 2023-06-25 .. 2024-10-14.
            (DataKind::Liquidations, _) => (Some(1_687_651_200_000), Some(1_728_950_400_000)),
            // From 2023-06-20.
            (DataKind::BvolIndex, _) => (Some(1_687_219_200_000), None),
            _ => (None, None),
        }
    }

    /// Whether rows are candles (the four kline-class kinds), which are keyed by an interval.
    pub fn has_interval(self) -> bool {
        matches!(
            self,
            DataKind::Klines
                | DataKind::MarkPriceKlines
                | DataKind::IndexPriceKlines
                | DataKind::PremiumIndexKlines
        )
    }

    /// Whether Vision publishes daily files for this kind (funding rates are monthly only).
    pub fn has_daily_files(self) -> bool {
        self != DataKind::FundingRate
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for DataKind {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataKind::ALL
            .into_iter()
            .find(|k| {
                s.eq_ignore_ascii_case(k.cli_name()) || s.eq_ignore_ascii_case(k.vision_name())
            })
            .ok_or_else(|| InputError::UnknownKind(s.to_owned()))
    }
}

/// 1970-01-01 was a Thursday; the first Monday 00:00 UTC after the epoch is 4 days later.
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;

/// A kline interval, with calendar-correct opening times.
///
/// Fixed intervals open on multiples of their length since the Unix epoch (so `2h` opens on even
/// hours, `1d` at 00:00 UTC); `1w` opens on Monday 00:00 UTC and `1M` on the 1st of the month.
/// Binance's REST name for one month is `1M`; Vision's is `1mo` (both parse).
///
/// ```
/// use dsm::Interval;
/// let w: Interval = "1w".parse().unwrap();
/// // 2024-01-03 (a Wednesday) 12:00 UTC lies in the week that opened on Monday 2024-01-01.
/// assert_eq!(w.floor(1_704_283_200_000), 1_704_067_200_000);
/// let m: Interval = "1mo".parse().unwrap();
/// assert_eq!(m, Interval::Mo1);
/// assert_eq!(m.as_str(), "1M");
/// // February 2024 has 29 days.
/// assert_eq!(m.next(1_706_745_600_000), 1_709_251_200_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// 1 second (spot only).
    S1,
    /// 1 minute.
    M1,
    /// 3 minutes.
    M3,
    /// 5 minutes.
    M5,
    /// 15 minutes.
    M15,
    /// 30 minutes.
    M30,
    /// 1 hour.
    H1,
    /// 2 hours.
    H2,
    /// 4 hours.
    H4,
    /// 6 hours.
    H6,
    /// 8 hours.
    H8,
    /// 12 hours.
    H12,
    /// 1 day.
    D1,
    /// 3 days.
    D3,
    /// 1 week, opening Monday 00:00 UTC.
    W1,
    /// 1 calendar month, opening on the 1st at 00:00 UTC.
    Mo1,
}

impl Interval {
    /// All intervals, shortest first.
    pub const ALL: [Interval; 16] = [
        Interval::S1,
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    /// Binance's REST name (`1s`, `1m`, ..., `1w`, `1M`).
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1M",
        }
    }

    /// The name used in Vision paths and in dsm's cache (`1mo` for one month, otherwise as REST).
    pub fn vision_name(self) -> &'static str {
        match self {
            Interval::Mo1 => "1mo",
            other => other.as_str(),
        }
    }

    /// The fixed length in milliseconds, or `None` for the calendar month.
    pub fn fixed_millis(self) -> Option<i64> {
        Some(match self {
            Interval::S1 => SECOND_MS,
            Interval::M1 => MINUTE_MS,
            Interval::M3 => 3 * MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::M30 => 30 * MINUTE_MS,
            Interval::H1 => HOUR_MS,
            Interval::H2 => 2 * HOUR_MS,
            Interval::H4 => 4 * HOUR_MS,
            Interval::H6 => 6 * HOUR_MS,
            Interval::H8 => 8 * HOUR_MS,
            Interval::H12 => 12 * HOUR_MS,
            Interval::D1 => DAY_MS,
            Interval::D3 => 3 * DAY_MS,
            Interval::W1 => WEEK_MS,
            Interval::Mo1 => return None,
        })
    }

    /// An upper bound of the interval's length in milliseconds (31 days for `1M`).
    pub fn max_millis(self) -> i64 {
        self.fixed_millis().unwrap_or(31 * DAY_MS)
    }

    /// Whether Vision publishes daily files for this interval (`1s` through `1d`).
    pub fn has_daily_files(self) -> bool {
        !matches!(self, Interval::D3 | Interval::W1 | Interval::Mo1)
    }

    /// The opening time (ms since the epoch, UTC) of the candle that contains `ts`.
    pub fn floor(self, ts: i64) -> i64 {
        match self {
            Interval::W1 => ts - (ts - FIRST_MONDAY_MS).rem_euclid(WEEK_MS),
            Interval::Mo1 => crate::time::month_floor(ts),
            other => {
                let len = other.fixed_millis().unwrap_or(DAY_MS);
                ts - ts.rem_euclid(len)
            }
        }
    }

    /// The opening time of the first candle that opens at or after `ts`.
    pub fn ceil(self, ts: i64) -> i64 {
        let f = self.floor(ts);
        if f == ts { f } else { self.next(f) }
    }

    /// The opening time of the candle after the one that opened at `open` (which must be aligned).
    pub fn next(self, open: i64) -> i64 {
        match self.fixed_millis() {
            Some(len) => open + len,
            None => crate::time::next_month(open),
        }
    }

    /// Whether `ts` is an opening time of this interval.
    pub fn is_aligned(self, ts: i64) -> bool {
        self.floor(ts) == ts
    }

    /// The close time Binance reports for a candle that opened at `open`: next open − 1 ms.
    pub fn close_time(self, open: i64) -> i64 {
        self.next(open) - 1
    }

    /// Number of candles that open in `[start, end)`.
    pub fn count_in(self, start: i64, end: i64) -> u64 {
        if end <= start {
            return 0;
        }
        match self.fixed_millis() {
            Some(_) if self != Interval::W1 => {
                let first = self.ceil(start);
                if first >= end {
                    0
                } else {
                    let len = self.max_millis();
                    ((end - 1 - first) / len + 1) as u64
                }
            }
            _ => {
                let mut n = 0;
                let mut t = self.ceil(start);
                while t < end {
                    n += 1;
                    t = self.next(t);
                }
                n
            }
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = InputError;
    /// Parses Binance's names, case-sensitively (`1m` is a minute, `1M` a month), and Vision's `1mo`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "1mo" {
            return Ok(Interval::Mo1);
        }
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| InputError::UnknownInterval(s.to_owned()))
    }
}

/// Longest symbol dsm accepts. Binance's own limit is 20; settled contracts add a suffix.
pub const MAX_SYMBOL_LEN: usize = 32;

/// A validated, upper-case Binance symbol such as `BTCUSDT`, `BTCUSD_PERP` or `BTCUSD_250627`.
///
/// Only `A-Z`, `0-9` and `_` are allowed, 1 to [`MAX_SYMBOL_LEN`] characters, not starting or ending
/// with `_`: nothing that can escape a path or inject into a URL.
///
/// ```
/// use dsm::Symbol;
/// assert_eq!(Symbol::new("BTCUSD_PERP").unwrap().as_str(), "BTCUSD_PERP");
/// let err = Symbol::new("btcusdt").unwrap_err();
/// assert!(err.to_string().contains("BTCUSDT"));
/// assert!(Symbol::new("../etc").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    /// Validates `s` as a symbol.
    pub fn new(s: &str) -> Result<Symbol, InputError> {
        let bad = |reason: &'static str| InputError::InvalidSymbol {
            symbol: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_SYMBOL_LEN {
            return Err(bad("it is longer than 32 characters"));
        }
        if s.bytes().any(|b| b.is_ascii_lowercase()) && s.bytes().all(is_symbol_byte_any_case) {
            return Err(InputError::LowercaseSymbol {
                symbol: s.to_owned(),
                suggestion: s.to_ascii_uppercase(),
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("only A-Z, 0-9 and _ are allowed"));
        }
        if s.starts_with('_') || s.ends_with('_') {
            return Err(bad("it cannot start or end with _"));
        }
        Ok(Symbol(s.to_owned()))
    }

    /// Validates `s` and checks that it has the form used on `market`.
    ///
    /// COIN-M contracts are `BASEUSD_PERP` (perpetual) or `BASEUSD_YYMMDD` (delivery); a bare pair
    /// (`BTCUSD`) is accepted for index-price klines, which Binance keys by pair. Spot symbols never
    /// contain `_`.
    ///
    /// ```
    /// use dsm::{DataKind, Market, Symbol};
    /// assert!(Symbol::for_market("BTCUSD_250627", Market::CoinM, DataKind::Klines).is_ok());
    /// assert!(Symbol::for_market("BTCUSDT", Market::CoinM, DataKind::Klines).is_err());
    /// assert!(Symbol::for_market("BTCUSD_PERP", Market::Spot, DataKind::Klines).is_err());
    /// ```
    pub fn for_market(s: &str, market: Market, kind: DataKind) -> Result<Symbol, InputError> {
        let sym = Symbol::new(s)?;
        let wrong = |expected: &'static str| InputError::SymbolNotOnMarket {
            symbol: s.to_owned(),
            market,
            expected,
        };
        match market {
            Market::Spot | Market::Option if s.contains('_') => {
                Err(wrong("BASEQUOTE without '_', like BTCUSDT or BTCBVOLUSDT"))
            }
            Market::CoinM => {
                let ok = match s.split_once('_') {
                    Some((pair, suffix)) => {
                        pair.ends_with("USD") && (suffix == "PERP" || is_delivery_date(suffix))
                    }
                    None => kind == DataKind::IndexPriceKlines && s.ends_with("USD"),
                };
                if ok {
                    Ok(sym)
                } else {
                    Err(wrong(
                        "BASEUSD_PERP or BASEUSD_YYMMDD, like BTCUSD_PERP or BTCUSD_250627",
                    ))
                }
            }
            _ => Ok(sym),
        }
    }

    /// The symbol text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a delivery contract (`..._YYMMDD`), its delivery instant: 08:00 UTC on that date.
    pub fn delivery_time(&self) -> Option<i64> {
        let (_, suffix) = self.0.rsplit_once('_')?;
        if !is_delivery_date(suffix) {
            return None;
        }
        let n: u32 = suffix.parse().ok()?;
        let (y, m, d) = (2000 + (n / 10_000) as i32, (n / 100) % 100, n % 100);
        let t = Utc.with_ymd_and_hms(y, m, d, 8, 0, 0).single()?;
        debug_assert_eq!(t.year(), y);
        Some(t.timestamp_millis())
    }
}

fn is_symbol_byte_any_case(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_delivery_date(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) && {
        let n: u32 = s.parse().unwrap_or(0);
        let (m, d) = ((n / 100) % 100, n % 100);
        (1..=12).contains(&m) && (1..=31).contains(&d)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Symbol {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::new(s)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Which data: a market, a kind, a symbol and (for candles) an interval. The one name for it in
/// the cache (its directory), the manager (its publication frontier) and the answer.
///
/// ```
/// use dsm::{DataKind, Dataset, Interval, Market, Symbol};
/// let btc = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
/// assert_eq!(btc.to_string(), "spot klines BTCUSDT 1m");
/// assert!(Dataset::new(Market::Spot, DataKind::FundingRate, Symbol::new("BTCUSDT")?, None).is_err());
/// # Ok::<(), dsm::InputError>(())
/// ```
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Dataset {
    /// The market.
    #[serde(with = "market_serde")]
    pub market: Market,
    /// The data kind.
    #[serde(with = "kind_serde")]
    pub kind: DataKind,
    /// The symbol.
    #[serde(with = "symbol_serde")]
    pub symbol: Symbol,
    /// The interval, for kline-class kinds (`None` otherwise).
    #[serde(with = "interval_serde")]
    pub interval: Option<Interval>,
}

impl Dataset {
    /// A dataset, checked against the market model (kind offered on the market, interval present
    /// exactly for candles).
    pub fn new(
        market: Market,
        kind: DataKind,
        symbol: Symbol,
        interval: Option<Interval>,
    ) -> Result<Dataset, InputError> {
        market.check(kind, interval)?;
        Ok(Dataset {
            market,
            kind,
            symbol,
            interval,
        })
    }

    /// The klines of `symbol` at `interval` on `market`.
    pub fn klines(market: Market, symbol: Symbol, interval: Interval) -> Dataset {
        Dataset {
            market,
            kind: DataKind::Klines,
            symbol,
            interval: Some(interval),
        }
    }

    /// Re-checks the dataset (fields are public, so one may have been assembled by hand).
    pub fn check(&self) -> Result<(), InputError> {
        self.market.check(self.kind, self.interval)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.market, self.kind, self.symbol)?;
        if let Some(i) = self.interval {
            write!(f, " {i}")?;
        }
        Ok(())
    }
}

mod market_serde {
    use super::Market;
    pub fn serialize<S: serde::Serializer>(m: &Market, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Market, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod kind_serde {
    use super::DataKind;
    pub fn serialize<S: serde::Serializer>(k: &DataKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.vision_name())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DataKind, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod symbol_serde {
    use super::Symbol;
    pub fn serialize<S: serde::Serializer>(v: &Symbol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Symbol, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        Symbol::new(&s).map_err(serde::de::Error::custom)
    }
}

mod interval_serde {
    use super::Interval;
    pub fn serialize<S: serde::Serializer>(v: &Option<Interval>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(i) => s.serialize_some(i.vision_name()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Interval>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        s.map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid test time")
            .timestamp_millis()
    }

    #[test]
    fn intervals_round_trip_their_names() {
        for i in Interval::ALL {
            assert_eq!(i.as_str().parse::<Interval>().ok(), Some(i));
            assert_eq!(i.vision_name().parse::<Interval>().ok(), Some(i));
        }
        assert!("2m".parse::<Interval>().is_err());
        assert!("1H".parse::<Interval>().is_err());
    }

    #[test]
    fn week_opens_on_monday_and_month_on_the_first() {
        // 2017-08-14 was a Monday: Binance's ETHUSDT 1w candle opened then.
        assert_eq!(
            Interval::W1.floor(ms("2017-08-20T23:59:59Z")),
            ms("2017-08-14T00:00:00Z")
        );
        assert_eq!(
            Interval::W1.floor(ms("2017-08-14T00:00:00Z")),
            ms("2017-08-14T00:00:00Z")
        );
        assert_eq!(
            Interval::Mo1.floor(ms("2024-02-29T13:00:00Z")),
            ms("2024-02-01T00:00:00Z")
        );
        assert_eq!(
            Interval::Mo1.next(ms("2024-12-01T00:00:00Z")),
            ms("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            Interval::Mo1.close_time(ms("2023-02-01T00:00:00Z")),
            ms("2023-03-01T00:00:00Z") - 1
        );
        assert_eq!(
            Interval::H2.floor(ms("2024-01-01T03:30:00Z")),
            ms("2024-01-01T02:00:00Z")
        );
    }

    #[test]
    fn count_in_counts_opens_in_half_open_range() {
        let day = ms("2024-01-01T00:00:00Z");
        assert_eq!(Interval::M1.count_in(day, day + DAY_MS), 1440);
        assert_eq!(Interval::M1.count_in(day + 1, day + MINUTE_MS), 0);
        assert_eq!(Interval::M1.count_in(day + 1, day + MINUTE_MS + 1), 1);
        assert_eq!(
            Interval::Mo1.count_in(ms("2024-01-01T00:00:00Z"), ms("2025-01-01T00:00:00Z")),
            12
        );
        assert_eq!(
            Interval::W1.count_in(ms("2024-01-01T00:00:00Z"), ms("2024-01-29T00:00:00Z")),
            4
        );
    }

    #[test]
    fn markets_offer_the_right_kinds_and_intervals() {
        assert!(
            Market::Spot
                .check(DataKind::Klines, Some(Interval::S1))
                .is_ok()
        );
        let err = Market::UsdM
            .check(DataKind::Klines, Some(Interval::S1))
            .unwrap_err();
        assert!(err.to_string().contains("1s"), "{err}");
        assert!(Market::Spot.check(DataKind::FundingRate, None).is_err());
        assert!(Market::CoinM.check(DataKind::FundingRate, None).is_ok());
        assert!(Market::UsdM.check(DataKind::Klines, None).is_err());
        assert!(
            Market::UsdM
                .check(DataKind::Trades, Some(Interval::M1))
                .is_err()
        );
    }

    #[test]
    fn symbols_are_validated() {
        for ok in [
            "BTCUSDT",
            "1000SHIBUSDT",
            "BTCUSD_PERP",
            "ICPUSDT_SETTLED",
            "0GUSDT",
        ] {
            assert!(Symbol::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "BTC/USDT",
            "..",
            "BTC USDT",
            "_BTC",
            "BTC-USDT",
            "BTCUSDT\n",
            "ÄBC",
        ] {
            assert!(Symbol::new(bad).is_err(), "{bad:?}");
        }
        assert!(Symbol::new(&"A".repeat(33)).is_err());
        let lower = Symbol::new("btcusdt").unwrap_err();
        assert!(
            lower.to_string().contains("did you mean BTCUSDT"),
            "{lower}"
        );
        let d = Symbol::new("BTCUSD_250627").unwrap();
        assert_eq!(d.delivery_time(), Some(ms("2025-06-27T08:00:00Z")));
        assert_eq!(Symbol::new("BTCUSD_PERP").unwrap().delivery_time(), None);
        assert!(Symbol::for_market("BTCUSD", Market::CoinM, DataKind::IndexPriceKlines).is_ok());
        assert!(Symbol::for_market("BTCUSD", Market::CoinM, DataKind::Klines).is_err());
        assert!(Symbol::for_market("BTCUSD_991399", Market::CoinM, DataKind::Klines).is_err());
    }

    proptest! {
        #[test]
        fn floor_is_aligned_and_contains_ts(ts in 0i64..4_102_444_800_000, idx in 0usize..16) {
            let i = Interval::ALL[idx];
            let open = i.floor(ts);
            prop_assert!(open <= ts);
            prop_assert!(ts < i.next(open));
            prop_assert!(i.is_aligned(open));
            prop_assert_eq!(i.floor(open), open);
            prop_assert_eq!(i.close_time(open) + 1, i.next(open));
            prop_assert!(i.ceil(ts) >= ts);
            prop_assert!(i.is_aligned(i.ceil(ts)));
        }

        #[test]
        fn count_in_matches_iteration(start in 1_500_000_000_000i64..1_800_000_000_000, len in 0i64..5_000_000_000, idx in 1usize..16) {
            let i = Interval::ALL[idx];
            let end = start + len;
            let mut n = 0u64;
            let mut t = i.ceil(start);
            while t < end { n += 1; t = i.next(t); }
            prop_assert_eq!(i.count_in(start, end), n);
        }

        #[test]
        fn valid_symbols_never_contain_path_characters(s in "\\PC{0,40}") {
            if let Ok(sym) = Symbol::new(&s) {
                prop_assert!(!sym.as_str().contains('/') && !sym.as_str().contains('.') && !sym.as_str().contains('\\'));
                prop_assert!(sym.as_str().len() <= MAX_SYMBOL_LEN);
            }
        }
    }
}
