//! The archive's tables (spec §1.3, §2.4): futures metrics, book depth, book ticker and
//! liquidation snapshots, option BVOL index and EOH summaries. Synthetic rows, written with the
//! archive's quirks: metrics unordered with repeated rows, text timestamps, liquidation snapshots
//! listing every row twice, the book ticker interleaved and discontinued after 2024-03-30, book
//! depth bands printed `-5` until 2025 and `-5.00` from 2026.

use chrono::NaiveDate;

use crate::market::{DAY_MS, Market, date_ms, utc};
use crate::store::Store;
use crate::synth::{fixed_string, fnv, splitmix};

/// An archive table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableKind {
    /// `metrics`: open interest and long/short ratios, every 5 minutes.
    Metrics,
    /// `bookDepth`: cumulative depth per ±% band.
    BookDepth,
    /// `bookTicker`: best bid and ask.
    BookTicker,
    /// `liquidationSnapshot` (COIN-M).
    Liquidations,
    /// `BVOLIndex` (options).
    BvolIndex,
    /// `EOHSummary` (options).
    EohSummary,
}

/// One row of a table as the truth has it: its time (ms) and its other cells as printed (the
/// EOH summary's `date` and `hour` are the time), in the file's column order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRow {
    /// The row's time (ms since the epoch, UTC).
    pub time: i64,
    /// The other cells, as the CSV prints them (empty for a missing number).
    pub fields: Vec<String>,
}

/// The day the book ticker's daily files end (exclusive): 2024-03-31.
const BOOK_TICKER_END: (i32, u32, u32) = (2024, 3, 31);
/// Liquidation snapshots: 2023-06-25 .. 2024-10-14.
const LIQUIDATIONS: ((i32, u32, u32), (i32, u32, u32)) = ((2023, 6, 25), (2024, 10, 15));
/// BVOL index and EOH summaries from 2023-06-20.
const OPTIONS_FROM: (i32, u32, u32) = (2023, 6, 20);
/// Book depth bands print with two decimals from this day on.
const BANDS_TWO_DECIMALS_FROM: (i32, u32, u32) = (2026, 1, 1);

fn day_ms((y, m, d): (i32, u32, u32)) -> i64 {
    utc(y, m, d, 0).timestamp_millis()
}

impl TableKind {
    /// Every table.
    pub const ALL: [TableKind; 6] = [
        TableKind::Metrics,
        TableKind::BookDepth,
        TableKind::BookTicker,
        TableKind::Liquidations,
        TableKind::BvolIndex,
        TableKind::EohSummary,
    ];

    /// The archive's data-type directory name.
    pub fn data_type(self) -> &'static str {
        match self {
            TableKind::Metrics => "metrics",
            TableKind::BookDepth => "bookDepth",
            TableKind::BookTicker => "bookTicker",
            TableKind::Liquidations => "liquidationSnapshot",
            TableKind::BvolIndex => "BVOLIndex",
            TableKind::EohSummary => "EOHSummary",
        }
    }

    pub(crate) fn from_data_type(s: &str) -> Option<TableKind> {
        TableKind::ALL.into_iter().find(|k| k.data_type() == s)
    }

    /// Whether the archive has this table on `market`.
    pub(crate) fn on(self, market: Market) -> bool {
        match self {
            TableKind::Metrics | TableKind::BookDepth | TableKind::BookTicker => {
                market.is_futures()
            }
            TableKind::Liquidations => market == Market::Cm,
            TableKind::BvolIndex | TableKind::EohSummary => market == Market::Option,
        }
    }

    /// Whether monthly files exist (the book ticker's only).
    pub(crate) fn monthly(self) -> bool {
        self == TableKind::BookTicker
    }

    fn header(self) -> &'static str {
        match self {
            TableKind::Metrics => {
                "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio"
            }
            TableKind::BookDepth => "timestamp,percentage,depth,notional",
            TableKind::BookTicker => {
                "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"
            }
            TableKind::Liquidations => {
                "time,side,order_type,time_in_force,original_quantity,price,average_price,order_status,last_fill_quantity,accumulated_fill_quantity"
            }
            TableKind::BvolIndex => "calc_time,symbol,base_asset,quote_asset,index_value",
            TableKind::EohSummary => {
                "date,hour,symbol,underlying,type,strike,open,high,low,close,volume_contracts,volume_usdt,best_bid_price,best_ask_price,best_bid_qty,best_ask_qty,best_buy_iv,best_sell_iv,mark_price,mark_iv,delta,gamma,vega,theta,openinterest_contracts,openinterest_usdt"
            }
        }
    }

    /// The symbols the table has on `market`: the perpetuals for futures tables, the BVOL
    /// indexes and the EOH underlyings for options.
    pub(crate) fn symbols(self, store: &Store, market: Market) -> Vec<String> {
        match self {
            TableKind::BvolIndex => vec!["BTCBVOLUSDT".into(), "ETHBVOLUSDT".into()],
            TableKind::EohSummary => vec!["BTCUSDT".into(), "ETHUSDT".into()],
            _ => store
                .symbols
                .iter()
                .filter(|s| s.market == market && s.is_perpetual() && self.on(market))
                .map(|s| s.symbol.clone())
                .collect(),
        }
    }

    /// `[first, end)` of the series of `symbol` on `market`, if it exists.
    pub(crate) fn life(self, store: &Store, market: Market, symbol: &str) -> Option<(i64, i64)> {
        if !self.on(market) || !self.symbols(store, market).iter().any(|s| s == symbol) {
            return None;
        }
        let listed = || {
            store
                .spec(market, symbol)
                .map(|s| s.listed.timestamp_millis())
        };
        Some(match self {
            TableKind::Metrics | TableKind::BookDepth => (listed()?, i64::MAX),
            TableKind::BookTicker => (listed()?, day_ms(BOOK_TICKER_END)),
            TableKind::Liquidations => (
                listed()?.max(day_ms(LIQUIDATIONS.0)),
                day_ms(LIQUIDATIONS.1),
            ),
            TableKind::BvolIndex | TableKind::EohSummary => (day_ms(OPTIONS_FROM), i64::MAX),
        })
    }

    /// The rows of `day` (unique, by time), the truth.
    pub(crate) fn rows(self, seed: u64, symbol: &str, day: NaiveDate) -> Vec<TableRow> {
        let d0 = date_ms(day);
        let base = splitmix(seed ^ fnv(symbol) ^ fnv(self.data_type()) ^ d0 as u64);
        let r = |i: u64, k: u64| splitmix(base ^ (i << 8) ^ k);
        // A fixed-point number printed with `dp` decimals from `lo` to `lo + span` units.
        let num = |i: u64, k: u64, lo: i64, span: u64, dp: u8| {
            fixed_string(lo + (r(i, k) % span.max(1)) as i64, dp)
        };
        let mut out = Vec::new();
        match self {
            TableKind::Metrics => {
                for i in 0..288u64 {
                    out.push(TableRow {
                        time: d0 + i as i64 * 300_000,
                        fields: vec![
                            symbol.to_string(),
                            num(i, 1, 5_000_000, 1_000_000, 4),
                            num(i, 2, 10_000_000_000, 1_000_000_000, 8),
                            num(i, 3, 100_000, 200_000, 10),
                            num(i, 4, 10_000, 30_000, 5),
                            num(i, 5, 10_000, 30_000, 5),
                            num(i, 6, 50_000, 100_000, 5),
                        ],
                    });
                }
            }
            TableKind::BookDepth => {
                let two = d0 >= day_ms(BANDS_TWO_DECIMALS_FROM);
                let bands: [i64; 12] = [
                    -500, -400, -300, -200, -100, -20, 20, 100, 200, 300, 400, 500,
                ];
                for i in 0..288u64 {
                    // Snapshots a few seconds after each 5 minutes, as the archive's are.
                    let t = d0 + i as i64 * 300_000 + (i as i64 * 7 % 30) * 1000;
                    for (j, b) in bands.iter().enumerate() {
                        let pct = if two {
                            fixed_string(*b, 2)
                        } else {
                            let s = fixed_string(*b, 2);
                            s.trim_end_matches('0').trim_end_matches('.').to_string()
                        };
                        let depth = 1_000_000 * (1 + (j as i64 - 6).unsigned_abs() as i64);
                        out.push(TableRow {
                            time: t,
                            fields: vec![
                                pct,
                                num(i, 10 + j as u64, depth, 500_000, 4),
                                num(i, 30 + j as u64, depth * 30_000, 500_000_000, 4),
                            ],
                        });
                    }
                }
            }
            TableKind::BookTicker => {
                let first_id = (d0 / 1000) * 10;
                for i in 0..1440u64 {
                    let t = d0 + i as i64 * 60_000 + (r(i, 1) % 1000) as i64;
                    out.push(TableRow {
                        time: t,
                        fields: vec![
                            (first_id + i as i64 * 7).to_string(),
                            num(i, 2, 3_000_000, 10_000, 2),
                            num(i, 3, 1, 10_000, 3),
                            num(i, 4, 3_010_000, 10_000, 2),
                            num(i, 5, 1, 10_000, 3),
                            (t + 1 + (r(i, 6) % 5) as i64).to_string(),
                        ],
                    });
                }
            }
            TableKind::Liquidations => {
                let mut times: Vec<i64> = (0..24u64)
                    .map(|i| d0 + (r(i, 1) % DAY_MS as u64) as i64)
                    .collect();
                times.sort_unstable();
                times.dedup();
                for (i, t) in times.into_iter().enumerate() {
                    let i = i as u64;
                    let qty = num(i, 3, 1, 500, 0);
                    out.push(TableRow {
                        time: t,
                        fields: vec![
                            if r(i, 2) % 2 == 0 { "BUY" } else { "SELL" }.into(),
                            "LIMIT".into(),
                            "IOC".into(),
                            qty.clone(),
                            num(i, 4, 250_000, 100_000, 1),
                            num(i, 5, 2_500_000, 1_000_000, 2),
                            "FILLED".into(),
                            qty.clone(),
                            qty,
                        ],
                    });
                }
            }
            TableKind::BvolIndex => {
                let base_asset = symbol.trim_end_matches("USDT");
                for i in 0..1440u64 {
                    out.push(TableRow {
                        time: d0 + i as i64 * 60_000 + (r(i, 1) % 50) as i64,
                        fields: vec![
                            symbol.to_string(),
                            base_asset.to_string(),
                            "USDT".into(),
                            num(i, 2, 4_000, 3_000, 2),
                        ],
                    });
                }
            }
            TableKind::EohSummary => {
                let asset = symbol.trim_end_matches("USDT");
                let expiry = day.succ_opt().unwrap_or(day).format("%y%m%d").to_string();
                for h in 0..24u64 {
                    for (j, (strike, kind)) in
                        [(40_000, 'C'), (40_000, 'P'), (45_000, 'C'), (45_000, 'P')]
                            .into_iter()
                            .enumerate()
                    {
                        let i = h * 4 + j as u64;
                        let traded = r(i, 1) % 3 != 0;
                        let quoted = r(i, 2) % 5 != 0;
                        let opt = |k: u64, lo: i64, span: u64, dp: u8, present: bool| {
                            if present {
                                num(i, k, lo, span, dp)
                            } else {
                                String::new()
                            }
                        };
                        let mut f = vec![
                            format!("{asset}-{expiry}-{strike}-{kind}"),
                            symbol.to_string(),
                            if kind == 'C' { "C" } else { "P" }.into(),
                            strike.to_string(),
                        ];
                        for k in 0..4 {
                            f.push(opt(10 + k, 1_000, 500, 1, traded));
                        }
                        f.push(if traded {
                            num(i, 20, 1, 50, 2)
                        } else {
                            "0".into()
                        });
                        f.push(if traded {
                            num(i, 21, 1, 500_000, 2)
                        } else {
                            "0".into()
                        });
                        f.push(opt(22, 1_000, 100, 1, quoted));
                        f.push(num(i, 23, 1_100, 100, 1));
                        f.push(opt(24, 1, 100, 2, quoted));
                        f.push(num(i, 25, 1, 100, 2));
                        f.push(opt(26, 3_000, 5_000, 4, quoted));
                        f.push(num(i, 27, 3_000, 5_000, 4));
                        f.push(num(i, 28, 1_000, 200, 1));
                        f.push(num(i, 29, 3_000, 5_000, 4));
                        for k in 0..4 {
                            f.push(num(i, 30 + k, -50_000, 100_000, 6));
                        }
                        f.push(num(i, 40, 1, 1_000, 2));
                        f.push(num(i, 41, 1, 10_000_000, 2));
                        out.push(TableRow {
                            time: d0 + h as i64 * 3_600_000,
                            fields: f,
                        });
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// One row as a CSV line.
    fn line(self, row: &TableRow) -> String {
        let text_time = || {
            chrono::DateTime::from_timestamp_millis(row.time)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let mut cells: Vec<String> = match self {
            TableKind::Metrics | TableKind::BookDepth => std::iter::once(text_time())
                .chain(row.fields.iter().cloned())
                .collect(),
            TableKind::BookTicker => {
                let mut c = row.fields[..5].to_vec();
                c.push(row.time.to_string());
                c.extend(row.fields[5..].iter().cloned());
                c
            }
            TableKind::Liquidations | TableKind::BvolIndex => std::iter::once(row.time.to_string())
                .chain(row.fields.iter().cloned())
                .collect(),
            TableKind::EohSummary => {
                let t = chrono::DateTime::from_timestamp_millis(row.time).unwrap_or_default();
                [
                    t.format("%Y-%m-%d").to_string(),
                    t.format("%-H").to_string(),
                ]
                .into_iter()
                .chain(row.fields.iter().cloned())
                .collect()
            }
        };
        let mut s = std::mem::take(&mut cells).join(",");
        s.push('\n');
        s
    }

    /// The CSV text of `day` as the archive writes it: header, then the rows with the table's
    /// quirks.
    pub(crate) fn write_day(self, buf: &mut Vec<u8>, rows: &[TableRow], header: bool) {
        if header {
            buf.extend_from_slice(self.header().as_bytes());
            buf.push(b'\n');
        }
        let lines: Vec<String> = rows.iter().map(|r| self.line(r)).collect();
        match self {
            TableKind::Metrics => {
                // Out of time order (a fixed shuffle), and every 37th row repeated.
                let n = lines.len();
                for k in 0..n {
                    let i = (k * 97) % n;
                    buf.extend_from_slice(lines[i].as_bytes());
                    if i.is_multiple_of(37) {
                        buf.extend_from_slice(lines[i].as_bytes());
                    }
                }
            }
            TableKind::Liquidations => {
                for l in &lines {
                    buf.extend_from_slice(l.as_bytes());
                    buf.extend_from_slice(l.as_bytes());
                }
            }
            TableKind::BookTicker => {
                // Interleaved: every tenth pair swapped.
                let mut i = 0;
                while i < lines.len() {
                    if i.is_multiple_of(10) && i + 1 < lines.len() {
                        buf.extend_from_slice(lines[i + 1].as_bytes());
                        buf.extend_from_slice(lines[i].as_bytes());
                        i += 2;
                    } else {
                        buf.extend_from_slice(lines[i].as_bytes());
                        i += 1;
                    }
                }
            }
            _ => {
                for l in &lines {
                    buf.extend_from_slice(l.as_bytes());
                }
            }
        }
    }
}
