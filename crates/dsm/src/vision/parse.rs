//! Zip → CSV → Arrow, in memory: the single CSV entry is inflated in chunks and parsed line by line
//! into dsm's validating builders. No temporary files, and the CSV text is never held whole.
//!
//! Per file: a header row is detected by its first byte (not a digit); per value: timestamps above
//! 10^13 are microseconds (spot from 2025), below are milliseconds. Every row is checked (field
//! count, numbers, inside the file's day or month, then the builder's own checks); the first bad row
//! fails the whole file with its line number. Exact duplicate rows are dropped.

use std::borrow::Cow;
use std::io::{Cursor, Read};

use flate2::{Decompress, FlushDecompress, Status};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::record_batch::RecordBatch;

use super::VisionError;
use super::key::{FileKey, MAX_LINE_BYTES};
use crate::market::{DataKind, Market};
use crate::schema::{
    FundingBuilder, FundingRecord, KlineBuilder, KlineRecord, Pushed, RowError, TradeBuilder,
    TradeRecord,
};

/// Values above this are microseconds since the epoch (10^13 ms would be the year 2286).
const MICROS_THRESHOLD: i64 = 10_000_000_000_000;

/// Size of the inflate buffer when streaming.
const CHUNK: usize = 256 * 1024;

/// CSV entries up to this size are inflated whole with libdeflate (about twice as fast as
/// streaming zlib); larger ones (trades, some monthly files) stream through flate2 in [`CHUNK`]s
/// so memory stays bounded. Every kline file fits (a day of 1s is ~13 MB).
const WHOLE_MAX: u64 = 64 << 20;

/// Inflate buffers kept for the next file. A fresh buffer for a day of 1s candles (13 MB) pays a
/// page fault for each of its ~3,000 pages on every file; a reused one pays none. At most
/// [`SPARE_BUFFERS`] are kept, each at most [`SPARE_MAX_BYTES`], so this holds at most 64 MiB,
/// and no more buffers than files were ever parsed at once.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const SPARE_BUFFERS: usize = 4;
const SPARE_MAX_BYTES: usize = 16 << 20;

/// A buffer of `len` initialised bytes, reused if one is spare.
fn take_buffer(len: usize) -> Vec<u8> {
    let mut buf = SPARE
        .lock()
        .ok()
        .and_then(|mut s| s.pop())
        .unwrap_or_default();
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    buf
}

/// Keeps `buf` for [`take_buffer`] if it is small enough and there is room.
fn give_back(buf: Vec<u8>) {
    if buf.capacity() <= SPARE_MAX_BYTES
        && let Ok(mut spare) = SPARE.lock()
        && spare.len() < SPARE_BUFFERS
    {
        spare.push(buf);
    }
}

/// Check the cancel flag after this many lines.
const CANCEL_EVERY: usize = 16 * 1024;

/// The result of parsing one file.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub batch: RecordBatch,
    pub duplicates: usize,
}

/// Parses a Vision zip (already verified) into a record batch in dsm's schema for `key`.
///
/// Pure and synchronous: usable from a blocking thread, a benchmark, or a cache import. Errors name
/// the file by its object key.
///
/// ```no_run
/// use dsm::vision::{FileKey, parse_zip};
/// let path = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip";
/// let key = FileKey::from_path(path).expect("a Vision key");
/// let batch = parse_zip(&std::fs::read(path)?, &key)?;
/// assert_eq!(batch.num_rows(), 1440);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_zip(bytes: &[u8], key: &FileKey) -> Result<RecordBatch, VisionError> {
    parse_zip_inner(bytes, key, &key.path(), &AtomicBool::new(false)).map(|p| p.batch)
}

/// [`parse_zip`] with a name for errors and a cancel flag checked every few thousand rows.
pub(crate) fn parse_zip_inner(
    bytes: &[u8],
    key: &FileKey,
    name: &str,
    cancel: &AtomicBool,
) -> Result<Parsed, VisionError> {
    parse_zip_with(bytes, key, name, cancel, WHOLE_MAX)
}

/// [`parse_zip_inner`] with the largest CSV size inflated whole (larger ones stream).
fn parse_zip_with(
    bytes: &[u8],
    key: &FileKey,
    name: &str,
    cancel: &AtomicBool,
    whole_max: u64,
) -> Result<Parsed, VisionError> {
    let corrupt = |reason: String| VisionError::CorruptArchive {
        url: name.to_owned(),
        reason,
    };
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(format!("not a zip: {e}")))?;
    let index = csv_entry(&mut archive, key).map_err(corrupt)?;
    let entry = Entry::open(&mut archive, bytes, index).map_err(corrupt)?;
    let limit = key.max_csv_bytes();
    if entry.size > limit {
        return Err(VisionError::TooLarge {
            url: name.to_owned(),
            what: "its CSV entry declares",
            bytes: entry.size,
            limit,
        });
    }
    let size_hint = usize::try_from(entry.size).unwrap_or(0);
    let mut parser = RowParser::new(key, name, size_hint);
    let on_line = |line_no, line: &[u8]| parser.line(line_no, line);
    let lines = match entry.whole(whole_max).map_err(corrupt)? {
        Some(text) => {
            let lines = for_each_line_in(&text, cancel, on_line);
            if let Cow::Owned(buf) = text {
                give_back(buf);
            }
            lines
        }
        None => for_each_line(EntryReader::new(&entry), cancel, on_line),
    };
    lines.map_err(|e| match e {
        LineError::Io(e) => corrupt(format!("inflating the CSV failed: {e}")),
        LineError::Cancelled => VisionError::Cancelled,
        LineError::TooLong { line } => corrupt(format!(
            "line {line} is longer than {MAX_LINE_BYTES} bytes: not a Binance CSV"
        )),
        LineError::Row(e) => e,
    })?;
    Ok(parser.finish())
}

/// Picks the CSV entry: the one named like the zip, else the only `.csv` entry; junk such as
/// `__MACOSX/` and directories is ignored.
fn csv_entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, key: &FileKey) -> Result<usize, String> {
    let expected = key.file_name().replace(".zip", ".csv");
    let mut candidates = Vec::new();
    for i in 0..archive.len() {
        let Some(Ok(name)) = archive.name_for_index(i) else {
            continue;
        };
        let name: &str = &name;
        let base = name.rsplit('/').next().unwrap_or(name);
        if name.starts_with("__MACOSX/") || base.starts_with("._") || name.ends_with('/') {
            continue;
        }
        if !base.to_ascii_lowercase().ends_with(".csv") {
            continue;
        }
        if base == expected {
            return Ok(i);
        }
        candidates.push(i);
    }
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no CSV entry (expected {expected})")),
        _ => Err(format!(
            "{} CSV entries and none named {expected}",
            candidates.len()
        )),
    }
}

/// The CSV entry located in the in-memory zip (no zip-reader buffering layers): its raw data and
/// the central directory's uncompressed size and CRC-32, which are always checked.
struct Entry<'z> {
    /// The entry's compressed (or stored) data.
    data: &'z [u8],
    deflated: bool,
    size: u64,
    crc: u32,
}

impl<'z> Entry<'z> {
    fn open(
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        bytes: &'z [u8],
        index: usize,
    ) -> Result<Entry<'z>, String> {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| format!("cannot open the CSV entry: {e}"))?;
        if entry.encrypted() {
            return Err("the CSV entry is encrypted".into());
        }
        let deflated = match entry.compression() {
            zip::CompressionMethod::Stored => false,
            zip::CompressionMethod::Deflated => true,
            other => return Err(format!("unsupported compression method {other}")),
        };
        let data = entry
            .data_start()
            .and_then(|start| {
                let start = usize::try_from(start).ok()?;
                let len = usize::try_from(entry.compressed_size()).ok()?;
                bytes.get(start..start.checked_add(len)?)
            })
            .ok_or_else(|| {
                format!(
                    "the CSV entry's data ({} compressed bytes) lies outside the {}-byte zip",
                    entry.compressed_size(),
                    bytes.len()
                )
            })?;
        Ok(Entry {
            data,
            deflated,
            size: entry.size(),
            crc: entry.crc32(),
        })
    }

    /// The whole CSV text, size and CRC-32 checked: a stored entry as it lies in the zip, a
    /// deflated one up to `whole_max` bytes inflated at once into a buffer of exactly its declared
    /// size (libdeflate). `None`: too large, stream it with [`EntryReader`].
    fn whole(&self, whole_max: u64) -> Result<Option<Cow<'z, [u8]>>, String> {
        if !self.deflated {
            self.check(self.data.len() as u64, crc32fast::hash(self.data))?;
            return Ok(Some(Cow::Borrowed(self.data)));
        }
        if self.size > whole_max {
            return Ok(None);
        }
        let Ok(size) = usize::try_from(self.size) else {
            return Ok(None);
        };
        let mut text = take_buffer(size);
        let n = libdeflater::Decompressor::new()
            .deflate_decompress(self.data, &mut text)
            .map_err(|e| match e {
                libdeflater::DecompressionError::InsufficientSpace => self.past_size(),
                libdeflater::DecompressionError::BadData => {
                    "corrupt deflate data (libdeflate: bad data)".to_owned()
                }
            })?;
        text.truncate(n);
        self.check(n as u64, crc32fast::hash(&text))?;
        Ok(Some(Cow::Owned(text)))
    }

    fn past_size(&self) -> String {
        format!(
            "the CSV entry inflates past its declared {} bytes",
            self.size
        )
    }

    /// Checks the CSV's length and CRC-32 against the zip's.
    fn check(&self, len: u64, crc: u32) -> Result<(), String> {
        if len != self.size {
            return Err(format!(
                "the CSV entry inflated to {len} bytes, its header says {}",
                self.size
            ));
        }
        if crc != self.crc {
            return Err(format!(
                "CRC-32 mismatch: computed {crc:08x}, the zip says {:08x}",
                self.crc
            ));
        }
        Ok(())
    }
}

/// A deflated entry too large to hold whole, inflated chunk by chunk (flate2) with its size and
/// CRC-32 checked at the end.
struct EntryReader<'e, 'z> {
    entry: &'e Entry<'z>,
    inflate: Decompress,
    hasher: crc32fast::Hasher,
    out: u64,
    /// The deflate stream reached its end marker.
    ended: bool,
    done: bool,
}

impl<'e, 'z> EntryReader<'e, 'z> {
    fn new(entry: &'e Entry<'z>) -> EntryReader<'e, 'z> {
        EntryReader {
            entry,
            inflate: Decompress::new(false),
            hasher: crc32fast::Hasher::new(),
            out: 0,
            ended: false,
            done: false,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let d = &mut self.inflate;
        let n = if self.ended {
            0
        } else {
            loop {
                let (out_before, in_before) = (d.total_out(), d.total_in());
                let input = usize::try_from(in_before)
                    .ok()
                    .and_then(|i| self.entry.data.get(i..))
                    .unwrap_or_default();
                let status = d
                    .decompress(input, buf, FlushDecompress::None)
                    .map_err(|e| format!("corrupt deflate data: {e}"))?;
                let n = usize::try_from(d.total_out() - out_before).unwrap_or(0);
                if status == Status::StreamEnd {
                    self.ended = true;
                }
                if n > 0 || self.ended || buf.is_empty() {
                    break n;
                }
                if d.total_in() == in_before {
                    return Err(format!(
                        "the deflate stream ends early after {} of {} bytes",
                        self.out, self.entry.size
                    ));
                }
            }
        };
        self.hasher.update(&buf[..n]);
        self.out += n as u64;
        if self.out > self.entry.size {
            return Err(self.entry.past_size());
        }
        if n == 0 {
            self.done = true;
            self.entry.check(self.out, self.hasher.clone().finalize())?;
        }
        Ok(n)
    }
}

impl Read for EntryReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        self.fill(buf).map_err(std::io::Error::other)
    }
}

enum LineError {
    Io(std::io::Error),
    Cancelled,
    /// A line (1-based number) longer than [`MAX_LINE_BYTES`].
    TooLong {
        line: usize,
    },
    Row(VisionError),
}

/// Calls `f` for every complete line of `buf` (see [`for_each_line`]); returns the length of the
/// complete lines consumed (the rest is an unfinished line).
#[inline]
fn split_lines(
    buf: &[u8],
    line_no: &mut usize,
    f: &mut impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<usize, LineError> {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        emit_line(&buf[start..end], line_no, f)?;
        start = end + 1;
    }
    Ok(start)
}

#[inline]
fn emit_line(
    line: &[u8],
    line_no: &mut usize,
    f: &mut impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    *line_no += 1;
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { line: *line_no });
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Ok(());
    }
    f(*line_no, line).map_err(LineError::Row)
}

/// [`for_each_line`] over a CSV text held whole, checking `cancel` every [`CANCEL_EVERY`] lines.
fn for_each_line_in(
    text: &[u8],
    cancel: &AtomicBool,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    let mut line_no = 0usize;
    let mut pos = 0;
    while pos < text.len() {
        // About CANCEL_EVERY lines of kline text per slice, cut after a newline.
        let want = (pos + CANCEL_EVERY * 128).min(text.len());
        let end = match memchr::memchr(b'\n', &text[want..]) {
            Some(i) => want + i + 1,
            None => text.len(),
        };
        let slice = &text[pos..end];
        let done = split_lines(slice, &mut line_no, &mut f)?;
        if done < slice.len() {
            emit_line(&slice[done..], &mut line_no, &mut f)?;
        }
        pos = end;
        if cancel.load(Ordering::Relaxed) {
            return Err(LineError::Cancelled);
        }
    }
    Ok(())
}

/// Calls `f(line_number, line)` for every non-empty line (1-based numbers, `\r` trimmed), reading
/// `r` in chunks.
fn for_each_line<R: Read>(
    mut r: R,
    cancel: &AtomicBool,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    let mut line_no = 0usize;
    let mut next_check = CANCEL_EVERY;
    loop {
        if filled == buf.len() {
            // An unfinished line fills the whole buffer: far past any real row.
            return Err(LineError::TooLong { line: line_no + 1 });
        }
        let n = match r.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if n == 0 {
            if filled > 0 {
                emit_line(&buf[..filled], &mut line_no, &mut f)?;
            }
            return Ok(());
        }
        filled += n;
        let start = split_lines(&buf[..filled], &mut line_no, &mut f)?;
        buf.copy_within(start..filled, 0);
        filled -= start;
        if line_no >= next_check {
            next_check = line_no + CANCEL_EVERY;
            if cancel.load(Ordering::Relaxed) {
                return Err(LineError::Cancelled);
            }
        }
    }
}

enum Builder {
    Kline(KlineBuilder),
    Funding(FundingBuilder),
    Trade(TradeBuilder),
}

struct RowParser<'a> {
    key: &'a FileKey,
    name: &'a str,
    start: i64,
    end: i64,
    fields: usize,
    builder: Builder,
    duplicates: usize,
    seen_data: bool,
}

fn expected_fields(market: Market, kind: DataKind) -> usize {
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
        _ => 12,
    }
}

impl<'a> RowParser<'a> {
    fn new(key: &'a FileKey, name: &'a str, size_hint: usize) -> RowParser<'a> {
        let range = key.range();
        let builder = match (key.kind, key.interval) {
            (DataKind::FundingRate, _) => Builder::Funding(FundingBuilder::new(128)),
            (DataKind::AggTrades | DataKind::Trades, _) => Builder::Trade(TradeBuilder::new(
                key.market,
                key.kind,
                // Grows as rows come; a declared size is only a hint (and may lie).
                (size_hint / 64).min(1 << 20),
            )),
            (kind, Some(interval)) => {
                let n = interval.count_in(range.start(), range.end());
                Builder::Kline(KlineBuilder::new(
                    key.market,
                    kind,
                    interval,
                    usize::try_from(n).unwrap_or(0).min(1 << 24),
                ))
            }
            // A kline kind without an interval cannot be planned; treat it as daily minutes.
            (kind, None) => Builder::Kline(KlineBuilder::new(
                key.market,
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
            fields: expected_fields(key.market, key.kind),
            builder,
            duplicates: 0,
            seen_data: false,
        }
    }

    fn invalid(&self, row: usize, reason: impl Into<String>) -> VisionError {
        VisionError::InvalidData {
            url: self.name.to_owned(),
            row,
            reason: reason.into(),
        }
    }

    fn line(&mut self, row: usize, line: &[u8]) -> Result<(), VisionError> {
        let first = line[0];
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
                        self.key.kind,
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
            Builder::Trade(b) => {
                let r = if self.key.kind == DataKind::AggTrades {
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

    fn pushed(&mut self, row: usize, pushed: Result<Pushed, RowError>) -> Result<(), VisionError> {
        match pushed {
            Ok(Pushed::Added) => Ok(()),
            Ok(Pushed::Duplicate) => {
                self.duplicates += 1;
                Ok(())
            }
            Err(RowError { reason, .. }) => Err(self.invalid(row, reason)),
        }
    }

    fn finish(self) -> Parsed {
        if self.duplicates > 0 {
            tracing::warn!(
                file = self.name,
                duplicates = self.duplicates,
                "dropped exact duplicate rows"
            );
        }
        let batch = match self.builder {
            Builder::Kline(b) => b.finish(),
            Builder::Funding(b) => b.finish(),
            Builder::Trade(b) => b.finish(),
        };
        Parsed {
            batch,
            duplicates: self.duplicates,
        }
    }
}

fn invalid(name: &str, row: usize, reason: String) -> VisionError {
    VisionError::InvalidData {
        url: name.to_owned(),
        row,
        reason,
    }
}

fn check_inside(start: i64, end: i64, t_ms: i64) -> Result<(), String> {
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
fn millis(s: &[u8], what: &str) -> Result<i64, String> {
    let v = int(s, what)?;
    Ok(if v > MICROS_THRESHOLD {
        v.div_euclid(1000)
    } else {
        v
    })
}

/// A timestamp in microseconds (millisecond values are multiplied up).
fn micros(s: &[u8], what: &str) -> Result<i64, String> {
    let v = int(s, what)?;
    Ok(if v > MICROS_THRESHOLD {
        v
    } else {
        v.saturating_mul(1000)
    })
}

fn kline(c: &[&[u8]]) -> Result<KlineRecord, String> {
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

fn funding(c: &[&[u8]]) -> Result<FundingRecord, String> {
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

fn agg_trade(c: &[&[u8]]) -> Result<TradeRecord, String> {
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

fn trade(c: &[&[u8]]) -> Result<TradeRecord, String> {
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

fn bad(s: &[u8], what: &str, expected: &str) -> String {
    format!(
        "{what} {:?} is not {expected}",
        String::from_utf8_lossy(&s[..s.len().min(40)])
    )
}

fn boolean(s: &[u8], what: &str) -> Result<bool, String> {
    match s {
        b"true" | b"True" | b"TRUE" => Ok(true),
        b"false" | b"False" | b"FALSE" => Ok(false),
        _ => Err(bad(s, what, "true or false")),
    }
}

/// A decimal integer with an optional leading `-`.
fn int(s: &[u8], what: &str) -> Result<i64, String> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad(s, what, "an integer"));
    }
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad(s, what, "an integer"));
        }
        v = v * 10 + i64::from(d);
    }
    Ok(if neg { -v } else { v })
}

/// Exact powers of ten representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

fn float(s: &[u8], what: &str) -> Result<f64, String> {
    parse_f64(s).ok_or_else(|| bad(s, what, "a number"))
}

/// Parses a number exactly as `str::parse::<f64>` would, rejecting non-finite results.
///
/// Plain decimals (`-123.456`, what Binance writes) take [`float_prefix`]; anything else
/// (exponents, `+`, long mantissas, garbage) goes to the standard parser.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    if let Some((v, n)) = float_prefix(s)
        && n == s.len()
    {
        return Some(v);
    }
    // Slow path: the standard library's correctly rounded parser (rejects garbage, accepts
    // exponents and long mantissas).
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

/// `10^n` for `n <= 8`.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The value of eight ASCII digits loaded little-endian (first digit in the lowest byte); SWAR:
/// pairs, then quads, then all eight, in three multiplies.
#[inline(always)]
fn eight_digits_value(v: u64) -> u64 {
    let v = v.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    (v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

/// Accumulates the ASCII digits at the start of `s` into `mant` (wrapping: callers bound the
/// count); returns how many there were.
///
/// Eight bytes at a time: a byte is a digit when `byte ^ 0x30 < 10`; the first non-digit ends the
/// run, and the digits before it are left-padded with `'0'` to eight and converted at once. Bytes
/// after the first non-digit may get garbled flags (carries), which does not matter.
#[inline(always)]
fn digits(s: &[u8], mant: &mut u64) -> usize {
    let mut i = 0;
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let v = u64::from_le_bytes(*chunk);
        let t = v ^ 0x3030_3030_3030_3030;
        let non_digit = (t.wrapping_add(0x7676_7676_7676_7676) | t) & 0x8080_8080_8080_8080;
        if non_digit == 0 {
            *mant = mant
                .wrapping_mul(100_000_000)
                .wrapping_add(eight_digits_value(v));
            i += 8;
            continue;
        }
        let n = (non_digit.trailing_zeros() / 8) as usize; // 0..=7 digits
        if n > 0 {
            let shift = 8 * (8 - n as u32);
            let padded = (v << shift) | (0x3030_3030_3030_3030 >> (64 - shift));
            *mant = mant
                .wrapping_mul(POW10_U64[n])
                .wrapping_add(eight_digits_value(padded));
        }
        return i + n;
    }
    // Fewer than eight bytes left.
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    i
}

/// The plain decimal (`-?digits[.digits]`) at the start of `s` and its length in bytes, when it
/// can be converted exactly with one IEEE division (Clinger's fast path): at most 19 digits, the
/// digits as an integer `m <= 2^53`, at most 22 of them after the point. Then `m / 10^k` is a
/// correctly rounded division of two exact values, i.e. the correctly rounded decimal, the same
/// value `str::parse::<f64>` gives for `s[..len]`. `None` for anything else (callers fall back).
#[inline(always)]
fn float_prefix(s: &[u8]) -> Option<(f64, usize)> {
    let neg = s.first() == Some(&b'-');
    let start = usize::from(neg);
    let body = s.get(start..)?;
    let mut mant = 0u64;
    let int_digits = digits(body, &mut mant);
    let mut len = int_digits;
    let mut frac_digits = 0;
    if body.get(len) == Some(&b'.') {
        frac_digits = digits(body.get(len + 1..)?, &mut mant);
        len += 1 + frac_digits;
    }
    let total = int_digits + frac_digits;
    if total == 0 || total > 19 || mant > (1u64 << 53) || frac_digits >= POW10.len() {
        return None;
    }
    // mant <= 2^53 is exact as an f64.
    let v = mant as f64 / POW10[frac_digits];
    Some((if neg { -v } else { v }, start + len))
}

/// The integer (`-?digits`, at most 18 digits) at the start of `s` and its length, as [`int`]
/// would parse it.
#[inline(always)]
fn int_prefix(s: &[u8]) -> Option<(i64, usize)> {
    let neg = s.first() == Some(&b'-');
    let start = usize::from(neg);
    let mut v = 0u64;
    let n = digits(s.get(start..)?, &mut v);
    if n == 0 || n > 18 {
        return None;
    }
    let v = i64::try_from(v).ok()?;
    Some((if neg { -v } else { v }, start + n))
}

/// Parses the value at the start of `rest` with `parse`, which must end right before a comma;
/// moves `rest` past the comma.
#[inline(always)]
fn field<T>(rest: &mut &[u8], parse: impl Fn(&[u8]) -> Option<(T, usize)>) -> Option<T> {
    let (v, n) = parse(rest)?;
    let (&comma, after) = rest.get(n..)?.split_first()?;
    if comma != b',' {
        return None;
    }
    *rest = after;
    Some(v)
}

/// One-pass parse of a kline row made only of plain numbers: exactly 12 fields, the same record
/// [`kline`] gives on the split fields. `None` for anything else, which the caller then parses
/// (and reports) field by field.
#[inline]
fn kline_fast(line: &[u8]) -> Option<KlineRecord> {
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

/// Parses the text of a `.CHECKSUM` sidecar: the first whitespace-delimited token, 64 hex digits
/// (returned lower-case). Trailing newline or CRLF, or none, are all accepted.
pub fn parse_checksum(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let token = text.split_whitespace().next()?;
    (token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| token.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksum_files_parse_with_or_without_newline() {
        let h = "dd579c62368ded93d3f01a1904575b932279e32936e181c062763e605793c1c2";
        for text in [
            format!("{h}  BTCUSDT-1m-2020-01-01.zip"),
            format!("{h}  BTCUSDT-1m-2020-01-01.zip\n"),
            format!("{h}  BTCUSDT-1m-2020-01-01.zip\r\n"),
            format!("{}  x.zip", h.to_uppercase()),
        ] {
            assert_eq!(parse_checksum(text.as_bytes()).as_deref(), Some(h));
        }
        assert_eq!(parse_checksum(b""), None);
        assert_eq!(parse_checksum(b"abc  x.zip"), None);
        assert_eq!(
            parse_checksum(b"<Error><Code>AccessDenied</Code></Error>"),
            None
        );
    }

    #[test]
    fn floats_match_the_standard_parser() {
        for s in [
            "7195.24000000",
            "0.00003449",
            "-0.00003449",
            "542.0",
            "79972.8",
            "0",
            "1e5",
            "371233.51835535",
            "12345678901234567890.5",
            "1.",
            ".5",
            "-.5",
            "+1.5",
            "00012.50",
            "9007199254740993",
            "0.9007199254740993",
        ] {
            assert_eq!(parse_f64(s.as_bytes()), s.parse::<f64>().ok(), "{s}");
        }
        for s in [
            "", "-", ".", "1.2.3", "abc", "1,0", "NaN", "inf", "1.5x", "1..5", "-.", "1-",
        ] {
            assert_eq!(parse_f64(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn ints_and_booleans() {
        assert_eq!(int(b"-1", "x"), Ok(-1));
        assert_eq!(int(b"1577836800000", "x"), Ok(1_577_836_800_000));
        assert!(int(b"1.0", "x").is_err());
        assert!(int(b"", "x").is_err());
        assert_eq!(boolean(b"True", "x"), Ok(true));
        assert_eq!(boolean(b"false", "x"), Ok(false));
        assert!(boolean(b"1", "x").is_err());
        assert_eq!(millis(b"1735689600000000", "t"), Ok(1_735_689_600_000));
        assert_eq!(millis(b"1735693199999999", "t"), Ok(1_735_693_199_999));
        assert_eq!(micros(b"1778198400020", "t"), Ok(1_778_198_400_020_000));
    }

    /// `shared/binance-vision-samples` beside the repository (or, from a git worktree, beside one
    /// of its ancestors), or `$DSM_VISION_SAMPLES`.
    fn samples_dir() -> String {
        let beside = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/binance-vision-samples"
        );
        std::env::var("DSM_VISION_SAMPLES")
            .ok()
            .into_iter()
            .chain([beside.to_owned()])
            .chain(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .ancestors()
                    .map(|a| {
                        a.join("shared/binance-vision-samples")
                            .display()
                            .to_string()
                    }),
            )
            .find(|d| std::path::Path::new(d).is_dir())
            .unwrap_or_else(|| beside.to_owned())
    }

    const REAL_1M: &str = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip";

    /// The real 2020-01-01 1m zip and its CSV text, or `None` (skipped) without the samples.
    fn real_file() -> Option<(Vec<u8>, Vec<u8>)> {
        let dir = samples_dir();
        let Ok(zip_bytes) = std::fs::read(format!("{dir}/{REAL_1M}")) else {
            eprintln!("skipped: {dir}/{REAL_1M} not found");
            return None;
        };
        let mut z = zip::ZipArchive::new(Cursor::new(&zip_bytes[..])).unwrap();
        let mut csv = Vec::new();
        z.by_index(0).unwrap().read_to_end(&mut csv).unwrap();
        Some((zip_bytes, csv))
    }

    fn rezip(csv: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file("BTCUSDT-1m-2020-01-01.csv", opts).unwrap();
        w.write_all(csv).unwrap();
        w.finish().unwrap().into_inner()
    }

    /// Offsets of every occurrence of a 4-byte little-endian zip signature.
    fn signatures(zip: &[u8], sig: u32) -> Vec<usize> {
        let sig = sig.to_le_bytes();
        (0..zip.len().saturating_sub(3))
            .filter(|&i| zip[i..i + 4] == sig)
            .collect()
    }

    #[test]
    fn stored_and_deflated_entries_parse_like_the_real_file() {
        let Some((zip_bytes, csv)) = real_file() else {
            return;
        };
        let key = FileKey::from_path(REAL_1M).unwrap();
        let real = parse_zip(&zip_bytes, &key).unwrap();
        // One row per line of the real CSV (spot files have no header).
        let lines = csv.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(real.num_rows(), lines);
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let again = parse_zip(&rezip(&csv, method), &key).unwrap();
            assert_eq!(again, real, "{method:?}");
        }
    }

    #[test]
    fn a_wrong_crc_or_truncated_data_is_a_corrupt_archive() {
        let Some((_, csv)) = real_file() else {
            return;
        };
        let key = FileKey::from_path(REAL_1M).unwrap();
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            // Flip the CRC-32 in both the local header (offset 14) and the central directory
            // (offset 16): the data inflates fine but does not match.
            let mut z = rezip(&csv, method);
            for i in signatures(&z, 0x0403_4b50) {
                z[i + 14] ^= 0xff;
            }
            for i in signatures(&z, 0x0201_4b50) {
                z[i + 16] ^= 0xff;
            }
            for whole_max in [WHOLE_MAX, 0] {
                let err = parse_with(&z, &key, whole_max).unwrap_err();
                assert!(
                    matches!(&err, VisionError::CorruptArchive { reason, .. } if reason.contains("CRC")),
                    "{method:?} whole_max {whole_max}: {err:?}"
                );
            }
        }
        // Damage the middle of the deflate stream: an inflate error, a size or a CRC mismatch,
        // never a silently different batch.
        let mut z = rezip(&csv, zip::CompressionMethod::Deflated);
        let mid = z.len() / 2;
        for b in &mut z[mid..mid + 64] {
            *b = !*b;
        }
        for whole_max in [WHOLE_MAX, 0] {
            let err = parse_with(&z, &key, whole_max).unwrap_err();
            assert!(
                matches!(
                    err,
                    VisionError::CorruptArchive { .. } | VisionError::InvalidData { .. }
                ),
                "whole_max {whole_max}: {err:?}"
            );
        }
    }

    fn parse_with(z: &[u8], key: &FileKey, whole_max: u64) -> Result<RecordBatch, VisionError> {
        parse_zip_with(z, key, &key.path(), &AtomicBool::new(false), whole_max).map(|p| p.batch)
    }

    /// Offsets of the uncompressed-size field in every local header (26 - 4 = 22) and central
    /// directory record (24).
    fn set_declared_size(z: &mut [u8], size: u32) {
        for i in signatures(z, 0x0403_4b50) {
            z[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
        }
        for i in signatures(z, 0x0201_4b50) {
            z[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
        }
    }

    #[test]
    fn whole_and_streamed_inflate_agree_and_check_the_declared_size() {
        let Some((zip_bytes, csv)) = real_file() else {
            return;
        };
        let key = FileKey::from_path(REAL_1M).unwrap();
        let whole = parse_with(&zip_bytes, &key, WHOLE_MAX).unwrap();
        let streamed = parse_with(&zip_bytes, &key, 0).unwrap();
        assert_eq!(whole, streamed);
        assert_eq!(whole.num_rows(), 1440);
        let len = u32::try_from(csv.len()).unwrap();
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            for (declared, what) in [(len - 1, "past its declared"), (len + 1, "header says")] {
                let mut z = rezip(&csv, method);
                set_declared_size(&mut z, declared);
                for whole_max in [WHOLE_MAX, 0] {
                    let err = parse_with(&z, &key, whole_max).unwrap_err();
                    let ok = match &err {
                        VisionError::CorruptArchive { reason, .. } => {
                            reason.contains(what)
                                // A stored entry is its own length: always a size mismatch.
                                || reason.contains("header says")
                                // The zip reader may itself refuse an inconsistent record.
                                || reason.contains("not a zip")
                        }
                        _ => false,
                    };
                    assert!(
                        ok,
                        "{method:?} declared {declared} whole_max {whole_max}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_with_too_many_or_too_few_fields_names_its_line() {
        let Some((_, csv)) = real_file() else {
            return;
        };
        let key = FileKey::from_path(REAL_1M).unwrap();
        let text = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let extra = format!("{},0", lines[1]);
        let short = lines[2].rsplit_once(',').unwrap().0;
        for (edited, found) in [(extra.as_str(), 13), (short, 11)] {
            let mut rows = lines.clone();
            rows[1] = edited;
            if found == 11 {
                rows[1] = lines[1];
                rows[2] = edited;
            }
            let z = rezip(rows.join("\n").as_bytes(), zip::CompressionMethod::Deflated);
            let err = parse_zip(&z, &key).unwrap_err();
            let line = if found == 11 { 3 } else { 2 };
            assert!(
                matches!(&err, VisionError::InvalidData { row, reason, .. }
                    if *row == line && reason.contains(&format!("found {found}"))),
                "{err:?}"
            );
        }
    }

    /// `str::parse::<f64>` as `parse_f64` promises it (finite values only), as bits so that
    /// `-0.0` and `0.0` differ.
    fn std_f64(s: &[u8]) -> Option<u64> {
        let v: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
        v.is_finite().then_some(v.to_bits())
    }

    fn split_fields(line: &[u8]) -> Vec<&[u8]> {
        line.split(|b| *b == b',').collect()
    }

    /// Every zip under the samples directory, with its CSV text.
    fn sample_csvs() -> Vec<(String, Vec<u8>)> {
        let dir = samples_dir();
        let mut out = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(&dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "zip") {
                    let bytes = std::fs::read(&p).unwrap();
                    let mut z = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
                    for i in 0..z.len() {
                        let mut e = z.by_index(i).unwrap();
                        let entry = e.name().unwrap().to_string();
                        if entry.ends_with(".csv") {
                            let mut csv = Vec::new();
                            e.read_to_end(&mut csv).unwrap();
                            out.push((format!("{}:{entry}", p.display()), csv));
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            eprintln!("skipped: no sample zips under {dir}");
        }
        out
    }

    #[test]
    fn every_value_of_the_real_files_parses_like_the_standard_parser() {
        let mut values = 0;
        let mut klines = 0;
        for (name, csv) in sample_csvs() {
            for line in csv.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let fields = split_fields(line);
                for f in &fields {
                    assert_eq!(parse_f64(f).map(f64::to_bits), std_f64(f), "{name}: {f:?}");
                    if let Some((v, n)) = float_prefix(f) {
                        assert_eq!(Some(v.to_bits()), std_f64(&f[..n]), "{name}: {f:?}");
                    }
                    values += 1;
                }
                if fields.len() == 12 && line.first().is_some_and(u8::is_ascii_digit) {
                    // A row the one-pass path takes gives the same record (rows with more than
                    // 2^53 as digits, e.g. 17-digit quote volumes, fall back by design).
                    if let Some(fast) = kline_fast(line) {
                        assert_eq!(
                            format!("{fast:?}"),
                            format!("{:?}", kline(&fields).unwrap()),
                            "{name}"
                        );
                        klines += 1;
                    }
                }
            }
        }
        if values > 0 {
            assert!(klines >= 1440, "{klines} kline rows took the one-pass path");
        }
    }

    /// A field for the property tests: mostly plain decimals, sometimes odd ones.
    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "-?[0-9]{1,12}\\.[0-9]{0,10}",
            2 => "-?[0-9]{1,20}",
            1 => "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{1,3})?",
            1 => "[-+.0-9eExa ]{0,12}",
        ]
    }

    fn int_text() -> impl Strategy<Value = String> {
        prop_oneof![6 => "[0-9]{1,16}", 1 => "-?[0-9]{0,20}", 1 => field_text()]
    }

    /// A kline-shaped line: integers where kline rows have them, sometimes broken.
    fn kline_line() -> impl Strategy<Value = String> {
        use proptest::collection::vec;
        (
            int_text(),
            vec(field_text(), 5),
            int_text(),
            field_text(),
            int_text(),
            vec(field_text(), 2),
            "[0-9a-z,]{0,3}",
        )
            .prop_map(|(t0, p, t1, q, n, tb, ignore)| {
                format!(
                    "{t0},{},{t1},{q},{n},{},{ignore}",
                    p.join(","),
                    tb.join(",")
                )
            })
    }

    proptest! {
        #[test]
        fn float_prefix_and_parse_f64_match_the_standard_parser(s in field_text(), tail in "[,x.0-9]?") {
            let s = format!("{s}{tail}");
            let b = s.as_bytes();
            prop_assert_eq!(parse_f64(b).map(f64::to_bits), std_f64(b), "{}", s);
            if let Some((v, n)) = float_prefix(b) {
                prop_assert_eq!(Some(v.to_bits()), std_f64(&b[..n]), "{}", s);
                // The whole digit run is taken (a second '.' may follow "1.").
                prop_assert!(!b.get(n).is_some_and(u8::is_ascii_digit), "{}", s);
            }
            if let Some((v, n)) = int_prefix(b) {
                prop_assert_eq!(int(&b[..n], "x"), Ok(v), "{}", s);
            }
        }

        #[test]
        fn one_pass_kline_rows_match_the_field_by_field_parse(line in kline_line()) {
            let cols = split_fields(line.as_bytes());
            let slow = if cols.len() == 12 { kline(&cols).ok() } else { None };
            if let Some(fast) = kline_fast(line.as_bytes()) {
                // Debug output of an f64 is exact (and tells -0.0 from 0.0).
                prop_assert_eq!(format!("{:?}", Some(fast)), format!("{slow:?}"), "{}", line);
            }
        }

        #[test]
        fn fast_float_parser_is_exact(int_part in 0u64..10_000_000_000, frac in 0u64..100_000_000, dp in 0usize..9, neg: bool) {
            let s = if dp == 0 {
                format!("{}{int_part}", if neg { "-" } else { "" })
            } else {
                let f = format!("{:0>8}", frac);
                format!("{}{int_part}.{}", if neg { "-" } else { "" }, &f[..dp])
            };
            prop_assert_eq!(parse_f64(s.as_bytes()), s.parse::<f64>().ok(), "{}", s);
        }
    }
}
