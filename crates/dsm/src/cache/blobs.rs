//! Storage back-ends behind the cache: the local file system (explicit temp file, fsync, rename,
//! directory fsync, `flock` per partition) and any [`ObjectStore`] (S3-compatible storage; atomic
//! puts, data files created only if absent, manifests replaced by compare-and-swap).
//!
//! Both implement [`Blobs`], the only storage interface the rest of the cache uses, so the same
//! conformance tests run against both. A back-end must never expose a partially written object
//! under its final name.
//!
//! Other engines read the cache as a Hive-style dataset, so everything that is not current data
//! has a name that starts with `_` or `.`, which they skip: the manifest (`_manifest.json`),
//! temporaries (`.tmp-*`), lock files (`.lock`), staged data files (`_staged-*.pending`) and the
//! quarantine (`_quarantine/`).

use std::fmt;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::CacheError;

/// A boxed future returning a cache result.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, CacheError>> + Send + 'a>>;

/// Prefix of every temporary file name; such files are never referenced and are removed on open.
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// The lock file in each partition directory (local back-end).
pub(crate) const LOCK_FILE: &str = ".lock";
/// The manifest of a partition, replaced atomically (rename on local disk, compare-and-swap on an
/// object store).
pub(crate) const MANIFEST: &str = "_manifest.json";
/// The manifest's name before other engines were taken into account; read (local disk only) until
/// the partition's next write replaces it.
pub(crate) const LEGACY_MANIFEST: &str = "manifest.json";
/// Directory that receives files `verify` found bad.
pub(crate) const QUARANTINE_DIR: &str = "_quarantine";
/// The quarantine's name before other engines were taken into account.
pub(crate) const LEGACY_QUARANTINE_DIR: &str = "quarantine";
/// Prefix and suffix of a data file written to an object store but not yet visible under its own
/// name (`_staged-part-….parquet.pending`: skipped by Hive-style readers and by `*.parquet` globs).
pub(crate) const STAGED_PREFIX: &str = "_staged-";
/// See [`STAGED_PREFIX`].
pub(crate) const STAGED_SUFFIX: &str = ".pending";

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Path relative to the cache root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (ms since the epoch).
    pub modified_ms: i64,
}

/// Held while a partition is being changed; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: Option<std::fs::File>,
}

/// A partition's manifest as loaded.
#[derive(Debug, Clone)]
pub(crate) struct LoadedManifest {
    /// Its path.
    pub path: String,
    /// Its bytes.
    pub bytes: Bytes,
    /// What a conditional publish must find to replace it (object stores; `None` on local disk,
    /// where the partition lock serialises writers).
    pub version: Option<UpdateVersion>,
}

/// What the cache needs from storage. Paths are relative to the cache root, `/`-separated.
pub(crate) trait Blobs: Send + Sync + fmt::Debug {
    /// Human-readable location of the root (for messages).
    fn describe(&self) -> String;
    /// Whole object, `None` if absent.
    fn get(&self, path: String) -> BoxFut<'_, Option<Bytes>>;
    /// Byte ranges of an object, `None` if absent.
    fn get_ranges(&self, path: String, ranges: Vec<Range<u64>>) -> BoxFut<'_, Option<Vec<Bytes>>>;
    /// Deletes an object; absent is fine.
    fn delete(&self, path: String) -> BoxFut<'_, ()>;
    /// Every object under `prefix` (a directory, or `""` for all).
    fn list(&self, prefix: String) -> BoxFut<'_, Vec<Entry>>;
    /// A partition's manifest, `None` if there is none.
    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<LoadedManifest>>;
    /// Publishes a partition's manifest if it is still the one loaded as `previous` (`None`: there
    /// was none). `Ok(false)` when another writer changed it first (the caller re-reads, merges
    /// and retries).
    fn publish_manifest(
        &self,
        dir: String,
        previous: Option<UpdateVersion>,
        data: Bytes,
    ) -> BoxFut<'_, bool>;
    /// Removes a partition's manifest (its coverage is gone).
    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()>;
    /// Stores a new data file that no manifest references yet, atomically and durably (never
    /// visible half-written), where other engines cannot see it before [`Blobs::promote`]; dsm
    /// reads it under `path` meanwhile.
    fn stage(&self, path: String, data: Bytes) -> BoxFut<'_, ()>;
    /// After a manifest is published: retires the data file it replaced (`old`) and makes its
    /// own (`path`, if it has one) visible to other engines.
    fn promote(&self, path: Option<String>, old: Option<String>) -> BoxFut<'_, ()>;
    /// Removes a staged data file whose manifest lost the race to another writer.
    fn unstage(&self, path: String) -> BoxFut<'_, ()>;
    /// Finishes the promotion of a referenced data file that an interrupted writer published but
    /// did not promote. Returns whether there was one.
    fn settle(&self, path: String) -> BoxFut<'_, bool>;
    /// Takes the partition's exclusive writer lock, waiting at most `wait`.
    fn lock(&self, dir: String, wait: Duration) -> BoxFut<'_, LockGuard>;
    /// Moves an object to `_quarantine/<path>`.
    fn quarantine(&self, path: String) -> BoxFut<'_, ()>;
    /// Removes stray temporaries left by crashed writers; returns how many.
    fn clean_temporaries(&self) -> BoxFut<'_, usize>;
    /// Whether a file in a partition directory with no manifest reference may be removed now (a
    /// writer of this back-end can not be between its data put and its manifest publish).
    fn orphans_removable_under_lock(&self) -> bool;
}

/// Whether a path's last component is a manifest.
pub(crate) fn is_manifest_name(name: &str) -> bool {
    name == MANIFEST || name == LEGACY_MANIFEST
}

/// Whether a path lies in the quarantine.
pub(crate) fn in_quarantine(path: &str) -> bool {
    [QUARANTINE_DIR, LEGACY_QUARANTINE_DIR].iter().any(|d| {
        path.strip_prefix(d)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The staged name of data file `path`.
pub(crate) fn staged(path: &str) -> String {
    join(
        parent(path),
        &format!("{STAGED_PREFIX}{}{STAGED_SUFFIX}", file_name(path)),
    )
}

/// The data file a stored name is (itself, or the file it is the staged copy of); `None` for
/// anything else.
pub(crate) fn data_name(name: &str) -> Option<&str> {
    let n = name
        .strip_prefix(STAGED_PREFIX)
        .and_then(|n| n.strip_suffix(STAGED_SUFFIX))
        .unwrap_or(name);
    super::manifest::is_safe_file_name(n).then_some(n)
}

/// Last path component.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parent directory of a `/`-separated path (`""` at the root).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The state of one local write, shared by the blocking thread doing it and the future waiting
/// for it. A blocking thread can not be interrupted, so a dropped future would otherwise leave
/// the thread writing a temporary file (and renaming it into place) after its owner is gone, with
/// the partition lock already released. Instead the future's [`AbandonOnDrop`] marks the write
/// abandoned and removes the temporary synchronously; the thread checks the mark (under the same
/// mutex) before creating the temporary and before renaming it, so nothing is published.
#[derive(Debug, Default)]
pub(crate) struct TempSlot {
    state: std::sync::Mutex<TempState>,
}

#[derive(Debug, Default)]
struct TempState {
    abandoned: bool,
    done: bool,
    temp: Option<PathBuf>,
}

impl TempSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, TempState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Abandons a local write when the future waiting for it is dropped (a no-op once it is done).
struct AbandonOnDrop(Arc<TempSlot>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if !state.done {
            state.abandoned = true;
            if let Some(tmp) = state.temp.take() {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("cache I/O task failed: {e}")),
        })?
}

// ---------------------------------------------------------------------------------------------
// Local file system
// ---------------------------------------------------------------------------------------------

/// The local file-system back-end.
#[derive(Debug, Clone)]
pub(crate) struct LocalBlobs {
    root: Arc<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), CacheError> {
    // Opening a directory read-only and calling fsync persists its entries (renames, creations).
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl LocalBlobs {
    pub(crate) fn new(root: PathBuf) -> Result<LocalBlobs, CacheError> {
        create_dirs(&root, Path::new("/"))?;
        Ok(LocalBlobs {
            root: Arc::new(root),
        })
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            (*self.root).clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Writes `data` under a temporary name, fsyncs it and renames it to `rel`. `slot` lets the
    /// future that asked for the write abandon it: see [`TempSlot`].
    fn put_sync(root: &Path, rel: &str, data: &[u8], slot: &TempSlot) -> Result<(), CacheError> {
        let target = root.join(rel);
        let dir = target.parent().unwrap_or(root).to_owned();
        create_dirs(&dir, root)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{}", random_hex(), file_name(rel)));
        let abandoned = || CacheError::Io {
            path: target.clone(),
            source: std::io::Error::other("the write was abandoned (its future was dropped)"),
        };
        let mut f = {
            let mut state = slot.lock();
            if state.abandoned {
                return Err(abandoned());
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            state.temp = Some(tmp.clone());
            f
        };
        // The slow part runs unlocked: an abandoning future removes the temporary meanwhile (the
        // open handle keeps writing to the unlinked file, which vanishes when it is closed).
        let written = f.write_all(data).and_then(|()| f.sync_all());
        drop(f);
        {
            let mut state = slot.lock();
            state.temp = None;
            if state.abandoned {
                let _ = std::fs::remove_file(&tmp);
                return Err(abandoned());
            }
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(&tmp)(e));
            }
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(&target)(e));
            }
            state.done = true;
        }
        fsync_dir(&dir)
    }

    /// Runs [`LocalBlobs::put_sync`] on a blocking thread; dropping the returned future abandons
    /// the write and removes its temporary file before `drop` returns.
    async fn put_owned(root: Arc<PathBuf>, rel: String, data: Bytes) -> Result<(), CacheError> {
        let slot = Arc::new(TempSlot::default());
        let _abandon = AbandonOnDrop(slot.clone());
        blocking(move || LocalBlobs::put_sync(&root, &rel, &data, &slot)).await
    }

    fn list_sync(root: &Path, prefix: &str) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        let start = if prefix.is_empty() {
            root.to_owned()
        } else {
            root.join(prefix)
        };
        let mut stack = vec![(start, prefix.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for ent in rd {
                let ent = ent.map_err(io_err(&dir))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                let ft = match ent.file_type() {
                    Ok(ft) => ft,
                    Err(_) => continue,
                };
                let child_rel = join(&rel, &name);
                if ft.is_dir() {
                    stack.push((ent.path(), child_rel));
                } else if ft.is_file() {
                    // A file may vanish between listing and stat (a writer removed it).
                    let Ok(meta) = ent.metadata() else { continue };
                    let modified_ms = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    out.push(Entry {
                        path: child_rel,
                        size: meta.len(),
                        modified_ms,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes stray temporaries in partitions no writer holds; returns how many.
    pub(crate) fn clean_temporaries_sync(&self) -> Result<usize, CacheError> {
        let root = &*self.root;
        let entries = LocalBlobs::list_sync(root, "")?;
        let mut dirs: Vec<&str> = entries
            .iter()
            .filter(|e| file_name(&e.path).starts_with(TMP_PREFIX))
            .map(|e| parent(&e.path))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        let mut removed = 0;
        for dir in dirs {
            let dir_abs = root.join(dir);
            // A temporary is only stray if no writer holds the partition: its writer would be
            // about to rename it. If the lock is taken, leave the directory alone.
            let Ok(f) = LocalBlobs::open_lock_file(&dir_abs, root) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue;
            }
            for e in entries
                .iter()
                .filter(|e| parent(&e.path) == dir && file_name(&e.path).starts_with(TMP_PREFIX))
            {
                if std::fs::remove_file(root.join(&e.path)).is_ok() {
                    removed += 1;
                }
            }
            fsync_dir(&dir_abs)?;
        }
        Ok(removed)
    }

    fn open_lock_file(dir: &Path, root: &Path) -> Result<std::fs::File, CacheError> {
        create_dirs(dir, root)?;
        let p = dir.join(LOCK_FILE);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))
    }
}

/// `create_dir_all`, then fsync the parent of every directory it created (up to `root`'s parent)
/// so a crash cannot lose a directory that a published file lives in.
fn create_dirs(dir: &Path, root: &Path) -> Result<(), CacheError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.is_dir() {
            break;
        }
        missing.push(d.to_owned());
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for d in missing.iter().rev() {
        if let Some(p) = d.parent()
            && (p.starts_with(root) || root.starts_with(p))
        {
            fsync_dir(p)?;
        }
    }
    Ok(())
}

impl Blobs for LocalBlobs {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, path: String) -> BoxFut<'_, Option<Bytes>> {
        let p = self.abs(&path);
        Box::pin(blocking(move || match std::fs::read(&p) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }))
    }

    fn get_ranges(&self, path: String, ranges: Vec<Range<u64>>) -> BoxFut<'_, Option<Vec<Bytes>>> {
        let p = self.abs(&path);
        Box::pin(blocking(move || {
            let mut f = match std::fs::File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&p)(e)),
            };
            // The ranges read into one buffer's spare capacity (`read_to_end` on a file does not
            // zero it first: a tenth of a read's time was that zeroing), then zero-copy slices.
            let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
            let mut buf = Vec::with_capacity(total as usize);
            for r in &ranges {
                let n = r.end.saturating_sub(r.start);
                f.seek(std::io::SeekFrom::Start(r.start))
                    .map_err(io_err(&p))?;
                let got = std::io::Read::take(&mut f, n)
                    .read_to_end(&mut buf)
                    .map_err(io_err(&p))?;
                if got as u64 != n {
                    return Err(io_err(&p)(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file ends before the range read",
                    )));
                }
            }
            let buf = Bytes::from(buf);
            let mut out = Vec::with_capacity(ranges.len());
            let mut at = 0usize;
            for r in &ranges {
                let n = r.end.saturating_sub(r.start) as usize;
                out.push(buf.slice(at..at + n));
                at += n;
            }
            Ok(Some(out))
        }))
    }

    fn delete(&self, path: String) -> BoxFut<'_, ()> {
        let p = self.abs(&path);
        Box::pin(blocking(move || match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }))
    }

    fn list(&self, prefix: String) -> BoxFut<'_, Vec<Entry>> {
        let root = self.root.clone();
        Box::pin(blocking(move || LocalBlobs::list_sync(&root, &prefix)))
    }

    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<LoadedManifest>> {
        let root = self.root.clone();
        Box::pin(blocking(move || {
            for name in [MANIFEST, LEGACY_MANIFEST] {
                let rel = join(&dir, name);
                let p = root.join(&rel);
                match std::fs::read(&p) {
                    Ok(b) => {
                        return Ok(Some(LoadedManifest {
                            path: rel,
                            bytes: Bytes::from(b),
                            version: None,
                        }));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
            Ok(None)
        }))
    }

    fn publish_manifest(
        &self,
        dir: String,
        _previous: Option<UpdateVersion>,
        data: Bytes,
    ) -> BoxFut<'_, bool> {
        // The caller holds the partition lock, so no other writer can publish in between.
        let root = self.root.clone();
        Box::pin(async move {
            LocalBlobs::put_owned(root, join(&dir, MANIFEST), data).await?;
            self.delete(join(&dir, LEGACY_MANIFEST)).await?;
            Ok(true)
        })
    }

    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()> {
        let dir_abs = self.abs(&dir);
        Box::pin(blocking(move || {
            for name in [MANIFEST, LEGACY_MANIFEST] {
                let p = dir_abs.join(name);
                match std::fs::remove_file(&p) {
                    Ok(()) => fsync_dir(&dir_abs)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
            Ok(())
        }))
    }

    fn stage(&self, path: String, data: Bytes) -> BoxFut<'_, ()> {
        // Under the partition lock the file goes straight to its name: a writer that dies before
        // publishing leaves an unreferenced file that the next writer of the partition (or
        // `verify`) removes. Written atomically and durably (temporary, fsync, rename).
        Box::pin(LocalBlobs::put_owned(self.root.clone(), path, data))
    }

    fn promote(&self, path: Option<String>, old: Option<String>) -> BoxFut<'_, ()> {
        // The new file is visible already (under the lock): only the old one goes.
        match old.filter(|o| path.as_ref() != Some(o)) {
            Some(old) => self.delete(old),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn unstage(&self, path: String) -> BoxFut<'_, ()> {
        self.delete(path)
    }

    fn settle(&self, _path: String) -> BoxFut<'_, bool> {
        Box::pin(async { Ok(false) })
    }

    fn lock(&self, dir: String, wait: Duration) -> BoxFut<'_, LockGuard> {
        let root = self.root.clone();
        let dir_abs = self.abs(&dir);
        // The waiting thread gives up as soon as the future waiting for it is dropped (the
        // write was cancelled), rather than polling on to the deadline for nobody.
        let dropped = tokio_util::sync::CancellationToken::new();
        let guard = dropped.clone().drop_guard();
        Box::pin(async move {
            let _guard = guard;
            blocking(move || {
                let f = LocalBlobs::open_lock_file(&dir_abs, &root)?;
                let deadline = Instant::now() + wait;
                let mut pause = Duration::from_millis(1);
                loop {
                    match f.try_lock() {
                        Ok(()) => return Ok(LockGuard { _file: Some(f) }),
                        Err(std::fs::TryLockError::WouldBlock) => {
                            if Instant::now() >= deadline || dropped.is_cancelled() {
                                return Err(CacheError::Locked {
                                    path: dir_abs.join(LOCK_FILE),
                                    waited: wait,
                                });
                            }
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(20));
                        }
                        Err(std::fs::TryLockError::Error(e)) => {
                            return Err(io_err(&dir_abs.join(LOCK_FILE))(e));
                        }
                    }
                }
            })
            .await
        })
    }

    fn quarantine(&self, path: String) -> BoxFut<'_, ()> {
        let root = self.root.clone();
        Box::pin(blocking(move || {
            let from = root.join(&path);
            let to = root.join(QUARANTINE_DIR).join(&path);
            let to_dir = to.parent().unwrap_or(&root).to_owned();
            create_dirs(&to_dir, &root)?;
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(&from)(e)),
            }
            fsync_dir(&to_dir)?;
            fsync_dir(from.parent().unwrap_or(&root))
        }))
    }

    fn clean_temporaries(&self) -> BoxFut<'_, usize> {
        let this = self.clone();
        Box::pin(blocking(move || this.clean_temporaries_sync()))
    }

    fn orphans_removable_under_lock(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Object store
// ---------------------------------------------------------------------------------------------

/// A back-end on any [`ObjectStore`] (S3-compatible storage, in-memory for tests). Many
/// processes on many machines may share one, with no coordinator:
///
/// - A data file is put once, under a fresh name, and only if absent (`PutMode::Create`), first as
///   `_staged-<name>.pending`, which other engines skip.
/// - The manifest `_manifest.json` is replaced by compare-and-swap: `PutMode::Create` when there
///   is none, `PutMode::Update` (`If-Match` on the ETag read) otherwise. Of two writers of a
///   partition one wins; the other finds the manifest changed (412, or 409 once the store's own
///   retries are spent), removes its staged file, re-reads, merges and tries again.
/// - Once the manifest is published the winner deletes the data file it replaced, then copies
///   its staged file to its own name and deletes the staged one. Other engines never see two data
///   files of a partition; a writer killed at any point leaves only hidden names, or the old file.
/// - dsm reads a referenced data file under its name or, until it is promoted, its staged name;
///   `verify` finishes a promotion that a killed writer left undone.
#[derive(Debug, Clone)]
pub(crate) struct StoreBlobs {
    store: Arc<dyn ObjectStore>,
    /// Where the store is, e.g. `s3://bucket/prefix` (for messages).
    url: Arc<str>,
}

fn opath(path: &str) -> Result<object_store::path::Path, CacheError> {
    object_store::path::Path::parse(path).map_err(|e| CacheError::ObjectStore {
        path: path.to_owned(),
        source: Box::new(object_store::Error::from(e)),
    })
}

/// Whether an error of a conditional put means another writer changed the object first: 412
/// (`Precondition`), `AlreadyExists` for `Create`, and 409 `ConditionalRequestConflict`, which
/// `object_store` reports as `AlreadyExists` once its retries are spent.
fn lost_race(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }
    )
}

impl StoreBlobs {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, url: &str) -> StoreBlobs {
        StoreBlobs {
            store,
            url: url.trim_end_matches('/').into(),
        }
    }

    /// An error at `path`, named with the store's URL so the message says which bucket and key.
    fn err(&self, path: &str) -> impl FnOnce(object_store::Error) -> CacheError + '_ {
        let at = if path.is_empty() {
            self.url.to_string()
        } else {
            format!("{}/{path}", self.url)
        };
        move |source| CacheError::ObjectStore {
            path: at,
            source: Box::new(source),
        }
    }

    async fn exists(&self, path: &str) -> Result<bool, CacheError> {
        match self.store.head(&opath(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(path)(e)),
        }
    }

    /// The staged name to read when a data file is not (yet) under its own name.
    fn fallback(path: &str) -> Option<String> {
        super::manifest::is_safe_file_name(file_name(path)).then(|| staged(path))
    }

    async fn get_once(&self, path: &str) -> Result<Option<(Bytes, UpdateVersion)>, CacheError> {
        match self.store.get(&opath(path)?).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(self.err(path))?;
                Ok(Some((bytes, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(path)(e)),
        }
    }

    async fn ranges_once(
        &self,
        path: &str,
        ranges: &[Range<u64>],
    ) -> Result<Option<Vec<Bytes>>, CacheError> {
        match self.store.get_ranges(&opath(path)?, ranges).await {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(path)(e)),
        }
    }

    /// `read` of `path`; for a data file not (yet) promoted, of its staged name, and of `path`
    /// again if it was promoted between the two.
    async fn read_data<T, F, Fut>(&self, path: String, read: F) -> Result<Option<T>, CacheError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Option<T>, CacheError>>,
    {
        if let Some(v) = read(path.clone()).await? {
            return Ok(Some(v));
        }
        let Some(s) = StoreBlobs::fallback(&path) else {
            return Ok(None);
        };
        if let Some(v) = read(s).await? {
            return Ok(Some(v));
        }
        read(path).await
    }

    /// Copies the staged `path` to its own name and deletes the staged one. `Ok(false)` if there
    /// is no staged file.
    async fn unveil(&self, path: &str) -> Result<bool, CacheError> {
        let from = staged(path);
        match self.store.copy(&opath(&from)?, &opath(path)?).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err(&from)(e)),
        }
        self.delete(from).await?;
        Ok(true)
    }
}

impl Blobs for StoreBlobs {
    fn describe(&self) -> String {
        self.url.to_string()
    }

    fn get(&self, path: String) -> BoxFut<'_, Option<Bytes>> {
        Box::pin(self.read_data(path, move |p| async move {
            Ok(self.get_once(&p).await?.map(|(b, _)| b))
        }))
    }

    fn get_ranges(&self, path: String, ranges: Vec<Range<u64>>) -> BoxFut<'_, Option<Vec<Bytes>>> {
        Box::pin(async move {
            let ranges = &ranges;
            self.read_data(
                path,
                move |p| async move { self.ranges_once(&p, ranges).await },
            )
            .await
        })
    }

    fn delete(&self, path: String) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let p = opath(&path)?;
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err(&path)(e)),
            }
        })
    }

    fn list(&self, prefix: String) -> BoxFut<'_, Vec<Entry>> {
        Box::pin(async move {
            let p = if prefix.is_empty() {
                None
            } else {
                Some(opath(&prefix)?)
            };
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(p.as_ref())
                .try_collect()
                .await
                .map_err(self.err(&prefix))?;
            let mut out: Vec<Entry> = metas
                .into_iter()
                .map(|m| Entry {
                    path: m.location.to_string(),
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis(),
                })
                .collect();
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
    }

    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<LoadedManifest>> {
        Box::pin(async move {
            let path = join(&dir, MANIFEST);
            Ok(self
                .get_once(&path)
                .await?
                .map(|(bytes, version)| LoadedManifest {
                    path,
                    bytes,
                    version: Some(version),
                }))
        })
    }

    fn publish_manifest(
        &self,
        dir: String,
        previous: Option<UpdateVersion>,
        data: Bytes,
    ) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let path = join(&dir, MANIFEST);
            let opts = PutOptions {
                mode: match previous {
                    Some(v) => PutMode::Update(v),
                    None => PutMode::Create,
                },
                ..Default::default()
            };
            match self
                .store
                .put_opts(&opath(&path)?, PutPayload::from_bytes(data), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if lost_race(&e) => {
                    tracing::debug!(%path, error = %e, "another writer published first");
                    Ok(false)
                }
                Err(e) => Err(self.err(&path)(e)),
            }
        })
    }

    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()> {
        self.delete(join(&dir, MANIFEST))
    }

    fn stage(&self, path: String, data: Bytes) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let at = staged(&path);
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            self.store
                .put_opts(&opath(&at)?, PutPayload::from_bytes(data), opts)
                .await
                .map_err(self.err(&at))?;
            Ok(())
        })
    }

    fn promote(&self, path: Option<String>, old: Option<String>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            // The old file goes first, so other engines never see both.
            if let Some(old) = old.filter(|o| path.as_ref() != Some(o)) {
                self.delete(staged(&old)).await?;
                self.delete(old).await?;
            }
            let Some(path) = path else {
                return Ok(());
            };
            if !self.unveil(&path).await? && !self.exists(&path).await? {
                // Neither copy exists: a writer that published after this one has already
                // merged these rows into its own file and retired this one.
                tracing::debug!(%path, "superseded before it was promoted");
            }
            Ok(())
        })
    }

    fn unstage(&self, path: String) -> BoxFut<'_, ()> {
        self.delete(staged(&path))
    }

    fn settle(&self, path: String) -> BoxFut<'_, bool> {
        Box::pin(async move {
            if self.exists(&path).await? {
                // A leftover staged copy of a promoted file.
                self.delete(staged(&path)).await?;
                return Ok(false);
            }
            self.unveil(&path).await
        })
    }

    fn lock(&self, _dir: String, _wait: Duration) -> BoxFut<'_, LockGuard> {
        // Object stores have no locks; compare-and-swap on the manifest detects races instead.
        Box::pin(async { Ok(LockGuard { _file: None }) })
    }

    fn quarantine(&self, path: String) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let to = join(QUARANTINE_DIR, &path);
            let mut from = path.clone();
            if !self.exists(&from).await?
                && let Some(s) = StoreBlobs::fallback(&path)
            {
                from = s;
            }
            match self.store.copy(&opath(&from)?, &opath(&to)?).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(self.err(&from)(e)),
            }
            self.delete(from).await
        })
    }

    fn clean_temporaries(&self) -> BoxFut<'_, usize> {
        // Puts are atomic: an object store never holds a temporary.
        Box::pin(async { Ok(0) })
    }

    fn orphans_removable_under_lock(&self) -> bool {
        // Another process may have staged its data file and not yet published its manifest.
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temporaries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX))
            })
            .collect()
    }

    #[test]
    fn a_lock_wait_ends_with_the_future_waiting_for_it() {
        // One blocking thread: a lock wait that outlived its future would hold it, and every
        // later cache operation would queue behind it until that wait's deadline.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::new(dir.path().to_owned()).unwrap();
        // Another writer holds partition `a`.
        let held = LocalBlobs::open_lock_file(&dir.path().join("a"), dir.path()).unwrap();
        held.lock().unwrap();
        rt.block_on(async {
            let wait = Duration::from_secs(60);
            let first =
                tokio::time::timeout(Duration::from_millis(100), blobs.lock("a".into(), wait));
            assert!(first.await.is_err(), "partition a is held");
            let other = tokio::time::timeout(Duration::from_secs(5), blobs.lock("b".into(), wait));
            assert!(
                matches!(other.await, Ok(Ok(_))),
                "the blocking thread is free again"
            );
        });
    }

    #[test]
    fn an_abandoned_write_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let slot = TempSlot::default();
        slot.lock().abandoned = true;
        assert!(LocalBlobs::put_sync(dir.path(), "a/x.parquet", b"data", &slot).is_err());
        assert!(!dir.path().join("a/x.parquet").exists());
        assert!(temporaries(&dir.path().join("a")).is_empty());
    }

    #[test]
    fn a_finished_write_is_not_undone_by_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Arc::new(TempSlot::default());
        let guard = AbandonOnDrop(slot.clone());
        LocalBlobs::put_sync(dir.path(), "x.parquet", b"data", &slot).unwrap();
        drop(guard);
        assert_eq!(
            std::fs::read(dir.path().join("x.parquet")).unwrap(),
            b"data"
        );
    }

    /// Dropping the future while the blocking thread writes removes the temporary before `drop`
    /// returns, and the thread never renames it into place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_put_mid_write_removes_its_temporary_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = Arc::new(dir.path().to_path_buf());
        let data = Bytes::from(vec![7u8; 64 << 20]);
        let mut put = Box::pin(LocalBlobs::put_owned(root, "x.parquet".into(), data));
        let t0 = Instant::now();
        // Drive the put until its temporary exists (the thread is writing 64 MiB).
        loop {
            tokio::select! {
                biased;
                r = &mut put => panic!("finished before the test could drop it: {r:?}"),
                () = tokio::time::sleep(Duration::from_micros(200)) => {}
            }
            if !temporaries(dir.path()).is_empty() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no temporary appeared"
            );
        }
        drop(put);
        assert!(
            temporaries(dir.path()).is_empty(),
            "{:?}",
            temporaries(dir.path())
        );
        // The thread finishes its write to the unlinked file and publishes nothing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(temporaries(dir.path()).is_empty());
        assert!(!dir.path().join("x.parquet").exists());
    }
}
