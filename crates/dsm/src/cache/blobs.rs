//! Storage back-ends behind the cache: the local file system (explicit temp file, fsync, rename,
//! directory fsync, `flock` per partition) and any [`ObjectStore`] (atomic puts, manifests
//! published by generation with `PutMode::Create`).
//!
//! Both implement [`Blobs`], the only storage interface the rest of the cache uses, so the same
//! conformance tests run against both. A back-end must never expose a partially written object
//! under its final name.

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
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::CacheError;

/// A boxed future returning a cache result.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, CacheError>> + Send + 'a>>;

/// Prefix of every temporary file name; such files are never referenced and are removed on open.
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// The lock file in each partition directory (local back-end).
pub(crate) const LOCK_FILE: &str = ".lock";
/// The manifest of a partition on the local back-end (replaced atomically by rename).
pub(crate) const LOCAL_MANIFEST: &str = "manifest.json";
/// Directory that receives files `verify` found bad.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

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

/// What the cache needs from storage. Paths are relative to the cache root, `/`-separated.
pub(crate) trait Blobs: Send + Sync + fmt::Debug {
    /// Human-readable location of the root (for messages).
    fn describe(&self) -> String;
    /// Whole object, `None` if absent.
    fn get(&self, path: String) -> BoxFut<'_, Option<Bytes>>;
    /// Byte ranges of an object, `None` if absent.
    fn get_ranges(&self, path: String, ranges: Vec<Range<u64>>) -> BoxFut<'_, Option<Vec<Bytes>>>;
    /// Stores `data` atomically and durably under `path` (never visible half-written).
    fn put(&self, path: String, data: Bytes) -> BoxFut<'_, ()>;
    /// Deletes an object; absent is fine.
    fn delete(&self, path: String) -> BoxFut<'_, ()>;
    /// Every object under `prefix` (a directory, or `""` for all).
    fn list(&self, prefix: String) -> BoxFut<'_, Vec<Entry>>;
    /// The latest manifest of a partition: (its path, its bytes), `None` if there is none.
    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<(String, Bytes)>>;
    /// Publishes manifest `generation` of a partition. `Ok(false)` when another writer published
    /// that generation first (the caller re-reads and retries).
    fn publish_manifest(&self, dir: String, generation: u64, data: Bytes) -> BoxFut<'_, bool>;
    /// Removes every manifest of a partition (its coverage is gone).
    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()>;
    /// Takes the partition's exclusive writer lock, waiting at most `wait`.
    fn lock(&self, dir: String, wait: Duration) -> BoxFut<'_, LockGuard>;
    /// Moves an object to `quarantine/<path>`.
    fn quarantine(&self, path: String) -> BoxFut<'_, ()>;
    /// Removes stray temporaries left by crashed writers; returns how many.
    fn clean_temporaries(&self) -> BoxFut<'_, usize>;
    /// Whether a file in a partition directory with no manifest reference may be removed now (a
    /// writer of this back-end can not be between its data put and its manifest publish).
    fn orphans_removable_under_lock(&self) -> bool;
}

/// Whether a path's last component is a manifest.
pub(crate) fn is_manifest_name(name: &str) -> bool {
    name == LOCAL_MANIFEST || (name.starts_with("manifest-") && name.ends_with(".json"))
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

    fn put(&self, path: String, data: Bytes) -> BoxFut<'_, ()> {
        let root = self.root.clone();
        Box::pin(LocalBlobs::put_owned(root, path, data))
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

    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<(String, Bytes)>> {
        let rel = join(&dir, LOCAL_MANIFEST);
        let p = self.abs(&rel);
        Box::pin(blocking(move || match std::fs::read(&p) {
            Ok(b) => Ok(Some((rel, Bytes::from(b)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }))
    }

    fn publish_manifest(&self, dir: String, _generation: u64, data: Bytes) -> BoxFut<'_, bool> {
        // The caller holds the partition lock, so no other writer can publish in between.
        let root = self.root.clone();
        Box::pin(async move {
            LocalBlobs::put_owned(root, join(&dir, LOCAL_MANIFEST), data)
                .await
                .map(|()| true)
        })
    }

    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()> {
        let dir_abs = self.abs(&dir);
        Box::pin(blocking(move || {
            let p = dir_abs.join(LOCAL_MANIFEST);
            match std::fs::remove_file(&p) {
                Ok(()) => fsync_dir(&dir_abs),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&p)(e)),
            }
        }))
    }

    fn lock(&self, dir: String, wait: Duration) -> BoxFut<'_, LockGuard> {
        let root = self.root.clone();
        let dir_abs = self.abs(&dir);
        Box::pin(blocking(move || {
            let f = LocalBlobs::open_lock_file(&dir_abs, &root)?;
            let deadline = Instant::now() + wait;
            let mut pause = Duration::from_millis(1);
            loop {
                match f.try_lock() {
                    Ok(()) => return Ok(LockGuard { _file: Some(f) }),
                    Err(std::fs::TryLockError::WouldBlock) => {
                        if Instant::now() >= deadline {
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
        }))
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

/// A back-end on any [`ObjectStore`] (S3-compatible storage, in-memory for tests).
///
/// Objects are written with single atomic puts. Manifests are `manifest-<generation>.json`,
/// created with `PutMode::Create`: two writers racing for the same generation cannot both win, so
/// no lock is needed; the loser re-reads and retries.
#[derive(Debug, Clone)]
pub(crate) struct StoreBlobs {
    store: Arc<dyn ObjectStore>,
}

fn store_err(path: &str) -> impl FnOnce(object_store::Error) -> CacheError + '_ {
    move |source| CacheError::ObjectStore {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

fn opath(path: &str) -> Result<object_store::path::Path, CacheError> {
    object_store::path::Path::parse(path).map_err(|e| CacheError::ObjectStore {
        path: path.to_owned(),
        source: Box::new(object_store::Error::from(e)),
    })
}

fn manifest_name(generation: u64) -> String {
    format!("manifest-{generation:020}.json")
}

impl StoreBlobs {
    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> StoreBlobs {
        StoreBlobs { store }
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<String>, CacheError> {
        let p = opath(dir)?;
        let res = self
            .store
            .list_with_delimiter(Some(&p))
            .await
            .map_err(store_err(dir))?;
        Ok(res
            .objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
    }

    async fn manifests(&self, dir: &str) -> Result<Vec<String>, CacheError> {
        let mut v: Vec<String> = self
            .list_dir(dir)
            .await?
            .into_iter()
            .filter(|p| {
                let n = file_name(p);
                n.starts_with("manifest-") && n.ends_with(".json")
            })
            .collect();
        // Zero-padded generations sort in numeric order.
        v.sort();
        Ok(v)
    }
}

impl Blobs for StoreBlobs {
    fn describe(&self) -> String {
        format!("{}", self.store)
    }

    fn get(&self, path: String) -> BoxFut<'_, Option<Bytes>> {
        Box::pin(async move {
            let p = opath(&path)?;
            match self.store.get(&p).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(store_err(&path))?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(&path)(e)),
            }
        })
    }

    fn get_ranges(&self, path: String, ranges: Vec<Range<u64>>) -> BoxFut<'_, Option<Vec<Bytes>>> {
        Box::pin(async move {
            let p = opath(&path)?;
            match self.store.get_ranges(&p, &ranges).await {
                Ok(v) => Ok(Some(v)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(&path)(e)),
            }
        })
    }

    fn put(&self, path: String, data: Bytes) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let p = opath(&path)?;
            self.store
                .put(&p, PutPayload::from_bytes(data))
                .await
                .map_err(store_err(&path))?;
            Ok(())
        })
    }

    fn delete(&self, path: String) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let p = opath(&path)?;
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err(&path)(e)),
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
                .map_err(store_err(&prefix))?;
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

    fn load_manifest(&self, dir: String) -> BoxFut<'_, Option<(String, Bytes)>> {
        Box::pin(async move {
            // The latest generation may be replaced (and the older one deleted) between listing
            // and reading: re-list a few times.
            for _ in 0..8 {
                let Some(latest) = self.manifests(&dir).await?.pop() else {
                    return Ok(None);
                };
                if let Some(b) = self.get(latest.clone()).await? {
                    return Ok(Some((latest, b)));
                }
            }
            Err(CacheError::Conflict {
                path: dir,
                attempts: 8,
            })
        })
    }

    fn publish_manifest(&self, dir: String, generation: u64, data: Bytes) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let path = join(&dir, &manifest_name(generation));
            let p = opath(&path)?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&p, PutPayload::from_bytes(data), opts)
                .await
            {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
                Err(e) => return Err(store_err(&path)(e)),
            }
            // Superseded generations are deleted (below), so `Create` alone cannot tell a fresh
            // generation from one that was published and deleted while this writer was slow. A
            // generation is only ever deleted after a higher one exists, so a higher generation
            // in the listing means this publish is stale: readers never pick it; withdraw it.
            let all = self.manifests(&dir).await?;
            if all.iter().any(|m| *m > path) {
                self.delete(path).await?;
                return Ok(false);
            }
            // Older generations are superseded; readers that raced re-list.
            for old in all {
                if old < path {
                    self.delete(old).await?;
                }
            }
            Ok(true)
        })
    }

    fn remove_manifests(&self, dir: String) -> BoxFut<'_, ()> {
        Box::pin(async move {
            for m in self.manifests(&dir).await? {
                self.delete(m).await?;
            }
            Ok(())
        })
    }

    fn lock(&self, _dir: String, _wait: Duration) -> BoxFut<'_, LockGuard> {
        // Object stores have no locks; conditional manifest creation detects races instead.
        Box::pin(async { Ok(LockGuard { _file: None }) })
    }

    fn quarantine(&self, path: String) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let from = opath(&path)?;
            let to_s = join(QUARANTINE_DIR, &path);
            let to = opath(&to_s)?;
            match self.store.copy(&from, &to).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(store_err(&path)(e)),
            }
            self.delete(path).await
        })
    }

    fn clean_temporaries(&self) -> BoxFut<'_, usize> {
        // Puts are atomic: an object store never holds a temporary.
        Box::pin(async { Ok(0) })
    }

    fn orphans_removable_under_lock(&self) -> bool {
        // Another process may have put its data file and not yet published its manifest.
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
