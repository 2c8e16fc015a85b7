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

mod archive;
mod lines;
mod numbers;
mod rows;
mod table;

use archive::*;
use lines::*;
use numbers::*;
use rows::*;

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
    parser.finish()
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
