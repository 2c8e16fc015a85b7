//! Writing: merging verified pieces into their partitions and publishing them atomically, with
//! the checks that keep a partial range, unsorted rows or an open candle out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::market::DataKind;
use crate::schema::{output_schema, schema, time_scale, times, with_source};
use crate::time::{TimeRange, now_ms};

use super::blobs::{file_name, parent};
use super::layout::Partition;
use super::manifest::{
    Manifest, Provenance, Segment, is_safe_file_name, splice_segments, splice_spans,
};
use super::*;
use crate::market::Dataset;

impl CacheStore {
    /// Stores `batch` (rows in the dataset's base [`schema`], sorted by time) as complete for
    /// `complete`: every row with time in `complete` is in the batch.
    ///
    /// Rejects rows outside `complete`, unsorted or duplicate rows, candles that have not closed and
    /// ranges reaching into the future. Rows are tagged with `provenance`'s source, merged with
    /// what the partitions already hold (new rows replace cached ones inside `complete`), and
    /// published atomically per partition. For candles, slots inside `complete` without a row are
    /// recorded as known no-data ranges.
    pub async fn write(
        &self,
        key: &Dataset,
        complete: TimeRange,
        batch: &RecordBatch,
        provenance: Provenance,
    ) -> Result<(), CacheError> {
        self.write_many(
            key,
            vec![Piece {
                complete,
                batch: batch.clone(),
                provenance,
            }],
        )
        .await
    }

    /// Stores several pieces at once, each checked as by [`CacheStore::write`]; their ranges must
    /// not overlap. Every partition they touch is rewritten **once**, with one covered segment (and
    /// its provenance) per piece, so storing the thirty daily files of a month costs one partition
    /// write instead of thirty ever larger ones. Partitions are published independently and
    /// concurrently; if one fails, the ones already published stay (each is complete on its own).
    ///
    /// ```no_run
    /// # async fn demo(cache: dsm::cache::CacheStore, key: dsm::cache::Dataset,
    /// #     days: Vec<(dsm::TimeRange, arrow::record_batch::RecordBatch, String, String)>)
    /// #     -> Result<(), dsm::cache::CacheError> {
    /// use dsm::cache::{Piece, Provenance};
    /// let pieces = days
    ///     .into_iter()
    ///     .map(|(complete, batch, file, sha256)| Piece {
    ///         complete,
    ///         batch,
    ///         provenance: Provenance::Vision { file, sha256, etag: None, last_modified: None },
    ///     })
    ///     .collect();
    /// cache.write_many(&key, pieces).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_many(
        &self,
        key: &Dataset,
        mut pieces: Vec<Piece>,
    ) -> Result<(), CacheError> {
        key.check()?;
        pieces.sort_by_key(|p| p.complete.start());
        for w in pieces.windows(2) {
            if w[1].complete.start() < w[0].complete.end() {
                return Err(CacheError::Overlap {
                    first: w[0].complete,
                    second: w[1].complete,
                });
            }
        }
        let scale = time_scale(key.kind);
        let now = now_ms();
        // Every piece is checked (and cut at partition boundaries) before anything is published.
        let mut per_part: BTreeMap<i64, (Partition, Vec<PartPiece>)> = BTreeMap::new();
        for p in pieces {
            check_schema(key, &p.batch)?;
            let times = times(&p.batch, key.kind)
                .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
            check_rows(key, &p.batch, times, p.complete, scale)?;
            check_closed(key, &p.batch, times, p.complete, now)?;
            let tagged = with_source(&p.batch, key.market, key.kind, p.provenance.source());
            for part in key.partitions(p.complete) {
                let Some(sub) = p.complete.intersect(&part.range) else {
                    continue;
                };
                let a = times.partition_point(|t| *t < sub.start() * scale);
                let z = times.partition_point(|t| *t < sub.end() * scale);
                let piece = PartPiece {
                    sub,
                    rows: tagged.slice(a, z - a),
                    provenance: p.provenance.clone(),
                };
                per_part
                    .entry(part.range.start())
                    .or_insert_with(|| (part, Vec::new()))
                    .1
                    .push(piece);
            }
        }
        let writes = per_part
            .into_values()
            .map(|(part, pieces)| async move { self.write_partition(key, &part, pieces).await });
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_PARTITION_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn write_partition(
        &self,
        key: &Dataset,
        part: &Partition,
        pieces: Vec<PartPiece>,
    ) -> Result<(), CacheError> {
        let mut gaps = Vec::new();
        if let Some(interval) = key.interval {
            for p in &pieces {
                let found =
                    crate::schema::kline_gaps(std::slice::from_ref(&p.rows), interval, p.sub)
                        .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
                gaps.extend(found);
            }
        }
        let subs: Vec<TimeRange> = pieces.iter().map(|p| p.sub).collect();
        let out_schema = output_schema(key.market, key.kind);
        let scale = time_scale(key.kind);
        for _attempt in 0..MAX_PUBLISH_ATTEMPTS {
            let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
            let (mut old, version) = match self.load_manifest_versioned(key, part).await {
                Ok(Some((_, m, version))) => (m, version),
                Ok(None) => (Manifest::empty(key.clone(), part.range), None),
                Err(CacheError::CorruptManifest { path, reason }) => {
                    tracing::warn!(%path, %reason, "quarantining a corrupt cache manifest before rewriting the partition");
                    self.blobs.quarantine(path).await?;
                    (Manifest::empty(key.clone(), part.range), None)
                }
                Err(e) => return Err(e),
            };
            // Old rows are only needed if some of the old coverage lies outside this write.
            let keeps_old = old
                .covered_ranges()
                .iter()
                .any(|r| !r.subtract(&subs).is_empty());
            let mut old_rows = RecordBatch::new_empty(out_schema.clone());
            if keeps_old && let Some(f) = old.file.clone() {
                let path = format!("{}/{}", part.dir, f.name);
                match self.read_whole(&path, &f, key.kind, &out_schema).await {
                    Ok(b) => old_rows = b,
                    Err(e @ CacheError::CorruptData { .. }) => {
                        tracing::warn!(error = %e, "dropping a corrupt cache file; its coverage will be re-fetched");
                        self.blobs.quarantine(path).await?;
                        let generation = old.generation;
                        old = Manifest::empty(key.clone(), part.range);
                        old.generation = generation;
                    }
                    Err(e) => return Err(e),
                }
            }
            let merged =
                merge_rows(&out_schema, &old_rows, &pieces, key.kind, scale).map_err(|source| {
                    CacheError::Arrow {
                        path: part.dir.clone(),
                        source,
                    }
                })?;
            check_unique(key.kind, &merged)?;
            let now = now_ms();
            let mut covered = old.covered.clone();
            let mut no_data = old.no_data.clone();
            for p in &pieces {
                covered = splice_segments(
                    &covered,
                    p.sub,
                    Segment {
                        start: p.sub.start(),
                        end: p.sub.end(),
                        rows: 0,
                        source: p.provenance.clone(),
                        written_at: now,
                    },
                );
                no_data = splice_spans(&no_data, p.sub, &gaps);
            }
            let merged_times = times(&merged, key.kind)
                .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
            let mut counted = 0u64;
            for s in &mut covered {
                let a = merged_times.partition_point(|t| *t < s.start * scale);
                let z = merged_times.partition_point(|t| *t < s.end * scale);
                s.rows = (z - a) as u64;
                counted += s.rows;
            }
            if counted != merged.num_rows() as u64 {
                return Err(CacheError::CorruptData {
                    path: part.dir.clone(),
                    reason: format!(
                        "{} cached rows lie outside every covered range",
                        merged.num_rows() as u64 - counted
                    ),
                });
            }
            let generation = old.generation + 1;
            let file = if merged.num_rows() > 0 {
                let name = format!(
                    "part-{generation:08}-{:016x}.parquet",
                    rand::random::<u64>()
                );
                let path = format!("{}/{name}", part.dir);
                let (kind, opts) = (key.kind, self.options);
                let (bytes, info) = tokio::task::spawn_blocking(move || {
                    parquet_io::encode(&merged, kind, name, opts)
                })
                .await
                .map_err(|e| CacheError::Io {
                    path: PathBuf::from(&path),
                    source: std::io::Error::other(format!("encoding task failed: {e}")),
                })?
                .map_err(|source| CacheError::Parquet {
                    path: path.clone(),
                    source,
                })?;
                self.blobs.stage(path, bytes).await?;
                Some(info)
            } else {
                None
            };
            let manifest = Manifest {
                generation,
                file: file.clone(),
                covered,
                no_data,
                updated_at: now,
                ..old.clone()
            };
            let new_path = file.as_ref().map(|f| format!("{}/{}", part.dir, f.name));
            let published = self
                .blobs
                .publish_manifest(part.dir.clone(), version, Bytes::from(manifest.to_bytes()))
                .await;
            let published = match published {
                Ok(p) => p,
                Err(e) => {
                    // Not published (or not known to be): the staged file is nobody's.
                    if let Some(p) = new_path {
                        let _ = self.blobs.unstage(p).await;
                    }
                    return Err(e);
                }
            };
            if !published {
                // Another writer published first: drop our file and redo the merge on top of
                // theirs, after a short random pause so writers that keep colliding spread out.
                if let Some(p) = new_path {
                    self.blobs.unstage(p).await?;
                }
                tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(5..50)))
                    .await;
                continue;
            }
            let old_path = old
                .file
                .as_ref()
                .map(|f| format!("{}/{}", part.dir, f.name));
            self.blobs.promote(new_path, old_path).await?;
            let new_name = file.as_ref().map(|f| f.name.clone());
            if self.blobs.orphans_removable_under_lock() {
                for e in self.blobs.list(part.dir.clone()).await? {
                    let n = file_name(&e.path);
                    if parent(&e.path) == part.dir
                        && is_safe_file_name(n)
                        && Some(n) != new_name.as_deref()
                    {
                        self.blobs.delete(e.path.clone()).await?;
                    }
                }
            }
            return Ok(());
        }
        Err(CacheError::Conflict {
            path: part.dir.clone(),
            attempts: MAX_PUBLISH_ATTEMPTS,
        })
    }

    /// Records in the manifests of the partitions `range` touches that archive file `file` was
    /// found short (it verified against its `.CHECKSUM` but lacked rows REST had). Partitions with
    /// nothing cached are left alone.
    pub async fn record_short_file(
        &self,
        key: &Dataset,
        range: TimeRange,
        file: &str,
    ) -> Result<(), CacheError> {
        key.check()?;
        for part in key.partitions(range) {
            for attempt in 0..=MAX_PUBLISH_ATTEMPTS {
                if attempt == MAX_PUBLISH_ATTEMPTS {
                    return Err(CacheError::Conflict {
                        path: part.dir.clone(),
                        attempts: MAX_PUBLISH_ATTEMPTS,
                    });
                }
                let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
                let Some((_, mut m, version)) = self.load_manifest_versioned(key, &part).await?
                else {
                    break;
                };
                if m.short_files.iter().any(|f| f == file) {
                    break;
                }
                m.short_files.push(file.to_owned());
                m.generation += 1;
                m.updated_at = now_ms();
                let bytes = Bytes::from(m.to_bytes());
                if self
                    .blobs
                    .publish_manifest(part.dir.clone(), version, bytes)
                    .await?
                {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn check_schema(key: &Dataset, batch: &RecordBatch) -> Result<(), CacheError> {
    let expected = schema(key.market, key.kind);
    let actual = batch.schema();
    let same = expected.fields().len() == actual.fields().len()
        && expected
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(e, a)| e.name() == a.name() && e.data_type() == a.data_type());
    if same {
        return Ok(());
    }
    let show = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(CacheError::SchemaMismatch {
        dataset: key.to_string(),
        expected: show(&expected),
        actual: show(&actual),
    })
}

/// Rows inside `complete`, sorted and unique on their key.
fn check_rows(
    key: &Dataset,
    batch: &RecordBatch,
    times: &[i64],
    complete: TimeRange,
    scale: i64,
) -> Result<(), CacheError> {
    let (lo, hi) = (complete.start() * scale, complete.end() * scale);
    if let Some(row) = times.iter().position(|t| *t < lo || *t >= hi) {
        return Err(CacheError::OutOfRange {
            row,
            time: times[row].div_euclid(scale),
            range: complete,
        });
    }
    check_order(key.kind, batch, times, 0)
}

pub(super) fn check_order(
    kind: DataKind,
    batch: &RecordBatch,
    times: &[i64],
    from: usize,
) -> Result<(), CacheError> {
    let trades = matches!(kind, DataKind::Trades | DataKind::AggTrades);
    if trades {
        if let Some(i) = times.windows(2).skip(from).position(|w| w[1] < w[0]) {
            return Err(CacheError::NotSorted {
                row: from + i + 1,
                reason: "time goes backwards".into(),
            });
        }
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.values().as_ref())
            .unwrap_or(&[]);
        if let Some(i) = ids.windows(2).skip(from).position(|w| w[1] <= w[0]) {
            return Err(CacheError::NotSorted {
                row: from + i + 1,
                reason: format!("trade id {} does not increase", ids[from + i + 1]),
            });
        }
    } else if kind.is_table() {
        // Several rows may share a time (a book's bands, an hour's options).
        if let Some(i) = times.windows(2).skip(from).position(|w| w[1] < w[0]) {
            return Err(CacheError::NotSorted {
                row: from + i + 1,
                reason: "time goes backwards".into(),
            });
        }
    } else if let Some(i) = times.windows(2).skip(from).position(|w| w[1] <= w[0]) {
        return Err(CacheError::NotSorted {
            row: from + i + 1,
            reason: "time does not increase strictly".into(),
        });
    }
    Ok(())
}

fn check_unique(kind: DataKind, merged: &RecordBatch) -> Result<(), CacheError> {
    let times = times(merged, kind).map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
    check_order(kind, merged, times, 0).map_err(|e| match e {
        CacheError::NotSorted { row, reason } => CacheError::NotSorted {
            row,
            reason: format!("{reason} where new rows meet cached rows"),
        },
        other => other,
    })
}

/// Old rows outside the pieces' ranges, with each piece's rows in its place. `pieces` are sorted
/// by start and do not overlap.
fn merge_rows(
    schema: &SchemaRef,
    old: &RecordBatch,
    pieces: &[PartPiece],
    kind: DataKind,
    scale: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if old.num_rows() == 0 && pieces.len() == 1 {
        return Ok(pieces[0].rows.clone());
    }
    let t = times(old, kind).map_err(arrow::error::ArrowError::InvalidArgumentError)?;
    let mut parts = Vec::with_capacity(2 * pieces.len() + 1);
    let mut from = 0;
    for p in pieces {
        let a = t.partition_point(|x| *x < p.sub.start() * scale).max(from);
        let z = t.partition_point(|x| *x < p.sub.end() * scale).max(a);
        parts.push(old.slice(from, a - from));
        parts.push(p.rows.clone());
        from = z;
    }
    parts.push(old.slice(from, old.num_rows() - from));
    arrow::compute::concat_batches(schema, &parts)
}

/// Rejects candles that have not closed yet (and, for other kinds, ranges that end in the future).
fn check_closed(
    key: &Dataset,
    batch: &RecordBatch,
    times: &[i64],
    complete: TimeRange,
    now: i64,
) -> Result<(), CacheError> {
    if let Some(interval) = key.interval {
        if let Some(closes) = batch
            .column_by_name("close_time")
            .and_then(crate::schema::i64_values)
            && let Some(i) = closes.iter().position(|c| *c >= now)
        {
            return Err(CacheError::OpenCandle {
                open_time: times[i],
            });
        }
        let last_open = interval.floor(complete.end() - 1);
        if interval.close_time(last_open) >= now {
            return Err(CacheError::OpenCandle {
                open_time: last_open,
            });
        }
    } else if complete.end() > now {
        return Err(CacheError::NotYetComplete {
            end: complete.end(),
            now,
        });
    }
    Ok(())
}
