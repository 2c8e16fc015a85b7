//! Downloads: one pooled HTTP client, bounded concurrency, retries with jittered exponential
//! backoff, SHA-256 computed while the bytes arrive, parsing on a blocking thread owned by the call.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::key::{FileKey, fallback_days, plan};
use super::parse::{Parsed, parse_checksum, parse_zip_inner};
use super::{VisionConfig, VisionError};
use crate::http::{BodyError, LazyClient, read_body};
use crate::market::{DataKind, Dataset};
use crate::time::TimeRange;

/// A verified, parsed archive file.
#[derive(Debug, Clone)]
pub struct FileData {
    /// Which file.
    pub key: FileKey,
    /// SHA-256 of the zip (lower-case hex), as verified against its `.CHECKSUM` (or computed, when
    /// a missing CHECKSUM was accepted).
    pub sha256: String,
    /// Whether the `.CHECKSUM` was missing and the file was accepted unverified.
    pub unverified: bool,
    /// The zip's `ETag` header, when served (S3 sends an MD5 of the bytes).
    pub etag: Option<String>,
    /// The zip's `Last-Modified` header, when served: when Binance (re-)published it.
    pub last_modified: Option<String>,
    /// The zip bytes as downloaded (for a cache that keeps originals).
    pub bytes: Bytes,
    /// The rows, in dsm's schema for the key's market and kind, in time order.
    pub batch: RecordBatch,
    /// Exact duplicate rows that were dropped.
    pub duplicates: usize,
}

/// What fetching one file gave.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// The file, verified and parsed.
    Data(Box<FileData>),
    /// The archive answered 404: the file is not published (yet), or never will be.
    NotPublished,
}

/// One item of [`VisionClient::fetch_files`].
#[derive(Debug)]
pub struct FileResult {
    /// Which file.
    pub key: FileKey,
    /// The outcome.
    pub outcome: Result<FileOutcome, VisionError>,
    /// HTTP requests made for this file (retries included).
    pub requests: u64,
    /// Body bytes received for this file.
    pub bytes: u64,
}

/// The result of [`VisionClient::fetch_range`].
#[derive(Debug, Clone, Default)]
pub struct VisionRange {
    /// The rows inside the asked range, one batch per file, in time order.
    pub batches: Vec<RecordBatch>,
    /// The files the batches came from, in the same order.
    pub files: Vec<FileKey>,
    /// Files that are not published (after falling back from monthly to daily files where Vision
    /// has dailies). Their periods are missing from `batches`.
    pub not_published: Vec<FileKey>,
    /// HTTP requests made.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Exact duplicate rows dropped.
    pub duplicates: usize,
}

/// One S3 listing: every page followed ([`VisionClient::list`]), or the first page alone
/// ([`VisionClient::list_first`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Object keys (`Contents/Key`), in the order served (sorted).
    pub keys: Vec<String>,
    /// Sub-"directories" (`CommonPrefixes/Prefix`, with the delimiter `/`).
    pub prefixes: Vec<String>,
    /// Pages requested.
    pub pages: usize,
}

/// An outcome with the HTTP requests and body bytes it took.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    pub outcome: Result<T, VisionError>,
    pub requests: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

struct Download {
    bytes: Bytes,
    sha256: Option<String>,
    /// The `ETag` and `Last-Modified` headers, when served.
    etag: Option<String>,
    last_modified: Option<String>,
}

/// The Vision archive client. Cheap to share by reference; holds one pooled HTTP client.
#[derive(Debug, Clone)]
pub struct VisionClient {
    cfg: VisionConfig,
    http: LazyClient,
    /// Parses running at once: one per core, shared by clones of this client.
    parsers: Arc<tokio::sync::Semaphore>,
}

/// Sets the parse task's cancel flag when the owning future ends (normally or by being dropped).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn client_error(e: reqwest::Error) -> VisionError {
    VisionError::Config(format!("building the HTTP client: {e}"))
}

/// Most listing pages followed before giving up (a broken marker must not loop forever).
const MAX_LIST_PAGES: usize = 100_000;
/// The most bytes a `.CHECKSUM` sidecar may have (a real one is ~100: a digest and a file name).
const MAX_CHECKSUM_BYTES: u64 = 4096;
/// The most bytes of a 404's error document that are read.
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;
/// The most bytes one listing page may have (a real page of 1000 keys is ~350 KB).
const MAX_LISTING_PAGE_BYTES: u64 = 16 << 20;

impl VisionClient {
    /// A client with its own connection pool, using `cfg`'s connect and read timeouts.
    pub fn new(cfg: VisionConfig) -> Result<VisionClient, VisionError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.pace.silence)
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .build()
            .map_err(client_error)?;
        Ok(VisionClient::with_http_client(cfg, http))
    }

    /// A client sharing `http`'s connection pool. The client's own timeouts still apply, and dsm
    /// additionally bounds every wait by `cfg.connect_timeout + cfg.pace.silence` (headers) and
    /// `cfg.pace` (the body).
    pub fn with_http_client(cfg: VisionConfig, http: reqwest::Client) -> VisionClient {
        VisionClient::with_lazy_client(cfg, LazyClient::ready(http))
    }

    /// A client sharing `http`, built when the first request is sent.
    pub(crate) fn with_lazy_client(cfg: VisionConfig, http: LazyClient) -> VisionClient {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        VisionClient {
            cfg,
            http,
            parsers: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    fn deadline(&self) -> Option<Instant> {
        self.cfg.deadline.map(|d| Instant::now() + d)
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.backoff_min)
            .with_max_delay(self.cfg.backoff_max.max(self.cfg.backoff_min))
            .with_max_times(self.cfg.retries)
            .with_jitter()
    }

    /// Downloads, verifies and parses one file.
    ///
    /// `Ok(NotPublished)` on 404. Transient failures are retried per request, checksum mismatches
    /// and broken archives per file (a fresh download), then reported. Cancelling `cancel` or
    /// dropping the future returns promptly and closes the connections in use.
    pub async fn fetch(
        &self,
        key: &FileKey,
        cancel: &CancellationToken,
    ) -> Result<FileOutcome, VisionError> {
        self.fetch_inner(key, cancel, self.deadline(), &Counters::default())
            .await
    }

    /// The SHA-256 that `key`'s `.CHECKSUM` sidecar announces now, `None` if it is not published
    /// (404). One small request: how a cached file's re-publication is noticed.
    pub async fn checksum(
        &self,
        key: &FileKey,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, VisionError> {
        self.checksum_counted(key, cancel).await.outcome
    }

    /// [`VisionClient::checksum`], with the requests and bytes it took.
    pub(crate) async fn checksum_counted(
        &self,
        key: &FileKey,
        cancel: &CancellationToken,
    ) -> Counted<Option<String>> {
        let (url, checksum_url) = (
            key.url(&self.cfg.base_url),
            key.checksum_url(&self.cfg.base_url),
        );
        let counters = Counters::default();
        let read = self.sidecar(&url, &checksum_url, &counters);
        let outcome = self.guarded(cancel, self.deadline(), read).await;
        Counted {
            outcome,
            requests: counters.requests.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
        }
    }

    /// The digest the `.CHECKSUM` at `checksum_url` (of the zip at `url`) announces; `None` on
    /// 404.
    async fn sidecar(
        &self,
        url: &str,
        checksum_url: &str,
        counters: &Counters,
    ) -> Result<Option<String>, VisionError> {
        let Some(d) = self
            .get(checksum_url, false, MAX_CHECKSUM_BYTES, counters)
            .await?
        else {
            return Ok(None);
        };
        parse_checksum(&d.bytes)
            .map(Some)
            .ok_or_else(|| VisionError::BadChecksumFile {
                url: url.to_owned(),
                content: String::from_utf8_lossy(&d.bytes[..d.bytes.len().min(120)]).into_owned(),
            })
    }

    async fn fetch_inner(
        &self,
        key: &FileKey,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
        counters: &Counters,
    ) -> Result<FileOutcome, VisionError> {
        self.guarded(cancel, deadline, self.fetch_verified(key, counters))
            .await
    }

    /// Runs `work` until it ends, `cancel` fires, or `deadline` passes.
    async fn guarded<T>(
        &self,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
        work: impl Future<Output = Result<T, VisionError>>,
    ) -> Result<T, VisionError> {
        let work = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| {
                    Err(VisionError::DeadlineExceeded(
                        self.cfg.deadline.unwrap_or_default(),
                    ))
                }),
                None => work.await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(VisionError::Cancelled),
            r = work => r,
        }
    }

    async fn fetch_verified(
        &self,
        key: &FileKey,
        counters: &Counters,
    ) -> Result<FileOutcome, VisionError> {
        let url = key.url(&self.cfg.base_url);
        let checksum_url = key.checksum_url(&self.cfg.base_url);
        (|| self.attempt(key, &url, &checksum_url, counters))
            .retry(self.backoff())
            .when(VisionError::is_redownloadable)
            .notify(
                |e, wait| tracing::warn!(error = %e, ?wait, "bad archive file, downloading again"),
            )
            .await
    }

    /// One verified download: the CHECKSUM first (so a fault or a re-publication between the two
    /// requests shows up as a mismatch, not as silently accepted data), then the zip.
    async fn attempt(
        &self,
        key: &FileKey,
        url: &str,
        checksum_url: &str,
        counters: &Counters,
    ) -> Result<FileOutcome, VisionError> {
        let expected = self.sidecar(url, checksum_url, counters).await?;
        let Some(zip) = self.get(url, true, key.max_zip_bytes(), counters).await? else {
            return Ok(FileOutcome::NotPublished);
        };
        let actual = zip.sha256.unwrap_or_default();
        let unverified = match expected {
            Some(expected) if expected != actual => {
                return Err(VisionError::ChecksumMismatch {
                    url: url.to_owned(),
                    expected,
                    actual,
                });
            }
            Some(_) => false,
            None if self.cfg.accept_missing_checksum => {
                tracing::warn!(
                    url,
                    "no .CHECKSUM; accepting the file unverified as configured"
                );
                true
            }
            None => {
                return Err(VisionError::MissingChecksum {
                    url: url.to_owned(),
                });
            }
        };
        let Parsed { batch, duplicates } = self.parse_blocking(zip.bytes.clone(), key, url).await?;
        Ok(FileOutcome::Data(Box::new(FileData {
            key: key.clone(),
            sha256: actual,
            unverified,
            etag: zip.etag,
            last_modified: zip.last_modified,
            bytes: zip.bytes,
            batch,
            duplicates,
        })))
    }

    /// Inflates and parses on a blocking thread owned by this future, once a core is free:
    /// dropping the future sets the cancel flag the parser polls, so the thread stops within a few
    /// thousand rows.
    async fn parse_blocking(
        &self,
        bytes: Bytes,
        key: &FileKey,
        url: &str,
    ) -> Result<Parsed, VisionError> {
        let flag = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(flag.clone());
        let key = key.clone();
        let name = url.to_owned();
        // Wait for a core first: more parses than cores only evict each other's data from the
        // CPU caches (and hold more inflated text at once). The semaphore is never closed; the
        // permit is released when the parse ends, even if this future was dropped before that.
        let permit = self.parsers.clone().acquire_owned().await.ok();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            parse_zip_inner(&bytes, &key, &name, &flag)
        });
        task.await.map_err(|e| VisionError::CorruptArchive {
            url: url.to_owned(),
            reason: format!("the parser stopped unexpectedly: {e}"),
        })?
    }

    /// GET with bounded, jittered retries of transient failures. `None` on 404. A body larger
    /// than `limit` bytes (announced or received) is refused as [`VisionError::TooLarge`].
    async fn get(
        &self,
        url: &str,
        hash: bool,
        limit: u64,
        counters: &Counters,
    ) -> Result<Option<Download>, VisionError> {
        let attempts = AtomicU32::new(0);
        (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.get_once(url, hash, limit, counters)
        })
        .retry(self.backoff())
        .when(VisionError::is_transient)
        .notify(|e, wait| tracing::debug!(error = %e, ?wait, "transient failure, retrying"))
        .await
        .map_err(|e| e.after(attempts.load(Ordering::Relaxed)))
    }

    async fn get_once(
        &self,
        url: &str,
        hash: bool,
        limit: u64,
        counters: &Counters,
    ) -> Result<Option<Download>, VisionError> {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let timeout = || VisionError::Timeout {
            url: url.to_owned(),
            attempts: 1,
        };
        let net = |e: reqwest::Error| {
            if e.is_timeout() {
                timeout()
            } else {
                VisionError::Network {
                    url: url.to_owned(),
                    source: e,
                    attempts: 1,
                }
            }
        };
        let send = self.http.client().map_err(client_error)?.get(url).send();
        let pace = self.cfg.pace;
        let resp = tokio::time::timeout(self.cfg.connect_timeout + pace.silence, send)
            .await
            .map_err(|_| timeout())?
            .map_err(net)?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 => {
                // The small error document is read (and counted), which also keeps the
                // connection reusable; one that is large or slow is left unread.
                let _ = read_body(resp, pace, MAX_ERROR_BODY_BYTES, pace.silence, |c| {
                    counters.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
                })
                .await;
                return Ok(None);
            }
            _ => {
                return Err(VisionError::Http {
                    url: url.to_owned(),
                    status,
                    transient: matches!(status, 403 | 408 | 429) || status >= 500,
                    attempts: 1,
                });
            }
        }
        let announced = resp.content_length();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (
            header(reqwest::header::ETAG),
            header(reqwest::header::LAST_MODIFIED),
        );
        let too_large = |what, bytes| VisionError::TooLarge {
            url: url.to_owned(),
            what,
            bytes,
            limit,
        };
        let mut hasher = hash.then(Sha256::new);
        // The whole attempt, at the slowest pace accepted for its announced size.
        let attempt = pace.attempt_limit(announced.unwrap_or(limit.min(1 << 30)));
        let buf = read_body(resp, pace, limit, attempt, |c| {
            if let Some(h) = hasher.as_mut() {
                h.update(c);
            }
            counters.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
        })
        .await
        .map_err(|e| match e {
            BodyError::TooLarge {
                bytes,
                announced: true,
            } => too_large("the server announces", bytes),
            BodyError::TooLarge { bytes, .. } => too_large("the server sent at least", bytes),
            BodyError::Slow(why) => VisionError::Slow {
                url: url.to_owned(),
                reason: why.to_string(),
                attempts: 1,
            },
            BodyError::Net(e) => net(e),
        })?;
        if let Some(expected) = announced
            && expected != buf.len() as u64
        {
            return Err(VisionError::Truncated {
                url: url.to_owned(),
                expected,
                received: buf.len() as u64,
                attempts: 1,
            });
        }
        Ok(Some(Download {
            bytes: Bytes::from(buf),
            sha256: hasher.map(|h| hex::encode(h.finalize())),
            etag,
            last_modified,
        }))
    }

    /// Fetches `keys` with at most `concurrency` files in flight, yielding each as it completes
    /// (not in key order). Memory is bounded by the concurrency, not by the number of keys.
    /// Dropping the stream cancels the files in flight.
    pub fn fetch_files(
        &self,
        keys: Vec<FileKey>,
        cancel: &CancellationToken,
    ) -> impl Stream<Item = FileResult> + Send + '_ {
        self.fetch_files_until(keys, cancel.clone(), self.deadline())
    }

    fn fetch_files_until(
        &self,
        keys: Vec<FileKey>,
        cancel: CancellationToken,
        deadline: Option<Instant>,
    ) -> impl Stream<Item = FileResult> + Send + '_ {
        futures::stream::iter(keys)
            .map(move |key| {
                let cancel = cancel.clone();
                async move {
                    let counters = Counters::default();
                    let outcome = self.fetch_inner(&key, &cancel, deadline, &counters).await;
                    FileResult {
                        key,
                        outcome,
                        requests: counters.requests.load(Ordering::Relaxed),
                        bytes: counters.bytes.load(Ordering::Relaxed),
                    }
                }
            })
            .buffer_unordered(self.cfg.concurrency.max(1))
    }

    /// Fetches everything Vision has for `range`: plans the fewest files ([`plan`]), falls back from
    /// an unpublished monthly file to its daily files inside the range ([`fallback_days`]), and
    /// returns the rows inside `range` in time order, plus the files that are not published.
    ///
    /// The first file that fails (after retries) fails the whole call and cancels the rest; no
    /// unverified data is returned.
    pub async fn fetch_range(
        &self,
        dataset: &Dataset,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<VisionRange, VisionError> {
        let kind = dataset.kind;
        let keys = plan(dataset, range)?;
        let deadline = self.deadline();
        let mut out = VisionRange::default();
        let mut files: Vec<FileData> = Vec::new();
        let mut pending = keys;
        while !pending.is_empty() {
            let mut next = Vec::new();
            let mut stream = pin!(self.fetch_files_until(pending, cancel.clone(), deadline));
            while let Some(r) = stream.next().await {
                out.requests += r.requests;
                out.bytes += r.bytes;
                match r.outcome? {
                    FileOutcome::Data(d) => files.push(*d),
                    FileOutcome::NotPublished => {
                        let days = fallback_days(&r.key, &range);
                        if days.is_empty() {
                            out.not_published.push(r.key);
                        } else {
                            tracing::debug!(key = %r.key, days = days.len(), "monthly file not published; using daily files");
                            next.extend(days);
                        }
                    }
                }
            }
            pending = next;
        }
        // By start time (not by `Period`, whose derived order puts every day before every month).
        files.sort_by_key(|f| f.key.range().start());
        out.not_published.sort_by_key(|k| k.range().start());
        for f in files {
            out.duplicates += f.duplicates;
            let batch = slice_to_range(&f.batch, kind, range);
            if batch.num_rows() > 0 {
                out.batches.push(batch);
            }
            out.files.push(f.key);
        }
        Ok(out)
    }

    /// Lists `prefix` in the bucket (S3 ListObjects v1, delimiter `/`), following every page
    /// (`NextMarker`, else the last key or prefix).
    pub async fn list(
        &self,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> Result<Listing, VisionError> {
        self.guarded(cancel, self.deadline(), self.list_pages(prefix, None))
            .await
    }

    /// The first `max_keys` entries under `prefix` (one request, `max-keys`): the oldest files
    /// of a directory, since keys come sorted.
    pub async fn list_first(
        &self,
        prefix: &str,
        max_keys: usize,
        cancel: &CancellationToken,
    ) -> Result<Listing, VisionError> {
        self.guarded(
            cancel,
            self.deadline(),
            self.list_pages(prefix, Some(max_keys.max(1))),
        )
        .await
    }

    /// Follows the listing's pages, or takes the first page of `first` entries only.
    async fn list_pages(&self, prefix: &str, first: Option<usize>) -> Result<Listing, VisionError> {
        let counters = Counters::default();
        let mut out = Listing::default();
        let mut marker = String::new();
        loop {
            let mut url = format!(
                "{}?delimiter=%2F&prefix={}&marker={}",
                self.cfg.list_url,
                percent_encode(prefix),
                percent_encode(&marker)
            );
            if let Some(n) = first {
                url.push_str(&format!("&max-keys={n}"));
            }
            let bad = |reason: &str| VisionError::Listing {
                url: url.clone(),
                reason: reason.to_owned(),
            };
            let page = self
                .get(&url, false, MAX_LISTING_PAGE_BYTES, &counters)
                .await?
                .ok_or_else(|| VisionError::Http {
                    url: url.clone(),
                    status: 404,
                    transient: false,
                    attempts: 1,
                })?;
            let xml = std::str::from_utf8(&page.bytes).map_err(|_| bad("not UTF-8"))?;
            if !xml.contains("<ListBucketResult") {
                return Err(bad("not a ListBucketResult"));
            }
            out.pages += 1;
            let keys: Vec<String> = blocks(xml, "Contents")
                .filter_map(|c| blocks(c, "Key").next().map(unescape))
                .collect();
            let prefixes: Vec<String> = blocks(xml, "CommonPrefixes")
                .filter_map(|c| blocks(c, "Prefix").next().map(unescape))
                .collect();
            let truncated = blocks(xml, "IsTruncated").next() == Some("true");
            let last = keys.last().max(prefixes.last()).cloned();
            out.keys.extend(keys);
            out.prefixes.extend(prefixes);
            if !truncated || first.is_some() {
                return Ok(out);
            }
            let next = blocks(xml, "NextMarker")
                .next()
                .map(unescape)
                .filter(|m| !m.is_empty())
                .or(last)
                .ok_or_else(|| bad("truncated page without keys or NextMarker"))?;
            if next <= marker || out.pages >= MAX_LIST_PAGES {
                return Err(bad("the listing marker does not advance"));
            }
            marker = next;
        }
    }
}

/// The rows of `batch` whose time lies in `range` (the time column is sorted).
fn slice_to_range(batch: &RecordBatch, kind: DataKind, range: TimeRange) -> RecordBatch {
    let Ok(t) = crate::schema::times(batch, kind) else {
        return batch.clone();
    };
    let scale = crate::schema::time_scale(kind);
    let (s, e) = (range.start() * scale, range.end() * scale);
    let (lo, hi) = (t.partition_point(|x| *x < s), t.partition_point(|x| *x < e));
    if lo == 0 && hi == t.len() {
        batch.clone()
    } else {
        batch.slice(lo, hi.saturating_sub(lo))
    }
}

/// The inner texts of every `<tag>…</tag>` in `xml` (no nesting of the same tag).
fn blocks<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let inner = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(inner)
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_blocks_ignore_the_root_prefix_echo() {
        let xml = "<ListBucketResult><Prefix>data/</Prefix><IsTruncated>true</IsTruncated>\
            <Contents><Key>data/a&amp;b.zip</Key><Size>1</Size></Contents>\
            <CommonPrefixes><Prefix>data/spot/</Prefix></CommonPrefixes></ListBucketResult>";
        let keys: Vec<String> = blocks(xml, "Contents")
            .filter_map(|c| blocks(c, "Key").next().map(unescape))
            .collect();
        let prefixes: Vec<String> = blocks(xml, "CommonPrefixes")
            .filter_map(|c| blocks(c, "Prefix").next().map(unescape))
            .collect();
        assert_eq!(keys, vec!["data/a&b.zip"]);
        assert_eq!(prefixes, vec!["data/spot/"]);
        assert_eq!(percent_encode("data/spot/"), "data%2Fspot%2F");
    }
}
