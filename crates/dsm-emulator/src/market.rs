//! The emulator's own market, interval and symbol tables.
//!
//! Deliberately independent of the `dsm` crate: a bug shared between the client and the emulator could
//! otherwise hide in both at once.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// A Binance market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Market {
    /// Spot (`/api/v3`, `data/spot`).
    Spot,
    /// USDⓈ-M futures (`/fapi/v1`, `data/futures/um`).
    Um,
    /// COIN-M futures (`/dapi/v1`, `data/futures/cm`).
    Cm,
    /// Options (`data/option`): archive tables only; no REST.
    Option,
}

impl Market {
    /// The markets with a REST API here (options have archive tables only).
    pub const ALL: [Market; 3] = [Market::Spot, Market::Um, Market::Cm];

    /// The Vision path segment (`spot`, `futures/um`, `futures/cm`).
    pub fn vision_segment(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Um => "futures/um",
            Market::Cm => "futures/cm",
            Market::Option => "option",
        }
    }

    /// The REST path prefix (`/api/v3`, `/fapi/v1`, `/dapi/v1`).
    pub fn rest_prefix(self) -> &'static str {
        match self {
            Market::Spot => "/api/v3",
            Market::Um => "/fapi/v1",
            Market::Cm => "/dapi/v1",
            Market::Option => "/eapi/v1",
        }
    }

    /// Whether this is a futures market.
    pub fn is_futures(self) -> bool {
        matches!(self, Market::Um | Market::Cm)
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Market::Spot => 0,
            Market::Um => 1,
            Market::Cm => 2,
            Market::Option => 3,
        }
    }
}

impl std::fmt::Display for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Market::Spot => "spot",
            Market::Um => "um",
            Market::Cm => "cm",
            Market::Option => "option",
        })
    }
}

impl std::str::FromStr for Market {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "spot" => Ok(Market::Spot),
            "um" | "futures/um" => Ok(Market::Um),
            "cm" | "futures/cm" => Ok(Market::Cm),
            "option" => Ok(Market::Option),
            other => Err(format!(
                "unknown market {other:?} (expected spot, um, cm or option)"
            )),
        }
    }
}

/// The kline-class data kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KlineKind {
    /// Trade klines (`klines`).
    Klines,
    /// Mark price klines (`markPriceKlines`), futures only.
    MarkPrice,
    /// Index price klines (`indexPriceKlines`), futures only; keyed by pair.
    IndexPrice,
    /// Premium index klines (`premiumIndexKlines`), futures only.
    PremiumIndex,
}

impl KlineKind {
    /// All kinds.
    pub const ALL: [KlineKind; 4] = [
        KlineKind::Klines,
        KlineKind::MarkPrice,
        KlineKind::IndexPrice,
        KlineKind::PremiumIndex,
    ];

    /// The Vision `dataType` directory name.
    pub fn data_type(self) -> &'static str {
        match self {
            KlineKind::Klines => "klines",
            KlineKind::MarkPrice => "markPriceKlines",
            KlineKind::IndexPrice => "indexPriceKlines",
            KlineKind::PremiumIndex => "premiumIndexKlines",
        }
    }

    pub(crate) fn from_data_type(s: &str) -> Option<KlineKind> {
        KlineKind::ALL.into_iter().find(|k| k.data_type() == s)
    }

    pub(crate) fn tag(self) -> u64 {
        match self {
            KlineKind::Klines => 1,
            KlineKind::MarkPrice => 2,
            KlineKind::IndexPrice => 3,
            KlineKind::PremiumIndex => 4,
        }
    }
}

/// A kline interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    Mo1,
}

pub(crate) const DAY_MS: i64 = 86_400_000;

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

    /// REST name (`1M` for a month).
    pub fn rest_name(self) -> &'static str {
        match self {
            Interval::Mo1 => "1M",
            other => other.vision_name(),
        }
    }

    /// Vision directory name (`1mo` for a month).
    pub fn vision_name(self) -> &'static str {
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
            Interval::Mo1 => "1mo",
        }
    }

    /// Parses a REST interval name (case-sensitive, `1M` = month).
    pub fn from_rest(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.rest_name() == s)
    }

    /// Parses a Vision interval directory name (`1mo` = month).
    pub fn from_vision(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.vision_name() == s)
    }

    /// Fixed length in ms; `None` for the calendar month.
    pub fn fixed_ms(self) -> Option<i64> {
        Some(match self {
            Interval::S1 => 1_000,
            Interval::M1 => 60_000,
            Interval::M3 => 180_000,
            Interval::M5 => 300_000,
            Interval::M15 => 900_000,
            Interval::M30 => 1_800_000,
            Interval::H1 => 3_600_000,
            Interval::H2 => 7_200_000,
            Interval::H4 => 14_400_000,
            Interval::H6 => 21_600_000,
            Interval::H8 => 28_800_000,
            Interval::H12 => 43_200_000,
            Interval::D1 => DAY_MS,
            Interval::D3 => 3 * DAY_MS,
            Interval::W1 => 7 * DAY_MS,
            Interval::Mo1 => return None,
        })
    }

    /// Whether Vision publishes daily files for this interval (`1s`..`1d`).
    pub fn has_daily_files(self) -> bool {
        !matches!(self, Interval::D3 | Interval::W1 | Interval::Mo1)
    }

    /// Open time (ms) of the candle containing `t`.
    pub fn align(self, t: i64) -> i64 {
        match self {
            // Weeks open on Monday 00:00 UTC; 1970-01-05 was the first Monday.
            Interval::W1 => {
                let w = 7 * DAY_MS;
                (t - 4 * DAY_MS).div_euclid(w) * w + 4 * DAY_MS
            }
            Interval::Mo1 => {
                let d = ms_to_date(t);
                month_start_ms(d.year(), d.month())
            }
            other => {
                let len = other.fixed_ms().unwrap_or(DAY_MS);
                t.div_euclid(len) * len
            }
        }
    }

    /// Open time of the candle after the one opening at `open`.
    pub fn next(self, open: i64) -> i64 {
        match self.fixed_ms() {
            Some(len) => open + len,
            None => {
                let d = ms_to_date(open);
                let (y, m) = next_month(d.year(), d.month());
                month_start_ms(y, m)
            }
        }
    }

    /// Length of the candle opening at `open`, in ms.
    pub fn len_at(self, open: i64) -> i64 {
        self.next(open) - open
    }

    /// Whether the interval is served by this market and kind (`1s` is spot klines only).
    pub fn valid_for(self, market: Market) -> bool {
        market == Market::Spot || self != Interval::S1
    }
}

pub(crate) fn ms_to_date(t: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(t)
        .unwrap_or_default()
        .date_naive()
}

pub(crate) fn date_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|dt| dt.and_utc().timestamp_millis())
        .unwrap_or_default()
}

pub(crate) fn month_start_ms(y: i32, m: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, 1)
        .map(date_ms)
        .unwrap_or_default()
}

pub(crate) fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 { (y + 1, 1) } else { (y, m + 1) }
}

pub(crate) fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .unwrap_or_default()
}

/// One tradable symbol of the emulated universe.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    /// Market the symbol trades on.
    pub market: Market,
    /// Upper-case symbol (`BTCUSDT`, `BTCUSD_PERP`, `BTCUSD_250627`).
    pub symbol: String,
    /// Listing instant: no data before it (the candle containing it is the first one).
    pub listed: DateTime<Utc>,
    /// Price level of the synthetic price path.
    pub base_price: f64,
    /// Delisting instant (spot): no data from it on.
    pub delisted: Option<DateTime<Utc>>,
    /// After delisting, `exchangeInfo` still lists the symbol with status `BREAK` (else it drops
    /// it, and only the archive remembers the symbol).
    pub break_after_delisting: bool,
}

impl SymbolSpec {
    /// A symbol spec.
    pub fn new(market: Market, symbol: &str, listed: DateTime<Utc>, base_price: f64) -> SymbolSpec {
        SymbolSpec {
            market,
            symbol: symbol.to_string(),
            listed,
            base_price,
            delisted: None,
            break_after_delisting: false,
        }
    }

    /// This symbol, delisted at `at`; `keep_as_break`: `exchangeInfo` keeps it, status `BREAK`.
    pub fn delisted_at(mut self, at: DateTime<Utc>, keep_as_break: bool) -> SymbolSpec {
        self.delisted = Some(at);
        self.break_after_delisting = keep_as_break;
        self
    }

    /// The end of the symbol's data: its delivery (dated contracts) or delisting.
    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.delivery().or(self.delisted)
    }

    /// Delivery instant of a dated futures contract (`…_YYMMDD` ⇒ that day 08:00 UTC), else `None`.
    pub fn delivery(&self) -> Option<DateTime<Utc>> {
        if self.market == Market::Spot {
            return None;
        }
        let (_, suffix) = self.symbol.rsplit_once('_')?;
        if suffix.len() != 6 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let yy: i32 = suffix[0..2].parse().ok()?;
        let mm: u32 = suffix[2..4].parse().ok()?;
        let dd: u32 = suffix[4..6].parse().ok()?;
        Utc.with_ymd_and_hms(2000 + yy, mm, dd, 8, 0, 0).single()
    }

    /// Whether the contract is a perpetual (all UM/CM symbols without a `_YYMMDD` suffix).
    pub fn is_perpetual(&self) -> bool {
        self.market != Market::Spot && self.delivery().is_none()
    }

    /// The pair (`BTCUSD` for `BTCUSD_PERP`, `BTCUSDT` for `BTCUSDT_250627`, the symbol itself on spot).
    pub fn pair(&self) -> String {
        match self.symbol.split_once('_') {
            Some((p, _)) if self.market != Market::Spot => p.to_string(),
            _ => self.symbol.clone(),
        }
    }

    /// (base asset, quote asset), split on a known quote suffix.
    pub fn assets(&self) -> (String, String) {
        let pair = self.pair();
        for q in ["USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH", "BNB"] {
            if let Some(b) = pair.strip_suffix(q)
                && !b.is_empty()
            {
                return (b.to_string(), q.to_string());
            }
        }
        (pair, String::new())
    }

    /// COIN-M contract size in USD (100 for BTC, 10 otherwise); 1 elsewhere.
    pub fn contract_size(&self) -> i64 {
        match self.market {
            Market::Cm if self.symbol.starts_with("BTC") => 100,
            Market::Cm => 10,
            _ => 1,
        }
    }
}

/// The default universe (see the crate docs).
pub fn default_symbols() -> Vec<SymbolSpec> {
    let mut v = vec![
        SymbolSpec::new(Market::Spot, "BTCUSDT", utc(2017, 8, 17, 0), 30_000.0),
        SymbolSpec::new(Market::Spot, "ETHUSDT", utc(2017, 8, 17, 0), 2_000.0),
        SymbolSpec::new(Market::Spot, "BNBUSDT", utc(2017, 11, 6, 0), 300.0),
    ];
    for i in 1..=20 {
        v.push(SymbolSpec::new(
            Market::Spot,
            &format!("SYM{i:02}USDT"),
            utc(2019, 1, 1, 0),
            f64::from(i) * 1.5,
        ));
    }
    // Listed and delisted spot symbols, for whole-universe syncs: one listed in the middle of a
    // day, one delisted and dropped from exchangeInfo (the archive alone remembers it), one
    // delisted and kept there with status BREAK.
    v.extend([
        SymbolSpec::new(Market::Spot, "NEWCOINUSDT", utc(2024, 3, 15, 6), 4.0),
        SymbolSpec::new(Market::Spot, "GONEUSDT", utc(2019, 1, 1, 0), 7.0)
            .delisted_at(utc(2024, 5, 20, 12), false),
        SymbolSpec::new(Market::Spot, "HALTUSDT", utc(2020, 2, 10, 0), 9.0)
            .delisted_at(utc(2024, 9, 3, 0), true),
    ]);
    v.extend([
        SymbolSpec::new(Market::Um, "BTCUSDT", utc(2019, 9, 8, 0), 30_000.0),
        SymbolSpec::new(Market::Um, "ETHUSDT", utc(2019, 11, 27, 0), 2_000.0),
        SymbolSpec::new(Market::Cm, "BTCUSD_PERP", utc(2020, 8, 11, 0), 30_000.0),
        SymbolSpec::new(Market::Cm, "ETHUSD_PERP", utc(2020, 8, 11, 0), 2_000.0),
        SymbolSpec::new(Market::Cm, "BTCUSD_250627", utc(2024, 12, 27, 0), 90_000.0),
    ]);
    v
}

/// Decimal places used to print and round a series' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesFmt {
    /// Printed decimals of prices.
    pub price_dp: u8,
    /// Decimals prices are rounded to (tick), `<= price_dp`.
    pub price_tick_dp: u8,
    /// Printed decimals of the `volume` column (contracts on CM).
    pub vol_dp: u8,
    /// Decimals volumes are rounded to.
    pub vol_tick_dp: u8,
    /// Printed decimals of the quote (CM: base) volume columns.
    pub quote_dp: u8,
}

pub(crate) fn futures_price_dp(base_price: f64) -> u8 {
    if base_price >= 1000.0 {
        1
    } else if base_price >= 10.0 {
        2
    } else if base_price >= 1.0 {
        4
    } else {
        6
    }
}

impl SeriesFmt {
    pub(crate) fn for_symbol(spec: &SymbolSpec, kind: KlineKind) -> SeriesFmt {
        let p = spec.base_price;
        if kind == KlineKind::PremiumIndex {
            return SeriesFmt {
                price_dp: 8,
                price_tick_dp: 8,
                vol_dp: 0,
                vol_tick_dp: 0,
                quote_dp: 0,
            };
        }
        match spec.market {
            Market::Spot | Market::Option => {
                let tick = if p >= 1000.0 {
                    2
                } else if p >= 10.0 {
                    3
                } else {
                    4
                };
                SeriesFmt {
                    price_dp: 8,
                    price_tick_dp: tick,
                    vol_dp: 8,
                    vol_tick_dp: if p >= 1000.0 { 5 } else { 2 },
                    quote_dp: 8,
                }
            }
            Market::Um | Market::Cm if kind != KlineKind::Klines => {
                let dp = futures_price_dp(p);
                SeriesFmt {
                    price_dp: dp,
                    price_tick_dp: dp,
                    vol_dp: 0,
                    vol_tick_dp: 0,
                    quote_dp: 0,
                }
            }
            Market::Um => {
                let dp = futures_price_dp(p);
                let q = if p >= 10.0 { 3 } else { 0 };
                SeriesFmt {
                    price_dp: dp,
                    price_tick_dp: dp,
                    vol_dp: q,
                    vol_tick_dp: q,
                    quote_dp: 5,
                }
            }
            Market::Cm => {
                let dp = futures_price_dp(p);
                SeriesFmt {
                    price_dp: dp,
                    price_tick_dp: dp,
                    vol_dp: 0,
                    vol_tick_dp: 0,
                    quote_dp: 8,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_aligns_to_monday() {
        // ETH/USDT 1w opens 1502668800000 = Mon 2017-08-14 (spec §4).
        assert_eq!(
            Interval::W1.align(1_502_668_800_000 + 3 * DAY_MS),
            1_502_668_800_000
        );
    }

    #[test]
    fn month_interval_steps_by_calendar() {
        let feb = month_start_ms(2024, 2);
        assert_eq!(Interval::Mo1.len_at(feb), 29 * DAY_MS);
        assert_eq!(Interval::Mo1.align(feb + 5), feb);
    }

    #[test]
    fn delivery_from_suffix() {
        let s = SymbolSpec::new(Market::Cm, "BTCUSD_250627", utc(2024, 12, 27, 0), 1.0);
        assert_eq!(s.delivery(), Some(utc(2025, 6, 27, 8)));
        assert_eq!(s.pair(), "BTCUSD");
        assert!(!s.is_perpetual());
    }
}
