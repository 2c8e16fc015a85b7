//! The one truth: every candle, funding record and trade served by Vision files, REST and the truth
//! accessors comes from here.
//!
//! Rows are produced per chunk (a UTC day for intervals up to `1d`, a calendar month for `3d`, `1w`,
//! `1M`, funding and their monthly files). A chunk comes from a real file under `root` when one covers it
//! (daily file first, then the monthly file of its month), else from the generator. Gap faults remove
//! rows afterwards, so both sources agree.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{Datelike, NaiveDate};

use crate::lru::Lru;
use crate::market::{
    DAY_MS, Interval, KlineKind, Market, SymbolSpec, date_ms, month_start_ms, ms_to_date,
    next_month,
};
use crate::synth::{
    self, AggTrade, Candle, FUNDING_DP, Funding, Series, Trade, TradeFmt, parse_fixed,
};

/// A downtime range (ms) removed from every candle series (or one symbol's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GapRange {
    pub start: i64,
    pub end: i64,
    pub symbol: Option<String>,
}

/// Key of a Vision object relative to the bucket (`data/spot/...`).
pub(crate) type Key = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Chunk {
    Day(NaiveDate),
    Month(i32, u32),
}

impl Chunk {
    pub(crate) fn start_ms(self) -> i64 {
        match self {
            Chunk::Day(d) => date_ms(d),
            Chunk::Month(y, m) => month_start_ms(y, m),
        }
    }
    pub(crate) fn end_ms(self) -> i64 {
        match self {
            Chunk::Day(d) => date_ms(d) + DAY_MS,
            Chunk::Month(y, m) => {
                let (y, m) = next_month(y, m);
                month_start_ms(y, m)
            }
        }
    }
    pub(crate) fn date_str(self) -> String {
        match self {
            Chunk::Day(d) => d.format("%Y-%m-%d").to_string(),
            Chunk::Month(y, m) => format!("{y:04}-{m:02}"),
        }
    }
    pub(crate) fn freq(self) -> &'static str {
        match self {
            Chunk::Day(_) => "daily",
            Chunk::Month(..) => "monthly",
        }
    }
    pub(crate) fn containing(t: i64, daily: bool) -> Chunk {
        let d = ms_to_date(t);
        if daily {
            Chunk::Day(d)
        } else {
            Chunk::Month(d.year(), d.month())
        }
    }
    pub(crate) fn first_day(self) -> NaiveDate {
        match self {
            Chunk::Day(d) => d,
            Chunk::Month(..) => ms_to_date(self.start_ms()),
        }
    }
    /// The next chunk of the same kind.
    pub(crate) fn succ(self) -> Chunk {
        Chunk::containing(self.end_ms(), matches!(self, Chunk::Day(_)))
    }
    /// The previous chunk of the same kind.
    pub(crate) fn pred(self) -> Chunk {
        Chunk::containing(self.start_ms() - 1, matches!(self, Chunk::Day(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChunkKey {
    market: Market,
    kind: KlineKind,
    name: String,
    interval: Interval,
    chunk: Chunk,
    generation: u64,
}

/// Rows parsed from real files, by key.
#[derive(Debug, Clone)]
enum RealRows {
    Candles(Arc<Vec<Candle>>),
    Funding(Arc<Vec<Funding>>),
    Trades(Arc<Vec<Trade>>),
    AggTrades(Arc<Vec<AggTrade>>),
    Unparsable,
}

#[derive(Debug)]
pub(crate) struct Store {
    pub trades_per_day: u32,
    /// The universe's seed (the archive tables derive their rows from it).
    pub seed: u64,
    pub symbols: Vec<SymbolSpec>,
    series: HashMap<(Market, KlineKind, String), Arc<Series>>,
    /// Real files under `root`, by key.
    pub real: BTreeMap<Key, PathBuf>,
    real_rows: Mutex<HashMap<Key, RealRows>>,
    chunks: Mutex<Lru<ChunkKey, Arc<Vec<Candle>>>>,
    gaps: RwLock<Arc<Vec<GapRange>>>,
    generation: AtomicU64,
}

fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<Key, PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, base, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let key: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.insert(key.join("/"), p);
        }
    }
}

impl Store {
    pub(crate) fn new(
        seed: u64,
        symbols: Vec<SymbolSpec>,
        root: Option<&Path>,
        trades_per_day: u32,
    ) -> Store {
        let mut series = HashMap::new();
        let mut index_specs: HashMap<(Market, String), SymbolSpec> = HashMap::new();
        for spec in &symbols {
            let kinds: &[KlineKind] = match spec.market {
                Market::Spot => &[KlineKind::Klines],
                Market::Um => &[
                    KlineKind::Klines,
                    KlineKind::MarkPrice,
                    KlineKind::PremiumIndex,
                ],
                Market::Cm if spec.is_perpetual() => &[
                    KlineKind::Klines,
                    KlineKind::MarkPrice,
                    KlineKind::PremiumIndex,
                ],
                Market::Cm => &[KlineKind::Klines, KlineKind::MarkPrice],
                // Option data is the archive's tables alone.
                Market::Option => &[],
            };
            for &k in kinds {
                series.insert(
                    (spec.market, k, spec.symbol.clone()),
                    Arc::new(Series::new(seed, spec, k, &spec.symbol)),
                );
            }
            if spec.market != Market::Spot {
                let pair = spec.pair();
                let e = index_specs
                    .entry((spec.market, pair.clone()))
                    .or_insert_with(|| spec.clone());
                if spec.listed < e.listed {
                    e.listed = spec.listed;
                }
                // Index series never deliver: use the pair as symbol.
                e.symbol = pair;
            }
        }
        for ((m, pair), spec) in index_specs {
            series.insert(
                (m, KlineKind::IndexPrice, pair.clone()),
                Arc::new(Series::new(seed, &spec, KlineKind::IndexPrice, &pair)),
            );
        }
        let mut real = BTreeMap::new();
        if let Some(root) = root {
            walk(&root.join("data"), root, &mut real);
        }
        Store {
            trades_per_day,
            seed,
            symbols,
            series,
            real,
            real_rows: Mutex::new(HashMap::new()),
            chunks: Mutex::new(Lru::new(1_000_000)),
            gaps: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
        }
    }

    /// Data generation: bumped whenever gaps change (part of every cache key).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn set_gaps(&self, gaps: Vec<GapRange>) {
        let mut g = self.gaps.write().unwrap_or_else(|e| e.into_inner());
        if **g != gaps {
            *g = Arc::new(gaps);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn gaps(&self) -> Arc<Vec<GapRange>> {
        self.gaps.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn spec(&self, market: Market, symbol: &str) -> Option<&SymbolSpec> {
        self.symbols
            .iter()
            .find(|s| s.market == market && s.symbol == symbol)
    }

    pub(crate) fn series(
        &self,
        market: Market,
        kind: KlineKind,
        name: &str,
    ) -> Option<Arc<Series>> {
        self.series.get(&(market, kind, name.to_string())).cloned()
    }

    /// Series names (symbols or pairs) of a kind on a market.
    pub(crate) fn series_names(&self, market: Market, kind: KlineKind) -> Vec<Arc<Series>> {
        let mut v: Vec<_> = self
            .series
            .iter()
            .filter(|((m, k, _), _)| *m == market && *k == kind)
            .map(|(_, s)| s.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn kline_key(s: &Series, interval: Interval, chunk: Chunk) -> Key {
        format!(
            "data/{}/{}/{}/{}/{}/{}-{}-{}.zip",
            s.market.vision_segment(),
            chunk.freq(),
            s.kind.data_type(),
            s.name,
            interval.vision_name(),
            s.name,
            interval.vision_name(),
            chunk.date_str()
        )
    }

    pub(crate) fn flat_key(market: Market, data_type: &str, symbol: &str, chunk: Chunk) -> Key {
        format!(
            "data/{}/{}/{}/{}/{}-{}-{}.zip",
            market.vision_segment(),
            chunk.freq(),
            data_type,
            symbol,
            symbol,
            data_type,
            chunk.date_str()
        )
    }

    fn real_rows(&self, key: &str, parse: impl FnOnce(&str) -> RealRows) -> Option<RealRows> {
        let path = self.real.get(key)?;
        if let Some(r) = self
            .real_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Some(r.clone());
        }
        let rows = read_zip_csv(path).map_or(RealRows::Unparsable, |t| parse(&t));
        if matches!(rows, RealRows::Unparsable) {
            tracing::warn!(
                key,
                "real file under root could not be parsed; using synthetic rows"
            );
        }
        self.real_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), rows.clone());
        Some(rows)
    }

    /// Real candles covering `chunk` (a daily file, else the month's file), if any.
    fn real_candles(&self, s: &Series, interval: Interval, chunk: Chunk) -> Option<Vec<Candle>> {
        let mut keys = vec![Self::kline_key(s, interval, chunk)];
        if let Chunk::Day(d) = chunk {
            keys.push(Self::kline_key(
                s,
                interval,
                Chunk::Month(d.year(), d.month()),
            ));
        }
        for key in keys {
            if let Some(RealRows::Candles(rows)) = self.real_rows(&key, |t| parse_candles(t, s)) {
                let (a, b) = (chunk.start_ms(), chunk.end_ms());
                return Some(
                    rows.iter()
                        .filter(|c| c.open_time >= a && c.open_time < b)
                        .copied()
                        .collect(),
                );
            }
        }
        None
    }

    pub(crate) fn kline_chunk_of(interval: Interval) -> bool {
        interval.has_daily_files()
    }

    /// All final candles opened in `chunk` (day chunks for intervals up to 1d, else month chunks),
    /// after listing/delivery and gap filtering.
    pub(crate) fn chunk(&self, s: &Series, interval: Interval, chunk: Chunk) -> Arc<Vec<Candle>> {
        let key = ChunkKey {
            market: s.market,
            kind: s.kind,
            name: s.name.clone(),
            interval,
            chunk,
            generation: self.generation(),
        };
        if let Some(v) = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return v;
        }
        let (a, b) = (chunk.start_ms(), chunk.end_ms());
        let mut rows = match self.real_candles(s, interval, chunk) {
            Some(r) => r,
            None => {
                let mut v = Vec::new();
                let mut t = interval.align(a);
                if t < a {
                    t = interval.next(t);
                }
                // Skip straight to the listing.
                if t + interval.len_at(t) <= s.listed_ms {
                    t = interval.align(s.listed_ms).max(t);
                }
                while t < b {
                    let len = interval.len_at(t);
                    if s.end_ms.is_some_and(|e| t >= e) {
                        break;
                    }
                    if s.has_candle(t, len) {
                        v.push(s.candle(interval, t));
                    }
                    t += len;
                }
                v
            }
        };
        let gaps = self.gaps();
        if !gaps.is_empty() {
            rows.retain(|c| {
                !gaps.iter().any(|g| {
                    c.open_time >= g.start
                        && c.open_time < g.end
                        && g.symbol.as_ref().is_none_or(|sym| *sym == s.name)
                })
            });
        }
        let rows = Arc::new(rows);
        self.chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, rows.clone(), rows.len().max(1));
        rows
    }

    fn chunk_for(interval: Interval, t: i64) -> Chunk {
        Chunk::containing(t, Self::kline_chunk_of(interval))
    }

    /// Candles with `lo <= open_time <= hi`, none opened after `now`, the candle containing `now`
    /// in its still-open version. `forward`: the first `limit`; else the last `limit`. Ascending.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select(
        &self,
        s: &Series,
        interval: Interval,
        lo: i64,
        hi: i64,
        limit: usize,
        now: i64,
        forward: bool,
    ) -> Vec<Candle> {
        let first = interval.align(s.listed_ms);
        let lo = lo.max(first);
        let mut hi = hi.min(now);
        if let Some(e) = s.end_ms {
            hi = hi.min(e - 1);
        }
        if lo > hi || limit == 0 {
            return Vec::new();
        }
        let mut out: Vec<Candle> = Vec::new();
        let in_range = |c: &Candle| c.open_time >= lo && c.open_time <= hi;
        if forward {
            let mut ch = Self::chunk_for(interval, lo);
            while ch.start_ms() <= hi && out.len() < limit {
                for c in self.chunk(s, interval, ch).iter().filter(|c| in_range(c)) {
                    out.push(*c);
                    if out.len() == limit {
                        break;
                    }
                }
                ch = ch.succ();
            }
        } else {
            let mut ch = Self::chunk_for(interval, hi);
            let mut parts: Vec<Vec<Candle>> = Vec::new();
            let mut n = 0;
            while ch.end_ms() > lo && n < limit {
                let rows: Vec<Candle> = self
                    .chunk(s, interval, ch)
                    .iter()
                    .filter(|c| in_range(c))
                    .copied()
                    .collect();
                let take = rows.len().min(limit - n);
                n += take;
                parts.push(rows[rows.len() - take..].to_vec());
                ch = ch.pred();
            }
            for p in parts.into_iter().rev() {
                out.extend(p);
            }
        }
        let tick = synth::POW10[usize::from(s.fmt.price_dp - s.fmt.price_tick_dp)];
        for c in &mut out {
            let len = interval.len_at(c.open_time);
            if c.open_time + len > now {
                *c = synth::open_version(c, now - c.open_time, len, tick);
            }
        }
        out
    }

    /// Closed candles with open time in `[start, end)`.
    pub(crate) fn closed(
        &self,
        s: &Series,
        interval: Interval,
        start: i64,
        end: i64,
        now: i64,
    ) -> Vec<Candle> {
        let mut out = Vec::new();
        let first = interval.align(s.listed_ms);
        let start = start.max(first);
        let end = end.min(now);
        if start >= end {
            return out;
        }
        let mut ch = Self::chunk_for(interval, start);
        while ch.start_ms() < end {
            out.extend(self.chunk(s, interval, ch).iter().filter(|c| {
                c.open_time >= start
                    && c.open_time < end
                    && c.open_time + interval.len_at(c.open_time) <= now
            }));
            ch = ch.succ();
        }
        out
    }

    /// Funding records of a month (real monthly file if present, else synthetic).
    pub(crate) fn funding_month(
        &self,
        market: Market,
        symbol: &str,
        y: i32,
        m: u32,
    ) -> Arc<Vec<Funding>> {
        let Some(mark) = self.series(market, KlineKind::MarkPrice, symbol) else {
            return Arc::new(Vec::new());
        };
        let chunk = Chunk::Month(y, m);
        let key = Self::flat_key(market, "fundingRate", symbol, chunk);
        if let Some(RealRows::Funding(rows)) = self.real_rows(&key, |t| parse_funding(t, &mark)) {
            return rows;
        }
        if self.spec(market, symbol).is_none_or(|s| !s.is_perpetual()) {
            return Arc::new(Vec::new());
        }
        Arc::new(synth::funding_between(
            &mark,
            chunk.start_ms(),
            chunk.end_ms(),
        ))
    }

    /// Funding records with time in `[start, end)`.
    pub(crate) fn funding(
        &self,
        market: Market,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Vec<Funding> {
        let Some(spec) = self.spec(market, symbol) else {
            return Vec::new();
        };
        let start = start.max(month_start_ms(spec.listed.year(), spec.listed.month()));
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut ch = Chunk::containing(start, false);
        while ch.start_ms() < end {
            if let Chunk::Month(y, m) = ch {
                out.extend(
                    self.funding_month(market, symbol, y, m)
                        .iter()
                        .filter(|f| f.time >= start && f.time < end),
                );
            }
            ch = ch.succ();
        }
        out
    }

    fn trade_series(&self, market: Market, symbol: &str) -> Option<Arc<Series>> {
        self.series(market, KlineKind::Klines, symbol)
    }

    fn in_gap(&self, symbol: &str, t: i64) -> bool {
        self.gaps()
            .iter()
            .any(|g| t >= g.start && t < g.end && g.symbol.as_ref().is_none_or(|s| s == symbol))
    }

    /// Trades of one day (real daily/monthly file if present).
    pub(crate) fn trades_day(&self, market: Market, symbol: &str, day: NaiveDate) -> Vec<Trade> {
        let Some(s) = self.trade_series(market, symbol) else {
            return Vec::new();
        };
        let (a, b) = (date_ms(day), date_ms(day) + DAY_MS);
        for key in [
            Self::flat_key(market, "trades", symbol, Chunk::Day(day)),
            Self::flat_key(
                market,
                "trades",
                symbol,
                Chunk::Month(day.year(), day.month()),
            ),
        ] {
            if let Some(RealRows::Trades(rows)) = self.real_rows(&key, |t| parse_trades(t, &s)) {
                return rows
                    .iter()
                    .filter(|r| r.time >= a && r.time < b)
                    .copied()
                    .collect();
            }
        }
        let mut v = synth::trades_of_day(&s, a, self.trades_per_day);
        v.retain(|t| !self.in_gap(symbol, t.time));
        v
    }

    /// Aggregate trades of one day (real daily/monthly file if present).
    pub(crate) fn agg_trades_day(
        &self,
        market: Market,
        symbol: &str,
        day: NaiveDate,
    ) -> Vec<AggTrade> {
        let Some(s) = self.trade_series(market, symbol) else {
            return Vec::new();
        };
        let (a, b) = (date_ms(day), date_ms(day) + DAY_MS);
        for key in [
            Self::flat_key(market, "aggTrades", symbol, Chunk::Day(day)),
            Self::flat_key(
                market,
                "aggTrades",
                symbol,
                Chunk::Month(day.year(), day.month()),
            ),
        ] {
            if let Some(RealRows::AggTrades(rows)) =
                self.real_rows(&key, |t| parse_agg_trades(t, &s))
            {
                return rows
                    .iter()
                    .filter(|r| r.time >= a && r.time < b)
                    .copied()
                    .collect();
            }
        }
        let mut v = synth::agg_trades_of_day(&s, a, self.trades_per_day);
        v.retain(|t| !self.in_gap(symbol, t.time));
        v
    }

    pub(crate) fn trade_fmt(
        &self,
        market: Market,
        symbol: &str,
    ) -> Option<(Arc<Series>, TradeFmt)> {
        let s = self.trade_series(market, symbol)?;
        let f = TradeFmt::for_series(&s);
        Some((s, f))
    }
}

/// Reads the first CSV entry of a zip into text.
pub(crate) fn read_zip_csv(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut z = zip::ZipArchive::new(f).ok()?;
    for i in 0..z.len() {
        let mut e = z.by_index(i).ok()?;
        let name = e.name().ok()?.to_string();
        if name.ends_with(".csv") && !name.starts_with("__MACOSX") {
            let mut s = String::new();
            e.read_to_string(&mut s).ok()?;
            return Some(s);
        }
    }
    None
}

fn data_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| {
            l.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
        })
        .map(|l| l.trim_end_matches('\r').split(',').collect())
}

fn to_ms(t: i64) -> i64 {
    if t >= 100_000_000_000_000 {
        t / 1000
    } else {
        t
    }
}

fn parse_candles(text: &str, s: &Series) -> RealRows {
    let f = s.fmt;
    let mut out = Vec::new();
    for c in data_lines(text) {
        let row = (|| {
            Some(Candle {
                open_time: to_ms(c.first()?.parse().ok()?),
                open: parse_fixed(c.get(1)?, f.price_dp)?,
                high: parse_fixed(c.get(2)?, f.price_dp)?,
                low: parse_fixed(c.get(3)?, f.price_dp)?,
                close: parse_fixed(c.get(4)?, f.price_dp)?,
                volume: parse_fixed(c.get(5)?, f.vol_dp)?,
                quote_volume: parse_fixed(c.get(7)?, f.quote_dp)?,
                count: c.get(8)?.parse().ok()?,
                taker_buy_volume: parse_fixed(c.get(9)?, f.vol_dp)?,
                taker_buy_quote_volume: parse_fixed(c.get(10)?, f.quote_dp)?,
            })
        })();
        match row {
            Some(r) => out.push(r),
            None => return RealRows::Unparsable,
        }
    }
    RealRows::Candles(Arc::new(out))
}

fn parse_funding(text: &str, mark: &Series) -> RealRows {
    let mut out = Vec::new();
    for c in data_lines(text) {
        let row = (|| {
            let time: i64 = c.first()?.parse().ok()?;
            Some(Funding {
                time,
                interval_hours: c.get(1)?.parse().ok()?,
                rate: parse_fixed(c.get(2)?, FUNDING_DP)?,
                mark: synth::to_fixed(mark.value_at(time), 8, 8),
            })
        })();
        match row {
            Some(r) => out.push(r),
            None => return RealRows::Unparsable,
        }
    }
    RealRows::Funding(Arc::new(out))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" => Some(true),
        "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_trades(text: &str, s: &Series) -> RealRows {
    let f = TradeFmt::for_series(s);
    let mut out = Vec::new();
    for c in data_lines(text) {
        let row = (|| {
            Some(Trade {
                id: c.first()?.parse().ok()?,
                price: parse_fixed(c.get(1)?, s.fmt.price_dp)?,
                qty: parse_fixed(c.get(2)?, f.qty_dp)?,
                quote_qty: parse_fixed(c.get(3)?, f.quote_dp)?,
                time: to_ms(c.get(4)?.parse().ok()?),
                is_buyer_maker: parse_bool(c.get(5)?)?,
            })
        })();
        match row {
            Some(r) => out.push(r),
            None => return RealRows::Unparsable,
        }
    }
    RealRows::Trades(Arc::new(out))
}

fn parse_agg_trades(text: &str, s: &Series) -> RealRows {
    let f = TradeFmt::for_series(s);
    let mut out = Vec::new();
    for c in data_lines(text) {
        let row = (|| {
            Some(AggTrade {
                agg_id: c.first()?.parse().ok()?,
                price: parse_fixed(c.get(1)?, s.fmt.price_dp)?,
                qty: parse_fixed(c.get(2)?, f.qty_dp)?,
                first_id: c.get(3)?.parse().ok()?,
                last_id: c.get(4)?.parse().ok()?,
                time: to_ms(c.get(5)?.parse().ok()?),
                is_buyer_maker: parse_bool(c.get(6)?)?,
            })
        })();
        match row {
            Some(r) => out.push(r),
            None => return RealRows::Unparsable,
        }
    }
    RealRows::AggTrades(Arc::new(out))
}
