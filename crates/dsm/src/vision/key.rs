//! Archive keys and planning: which Vision files hold a [`Dataset`] over a range.
//!
//! Pure functions only (no I/O). Keys are always built with zero-padded dates; listing parses them
//! leniently ([`FileKey::from_path`]), because Binance has served `…-2020-8.zip` names.

use std::fmt;

use chrono::Datelike;

use crate::market::InputError;
use crate::market::{DataKind, Dataset, Interval, Market, Symbol};
use crate::time::DAY_MS;
use crate::time::{TimeRange, day_floor, month_floor, month_start, next_month, to_datetime};

/// The period one archive file covers: a UTC day or a calendar month, by its first instant (ms).
///
/// Ordered by start time (a month sorts before the days it contains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A daily file; the value is 00:00 UTC of that day.
    Day(i64),
    /// A monthly file; the value is 00:00 UTC on the 1st of that month.
    Month(i64),
}

impl Ord for Period {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let k = |p: &Period| match *p {
            Period::Month(m) => (m, 0),
            Period::Day(d) => (d, 1),
        };
        k(self).cmp(&k(other))
    }
}

impl PartialOrd for Period {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Period {
    /// The day containing `ts`.
    pub fn day_of(ts: i64) -> Period {
        Period::Day(day_floor(ts))
    }

    /// The month containing `ts`.
    pub fn month_of(ts: i64) -> Period {
        Period::Month(month_floor(ts))
    }

    /// `[start, end)` of the period.
    pub fn range(self) -> TimeRange {
        let (start, end) = match self {
            Period::Day(d) => (d, d + DAY_MS),
            Period::Month(m) => (m, next_month(m)),
        };
        // start < end always holds for a day or a month.
        TimeRange::new(start, end).unwrap_or_else(|_| unreachable_range(start))
    }

    /// `daily` or `monthly`, the frequency directory on Vision.
    pub fn freq(self) -> &'static str {
        match self {
            Period::Day(_) => "daily",
            Period::Month(_) => "monthly",
        }
    }

    /// The date token of the file name: `YYYY-MM-DD` or `YYYY-MM`.
    pub fn date_token(self) -> String {
        match self {
            Period::Day(d) => to_datetime(d).format("%Y-%m-%d").to_string(),
            Period::Month(m) => to_datetime(m).format("%Y-%m").to_string(),
        }
    }

    /// Whether this is a monthly period.
    pub fn is_month(self) -> bool {
        matches!(self, Period::Month(_))
    }
}

fn unreachable_range(start: i64) -> TimeRange {
    // Only reachable for instants at the very end of chrono's range; a one-millisecond range keeps
    // the type's invariant without panicking.
    TimeRange::new(start, start.saturating_add(1))
        .unwrap_or_else(|_| unreachable_range(start.saturating_sub(1)))
}

/// The longest CSV line any archive file has: a candle row is about 150 bytes, a trade row less.
pub(crate) const MAX_LINE_BYTES: usize = 1024;
/// The most CSV bytes a daily trades or aggTrades file may hold (the busiest real days hold a few
/// hundred MB).
const MAX_TRADES_DAY_BYTES: u64 = 8 << 30;
/// The most CSV bytes a monthly trades or aggTrades file may hold.
const MAX_TRADES_MONTH_BYTES: u64 = 128 << 30;

/// One archive file: `data/{market}/{daily|monthly}/{kind}/{SYMBOL}/[{interval}/]{SYMBOL}-{interval|kind}-{date}.zip`.
///
/// ```
/// use dsm::{Dataset, Interval, Market, Symbol};
/// use dsm::vision::{FileKey, Period};
///
/// let key = FileKey {
///     dataset: Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1),
///     period: Period::Day(1_704_067_200_000),
/// };
/// assert_eq!(key.path(), "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip");
/// assert_eq!(
///     key.url("https://data.binance.vision/"),
///     "https://data.binance.vision/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
/// );
/// # Ok::<(), dsm::InputError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// The dataset the file belongs to (its symbol is the pair, e.g. `BTCUSD`, for COIN-M
    /// index-price klines).
    pub dataset: Dataset,
    /// The day or month the file covers.
    pub period: Period,
}

impl FileKey {
    /// The file's name: `BTCUSDT-1m-2024-01-01.zip`, `BTCUSDT-fundingRate-2024-01.zip`.
    pub fn file_name(&self) -> String {
        let d = &self.dataset;
        let middle = match d.interval {
            Some(i) if d.kind.has_interval() => i.vision_name(),
            _ => d.kind.vision_name(),
        };
        format!("{}-{}-{}.zip", d.symbol, middle, self.period.date_token())
    }

    /// The object key inside the bucket (no leading `/`).
    pub fn path(&self) -> String {
        let d = &self.dataset;
        let mut p = format!(
            "data/{}/{}/{}/{}/",
            d.market.vision_path(),
            self.period.freq(),
            d.kind.vision_name(),
            d.symbol
        );
        if let Some(i) = d.interval
            && d.kind.has_interval()
        {
            p.push_str(i.vision_name());
            p.push('/');
        }
        p.push_str(&self.file_name());
        p
    }

    /// The download URL under `base` (e.g. `https://data.binance.vision`; a trailing `/` is fine).
    pub fn url(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.path())
    }

    /// The URL of the `.CHECKSUM` sidecar.
    pub fn checksum_url(&self, base: &str) -> String {
        format!("{}.CHECKSUM", self.url(base))
    }

    /// The time range the file covers, `[start, end)`.
    pub fn range(&self) -> TimeRange {
        self.period.range()
    }

    /// The key of the archive file named `file_name` (e.g. `BTCUSDT-1m-2024-01-01.zip`, as cache
    /// manifests record it) for a dataset; `None` if the name is not one of its files.
    ///
    /// ```
    /// use dsm::vision::FileKey;
    /// use dsm::{DataKind, Dataset, Interval, Market, Symbol};
    /// let btc = Symbol::new("BTCUSDT")?;
    /// let candles = Dataset::klines(Market::Spot, btc.clone(), Interval::M1);
    /// let day = FileKey::for_file(&candles, "BTCUSDT-1m-2024-01-01.zip").unwrap();
    /// assert_eq!(day.path(), "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip");
    /// let funding = Dataset::new(Market::UsdM, DataKind::FundingRate, btc, None)?;
    /// let month = FileKey::for_file(&funding, "BTCUSDT-fundingRate-2024-01.zip").unwrap();
    /// assert!(month.period.is_month());
    /// assert!(FileKey::for_file(&candles, "ETHUSDT-1m-2024-01-01.zip").is_none());
    /// # Ok::<(), dsm::InputError>(())
    /// ```
    pub fn for_file(dataset: &Dataset, file_name: &str) -> Option<FileKey> {
        let Dataset {
            market,
            kind,
            symbol,
            interval,
        } = dataset;
        let interval_dir = match interval {
            Some(i) if kind.has_interval() => format!("{}/", i.vision_name()),
            _ => String::new(),
        };
        ["daily", "monthly"].into_iter().find_map(|freq| {
            let path = format!(
                "data/{}/{freq}/{}/{symbol}/{interval_dir}{file_name}",
                market.vision_path(),
                kind.vision_name(),
            );
            FileKey::from_path(&path).filter(|k| k.file_name() == file_name)
        })
    }

    /// The most bytes this file's CSV can hold: for candles and funding, every slot of the period
    /// at 1 KiB (the longest line a file may have) each; for trades, a ceiling far above the
    /// busiest real day or month.
    /// A file that declares (or inflates to) more is hostile or broken, never data.
    pub fn max_csv_bytes(&self) -> u64 {
        let range = self.range();
        let rows = match (self.dataset.kind, self.dataset.interval) {
            (DataKind::AggTrades | DataKind::Trades | DataKind::BookTicker, _) => {
                return if self.period.is_month() {
                    MAX_TRADES_MONTH_BYTES
                } else {
                    MAX_TRADES_DAY_BYTES
                };
            }
            // Funding settles at most hourly.
            (DataKind::FundingRate, _) => {
                u64::try_from((range.end() - range.start()) / crate::time::HOUR_MS).unwrap_or(0)
            }
            (_, Some(i)) => i.count_in(range.start(), range.end()),
            // The other archive tables: at most ~1 row a second (BVOL), or a few hundred
            // thousand a day (book depth's bands, every option's hourly summary).
            (_, None) => u64::try_from((range.end() - range.start()) / 250).unwrap_or(0),
        };
        // A header line and one row of slack.
        (rows + 2) * MAX_LINE_BYTES as u64
    }

    /// The most bytes the zip itself can hold: its CSV (stored, at worst) plus the zip's headers.
    pub fn max_zip_bytes(&self) -> u64 {
        self.max_csv_bytes() + 64 * 1024
    }

    /// Parses an object key (as listed) back into a [`FileKey`], leniently: non-zero-padded months
    /// and days (`2020-8`) are accepted. Returns `None` for anything else (CHECKSUM files, unknown
    /// kinds, option data).
    ///
    /// ```
    /// use dsm::vision::FileKey;
    /// let k = FileKey::from_path("data/spot/monthly/klines/ADABKRW/1d/ADABKRW-1d-2020-8.zip").unwrap();
    /// assert_eq!(k.path(), "data/spot/monthly/klines/ADABKRW/1d/ADABKRW-1d-2020-08.zip");
    /// ```
    pub fn from_path(path: &str) -> Option<FileKey> {
        let rest = path.strip_prefix("data/")?;
        let (market, rest) = if let Some(r) = rest.strip_prefix("spot/") {
            (Market::Spot, r)
        } else if let Some(r) = rest.strip_prefix("futures/um/") {
            (Market::UsdM, r)
        } else if let Some(r) = rest.strip_prefix("futures/cm/") {
            (Market::CoinM, r)
        } else if let Some(r) = rest.strip_prefix("option/") {
            (Market::Option, r)
        } else {
            return None;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (freq, kind, symbol, interval, file) = match parts.as_slice() {
            [freq, kind, symbol, interval, file] => (*freq, *kind, *symbol, Some(*interval), *file),
            [freq, kind, symbol, file] => (*freq, *kind, *symbol, None, *file),
            _ => return None,
        };
        let kind: DataKind = kind.parse().ok()?;
        if kind.vision_name() != parts[1] || kind.has_interval() != interval.is_some() {
            return None;
        }
        let interval = match interval {
            Some(i) => Some(i.parse::<Interval>().ok()?),
            None => None,
        };
        let symbol = Symbol::new(symbol).ok()?;
        let stem = file.strip_suffix(".zip")?;
        let middle = interval.map_or(kind.vision_name(), Interval::vision_name);
        let date = stem
            .strip_prefix(symbol.as_str())?
            .strip_prefix('-')?
            .strip_prefix(middle)?
            .strip_prefix('-')?;
        let nums: Vec<u32> = date
            .split('-')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let period = match (freq, nums.as_slice()) {
            ("daily", [y, m, d]) => {
                let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(*y).ok()?, *m, *d)?;
                debug_assert_eq!(date.day(), *d);
                Period::Day(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
            }
            ("monthly", [y, m]) if (1..=12).contains(m) => {
                Period::Month(month_start(i32::try_from(*y).ok()?, *m))
            }
            _ => return None,
        };
        Some(FileKey {
            dataset: Dataset {
                market,
                kind,
                symbol,
                interval,
            },
            period,
        })
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Whether Vision publishes daily files for `kind` at `interval` (funding and `3d`/`1w`/`1M`
/// candles are monthly only).
pub fn has_daily_files(kind: DataKind, interval: Option<Interval>) -> bool {
    kind.has_daily_files() && interval.is_none_or(Interval::has_daily_files)
}

/// Plans `range` into the fewest archive files, in time order: the monthly file for every month the
/// range covers entirely, daily files for the rest. Kinds and intervals without daily files
/// (funding, `3d`, `1w`, `1M`) use the monthly file for a partial month too; kinds without
/// monthly files (the archive tables but the book ticker) use daily files only.
///
/// Fails (before any network call) when the dataset's kind or interval is not offered on its
/// market.
///
/// ```
/// use dsm::{Dataset, Interval, Market, Symbol, TimeRange};
/// use dsm::time::parse_instant;
/// let range = TimeRange::new(parse_instant("2024-01-15")?, parse_instant("2024-03-10")?)?;
/// let btc = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
/// let keys = dsm::vision::plan(&btc, range)?;
/// // 17 days of January, February as one file, 9 days of March.
/// assert_eq!(keys.len(), 17 + 1 + 9);
/// assert!(keys[17].path().ends_with("BTCUSDT-1m-2024-02.zip"));
/// # Ok::<(), dsm::InputError>(())
/// ```
pub fn plan(dataset: &Dataset, range: TimeRange) -> Result<Vec<FileKey>, InputError> {
    dataset.check()?;
    let dailies = has_daily_files(dataset.kind, dataset.interval);
    let monthlies = dataset.kind.has_monthly_files();
    let key = |period| FileKey {
        dataset: dataset.clone(),
        period,
    };
    let mut out = Vec::new();
    for month in range.months() {
        if !dailies || (monthlies && range.covers(&month)) {
            out.push(key(Period::Month(month.start())));
        } else if let Some(part) = range.intersect(&month) {
            out.extend(part.days().map(|d| key(Period::Day(d.start()))));
        }
    }
    Ok(out)
}

/// The daily files that replace a monthly file that is not published yet, limited to the days that
/// overlap `range`. Empty when `key` is not monthly or the kind has no daily files.
pub fn fallback_days(key: &FileKey, range: &TimeRange) -> Vec<FileKey> {
    if !key.period.is_month() || !has_daily_files(key.dataset.kind, key.dataset.interval) {
        return Vec::new();
    }
    let Some(part) = range.intersect(&key.range()) else {
        return Vec::new();
    };
    part.days()
        .map(|d| FileKey {
            period: Period::Day(d.start()),
            ..key.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::time::parse_instant;

    fn t(s: &str) -> i64 {
        parse_instant(s).unwrap()
    }

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn candles(market: Market, interval: Interval) -> Dataset {
        Dataset::klines(market, sym("BTCUSDT"), interval)
    }

    #[test]
    fn paths_follow_the_key_grammar() {
        let k = |market, kind, s: &str, interval, period| FileKey {
            dataset: Dataset {
                market,
                kind,
                symbol: sym(s),
                interval,
            },
            period,
        };
        let cases = [
            (
                k(
                    Market::UsdM,
                    DataKind::FundingRate,
                    "BTCUSDT",
                    None,
                    Period::Month(t("2024-01-01")),
                ),
                "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip",
            ),
            (
                k(
                    Market::CoinM,
                    DataKind::Klines,
                    "BTCUSD_PERP",
                    Some(Interval::M1),
                    Period::Day(t("2024-01-01")),
                ),
                "data/futures/cm/daily/klines/BTCUSD_PERP/1m/BTCUSD_PERP-1m-2024-01-01.zip",
            ),
            (
                k(
                    Market::UsdM,
                    DataKind::MarkPriceKlines,
                    "BTCUSDT",
                    Some(Interval::M5),
                    Period::Day(t("2024-01-01")),
                ),
                "data/futures/um/daily/markPriceKlines/BTCUSDT/5m/BTCUSDT-5m-2024-01-01.zip",
            ),
            (
                k(
                    Market::Spot,
                    DataKind::Klines,
                    "BTCUSDT",
                    Some(Interval::Mo1),
                    Period::Month(t("2023-03-01")),
                ),
                "data/spot/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2023-03.zip",
            ),
            (
                k(
                    Market::CoinM,
                    DataKind::AggTrades,
                    "BTCUSD_PERP",
                    None,
                    Period::Day(t("2026-05-08")),
                ),
                "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip",
            ),
        ];
        for (key, path) in cases {
            assert_eq!(key.path(), path);
            assert_eq!(FileKey::from_path(path).as_ref(), Some(&key), "{path}");
        }
        assert!(
            FileKey::from_path(
                "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip.CHECKSUM"
            )
            .is_none()
        );
        let bvol = FileKey::from_path(
            "data/option/daily/BVOLIndex/BTCBVOLUSDT/BTCBVOLUSDT-BVOLIndex-2023-07-01.zip",
        )
        .expect("an option key");
        assert_eq!(bvol.dataset.market, Market::Option);
        assert_eq!(bvol.dataset.kind, DataKind::BvolIndex);
        assert!(
            FileKey::from_path("data/spot/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01-01.zip")
                .is_none()
        );
    }

    #[test]
    fn ranges_cover_the_period() {
        let r = Period::Month(t("2024-02-01")).range();
        assert_eq!((r.start(), r.end()), (t("2024-02-01"), t("2024-03-01")));
        let r = Period::day_of(t("2024-02-29T13:00:00Z")).range();
        assert_eq!((r.start(), r.end()), (t("2024-02-29"), t("2024-03-01")));
    }

    #[test]
    fn plan_uses_months_for_whole_months_and_days_for_the_rest() {
        let range = TimeRange::new(t("2024-01-15"), t("2024-03-10")).unwrap();
        let keys = plan(&candles(Market::Spot, Interval::M1), range).unwrap();
        let days: Vec<_> = keys.iter().filter(|k| !k.period.is_month()).collect();
        let months: Vec<_> = keys.iter().filter(|k| k.period.is_month()).collect();
        assert_eq!(days.len(), 17 + 9);
        assert_eq!(months.len(), 1);
        assert_eq!(months[0].period, Period::Month(t("2024-02-01")));
        assert_eq!(keys[0].period, Period::Day(t("2024-01-15")));
        assert_eq!(keys.last().unwrap().period, Period::Day(t("2024-03-09")));
        // Keys come in time order and together cover the range.
        for w in keys.windows(2) {
            assert_eq!(w[0].range().end(), w[1].range().start());
        }

        // A range ending mid-day includes that day's file.
        let range = TimeRange::new(t("2024-01-01"), t("2024-01-02T00:00:01Z")).unwrap();
        let keys = plan(&candles(Market::Spot, Interval::H1), range).unwrap();
        assert_eq!(keys.len(), 2);

        // Monthly-only kinds and intervals use the monthly file for partial months.
        let range = TimeRange::new(t("2024-01-15"), t("2024-02-10")).unwrap();
        for (kind, interval) in [
            (DataKind::FundingRate, None),
            (DataKind::Klines, Some(Interval::W1)),
            (DataKind::Klines, Some(Interval::D3)),
            (DataKind::Klines, Some(Interval::Mo1)),
        ] {
            let dataset = Dataset::new(Market::UsdM, kind, sym("BTCUSDT"), interval).unwrap();
            let keys = plan(&dataset, range).unwrap();
            assert_eq!(
                keys.iter().map(|k| k.period).collect::<Vec<_>>(),
                vec![
                    Period::Month(t("2024-01-01")),
                    Period::Month(t("2024-02-01"))
                ]
            );
        }
        assert!(plan(&candles(Market::UsdM, Interval::S1), range).is_err());
    }

    #[test]
    fn fallback_days_stay_inside_the_range() {
        let range = TimeRange::new(t("2024-01-15"), t("2024-03-10")).unwrap();
        let month = FileKey {
            dataset: candles(Market::Spot, Interval::M1),
            period: Period::Month(t("2024-02-01")),
        };
        let days = fallback_days(&month, &range);
        assert_eq!(days.len(), 29);
        let short = TimeRange::new(t("2024-02-27T12:00:00Z"), t("2024-03-10")).unwrap();
        assert_eq!(fallback_days(&month, &short).len(), 3);
        let funding = FileKey {
            dataset: Dataset::new(Market::UsdM, DataKind::FundingRate, sym("BTCUSDT"), None)
                .unwrap(),
            ..month
        };
        assert!(fallback_days(&funding, &range).is_empty());
    }
}
