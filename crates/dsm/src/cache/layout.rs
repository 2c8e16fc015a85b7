//! Where each dataset's partitions live: the versioned, Hive-style directory layout.
//!
//! `klines-v1/market=spot/symbol=BTCUSDT/interval=1m/year=2024/month=01/` holds one month of 1m
//! candles. Intervals under 1h are partitioned by month, 1h and longer by year; trades and
//! aggTrades by day; funding rates by year. The `-v1` suffix is the storage format version: a
//! format change bumps it, which makes old entries invisible instead of misread.

use chrono::Datelike;

use crate::market::{DataKind, Dataset};
use crate::time::{TimeRange, day_floor, month_floor, month_start, next_month, to_datetime};

/// Storage format version, part of every dataset directory name (`klines-v1`).
pub const FORMAT_VERSION: u32 = 1;

impl Dataset {
    /// The dataset directory, relative to the cache root, e.g.
    /// `klines-v1/market=spot/symbol=BTCUSDT/interval=1m`.
    pub fn dir(&self) -> String {
        let mut s = format!(
            "{}-v{FORMAT_VERSION}/market={}/symbol={}",
            self.kind.vision_name(),
            self.market.as_str(),
            self.symbol.as_str()
        );
        if let Some(i) = self.interval {
            s.push_str("/interval=");
            s.push_str(i.vision_name());
        }
        s
    }

    /// How this dataset is split into partitions, so files hold tens of thousands of rows, not
    /// millions: trades, the archive tables (one file a day) and 1s candles (86,400 a day) by
    /// day, other intervals under 1h by month (44,640 rows of 1m), 1h and longer and funding
    /// rates by year.
    pub fn granularity(&self) -> Granularity {
        match (self.kind, self.interval) {
            (DataKind::AggTrades | DataKind::Trades, _) => Granularity::Day,
            (kind, _) if kind.is_table() => Granularity::Day,
            (_, Some(crate::market::Interval::S1)) => Granularity::Day,
            (DataKind::FundingRate, _) => Granularity::Year,
            (_, Some(i)) if i.max_millis() < crate::time::HOUR_MS => Granularity::Month,
            _ => Granularity::Year,
        }
    }

    /// The partitions overlapping `range`, in time order.
    pub fn partitions(&self, range: TimeRange) -> Vec<Partition> {
        let g = self.granularity();
        let mut out = Vec::new();
        let mut start = g.floor(range.start());
        while start < range.end() {
            let end = g.next(start);
            out.push(Partition {
                dir: format!("{}/{}", self.dir(), g.dir_name(start)),
                range: TimeRange::new(start, end).unwrap_or(range),
            });
            start = end;
        }
        out
    }
}

/// The time span of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One UTC day (trades, aggTrades).
    Day,
    /// One calendar month (candles under 1h).
    Month,
    /// One calendar year (candles of 1h and longer, funding).
    Year,
}

impl Granularity {
    /// Start of the partition containing `ts`.
    pub fn floor(self, ts: i64) -> i64 {
        match self {
            Granularity::Day => day_floor(ts),
            Granularity::Month => month_floor(ts),
            Granularity::Year => month_start(to_datetime(ts).year(), 1),
        }
    }

    /// Start of the partition after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Granularity::Day => start + crate::time::DAY_MS,
            Granularity::Month => next_month(start),
            Granularity::Year => month_start(to_datetime(start).year() + 1, 1),
        }
    }

    /// The partition's directory below the dataset directory (`year=2024/month=01`).
    pub fn dir_name(self, start: i64) -> String {
        let d = to_datetime(start);
        match self {
            Granularity::Day => format!(
                "year={:04}/month={:02}/day={:02}",
                d.year(),
                d.month(),
                d.day()
            ),
            Granularity::Month => format!("year={:04}/month={:02}", d.year(), d.month()),
            Granularity::Year => format!("year={:04}", d.year()),
        }
    }
}

/// One partition of a dataset: a directory and the time span it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Directory relative to the cache root.
    pub dir: String,
    /// The span of open times the partition holds.
    pub range: TimeRange,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{Interval, Market, Symbol};
    use crate::time::parse_instant;

    fn t(s: &str) -> i64 {
        parse_instant(s).expect("valid test time")
    }

    fn key(kind: DataKind, interval: Option<Interval>) -> Dataset {
        Dataset::new(
            Market::Spot,
            kind,
            Symbol::new("BTCUSDT").expect("symbol"),
            interval,
        )
        .or_else(|_| {
            Dataset::new(
                Market::UsdM,
                kind,
                Symbol::new("BTCUSDT").expect("symbol"),
                interval,
            )
        })
        .expect("valid key")
    }

    #[test]
    fn hive_paths_follow_the_granularity() {
        let r = TimeRange::new(t("2024-01-31"), t("2024-02-02")).expect("range");
        let k = key(DataKind::Klines, Some(Interval::M1));
        let p = k.partitions(r);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].dir,
            "klines-v1/market=spot/symbol=BTCUSDT/interval=1m/year=2024/month=01"
        );
        assert_eq!(p[1].range.start(), t("2024-02-01"));
        assert_eq!(p[1].range.end(), t("2024-03-01"));

        let k = key(DataKind::Klines, Some(Interval::Mo1));
        let p = k.partitions(r);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].dir,
            "klines-v1/market=spot/symbol=BTCUSDT/interval=1mo/year=2024"
        );
        assert_eq!(p[0].range.end(), t("2025-01-01"));

        let k = key(DataKind::AggTrades, None);
        let p = k.partitions(r);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1].dir,
            "aggTrades-v1/market=spot/symbol=BTCUSDT/year=2024/month=02/day=01"
        );

        let k = key(DataKind::FundingRate, None);
        assert_eq!(k.market, Market::UsdM);
        assert_eq!(
            k.partitions(r)[0].dir,
            "fundingRate-v1/market=um/symbol=BTCUSDT/year=2024"
        );
        assert_eq!(
            key(DataKind::Klines, Some(Interval::H1)).granularity(),
            Granularity::Year
        );
        assert_eq!(
            key(DataKind::Klines, Some(Interval::M30)).granularity(),
            Granularity::Month
        );
        // A month of 1s is 2.6 M rows: one file per day instead.
        let k = Dataset::klines(
            Market::Spot,
            Symbol::new("BTCUSDT").expect("symbol"),
            Interval::S1,
        );
        assert_eq!(k.granularity(), Granularity::Day);
        assert_eq!(
            k.partitions(r)[0].dir,
            "klines-v1/market=spot/symbol=BTCUSDT/interval=1s/year=2024/month=01/day=31"
        );
    }
}
