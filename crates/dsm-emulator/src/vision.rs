//! The Vision archive: key grammar, existence and publication rules, file synthesis (CSV in a deflated
//! zip, formatted per market and era), the bounded file cache, and the virtual key tree the S3 listing
//! walks.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::lru::Lru;
use crate::market::{DAY_MS, Interval, KlineKind, Market};
use crate::store::{Chunk, Store};
use crate::synth::{Candle, FUNDING_DP, write_fixed, write_int};
use crate::tables::TableKind;

/// What a Vision file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DataKind {
    Kline(KlineKind, Interval),
    Funding,
    Trades,
    AggTrades,
    Table(TableKind),
}

impl DataKind {
    fn data_type(self) -> &'static str {
        match self {
            DataKind::Kline(k, _) => k.data_type(),
            DataKind::Table(t) => t.data_type(),
            DataKind::Funding => "fundingRate",
            DataKind::Trades => "trades",
            DataKind::AggTrades => "aggTrades",
        }
    }
}

/// A synthetic-or-real Vision file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub market: Market,
    pub kind: DataKind,
    pub symbol: String,
    pub chunk: Chunk,
}

impl FileId {
    pub(crate) fn file_name(&self) -> String {
        let tok = match self.kind {
            DataKind::Kline(_, iv) => iv.vision_name(),
            other => other.data_type(),
        };
        format!("{}-{}-{}.zip", self.symbol, tok, self.chunk.date_str())
    }

    /// Key of the zip (`data/.../NAME.zip`).
    pub(crate) fn key(&self) -> String {
        let iv = match self.kind {
            DataKind::Kline(_, iv) => format!("{}/", iv.vision_name()),
            _ => String::new(),
        };
        format!(
            "data/{}/{}/{}/{}/{}{}",
            self.market.vision_segment(),
            self.chunk.freq(),
            self.kind.data_type(),
            self.symbol,
            iv,
            self.file_name()
        )
    }

    /// Parses a key (without leading `/`); returns the id and whether it names the `.CHECKSUM`.
    pub(crate) fn parse(key: &str) -> Option<(FileId, bool)> {
        let (zip_key, checksum) = match key.strip_suffix(".CHECKSUM") {
            Some(k) => (k, true),
            None => (key, false),
        };
        let segs: Vec<&str> = zip_key.split('/').collect();
        if segs.first() != Some(&"data") {
            return None;
        }
        let (market, rest) = match *segs.get(1)? {
            "spot" => (Market::Spot, &segs[2..]),
            "futures" => match *segs.get(2)? {
                "um" => (Market::Um, &segs[3..]),
                "cm" => (Market::Cm, &segs[3..]),
                _ => return None,
            },
            "option" => (Market::Option, &segs[2..]),
            _ => return None,
        };
        let (freq, dt, symbol) = (*rest.first()?, *rest.get(1)?, *rest.get(2)?);
        let kind = match dt {
            "fundingRate" => DataKind::Funding,
            "trades" => DataKind::Trades,
            "aggTrades" => DataKind::AggTrades,
            other if TableKind::from_data_type(other).is_some() => {
                DataKind::Table(TableKind::from_data_type(other)?)
            }
            other => DataKind::Kline(
                KlineKind::from_data_type(other)?,
                Interval::from_vision(rest.get(3)?)?,
            ),
        };
        let expected_len = if matches!(kind, DataKind::Kline(..)) {
            5
        } else {
            4
        };
        if rest.len() != expected_len {
            return None;
        }
        let name = rest.last()?;
        let tok = match kind {
            DataKind::Kline(_, iv) => iv.vision_name(),
            other => other.data_type(),
        };
        let date = name
            .strip_prefix(symbol)?
            .strip_prefix('-')?
            .strip_prefix(tok)?
            .strip_prefix('-')?
            .strip_suffix(".zip")?;
        let chunk = match freq {
            "daily" => Chunk::Day(NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?),
            "monthly" => {
                let (y, m) = date.split_once('-')?;
                let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
                Chunk::Month(y, m)
            }
            _ => return None,
        };
        let id = FileId {
            market,
            kind,
            symbol: symbol.to_string(),
            chunk,
        };
        // Re-render to reject non-canonical spellings (e.g. unpadded months).
        (id.key() == zip_key).then_some((id, checksum))
    }

    /// Approximate row count (drives listing cost decisions).
    pub(crate) fn estimated_rows(&self, trades_per_day: u32) -> u64 {
        let span = (self.chunk.end_ms() - self.chunk.start_ms()).max(0) as u64;
        match self.kind {
            DataKind::Kline(_, iv) => span / iv.fixed_ms().unwrap_or(30 * DAY_MS) as u64 + 1,
            DataKind::Funding => span / (8 * 3_600_000),
            DataKind::Trades | DataKind::AggTrades => {
                span / DAY_MS as u64 * u64::from(trades_per_day)
            }
            DataKind::Table(_) => span / DAY_MS as u64 * 3_456,
        }
    }
}

/// Publication, format and cost knobs the Vision side needs.
#[derive(Debug, Clone)]
pub(crate) struct VisionRules {
    pub daily_delay: TimeDelta,
    pub monthly_delay: TimeDelta,
    pub futures_klines_header_from: NaiveDate,
    pub futures_trades_header_from: NaiveDate,
    pub spot_micros_from: NaiveDate,
    pub checksum_trailing_newline: bool,
    pub listing_exact_max_rows: u64,
}

impl VisionRules {
    pub(crate) fn publish_time(&self, chunk: Chunk) -> DateTime<Utc> {
        let end = DateTime::from_timestamp_millis(chunk.end_ms()).unwrap_or_default();
        end + match chunk {
            Chunk::Day(_) => self.daily_delay,
            Chunk::Month(..) => self.monthly_delay,
        }
    }
}

/// A served object.
#[derive(Debug)]
pub(crate) struct Blob {
    pub bytes: Bytes,
    pub sha256: String,
    pub md5: String,
    pub last_modified: DateTime<Utc>,
}

impl Blob {
    pub(crate) fn new(bytes: Bytes, last_modified: DateTime<Utc>) -> Blob {
        Blob {
            sha256: hex::encode(Sha256::digest(&bytes)),
            md5: hex::encode(Md5::digest(&bytes)),
            bytes,
            last_modified,
        }
    }
}

/// What a served zip is: the file itself, or one of the content faults whose `.CHECKSUM` matches
/// the bytes served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Variant {
    Normal,
    Corrupt,
    /// Only the first per-mille of the data lines.
    Short(u32),
    /// An entry of this many bytes with no line break.
    NoNewline(u64),
    /// Re-published: this per-mille of the data lines changed.
    Republished(u32),
}

impl Variant {
    /// The variant a content fault serves, if it is one of those.
    pub(crate) fn of(kind: &crate::fault::FaultKind) -> Option<Variant> {
        use crate::fault::FaultKind;
        match kind {
            FaultKind::CorruptZipMatchingChecksum => Some(Variant::Corrupt),
            FaultKind::ShortFile { fraction } => {
                Some(Variant::Short((fraction * 1000.0).round() as u32))
            }
            FaultKind::NoNewline { bytes } => Some(Variant::NoNewline(*bytes)),
            FaultKind::Republish { fraction } => {
                Some(Variant::Republished((fraction * 1000.0).round() as u32))
            }
            _ => None,
        }
    }

    /// The bytes of this variant of the zip `normal`; `None` if it cannot be made.
    pub(crate) fn apply(self, normal: &[u8]) -> Option<Vec<u8>> {
        match self {
            Variant::Normal => Some(normal.to_vec()),
            Variant::Corrupt => Some(corrupt(normal)),
            Variant::Short(per_mille) => shorten(normal, per_mille),
            Variant::NoNewline(bytes) => no_newline(normal, bytes),
            Variant::Republished(per_mille) => republish(normal, per_mille),
        }
    }
}

type CacheKey = (String, u64, Variant);
type Cell = Arc<tokio::sync::OnceCell<Arc<Blob>>>;

/// The synthetic file cache: bounded LRU of finished blobs plus single-flight generation.
#[derive(Debug)]
pub(crate) struct FileCache {
    done: Mutex<Lru<CacheKey, Arc<Blob>>>,
    inflight: Mutex<HashMap<CacheKey, Cell>>,
}

impl FileCache {
    pub(crate) fn new(cap_bytes: usize) -> FileCache {
        FileCache {
            done: Mutex::new(Lru::new(cap_bytes)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn peek(&self, key: &CacheKey) -> Option<Arc<Blob>> {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peek(key)
    }

    pub(crate) async fn get_or_build(
        &self,
        key: CacheKey,
        build: impl FnOnce() -> Option<Blob> + Send + 'static,
    ) -> Option<Arc<Blob>> {
        if let Some(b) = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(b);
        }
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let res = cell
            .get_or_try_init(|| async move {
                match tokio::task::spawn_blocking(build).await {
                    Ok(Some(b)) => Ok(Arc::new(b)),
                    _ => Err(()),
                }
            })
            .await
            .ok()
            .cloned();
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(b) = &res {
            self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(
                key,
                b.clone(),
                b.bytes.len().max(1),
            );
        }
        res
    }
}

/// Whether the synthetic universe has `id` (ignoring publication).
pub(crate) fn synthetic_exists(store: &Store, id: &FileId) -> bool {
    let (a, b) = (id.chunk.start_ms(), id.chunk.end_ms());
    let (listed, end) = match id.kind {
        DataKind::Kline(kind, iv) => {
            if !iv.valid_for(id.market)
                || (matches!(id.chunk, Chunk::Day(_)) && !iv.has_daily_files())
            {
                return false;
            }
            match store.series(id.market, kind, &id.symbol) {
                Some(s) => (iv.align(s.listed_ms), s.end_ms),
                None => return false,
            }
        }
        DataKind::Funding => {
            if id.market == Market::Spot || matches!(id.chunk, Chunk::Day(_)) {
                return false;
            }
            match store.spec(id.market, &id.symbol) {
                Some(s) if s.is_perpetual() => (s.listed.timestamp_millis(), None),
                _ => return false,
            }
        }
        DataKind::Trades | DataKind::AggTrades => {
            match store.series(id.market, KlineKind::Klines, &id.symbol) {
                Some(s) => (s.listed_ms, s.end_ms),
                None => return false,
            }
        }
        DataKind::Table(t) => {
            if matches!(id.chunk, Chunk::Month(..)) && !t.monthly() {
                return false;
            }
            match t.life(store, id.market, &id.symbol) {
                Some((first, end)) => (first, Some(end)),
                None => return false,
            }
        }
    };
    b > listed && end.is_none_or(|e| a < e)
}

fn csv_name(id: &FileId) -> String {
    format!("{}.csv", id.file_name().trim_end_matches(".zip"))
}

struct Sink<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Sink<W> {
    fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= 1 << 20 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

fn push_bool(buf: &mut Vec<u8>, v: bool, spot: bool) {
    buf.extend_from_slice(match (v, spot) {
        (true, true) => b"True",
        (false, true) => b"False",
        (true, false) => b"true",
        (false, false) => b"false",
    });
}

/// Writes one kline row (`unit` = 1 for ms, 1000 for µs).
pub(crate) fn write_kline(
    buf: &mut Vec<u8>,
    c: &Candle,
    len: i64,
    unit: i64,
    f: crate::market::SeriesFmt,
) {
    write_int(buf, c.open_time * unit);
    for v in [c.open, c.high, c.low, c.close] {
        buf.push(b',');
        write_fixed(buf, v, f.price_dp);
    }
    buf.push(b',');
    write_fixed(buf, c.volume, f.vol_dp);
    buf.push(b',');
    write_int(buf, (c.open_time + len) * unit - 1);
    buf.push(b',');
    write_fixed(buf, c.quote_volume, f.quote_dp);
    buf.push(b',');
    write_int(buf, c.count);
    buf.push(b',');
    write_fixed(buf, c.taker_buy_volume, f.vol_dp);
    buf.push(b',');
    write_fixed(buf, c.taker_buy_quote_volume, f.quote_dp);
    buf.extend_from_slice(b",0\n");
}

/// Writes the CSV of a synthetic file into `out`; `None` when cancelled.
fn write_csv<W: Write>(
    store: &Store,
    rules: &VisionRules,
    id: &FileId,
    out: W,
    cancel: &CancellationToken,
) -> std::io::Result<Option<W>> {
    let mut s = Sink {
        buf: Vec::with_capacity(1 << 21),
        out,
    };
    let day0 = id.chunk.first_day();
    let spot = id.market == Market::Spot;
    let unit = if spot && day0 >= rules.spot_micros_from {
        1000
    } else {
        1
    };
    let days: Vec<NaiveDate> = match id.chunk {
        Chunk::Day(d) => vec![d],
        Chunk::Month(..) => {
            let mut v = Vec::new();
            let mut d = day0;
            while crate::market::date_ms(d) < id.chunk.end_ms() {
                v.push(d);
                d = d.succ_opt().unwrap_or(d);
                if v.len() > 31 {
                    break;
                }
            }
            v
        }
    };
    match id.kind {
        DataKind::Table(t) => {
            let life = t.life(store, id.market, &id.symbol);
            let mut header = true;
            for d in days {
                if cancel.is_cancelled() {
                    return Ok(None);
                }
                let alive = life.is_some_and(|(a, e)| {
                    let t0 = crate::market::date_ms(d);
                    t0 + DAY_MS > a && t0 < e
                });
                let rows = if alive {
                    t.rows(store.seed, &id.symbol, d)
                } else {
                    Vec::new()
                };
                t.write_day(&mut s.buf, &rows, header);
                header = false;
                s.maybe_flush()?;
            }
        }
        DataKind::Kline(kind, iv) => {
            if !spot && day0 >= rules.futures_klines_header_from {
                s.buf.extend_from_slice(b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n");
            }
            let Some(series) = store.series(id.market, kind, &id.symbol) else {
                return Ok(Some(s.out));
            };
            let chunks: Vec<Chunk> = if iv.has_daily_files() {
                days.iter().map(|d| Chunk::Day(*d)).collect()
            } else {
                vec![id.chunk]
            };
            for ch in chunks {
                if cancel.is_cancelled() {
                    return Ok(None);
                }
                for c in store.chunk(&series, iv, ch).iter() {
                    write_kline(&mut s.buf, c, iv.len_at(c.open_time), unit, series.fmt);
                    s.maybe_flush()?;
                }
            }
        }
        DataKind::Funding => {
            s.buf
                .extend_from_slice(b"calc_time,funding_interval_hours,last_funding_rate\n");
            if let Chunk::Month(y, m) = id.chunk {
                for f in store.funding_month(id.market, &id.symbol, y, m).iter() {
                    write_int(&mut s.buf, f.time);
                    s.buf.push(b',');
                    write_int(&mut s.buf, i64::from(f.interval_hours));
                    s.buf.push(b',');
                    write_fixed(&mut s.buf, f.rate, FUNDING_DP);
                    s.buf.push(b'\n');
                }
            }
        }
        DataKind::Trades | DataKind::AggTrades => {
            let Some((series, tf)) = store.trade_fmt(id.market, &id.symbol) else {
                return Ok(Some(s.out));
            };
            let agg = id.kind == DataKind::AggTrades;
            if !spot && day0 >= rules.futures_trades_header_from {
                s.buf.extend_from_slice(match (agg, id.market) {
                    (true, _) => {
                        b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
                            as &[u8]
                    }
                    (false, Market::Cm) => b"id,price,qty,base_qty,time,is_buyer_maker\n",
                    (false, _) => b"id,price,qty,quote_qty,time,is_buyer_maker\n",
                });
            }
            let pdp = series.fmt.price_dp;
            for d in days {
                if cancel.is_cancelled() {
                    return Ok(None);
                }
                if agg {
                    for t in store.agg_trades_day(id.market, &id.symbol, d) {
                        let b = &mut s.buf;
                        write_int(b, t.agg_id);
                        b.push(b',');
                        write_fixed(b, t.price, pdp);
                        b.push(b',');
                        write_fixed(b, t.qty, tf.qty_dp);
                        b.push(b',');
                        write_int(b, t.first_id);
                        b.push(b',');
                        write_int(b, t.last_id);
                        b.push(b',');
                        write_int(b, t.time * unit);
                        b.push(b',');
                        push_bool(b, t.is_buyer_maker, spot);
                        if spot {
                            b.extend_from_slice(b",True");
                        }
                        b.push(b'\n');
                        s.maybe_flush()?;
                    }
                } else {
                    for t in store.trades_day(id.market, &id.symbol, d) {
                        let b = &mut s.buf;
                        write_int(b, t.id);
                        b.push(b',');
                        write_fixed(b, t.price, pdp);
                        b.push(b',');
                        write_fixed(b, t.qty, tf.qty_dp);
                        b.push(b',');
                        write_fixed(b, t.quote_qty, tf.quote_dp);
                        b.push(b',');
                        write_int(b, t.time * unit);
                        b.push(b',');
                        push_bool(b, t.is_buyer_maker, spot);
                        if spot {
                            b.extend_from_slice(b",True");
                        }
                        b.push(b'\n');
                        s.maybe_flush()?;
                    }
                }
            }
        }
    }
    s.out.write_all(&s.buf)?;
    Ok(Some(s.out))
}

fn zip_time(t: DateTime<Utc>) -> zip::DateTime {
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).unwrap_or(1980),
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default()
}

/// Builds the zip of a synthetic file (one deflated CSV entry named like the zip).
pub(crate) fn build_zip(
    store: &Store,
    rules: &VisionRules,
    id: &FileId,
    cancel: &CancellationToken,
) -> Option<Blob> {
    let published = rules.publish_time(id.chunk);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(zip_time(published))
        .unix_permissions(0o644);
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zw.start_file(csv_name(id), opts).ok()?;
    let mut zw = write_csv(store, rules, id, zw, cancel).ok()??;
    zw.flush().ok()?;
    let bytes = zw.finish().ok()?.into_inner();
    Some(Blob::new(Bytes::from(bytes), published))
}

/// Deterministically corrupts a zip so it no longer opens (end-of-central-directory destroyed) and
/// its compressed data is damaged, keeping its length.
pub(crate) fn corrupt(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let n = v.len();
    let mid = n / 2;
    for b in v.iter_mut().skip(mid).take(64) {
        *b ^= 0x5A;
    }
    for b in v.iter_mut().skip(n.saturating_sub(22)) {
        *b = 0;
    }
    v
}

/// The name and text of a zip's first entry.
fn first_entry(zip_bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).ok()?;
    let mut entry = archive.by_index(0).ok()?;
    let name = entry.name().ok()?.into_owned();
    let mut text = Vec::new();
    entry.read_to_end(&mut text).ok()?;
    Some((name, text))
}

/// A zip of one deflated entry, written by `fill`.
fn zip_with(
    name: &str,
    fill: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>) -> std::io::Result<()>,
) -> Option<Vec<u8>> {
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .unix_permissions(0o644);
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zw.start_file(name, opts).ok()?;
    fill(&mut zw).ok()?;
    Some(zw.finish().ok()?.into_inner())
}

/// The zip with only the first `per_mille`/1000 of its data lines (a header line is kept): a
/// valid archive that holds part of the period.
fn shorten(zip_bytes: &[u8], per_mille: u32) -> Option<Vec<u8>> {
    let (name, text) = first_entry(zip_bytes)?;
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let header = lines
        .first()
        .is_some_and(|l| !l.first().is_some_and(u8::is_ascii_digit));
    let data = lines.len() - usize::from(header);
    let keep = usize::from(header) + data * per_mille as usize / 1000;
    zip_with(&name, |zw| {
        for l in &lines[..keep] {
            zw.write_all(l)?;
        }
        Ok(())
    })
}

/// The zip with one quantity changed on every `1000 / per_mille`-th data line: the candle volume
/// (field 6 of 12), else the third field (trade quantity, funding rate). Its last digit goes up by
/// one (a 9 is left alone), so every value stays valid.
fn republish(zip_bytes: &[u8], per_mille: u32) -> Option<Vec<u8>> {
    let (name, text) = first_entry(zip_bytes)?;
    let step = (1000 / per_mille.clamp(1, 1000)) as usize;
    let mut out = Vec::with_capacity(text.len());
    let mut data_line = 0usize;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let mut line = line.to_vec();
        if line.first().is_some_and(u8::is_ascii_digit) {
            if data_line.is_multiple_of(step) {
                let fields = line.iter().filter(|b| **b == b',').count() + 1;
                let target = if fields == 12 { 5 } else { 2 };
                let end = line
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b',' || **b == b'\n' || **b == b'\r')
                    .map(|(i, _)| i)
                    .chain(std::iter::once(line.len()))
                    .nth(target);
                if let Some(d) = end
                    .and_then(|e| e.checked_sub(1))
                    .and_then(|i| line.get_mut(i))
                    && d.is_ascii_digit()
                    && *d != b'9'
                {
                    *d += 1;
                }
            }
            data_line += 1;
        }
        out.extend_from_slice(&line);
    }
    zip_with(&name, |zw| zw.write_all(&out))
}

/// A zip named like `zip_bytes`'s entry whose entry is `bytes` bytes of digits with no line
/// break: a few MB that inflate to a huge single line.
fn no_newline(zip_bytes: &[u8], bytes: u64) -> Option<Vec<u8>> {
    let (name, _) = first_entry(zip_bytes)?;
    let chunk = vec![b'1'; 1 << 20];
    zip_with(&name, |zw| {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            zw.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}

/// The `.CHECKSUM` text for a zip with `sha256`.
pub(crate) fn checksum_text(sha256: &str, zip_name: &str, newline: bool) -> String {
    format!("{sha256}  {zip_name}{}", if newline { "\n" } else { "" })
}

/// A child in the virtual key tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Node {
    /// A directory (`name/`).
    Dir(String),
    /// A file: its name.
    File(String),
}

impl Node {
    pub(crate) fn name(&self) -> &str {
        match self {
            Node::Dir(n) | Node::File(n) => n,
        }
    }
}

fn data_types(market: Market, monthly: bool) -> Vec<&'static str> {
    let mut v = Vec::new();
    if market != Market::Option {
        v.extend(["aggTrades", "klines", "trades"]);
    }
    if market.is_futures() {
        v.extend(["indexPriceKlines", "markPriceKlines", "premiumIndexKlines"]);
        if monthly {
            v.push("fundingRate");
        }
    }
    v.extend(
        TableKind::ALL
            .into_iter()
            .filter(|t| t.on(market) && (!monthly || t.monthly()))
            .map(TableKind::data_type),
    );
    v.sort_unstable();
    v
}

/// First chunk with data for a (symbol, kind) and the last published one, if any.
fn chunk_range(
    store: &Store,
    rules: &VisionRules,
    proto: &FileId,
    now: DateTime<Utc>,
) -> Option<(Chunk, Chunk)> {
    let daily = matches!(proto.chunk, Chunk::Day(_));
    let (listed, end) = match proto.kind {
        DataKind::Kline(kind, iv) => {
            let s = store.series(proto.market, kind, &proto.symbol)?;
            (iv.align(s.listed_ms), s.end_ms)
        }
        DataKind::Funding => {
            let s = store.spec(proto.market, &proto.symbol)?;
            if !s.is_perpetual() {
                return None;
            }
            (s.listed.timestamp_millis(), None)
        }
        DataKind::Trades | DataKind::AggTrades => {
            let s = store.series(proto.market, KlineKind::Klines, &proto.symbol)?;
            (s.listed_ms, s.end_ms)
        }
        DataKind::Table(t) => {
            if !daily && !t.monthly() {
                return None;
            }
            let (first, end) = t.life(store, proto.market, &proto.symbol)?;
            (first, (end < i64::MAX).then_some(end))
        }
    };
    let first = Chunk::containing(listed, daily);
    let mut last = Chunk::containing(now.timestamp_millis(), daily);
    if let Some(e) = end {
        last = Chunk::containing(e - 1, daily);
        // Walk forward if needed is never required: delivery bounds the last chunk.
    }
    while rules.publish_time(last) > now {
        last = last.pred();
        if last.start_ms() < first.start_ms() {
            return None;
        }
    }
    (last.start_ms() >= first.start_ms()).then_some((first, last))
}

/// Children of a directory of the virtual tree (synthetic and real merged), sorted by key order.
pub(crate) fn children(
    store: &Store,
    rules: &VisionRules,
    dir: &str,
    now: DateTime<Utc>,
) -> Vec<Node> {
    let mut out: BTreeSet<Node> = BTreeSet::new();
    let segs: Vec<&str> = dir
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let dirs = |v: &[&str]| {
        v.iter()
            .map(|s| Node::Dir(format!("{s}/")))
            .collect::<Vec<_>>()
    };
    let market_of = |segs: &[&str]| -> Option<(Market, usize)> {
        match (segs.get(1), segs.get(2)) {
            (Some(&"spot"), _) => Some((Market::Spot, 2)),
            (Some(&"futures"), Some(&"um")) => Some((Market::Um, 3)),
            (Some(&"futures"), Some(&"cm")) => Some((Market::Cm, 3)),
            (Some(&"option"), _) => Some((Market::Option, 2)),
            _ => None,
        }
    };
    match segs.as_slice() {
        [] => out.extend(dirs(&["data"])),
        ["data"] => out.extend(dirs(&["futures", "option", "spot"])),
        ["data", "futures"] => out.extend(dirs(&["cm", "um"])),
        _ => {
            if let Some((market, at)) = market_of(&segs) {
                let rest = &segs[at..];
                match rest {
                    [] => out.extend(dirs(&["daily", "monthly"])),
                    [freq] if *freq == "daily" || *freq == "monthly" => {
                        out.extend(dirs(&data_types(market, *freq == "monthly")));
                    }
                    [freq, dt, tail @ ..] if *freq == "daily" || *freq == "monthly" => {
                        synthetic_children(store, rules, market, freq, dt, tail, now, &mut out);
                    }
                    _ => {}
                }
            }
        }
    }
    // Real files under root.
    for (key, _) in store.real.range(dir.to_string()..) {
        let Some(rest) = key.strip_prefix(dir) else {
            break;
        };
        match rest.split_once('/') {
            Some((d, _)) => out.insert(Node::Dir(format!("{d}/"))),
            None => {
                // Real files obey the publication gate when their key parses.
                let visible =
                    FileId::parse(key).is_none_or(|(id, _)| rules.publish_time(id.chunk) <= now);
                visible && out.insert(Node::File(rest.to_string()))
            }
        };
    }
    let mut v: Vec<Node> = out.into_iter().collect();
    v.sort_by_key(sort_name);
    v.dedup_by(|a, b| a.name() == b.name());
    v
}

fn sort_name(n: &Node) -> String {
    n.name().to_string()
}

#[allow(clippy::too_many_arguments)]
fn synthetic_children(
    store: &Store,
    rules: &VisionRules,
    market: Market,
    freq: &str,
    dt: &str,
    tail: &[&str],
    now: DateTime<Utc>,
    out: &mut BTreeSet<Node>,
) {
    let daily = freq == "daily";
    let proto_chunk = if daily {
        Chunk::Day(NaiveDate::default())
    } else {
        Chunk::Month(1970, 1)
    };
    let kline = KlineKind::from_data_type(dt);
    if !data_types(market, !daily).contains(&dt) {
        return;
    }
    let table = TableKind::from_data_type(dt);
    let names: Vec<String> = match (kline, table) {
        (_, Some(t)) => t.symbols(store, market),
        (Some(k), _) => store
            .series_names(market, k)
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        (None, None) => store
            .symbols
            .iter()
            .filter(|s| s.market == market)
            .map(|s| s.symbol.clone())
            .collect(),
    };
    let intervals: Vec<Interval> = Interval::ALL
        .into_iter()
        .filter(|iv| iv.valid_for(market) && (!daily || iv.has_daily_files()))
        .collect();
    let proto = |symbol: &str, iv: Option<Interval>| FileId {
        market,
        kind: match (table, kline, iv, dt) {
            (Some(t), ..) => DataKind::Table(t),
            (_, Some(k), Some(iv), _) => DataKind::Kline(k, iv),
            (.., "fundingRate") => DataKind::Funding,
            (.., "trades") => DataKind::Trades,
            _ => DataKind::AggTrades,
        },
        symbol: symbol.to_string(),
        chunk: proto_chunk,
    };
    let files = |p: FileId, out: &mut BTreeSet<Node>| {
        if let Some((first, last)) = chunk_range(store, rules, &p, now) {
            let mut c = first;
            loop {
                let id = FileId {
                    chunk: c,
                    ..p.clone()
                };
                let name = id.file_name();
                out.insert(Node::File(format!("{name}.CHECKSUM")));
                out.insert(Node::File(name));
                if c == last {
                    break;
                }
                c = c.succ();
            }
        }
    };
    match tail {
        [] => {
            for n in names {
                let any = match kline {
                    Some(_) => intervals
                        .iter()
                        .any(|iv| chunk_range(store, rules, &proto(&n, Some(*iv)), now).is_some()),
                    None => chunk_range(store, rules, &proto(&n, None), now).is_some(),
                };
                if any {
                    out.insert(Node::Dir(format!("{n}/")));
                }
            }
        }
        [sym] if names.iter().any(|n| n == sym) => match kline {
            Some(_) => {
                for iv in &intervals {
                    if chunk_range(store, rules, &proto(sym, Some(*iv)), now).is_some() {
                        out.insert(Node::Dir(format!("{}/", iv.vision_name())));
                    }
                }
            }
            None => files(proto(sym, None), out),
        },
        [sym, iv] if kline.is_some() && names.iter().any(|n| n == sym) => {
            if let Some(iv) = Interval::from_vision(iv).filter(|i| intervals.contains(i)) {
                files(proto(sym, Some(iv)), out);
            }
        }
        _ => {}
    }
}

/// One listed entry.
#[derive(Debug, Clone)]
pub(crate) enum Listed {
    Key(String),
    Prefix(String),
}

/// S3 ListObjects v1 over the virtual tree: keys `> marker` starting with `prefix`, rolled up at
/// `/` when `delimited`; at most `max_keys + 1` entries (the extra one only signals truncation).
pub(crate) fn list(
    store: &Store,
    rules: &VisionRules,
    prefix: &str,
    delimited: bool,
    marker: &str,
    max_keys: usize,
    now: DateTime<Utc>,
) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut stack: Vec<(String, Vec<Node>, usize)> =
        vec![(String::new(), children(store, rules, "", now), 0)];
    while let Some((dir, nodes, i)) = stack.last_mut() {
        if out.len() > max_keys {
            break;
        }
        let Some(node) = nodes.get(*i).cloned() else {
            stack.pop();
            continue;
        };
        *i += 1;
        let full = format!("{dir}{}", node.name());
        let relevant = full.starts_with(prefix) || prefix.starts_with(full.as_str());
        if !relevant {
            continue;
        }
        match node {
            Node::Dir(_) => {
                let inside = prefix.len() > full.len() && prefix.starts_with(full.as_str());
                let descend = if inside || prefix == full {
                    true
                } else if delimited {
                    // Every key below rolls up into this common prefix.
                    if full.as_str() > marker {
                        out.push(Listed::Prefix(full.clone()));
                    }
                    false
                } else {
                    full.as_str() > marker || marker.starts_with(full.as_str())
                };
                if descend {
                    let kids = children(store, rules, &full, now);
                    stack.push((full, kids, 0));
                }
            }
            Node::File(_) => {
                if full.starts_with(prefix) && full.as_str() > marker {
                    out.push(Listed::Key(full));
                }
            }
        }
    }
    out
}
