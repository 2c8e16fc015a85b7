//! Output files: where each symbol's result goes, in which format, and writing it atomically.
//!
//! The format follows the extension of `-o` (`.parquet` zstd, `.arrow` IPC file, `.csv`) or
//! `--format`; with several symbols `-o` is a directory holding one `SYMBOL.EXT` per symbol.
//! [`plan`] decides all of this before any work, so a bad path is a usage error, not a wasted
//! download.
//!
//! Nothing is ever left half-written: each file is written to `.NAME.tmp-<pid>-<n>` in the target
//! directory, fsynced, and only renamed into place by [`Pending::commit`]. A [`Pending`] that is
//! dropped uncommitted — error, cancellation, panic unwinding — removes its temporary file.
//! This module must never touch the network or decide exit codes.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use dsm::Symbol;
use dsm::output::ParquetWriter;

use crate::args::Format;
use crate::exit::UsageError;

/// Where each symbol's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlan {
    /// The format of every file.
    pub format: Format,
    /// One final path per symbol, in request order.
    pub targets: Vec<(Symbol, PathBuf)>,
    /// The directory to create (directory mode, when it does not exist yet).
    pub create_dir: Option<PathBuf>,
}

/// Decides the output files for `symbols` from `-o output` and `--format`, checking everything that
/// can be checked without doing the work: a known format, a directory that exists (or whose parent
/// does), no file where a directory is needed.
pub fn plan(
    output: &Path,
    format: Option<Format>,
    symbols: &[Symbol],
) -> anyhow::Result<OutputPlan> {
    let ext = output.extension().and_then(|e| e.to_str());
    let ext_format = ext.and_then(Format::from_extension);
    let looks_like_dir = output.as_os_str().to_string_lossy().ends_with('/');
    let dir_mode = symbols.len() > 1 || output.is_dir() || looks_like_dir;
    if dir_mode {
        if output.is_file() || (ext_format.is_some() && !output.exists()) {
            return Err(UsageError(format!(
                "-o {} names a file, but {} symbols were given: give a directory (it gets one \
                 SYMBOL.EXT file per symbol) and --format parquet|arrow|csv",
                output.display(),
                symbols.len()
            ))
            .into());
        }
        let format = format.unwrap_or(Format::Parquet);
        let create_dir = if output.is_dir() {
            None
        } else {
            check_parent(output)?;
            Some(output.to_path_buf())
        };
        let targets = symbols
            .iter()
            .map(|s| {
                let name = format!("{}.{}", s.as_str(), format.extension());
                (s.clone(), output.join(name))
            })
            .collect();
        return Ok(OutputPlan {
            format,
            targets,
            create_dir,
        });
    }
    let format = match (ext_format, format) {
        (Some(f), None) => f,
        (Some(f), Some(g)) if f == g => f,
        (Some(f), Some(g)) => {
            return Err(UsageError(format!(
                "-o {} has the .{} extension but --format {} was given: make them agree",
                output.display(),
                f.extension(),
                g.extension()
            ))
            .into());
        }
        (None, _) => {
            let got = ext.map_or_else(|| "no extension".to_owned(), |e| format!("extension .{e}"));
            return Err(UsageError(format!(
                "-o {} has {got}: the output format follows the extension; use .parquet, .arrow \
                 or .csv",
                output.display()
            ))
            .into());
        }
    };
    check_parent(output)?;
    let symbol = symbols
        .first()
        .cloned()
        .ok_or_else(|| UsageError("no symbol given".into()))?;
    Ok(OutputPlan {
        format,
        targets: vec![(symbol, output.to_path_buf())],
        create_dir: None,
    })
}

fn check_parent(path: &Path) -> anyhow::Result<()> {
    let parent = parent_dir(path);
    if !parent.is_dir() {
        anyhow::bail!(
            "cannot write {}: directory {} does not exist; create it first",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Shared between the writer thread and the code that waits for it: a cancel flag the writer checks
/// between batches, and the temporary files that exist right now, so that a forced exit (a second
/// Ctrl-C, when there is no time to wait for the writer) can still remove them.
#[derive(Debug, Default)]
pub struct WriteControl {
    cancel: AtomicBool,
    temps: Mutex<BTreeSet<PathBuf>>,
}

impl WriteControl {
    /// Asks the writer to stop; nothing more will be committed.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether [`WriteControl::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Removes every temporary file that still exists (for a forced exit; the writer may still hold
    /// them open, which is harmless on Unix).
    pub fn remove_temporaries(&self) {
        self.cancel();
        let temps = std::mem::take(&mut *self.lock());
        for t in temps {
            let _ = fs::remove_file(&t);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.temps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        Ok(())
    }
}

/// A written, fsynced temporary file waiting to be renamed into place. Dropping it uncommitted
/// removes the temporary file.
#[derive(Debug)]
pub struct Pending {
    temp: Option<PathBuf>,
    target: PathBuf,
    control: Arc<WriteControl>,
}

impl Pending {
    /// Creates an empty temporary file beside `target` (exclusive create: never clobbers).
    fn create(target: &Path, control: &Arc<WriteControl>) -> anyhow::Result<(Pending, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let mut last_err = None;
        for _ in 0..8 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(".{name}.tmp-{}-{:x}{n}", std::process::id(), nanos));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    control.lock().insert(temp.clone());
                    let pending = Pending {
                        temp: Some(temp),
                        target: target.to_path_buf(),
                        control: control.clone(),
                    };
                    return Ok((pending, file));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating a temporary file in {}", dir.display())
                    });
                }
            }
        }
        Err(anyhow::Error::from(
            last_err.unwrap_or_else(|| std::io::Error::other("collision")),
        ))
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
    }

    /// The temporary file's path (while not committed).
    #[cfg(test)]
    pub fn temp_path(&self) -> Option<&Path> {
        self.temp.as_deref()
    }

    /// Renames the temporary file into place (replacing an existing file) and syncs the directory.
    pub fn commit(mut self) -> anyhow::Result<PathBuf> {
        let Some(temp) = self.temp.take() else {
            anyhow::bail!(
                "{} was already committed (a dsm bug)",
                self.target.display()
            );
        };
        // Checked last, under the registry lock: a forced exit removes temporaries under the same
        // lock, so a file is either committed whole or removed, never both.
        let mut temps = self.control.lock();
        if self.control.is_cancelled() || !temps.remove(&temp) {
            let _ = fs::remove_file(&temp);
            anyhow::bail!("cancelled before {} was written", self.target.display());
        }
        let renamed = fs::rename(&temp, &self.target);
        drop(temps);
        if let Err(e) = renamed {
            let _ = fs::remove_file(&temp);
            return Err(e).with_context(|| format!("renaming into {}", self.target.display()));
        }
        // Make the rename durable; not every platform can open a directory, so this is best effort.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(self.target.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take()
            && self.control.lock().remove(&temp)
            && let Err(e) = fs::remove_file(&temp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %temp.display(), error = %e, "could not remove temporary file");
        }
    }
}

/// Writes `batches` (all in `schema`) to a temporary file beside `target` in `format`, fsynced.
/// Checks `control` between batches; a cancelled or failed write leaves no file behind.
#[cfg(test)]
pub fn write(
    target: &Path,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    control: &Arc<WriteControl>,
) -> anyhow::Result<Pending> {
    let mut w = FileWriter::create(target, format, schema, control)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

/// One output file being written batch by batch (so a long range never has to be in memory at
/// once) to a temporary file beside its target. [`FileWriter::finish`] fsyncs it and hands back the
/// [`Pending`] rename; dropping the writer unfinished removes the temporary file.
pub struct FileWriter {
    pending: Pending,
    target: PathBuf,
    schema: SchemaRef,
    inner: Inner,
    control: Arc<WriteControl>,
}

enum Inner {
    Parquet(Box<ParquetWriter<BufWriter<File>>>),
    Arrow(Box<arrow::ipc::writer::FileWriter<BufWriter<File>>>),
    Csv {
        writer: Box<arrow::csv::Writer<BufWriter<File>>>,
        text_schema: SchemaRef,
        rows: usize,
    },
}

impl FileWriter {
    /// Creates the temporary file for `target` and starts a `format` file of `schema` in it.
    pub fn create(
        target: &Path,
        format: Format,
        schema: &SchemaRef,
        control: &Arc<WriteControl>,
    ) -> anyhow::Result<FileWriter> {
        remove_stale_temporaries(target);
        let (pending, file) = Pending::create(target, control)?;
        let what = || format!("writing {}", target.display());
        let inner = match format {
            // dsm's settings (zstd(1), no dictionaries but for `source`), the columns of each
            // row group encoded in parallel.
            Format::Parquet => Inner::Parquet(Box::new(
                ParquetWriter::try_new(BufWriter::new(file), schema.clone()).with_context(what)?,
            )),
            Format::Arrow => Inner::Arrow(Box::new(
                arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), schema)
                    .with_context(what)?,
            )),
            Format::Csv => Inner::Csv {
                writer: Box::new(
                    arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_timestamp_format(csv_time_format(schema).to_owned())
                        .build(BufWriter::new(file)),
                ),
                text_schema: csv_schema(schema),
                rows: 0,
            },
        };
        Ok(FileWriter {
            pending,
            target: target.to_path_buf(),
            schema: schema.clone(),
            inner,
            control: control.clone(),
        })
    }

    /// Appends `batch` (in the file's schema); fails if the write was cancelled.
    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        check_cancel(&self.control)?;
        if batch.schema().fields() != self.schema.fields() {
            anyhow::bail!(
                "cannot write {}: a batch's columns do not match the result schema (a dsm bug): {:?}",
                self.target.display(),
                batch.schema()
            );
        }
        let target = &self.target;
        let what = || format!("writing {}", target.display());
        match &mut self.inner {
            Inner::Parquet(w) => w.write(batch).with_context(what),
            Inner::Arrow(w) => w.write(batch).with_context(what),
            Inner::Csv {
                writer,
                text_schema,
                rows,
            } => {
                *rows += batch.num_rows();
                writer
                    .write(&to_csv_batch(batch, text_schema)?)
                    .with_context(what)
            }
        }
    }

    /// Ends the file, fsyncs it and returns the rename that puts it in place.
    pub fn finish(self) -> anyhow::Result<Pending> {
        check_cancel(&self.control)?;
        let what = || format!("writing {}", self.target.display());
        let file = match self.inner {
            Inner::Parquet(w) => w
                .into_inner()
                .with_context(what)?
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(what)?,
            Inner::Arrow(mut w) => {
                w.finish().with_context(what)?;
                let buf = w.into_inner().with_context(what)?;
                buf.into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(what)?
            }
            Inner::Csv {
                mut writer,
                text_schema,
                rows,
            } => {
                if rows == 0 {
                    // The header row, even for no data.
                    writer
                        .write(&RecordBatch::new_empty(text_schema))
                        .with_context(what)?;
                }
                let mut buf = writer.into_inner();
                buf.flush().with_context(what)?;
                buf.into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(what)?
            }
        };
        check_cancel(&self.control)?;
        file.sync_all().with_context(what)?;
        Ok(self.pending)
    }
}

/// Removes the temporaries of `target` that a killed dsm process left (`.NAME.tmp-<pid>-*` whose
/// process is gone). Output is streamed into its temporary while the fetch runs, so a SIGKILL
/// leaves one; the next run for the same target cleans it. Only Linux can tell a dead process
/// (`/proc/<pid>`); elsewhere nothing is removed.
fn remove_stale_temporaries(target: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent_dir(target)) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed a temporary left by a killed dsm run")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "could not remove a stale temporary")
                }
            }
        }
    }
}

fn check_cancel(cancel: &WriteControl) -> anyhow::Result<()> {
    cancel.check()
}

/// The chrono format for a timestamp column in CSV: RFC 3339 UTC with ms or µs precision.
fn csv_time_format(schema: &Schema) -> &'static str {
    let micros = schema.fields().iter().any(|f| {
        matches!(
            f.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _)
        )
    });
    if micros {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    }
}

/// The CSV column type for `t`: dictionaries (the `source` column) become their text values, and
/// timestamps lose their zone name. arrow's CSV writer cannot resolve named zones such as `UTC`
/// (it would need chrono-tz), and dsm's timestamps are UTC by construction, so the format string
/// writes the `Z` itself.
fn csv_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, None),
        other => other.clone(),
    }
}

fn csv_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(csv_type(f.data_type())))
        .collect();
    std::sync::Arc::new(Schema::new(fields))
}

fn to_csv_column(c: &ArrayRef, to: &DataType) -> anyhow::Result<ArrayRef> {
    Ok(match (c.data_type(), to) {
        (a, b) if a == b => c.clone(),
        // Same values, same layout: only the zone annotation goes.
        (DataType::Timestamp(..), DataType::Timestamp(..)) => {
            let data = c.to_data().into_builder().data_type(to.clone()).build()?;
            arrow::array::make_array(data)
        }
        _ => arrow::compute::cast(c, to)?,
    })
}

fn to_csv_batch(batch: &RecordBatch, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| to_csv_column(c, f.data_type()))
        .collect::<anyhow::Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType, TimestampMillisecondType};
    use dsm::schema::{KlineBuilder, KlineRecord, Source, TradeBuilder, TradeRecord};
    use dsm::{DataKind, Interval, Market};
    use std::fs::File;

    use super::*;

    const T0: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

    fn syms(names: &[&str]) -> Vec<Symbol> {
        names.iter().map(|s| Symbol::new(s).unwrap()).collect()
    }

    fn klines(n: i64) -> (SchemaRef, Vec<RecordBatch>) {
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, 4);
        for i in 0..n {
            let open = T0 + i * 60_000;
            b.push(&KlineRecord {
                open_time: open,
                open: 42_000.5 + i as f64,
                high: 42_100.0 + i as f64,
                low: 41_900.25,
                close: 42_050.0,
                volume: 1.5,
                close_time: open + 59_999,
                quote_volume: 63_000.0,
                count: 10 + i,
                taker_buy_volume: 0.75,
                taker_buy_quote_volume: 31_500.0,
            })
            .unwrap();
        }
        let batch = b.finish();
        let out = dsm::schema::with_source(&batch, Market::Spot, DataKind::Klines, Source::Vision);
        (
            dsm::schema::output_schema(Market::Spot, DataKind::Klines),
            vec![out],
        )
    }

    fn no_cancel() -> Arc<WriteControl> {
        Arc::default()
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn parquet_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BTCUSDT.parquet");
        let (schema, batches) = klines(3);
        write(&path, Format::Parquet, &schema, &batches, &no_cancel())
            .unwrap()
            .commit()
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&path).unwrap(),
        )
        .unwrap();
        let meta = reader.metadata().clone();
        let got: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        assert_eq!(
            got[0].schema(),
            schema,
            "schema incl. UTC zone and source dictionary"
        );
        assert_eq!(got, batches);
        let codec = meta.row_group(0).column(0).compression();
        assert!(
            matches!(codec, parquet::basic::Compression::ZSTD(_)),
            "zstd, got {codec:?}"
        );
        assert_eq!(
            dir_entries(dir.path()),
            vec!["BTCUSDT.parquet"],
            "no temporary left"
        );
    }

    #[test]
    fn arrow_ipc_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.arrow");
        let (schema, batches) = klines(2);
        write(&path, Format::Arrow, &schema, &batches, &no_cancel())
            .unwrap()
            .commit()
            .unwrap();
        let reader =
            arrow::ipc::reader::FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(reader.schema(), schema);
        let got: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(got, batches);
        let opens = got[0].column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(opens.value(1), T0 + 60_000);
        let closes = got[0].column(4).as_primitive::<Float64Type>();
        assert_eq!(closes.value(0), 42_050.0);
    }

    #[test]
    fn csv_has_a_header_rfc3339_times_and_text_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let (schema, batches) = klines(2);
        write(&path, Format::Csv, &schema, &batches, &no_cancel())
            .unwrap()
            .commit()
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,\
             taker_buy_volume,taker_buy_quote_volume,source"
        );
        let rfc = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let second_open = T0 + 60_000;
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row[0], rfc(second_open));
        assert_eq!(row[0], "2024-01-01T00:01:00.000Z");
        assert_eq!(row[6], rfc(second_open + 59_999));
        assert_eq!(row[1].parse::<f64>().unwrap(), 42_001.5);
        assert_eq!(row[8], "11");
        assert_eq!(row[11], "vision");
    }

    #[test]
    fn csv_trades_have_microsecond_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let mut b = TradeBuilder::new(Market::Spot, DataKind::Trades, 2);
        let t_us = T0 * 1000 + 123_456;
        b.push(&TradeRecord {
            id: 7,
            price: 42_000.0,
            qty: 0.5,
            quote_qty: 21_000.0,
            first_id: 0,
            last_id: 0,
            time_us: t_us,
            is_buyer_maker: true,
            is_best_match: Some(true),
        })
        .unwrap();
        let batch =
            dsm::schema::with_source(&b.finish(), Market::Spot, DataKind::Trades, Source::Rest);
        let schema = dsm::schema::output_schema(Market::Spot, DataKind::Trades);
        assert!(matches!(
            schema.field_with_name("time").unwrap().data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ));
        write(
            &path,
            Format::Csv,
            &schema,
            std::slice::from_ref(&batch),
            &no_cancel(),
        )
        .unwrap()
        .commit()
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
        let expected = chrono::DateTime::from_timestamp_micros(t_us)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        assert_eq!(row[4], expected);
        assert_eq!(row[4], "2024-01-01T00:00:00.123456Z");
        assert_eq!(*row.last().unwrap(), "rest");
        let times = batch.column(4).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(times.len(), 1);
    }

    #[test]
    fn empty_results_still_get_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        let schema = dsm::schema::output_schema(Market::UsdM, DataKind::FundingRate);
        write(&path, Format::Csv, &schema, &[], &no_cancel())
            .unwrap()
            .commit()
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.trim_end(),
            "funding_time,funding_rate,funding_interval_hours,mark_price,source"
        );
    }

    #[test]
    fn a_failed_or_cancelled_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let (schema, batches) = klines(2);
        let cancel = no_cancel();
        cancel.cancel();
        assert!(write(&path, Format::Parquet, &schema, &batches, &cancel).is_err());
        // A batch that does not match the schema fails mid-write.
        let wrong = dsm::schema::output_schema(Market::UsdM, DataKind::FundingRate);
        assert!(write(&path, Format::Arrow, &wrong, &batches, &no_cancel()).is_err());
        assert!(write(&path, Format::Csv, &wrong, &batches, &no_cancel()).is_err());
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{:?}",
            dir_entries(dir.path())
        );
    }

    #[test]
    fn an_uncommitted_file_is_removed_on_drop_and_on_unwinding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.arrow");
        let (schema, batches) = klines(1);
        let pending = write(&path, Format::Arrow, &schema, &batches, &no_cancel()).unwrap();
        let temp = pending.temp_path().unwrap().to_path_buf();
        assert!(temp.exists());
        assert!(
            temp.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".x.arrow.tmp-")
        );
        drop(pending);
        assert!(dir_entries(dir.path()).is_empty());

        let path2 = path.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _pending = write(&path2, Format::Arrow, &schema, &batches, &no_cancel()).unwrap();
            panic!("simulated crash while holding the temporary file");
        }));
        assert!(result.is_err());
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_forced_exit_removes_temporaries_and_nothing_is_committed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (schema, batches) = klines(1);
        let control = no_cancel();
        let a = write(
            &dir.path().join("a.csv"),
            Format::Csv,
            &schema,
            &batches,
            &control,
        )
        .unwrap();
        let b = write(
            &dir.path().join("b.csv"),
            Format::Csv,
            &schema,
            &batches,
            &control,
        )
        .unwrap();
        assert_eq!(dir_entries(dir.path()).len(), 2, "two temporaries");
        control.remove_temporaries();
        assert!(dir_entries(dir.path()).is_empty());
        assert!(a.commit().is_err(), "a cancelled file is never committed");
        drop(b);
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn commit_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        fs::write(&path, "old").unwrap();
        let (schema, batches) = klines(1);
        write(&path, Format::Csv, &schema, &batches, &no_cancel())
            .unwrap()
            .commit()
            .unwrap();
        assert!(fs::read_to_string(&path).unwrap().starts_with("open_time,"));
    }

    #[test]
    fn plans_follow_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let one = syms(&["BTCUSDT"]);
        let p = plan(&dir.path().join("a.csv"), None, &one).unwrap();
        assert_eq!(p.format, Format::Csv);
        assert_eq!(p.targets[0].1, dir.path().join("a.csv"));
        for bad in ["a.json", "a"] {
            let err = plan(&dir.path().join(bad), None, &one).unwrap_err();
            assert!(err.is::<UsageError>());
            assert!(
                err.to_string().contains(".parquet, .arrow or .csv"),
                "{err}"
            );
        }
        let err = plan(&dir.path().join("a.csv"), Some(Format::Arrow), &one).unwrap_err();
        assert!(err.is::<UsageError>());
        let err = plan(&dir.path().join("missing/a.csv"), None, &one).unwrap_err();
        assert!(
            !err.is::<UsageError>(),
            "a missing directory is a local failure"
        );
    }

    #[test]
    fn several_symbols_write_into_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let two = syms(&["BTCUSDT", "ETHUSDT"]);
        let out = dir.path().join("out");
        let p = plan(&out, Some(Format::Arrow), &two).unwrap();
        assert_eq!(p.create_dir.as_deref(), Some(out.as_path()));
        assert_eq!(p.targets[1].1, out.join("ETHUSDT.arrow"));
        let p = plan(dir.path(), None, &two).unwrap();
        assert_eq!(p.format, Format::Parquet);
        assert_eq!(p.targets[0].1, dir.path().join("BTCUSDT.parquet"));
        assert!(p.create_dir.is_none());
        let err = plan(&dir.path().join("x.parquet"), None, &two).unwrap_err();
        assert!(err.is::<UsageError>());
        // An existing directory with one symbol is directory mode too.
        let p = plan(dir.path(), Some(Format::Csv), &two[..1]).unwrap();
        assert_eq!(p.targets[0].1, dir.path().join("BTCUSDT.csv"));
    }
}
