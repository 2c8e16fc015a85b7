//! Noticing re-published archive files. Binance re-writes some Vision files with new bytes and a
//! new `.CHECKSUM` (spec §1.11); a cached copy of the old one would stay wrong for good. The
//! manifests keep each cached file's SHA-256, so one small request per file tells whether it
//! changed; a changed file is fetched again, compared row by row and cached in place of the old.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::DataSourceManager;
use super::exec::pieces_of;
use crate::cache::Provenance;
use crate::error::{Error, InputError, Result};
use crate::market::Dataset;
use crate::vision::{FileKey, FileOutcome};

/// A cached Vision file whose archive copy changed, fetched again and cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Republished {
    /// The archive path (`data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip`).
    pub file: String,
    /// Rows in both copies whose values differ.
    pub changed: u64,
    /// Rows only the new copy has.
    pub added: u64,
    /// Rows only the cached copy had.
    pub removed: u64,
}

/// What [`DataSourceManager::check_republished`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepublishReport {
    /// Cached Vision files whose `.CHECKSUM` was read.
    pub checked: usize,
    /// Files whose archive copy changed: fetched again, compared, cached.
    pub republished: Vec<Republished>,
    /// Cached files the archive no longer has (404): left as they are.
    pub gone: Vec<String>,
}

impl DataSourceManager {
    /// Re-reads the `.CHECKSUM` of every cached Vision file (those whose period ends after
    /// `since`, if given) and fetches again each one whose digest changed, caching the new rows
    /// in place of the old and counting what changed. A few files at a time, cancelled by `token`.
    ///
    /// ```no_run
    /// use dsm::{DataSourceManager, ManagerConfig};
    ///
    /// # async fn run() -> dsm::Result<()> {
    /// let manager = DataSourceManager::new(ManagerConfig::default())?;
    /// let since = dsm::time::parse_instant("2024-01-01")?;
    /// let token = tokio_util::sync::CancellationToken::new();
    /// let report = manager.check_republished(Some(since), &token).await?;
    /// for r in &report.republished {
    ///     println!("{}: {} rows changed, {} added, {} removed", r.file, r.changed, r.added, r.removed);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check_republished(
        &self,
        since: Option<i64>,
        token: &CancellationToken,
    ) -> Result<RepublishReport> {
        let Some(cache) = self.cache() else {
            return Err(InputError::Invalid {
                what: "cache",
                reason: "the cache is off, so there are no cached files to check".into(),
            }
            .into());
        };
        let mut files: BTreeMap<FileKey, (Dataset, String)> = BTreeMap::new();
        for p in cache.list().await? {
            let d = &p.dataset;
            for source in &p.sources {
                let Provenance::Vision { file, sha256, .. } = source else {
                    continue;
                };
                let Some(key) = FileKey::for_file(d, file) else {
                    continue;
                };
                if since.is_none_or(|s| key.range().end() > s) {
                    files.entry(key).or_insert((d.clone(), sha256.clone()));
                }
            }
        }
        let mut report = RepublishReport {
            checked: files.len(),
            ..RepublishReport::default()
        };
        let checks = futures::stream::iter(files)
            .map(|(key, (dataset, sha256))| self.recheck(key, dataset, sha256, token))
            .buffer_unordered(self.config().vision_concurrency.max(1));
        let mut checks = std::pin::pin!(checks);
        while let Some(outcome) = checks.try_next().await? {
            match outcome {
                Recheck::Same => {}
                Recheck::Gone(path) => report.gone.push(path),
                Recheck::Changed(r) => report.republished.push(r),
            }
        }
        report.republished.sort_by(|a, b| a.file.cmp(&b.file));
        report.gone.sort();
        Ok(report)
    }

    async fn recheck(
        &self,
        key: FileKey,
        dataset: Dataset,
        cached_sha256: String,
        token: &CancellationToken,
    ) -> Result<Recheck> {
        let vision = &self.vision;
        match vision.checksum(&key, token).await? {
            None => return Ok(Recheck::Gone(key.path())),
            Some(now) if now == cached_sha256 => return Ok(Recheck::Same),
            Some(_) => {}
        }
        let FileOutcome::Data(file) = vision.fetch(&key, token).await? else {
            return Ok(Recheck::Gone(key.path()));
        };
        let Some(cache) = self.cache.as_ref() else {
            return Ok(Recheck::Same);
        };
        let old = cache.read(&dataset, key.range()).await?;
        let (changed, added, removed) = diff_rows(&old, &file.batch)?;
        tracing::info!(file = %key.path(), changed, added, removed,
            "a cached Vision file was re-published; cached the new copy");
        let (pieces, _holes) = pieces_of(&file)?;
        cache.write_many(&dataset, pieces).await?;
        Ok(Recheck::Changed(Republished {
            file: key.path(),
            changed,
            added,
            removed,
        }))
    }
}

enum Recheck {
    Same,
    Gone(String),
    Changed(Republished),
}

/// Rows keyed by their first column (open time, funding time, or trade id: unique in every
/// kind), compared on every column of `new`'s schema: (changed, added, removed).
fn diff_rows(old: &[RecordBatch], new: &RecordBatch) -> Result<(u64, u64, u64)> {
    let fields: Vec<SortField> = new
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let keyed = |b: &RecordBatch| -> Result<Vec<(i64, Vec<u8>)>> {
        let cols: Vec<ArrayRef> = b.columns()[..new.num_columns()].to_vec();
        let rows = converter.convert_columns(&cols)?;
        let key = arrow::compute::cast(&cols[0], &DataType::Int64)?;
        let key = key.as_primitive::<Int64Type>();
        Ok((0..b.num_rows())
            .map(|i| (key.value(i), rows.row(i).as_ref().to_vec()))
            .collect())
    };
    let mut before: HashMap<i64, Vec<u8>> = HashMap::new();
    for b in old {
        if b.num_columns() < new.num_columns() {
            return Err(Error::Arrow(arrow::error::ArrowError::SchemaError(
                "cached rows have fewer columns than the archive's".into(),
            )));
        }
        before.extend(keyed(b)?);
    }
    let (mut changed, mut added) = (0, 0);
    for (k, row) in keyed(new)? {
        match before.remove(&k) {
            Some(old_row) if old_row != row => changed += 1,
            Some(_) => {}
            None => added += 1,
        }
    }
    Ok((changed, added, before.len() as u64))
}
