//! One CSV row into a record of its kind, checked (field count, numbers, inside the file's
//! period), and the builders they go to.

use super::*;

/// Values above this are microseconds since the epoch (10^13 ms would be the year 2286).
pub(super) const MICROS_THRESHOLD: i64 = 10_000_000_000_000;

pub(super) enum Builder {
    Kline(KlineBuilder),
    Funding(FundingBuilder),
    Trade(TradeBuilder),
    Table(table::TableBuilder),
}

pub(super) struct RowParser<'a> {
    pub(super) key: &'a FileKey,
    pub(super) name: &'a str,
    pub(super) start: i64,
    pub(super) end: i64,
    /// Fields per row (tables count their own, in `TableBuilder`).
    pub(super) fields: usize,
    pub(super) builder: Builder,
    pub(super) duplicates: usize,
    pub(super) seen_data: bool,
}

pub(super) fn expected_fields(market: Market, kind: DataKind) -> usize {
    let spot = market == Market::Spot;
    match kind {
        DataKind::FundingRate => 3,
        DataKind::AggTrades => {
            if spot {
                8
            } else {
                7
            }
        }
        DataKind::Trades => {
            if spot {
                7
            } else {
                6
            }
        }
        // Klines; tables count their own columns (`TableBuilder`), from their header.
        _ => 12,
    }
}

impl<'a> RowParser<'a> {
    pub(super) fn new(key: &'a FileKey, name: &'a str, size_hint: usize) -> RowParser<'a> {
        let range = key.range();
        let builder = match (key.dataset.kind, key.dataset.interval) {
            (kind, _) if kind.is_table() => Builder::Table(table::TableBuilder::new(
                key.dataset.market,
                kind,
                (size_hint / 64).min(1 << 20),
            )),
            (DataKind::FundingRate, _) => Builder::Funding(FundingBuilder::new(128)),
            (DataKind::AggTrades | DataKind::Trades, _) => Builder::Trade(TradeBuilder::new(
                key.dataset.market,
                key.dataset.kind,
                // Grows as rows come; a declared size is only a hint (and may lie).
                (size_hint / 64).min(1 << 20),
            )),
            (kind, Some(interval)) => {
                let n = interval.count_in(range.start(), range.end());
                Builder::Kline(KlineBuilder::new(
                    key.dataset.market,
                    kind,
                    interval,
                    usize::try_from(n).unwrap_or(0).min(1 << 24),
                ))
            }
            // A kline kind without an interval cannot be planned; treat it as daily minutes.
            (kind, None) => Builder::Kline(KlineBuilder::new(
                key.dataset.market,
                kind,
                crate::market::Interval::M1,
                0,
            )),
        };
        RowParser {
            key,
            name,
            start: range.start(),
            end: range.end(),
            fields: expected_fields(key.dataset.market, key.dataset.kind),
            builder,
            duplicates: 0,
            seen_data: false,
        }
    }

    pub(super) fn invalid(&self, row: usize, reason: impl Into<String>) -> VisionError {
        VisionError::InvalidData {
            url: self.name.to_owned(),
            row,
            reason: reason.into(),
        }
    }

    pub(super) fn line(&mut self, row: usize, line: &[u8]) -> Result<(), VisionError> {
        let first = line[0];
        if let Builder::Table(b) = &mut self.builder {
            let done = if self.seen_data || first.is_ascii_digit() {
                self.seen_data = true;
                b.push(line, self.start, self.end)
            } else if row == 1 {
                b.header(line)
            } else {
                Err("a header row after the first line".into())
            };
            return done.map_err(|e| invalid(self.name, row, e));
        }
        if !(self.seen_data || first.is_ascii_digit() || first == b'-') {
            // A header row (futures files carry one from 2022 on; spot never).
            if row != 1 {
                return Err(self.invalid(row, "a header row after the first line"));
            }
            let n = line.iter().filter(|b| **b == b',').count() + 1;
            if n != self.fields {
                return Err(self.invalid(
                    row,
                    format!(
                        "header has {n} columns, {} has {}: {}",
                        self.key.dataset.kind,
                        self.fields,
                        String::from_utf8_lossy(line)
                    ),
                ));
            }
            return Ok(());
        }
        self.seen_data = true;
        if let Builder::Kline(b) = &mut self.builder
            && let Some(r) = kline_fast(line)
            && r.open_time >= self.start
            && r.open_time < self.end
        {
            // The common case, in one pass over the line; anything unusual (and every error)
            // goes through the general path below.
            let pushed = b.push(&r);
            return self.pushed(row, pushed);
        }
        let mut cols = [&[][..]; 12];
        let mut n = 0;
        for field in line.split(|b| *b == b',') {
            if n == self.fields {
                n += 1;
                break;
            }
            cols[n] = field;
            n += 1;
        }
        if n != self.fields {
            return Err(self.invalid(
                row,
                format!(
                    "expected {} comma-separated fields, found {}",
                    self.fields,
                    line.iter().filter(|b| **b == b',').count() + 1
                ),
            ));
        }
        let cols = &cols[..n];
        let pushed = match &mut self.builder {
            Builder::Kline(b) => {
                let r = kline(cols).map_err(|e| invalid(self.name, row, e))?;
                check_inside(self.start, self.end, r.open_time)
                    .map_err(|e| invalid(self.name, row, e))?;
                b.push(&r)
            }
            Builder::Funding(b) => {
                let r = funding(cols).map_err(|e| invalid(self.name, row, e))?;
                check_inside(self.start, self.end, r.funding_time)
                    .map_err(|e| invalid(self.name, row, e))?;
                b.push(&r)
            }
            // Handled above.
            Builder::Table(_) => return Ok(()),
            Builder::Trade(b) => {
                let r = if self.key.dataset.kind == DataKind::AggTrades {
                    agg_trade(cols)
                } else {
                    trade(cols)
                }
                .map_err(|e| invalid(self.name, row, e))?;
                check_inside(self.start, self.end, r.time_us.div_euclid(1000))
                    .map_err(|e| invalid(self.name, row, e))?;
                b.push(&r)
            }
        };
        self.pushed(row, pushed)
    }

    pub(super) fn pushed(
        &mut self,
        row: usize,
        pushed: Result<Pushed, RowError>,
    ) -> Result<(), VisionError> {
        match pushed {
            Ok(Pushed::Added) => Ok(()),
            Ok(Pushed::Duplicate) => {
                self.duplicates += 1;
                Ok(())
            }
            Err(RowError { reason, .. }) => Err(self.invalid(row, reason)),
        }
    }

    pub(super) fn finish(mut self) -> Result<Parsed, VisionError> {
        let batch = match self.builder {
            Builder::Kline(b) => b.finish(),
            Builder::Funding(b) => b.finish(),
            Builder::Trade(b) => b.finish(),
            Builder::Table(b) => {
                let (batch, repeats) = b.finish().map_err(|e| invalid(self.name, 0, e))?;
                self.duplicates += repeats;
                batch
            }
        };
        if self.duplicates > 0 {
            tracing::warn!(
                file = self.name,
                duplicates = self.duplicates,
                "dropped exact duplicate rows"
            );
        }
        Ok(Parsed {
            batch,
            duplicates: self.duplicates,
        })
    }
}

pub(super) fn invalid(name: &str, row: usize, reason: String) -> VisionError {
    VisionError::InvalidData {
        url: name.to_owned(),
        row,
        reason,
    }
}

pub(super) fn check_inside(start: i64, end: i64, t_ms: i64) -> Result<(), String> {
    if t_ms < start || t_ms >= end {
        return Err(format!(
            "time {} is outside the file's period [{}, {})",
            crate::time::format_ms(t_ms),
            crate::time::format_ms(start),
            crate::time::format_ms(end)
        ));
    }
    Ok(())
}

/// A timestamp in milliseconds (microsecond values are divided down).
pub(super) fn millis(s: &[u8], what: &str) -> Result<i64, String> {
    let v = int(s, what)?;
    Ok(if v > MICROS_THRESHOLD {
        v.div_euclid(1000)
    } else {
        v
    })
}

/// A timestamp in microseconds (millisecond values are multiplied up).
pub(super) fn micros(s: &[u8], what: &str) -> Result<i64, String> {
    let v = int(s, what)?;
    Ok(if v > MICROS_THRESHOLD {
        v
    } else {
        v.saturating_mul(1000)
    })
}

pub(super) fn kline(c: &[&[u8]]) -> Result<KlineRecord, String> {
    Ok(KlineRecord {
        open_time: millis(c[0], "open_time")?,
        open: float(c[1], "open")?,
        high: float(c[2], "high")?,
        low: float(c[3], "low")?,
        close: float(c[4], "close")?,
        volume: float(c[5], "volume")?,
        close_time: millis(c[6], "close_time")?,
        quote_volume: float(c[7], "quote_volume")?,
        count: int(c[8], "count")?,
        taker_buy_volume: float(c[9], "taker_buy_volume")?,
        taker_buy_quote_volume: float(c[10], "taker_buy_quote_volume")?,
    })
}

pub(super) fn funding(c: &[&[u8]]) -> Result<FundingRecord, String> {
    let hours = int(c[1], "funding_interval_hours")?;
    Ok(FundingRecord {
        funding_time: millis(c[0], "calc_time")?,
        funding_rate: float(c[2], "last_funding_rate")?,
        funding_interval_hours: Some(
            i32::try_from(hours)
                .map_err(|_| format!("funding_interval_hours {hours} is too large"))?,
        ),
        mark_price: None,
    })
}

pub(super) fn agg_trade(c: &[&[u8]]) -> Result<TradeRecord, String> {
    Ok(TradeRecord {
        id: int(c[0], "agg_trade_id")?,
        price: float(c[1], "price")?,
        qty: float(c[2], "quantity")?,
        quote_qty: 0.0,
        first_id: int(c[3], "first_trade_id")?,
        last_id: int(c[4], "last_trade_id")?,
        time_us: micros(c[5], "transact_time")?,
        is_buyer_maker: boolean(c[6], "is_buyer_maker")?,
        is_best_match: c.get(7).map(|b| boolean(b, "is_best_match")).transpose()?,
    })
}

pub(super) fn trade(c: &[&[u8]]) -> Result<TradeRecord, String> {
    Ok(TradeRecord {
        id: int(c[0], "id")?,
        price: float(c[1], "price")?,
        qty: float(c[2], "qty")?,
        quote_qty: float(c[3], "quote_qty")?,
        first_id: 0,
        last_id: 0,
        time_us: micros(c[4], "time")?,
        is_buyer_maker: boolean(c[5], "is_buyer_maker")?,
        is_best_match: c.get(6).map(|b| boolean(b, "is_best_match")).transpose()?,
    })
}

/// One-pass parse of a kline row made only of plain numbers: exactly 12 fields, the same record
/// [`kline`] gives on the split fields. `None` for anything else, which the caller then parses
/// (and reports) field by field.
#[inline]
pub(super) fn kline_fast(line: &[u8]) -> Option<KlineRecord> {
    let mut rest = line;
    let r = &mut rest;
    let open_time = field(r, int_prefix)?;
    let open = field(r, float_prefix)?;
    let high = field(r, float_prefix)?;
    let low = field(r, float_prefix)?;
    let close = field(r, float_prefix)?;
    let volume = field(r, float_prefix)?;
    let close_time = field(r, int_prefix)?;
    let quote_volume = field(r, float_prefix)?;
    let count = field(r, int_prefix)?;
    let taker_buy_volume = field(r, float_prefix)?;
    let taker_buy_quote_volume = field(r, float_prefix)?;
    // The 12th field (`ignore`) is not parsed, but there must be no 13th.
    if memchr::memchr(b',', rest).is_some() {
        return None;
    }
    let ms = |v: i64| {
        if v > MICROS_THRESHOLD {
            v.div_euclid(1000)
        } else {
            v
        }
    };
    Some(KlineRecord {
        open_time: ms(open_time),
        open,
        high,
        low,
        close,
        volume,
        close_time: ms(close_time),
        quote_volume,
        count,
        taker_buy_volume,
        taker_buy_quote_volume,
    })
}
