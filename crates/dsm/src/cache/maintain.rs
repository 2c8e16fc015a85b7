//! Maintenance: listing, verification (with quarantine), pruning and size.

use std::collections::BTreeMap;

use crate::schema::output_schema;
use crate::time::{TimeRange, now_ms};

use super::blobs::{data_name, file_name, is_manifest_name, parent};
use super::layout::Partition;
use super::manifest::{Manifest, Provenance};
use super::read::check_against_manifest;
use super::*;

impl CacheStore {
    /// Quarantines a partition's bad data file found by a read (`generation` is the manifest it
    /// was read with), under the partition's lock: the partition then counts as missing. If a
    /// writer published a new generation meanwhile, that one is left alone (and also not used by
    /// this read, which then fetches the partition again).
    pub(super) async fn quarantine_bad(
        &self,
        part: &Partition,
        generation: u64,
        mpath: String,
        problem: Problem,
    ) -> Result<Snapshot, CacheError> {
        let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
        let current = self.load_manifest_at(&part.dir).await.ok().flatten();
        if current.is_some_and(|(_, m)| m.generation == generation) {
            tracing::warn!(path = %problem.path, reason = %problem.reason,
                "corrupt cache file quarantined; fetching its partition again");
            self.quarantine_partition(&part.dir, mpath, problem.path.clone())
                .await?;
        }
        Ok(Snapshot {
            quarantined: vec![problem],
            ..Snapshot::default()
        })
    }

    /// Quarantines a partition's manifest that failed its checks on a read, under the partition's
    /// lock (unless a writer replaced it meanwhile): the partition then counts as missing, and its
    /// data file, no longer referenced, is left for `verify` or the next write to remove.
    pub(super) async fn quarantine_manifest(
        &self,
        part: &Partition,
        problem: Problem,
    ) -> Result<Snapshot, CacheError> {
        let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
        if let Err(CacheError::CorruptManifest { path, .. }) =
            self.load_manifest_at(&part.dir).await
            && path == problem.path
        {
            tracing::warn!(path = %problem.path, reason = %problem.reason,
                "corrupt cache manifest quarantined; fetching its partition again");
            self.blobs.quarantine(path).await?;
            self.blobs.remove_manifests(part.dir.clone()).await?;
        }
        Ok(Snapshot {
            quarantined: vec![problem],
            ..Snapshot::default()
        })
    }

    /// Moves a partition's manifest and data file to `_quarantine/` (the manifest first, so no
    /// reader sees a manifest without its file). The caller holds the partition's lock.
    async fn quarantine_partition(
        &self,
        dir: &str,
        manifest: String,
        data: String,
    ) -> Result<(), CacheError> {
        self.blobs.quarantine(manifest).await?;
        self.blobs.remove_manifests(dir.to_owned()).await?;
        self.blobs.quarantine(data).await
    }

    /// Directories that hold a manifest, and every stored object (quarantine excluded).
    async fn scan(&self) -> Result<(Vec<String>, Vec<blobs::Entry>), CacheError> {
        let entries: Vec<blobs::Entry> = self
            .blobs
            .list(String::new())
            .await?
            .into_iter()
            .filter(|e| !blobs::in_quarantine(&e.path))
            .collect();
        let mut dirs: Vec<String> = entries
            .iter()
            .filter(|e| is_manifest_name(file_name(&e.path)))
            .map(|e| parent(&e.path).to_owned())
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok((dirs, entries))
    }

    async fn load_manifest_at(&self, dir: &str) -> Result<Option<(String, Manifest)>, CacheError> {
        let Some(blobs::LoadedManifest { path, bytes, .. }) =
            self.blobs.load_manifest(dir.to_owned()).await?
        else {
            return Ok(None);
        };
        let m = Manifest::parse(&bytes).map_err(|reason| CacheError::CorruptManifest {
            path: path.clone(),
            reason,
        })?;
        let expected = m
            .dataset
            .partitions(m.partition_range().unwrap_or(TimeRange::new(0, 1)?))
            .into_iter()
            .next()
            .map(|p| p.dir);
        if expected.as_deref() != Some(dir) {
            return Err(CacheError::CorruptManifest {
                path,
                reason: format!("it describes another partition ({})", m.dataset),
            });
        }
        Ok(Some((path, m)))
    }

    /// Every cached partition, with its coverage, size and sources. Reads manifests only;
    /// partitions with a corrupt manifest are skipped (and logged): `verify` reports them.
    pub async fn list(&self) -> Result<Vec<PartitionInfo>, CacheError> {
        let (dirs, entries) = self.scan().await?;
        let sizes: BTreeMap<&str, u64> =
            entries.iter().map(|e| (e.path.as_str(), e.size)).collect();
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let (mpath, m) = match self.load_manifest_at(&dir).await {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a cache partition");
                    continue;
                }
            };
            let data_file = m.file.as_ref().map(|f| format!("{dir}/{}", f.name));
            let mut sources: Vec<Provenance> = Vec::new();
            for s in &m.covered {
                if !sources.contains(&s.source) {
                    sources.push(s.source.clone());
                }
            }
            let bytes = sizes.get(mpath.as_str()).copied().unwrap_or(0)
                + m.file.as_ref().map_or(0, |f| f.bytes);
            out.push(PartitionInfo {
                partition: m.partition_range().unwrap_or(TimeRange::new(0, 1)?),
                generation: m.generation,
                covered: TimeRange::merge_all(m.covered_ranges()),
                gaps: m.no_data_ranges(),
                rows: m.file.as_ref().map_or(0, |f| f.rows),
                dataset: m.dataset,
                path: dir,
                bytes,
                data_file,
                sources,
                short_files: m.short_files,
            });
        }
        Ok(out)
    }

    /// Re-reads every data file and checks it against its manifest (size, checksum, rows, order,
    /// ranges). Anything bad is moved to `_quarantine/` and its partition's coverage dropped, so it
    /// is fetched again. Unreferenced data files and stray temporaries are removed.
    pub async fn verify(&self) -> Result<VerifyReport, CacheError> {
        let at_open = self
            .removed_at_open
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        let mut report = VerifyReport {
            removed: at_open + self.blobs.clean_temporaries().await?,
            ..VerifyReport::default()
        };
        let (dirs, entries) = self.scan().await?;
        let mut data_dirs: Vec<String> = entries
            .iter()
            .filter(|e| data_name(file_name(&e.path)).is_some())
            .map(|e| parent(&e.path).to_owned())
            .chain(dirs.iter().cloned())
            .collect();
        data_dirs.sort();
        data_dirs.dedup();
        let now = now_ms();
        for dir in data_dirs {
            let _guard = self.blobs.lock(dir.clone(), self.lock_wait).await?;
            report.partitions += 1;
            let mut referenced: Option<String> = None;
            match self.load_manifest_at(&dir).await {
                Ok(None) => {}
                Err(CacheError::CorruptManifest { path, reason }) => {
                    report.problems.push(Problem {
                        path: path.clone(),
                        reason,
                    });
                    self.blobs.quarantine(path.clone()).await?;
                    report.quarantined.push(path);
                    self.blobs.remove_manifests(dir.clone()).await?;
                }
                Err(e) => return Err(e),
                Ok(Some((mpath, m))) => {
                    if let Some(f) = &m.file {
                        let path = format!("{dir}/{}", f.name);
                        report.files += 1;
                        let out_schema = output_schema(m.dataset.market, m.dataset.kind);
                        let checked =
                            match self.read_whole(&path, f, m.dataset.kind, &out_schema).await {
                                Ok(b) => check_against_manifest(&m, &b).map_err(|reason| {
                                    CacheError::CorruptData {
                                        path: path.clone(),
                                        reason,
                                    }
                                }),
                                Err(e) => Err(e),
                            };
                        match checked {
                            Ok(rows) => {
                                report.rows += rows;
                                referenced = Some(f.name.clone());
                            }
                            Err(CacheError::CorruptData { path, reason }) => {
                                report.problems.push(Problem {
                                    path: path.clone(),
                                    reason,
                                });
                                self.quarantine_partition(&dir, mpath.clone(), path.clone())
                                    .await?;
                                report.quarantined.push(mpath);
                                report.quarantined.push(path);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            // Unreferenced data files: leftovers of crashed or superseded writes.
            for e in entries.iter().filter(|e| parent(&e.path) == dir) {
                let Some(n) = data_name(file_name(&e.path)) else {
                    continue;
                };
                if Some(n) == referenced.as_deref() {
                    continue;
                }
                // A visible file no manifest references was superseded (an object store makes a
                // data file visible only after its manifest won); a staged one may belong to a
                // writer still at work, unless it is old.
                let superseded = n == file_name(&e.path);
                let old_enough = now - e.modified_ms > 3_600_000;
                if self.blobs.orphans_removable_under_lock() || superseded || old_enough {
                    self.blobs.delete(e.path.clone()).await?;
                    report.removed += 1;
                }
            }
            // Then (so other engines never see two files of the partition) the referenced file
            // is made visible if an interrupted writer left it staged.
            if let Some(n) = &referenced {
                let path = format!("{dir}/{n}");
                if self.blobs.settle(path.clone()).await? {
                    tracing::info!(%path, "finished publishing a data file an interrupted writer left staged");
                }
            }
        }
        Ok(report)
    }

    /// Removes the partitions `filter` selects (manifest first, then data). See [`PruneFilter`].
    pub async fn prune(&self, filter: &PruneFilter) -> Result<PruneReport, CacheError> {
        let mut report = PruneReport::default();
        let (dirs, entries) = if filter.all {
            let all = self.blobs.list(String::new()).await?;
            let dirs: Vec<String> = Vec::new();
            (dirs, all)
        } else {
            self.scan().await?
        };
        if filter.all {
            for e in entries {
                if file_name(&e.path) == blobs::LOCK_FILE || e.path == "CACHEDIR.TAG" {
                    continue;
                }
                self.blobs.delete(e.path.clone()).await?;
                report.files += 1;
                report.bytes += e.size;
            }
            return Ok(report);
        }
        if filter.symbol.is_none() && filter.market.is_none() && filter.older_than.is_none() {
            return Ok(report);
        }
        for dir in dirs {
            let m = match self.load_manifest_at(&dir).await {
                Ok(Some((_, m))) => m,
                Ok(None) | Err(CacheError::CorruptManifest { .. }) => continue,
                Err(e) => return Err(e),
            };
            let d = &m.dataset;
            let end = m
                .covered
                .iter()
                .map(|s| s.end)
                .max()
                .unwrap_or(m.partition.end);
            let hit = filter.market.is_none_or(|x| x == d.market)
                && filter.symbol.as_ref().is_none_or(|x| x == &d.symbol)
                && filter.older_than.is_none_or(|t| end <= t);
            if !hit {
                continue;
            }
            let _guard = self.blobs.lock(dir.clone(), self.lock_wait).await?;
            let files: Vec<&blobs::Entry> = entries
                .iter()
                .filter(|e| parent(&e.path) == dir && file_name(&e.path) != blobs::LOCK_FILE)
                .collect();
            self.blobs.remove_manifests(dir.clone()).await?;
            for e in files {
                self.blobs.delete(e.path.clone()).await?;
                report.files += 1;
                report.bytes += e.size;
            }
        }
        Ok(report)
    }

    /// Total bytes stored (data, manifests, quarantine).
    pub async fn size(&self) -> Result<u64, CacheError> {
        Ok(self
            .blobs
            .list(String::new())
            .await?
            .iter()
            .map(|e| e.size)
            .sum())
    }
}
