//! Executing one symbol's request: cache first, then Vision files, then REST, streaming every
//! verified piece into the cache as it arrives, then one merged answer.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::merge::{first_last_ms, funding_holes, kline_gaps_parts, merge_parts, rows_in};
use super::plan::{PlanInput, plan, vision_until};
use super::request::{Progress, Request, SourcePolicy};
use super::response::{Summary, SymbolResult};
use crate::cache::{CacheError, CacheStore, Piece, Provenance};
use crate::error::{Error, NOT_AVAILABLE, Result, UnavailableError};
use crate::market::{DataKind, Dataset, Market, Symbol};
use crate::rest::{RestClient, RestError};
use crate::schema::{KlineBuilder, Source, output_schema, with_source};
use crate::time::DAY_MS;
use crate::time::{TimeRange, day_floor, now_ms};
use crate::vision::{
    FileData, FileKey, FileOutcome, VisionClient, VisionError, fallback_days, has_daily_files,
};

/// How long a learnt "Vision has nothing from this day on" stays trusted before Vision is asked again.
const FRONTIER_TTL: Duration = Duration::from_secs(3600);
/// Holes in Vision files closer than this many candles are confirmed with one REST range (about
/// one page of klines).
const HOLE_PAGE_CANDLES: i64 = 1000;
/// A 404 for a day older than this is a permanent hole in the archive, not the publication frontier.
const FRONTIER_WINDOW_MS: i64 = 10 * crate::time::DAY_MS;

/// Where Vision's publication currently ends, learnt per dataset from 404s: the first missing day
/// and when it was learnt.
#[derive(Debug, Default)]
pub(crate) struct Frontier {
    inner: Mutex<HashMap<Dataset, (i64, Instant)>>,
}

impl Frontier {
    fn get(&self, dataset: &Dataset) -> Option<i64> {
        let map = self.inner.lock().ok()?;
        map.get(dataset)
            .and_then(|(day, at)| (at.elapsed() < FRONTIER_TTL).then_some(*day))
    }

    fn learn(&self, dataset: &Dataset, day: i64) {
        if let Ok(mut map) = self.inner.lock() {
            let e = map.entry(dataset.clone()).or_insert((day, Instant::now()));
            if day <= e.0 || e.1.elapsed() >= FRONTIER_TTL {
                *e = (day, Instant::now());
            }
        }
    }
}

/// Everything one symbol's execution needs from the manager.
pub(crate) struct Ctx<'a> {
    pub vision: &'a VisionClient,
    pub rest: &'a RestClient,
    pub cache: Option<&'a CacheStore>,
    pub frontier: &'a Frontier,
    pub publish_delay_ms: i64,
    pub policy: SourcePolicy,
    pub cancel: &'a CancellationToken,
    /// The exchange's clock, read once per request (shared by the windows of a windowed request)
    /// when REST is allowed.
    pub server_now: &'a tokio::sync::OnceCell<i64>,
    /// Part of a windowed request: an empty window is not an error (the caller decides at the end).
    pub windowed: bool,
    /// Set when a cache write failed for want of space or permission: the fetch goes on without
    /// caching the rest (one warning per manager).
    pub cache_off: &'a AtomicBool,
}

impl Ctx<'_> {
    /// The cache, unless using it has failed.
    fn usable_cache(&self) -> Option<&CacheStore> {
        self.cache
            .filter(|_| !self.cache_off.load(Ordering::Relaxed))
    }

    /// Passes a cache operation's result on, except a failure of the storage itself (no space,
    /// no permission, a read-only or broken directory): then the cache is left alone for the rest
    /// of the run, with one warning, and the answer is still returned.
    fn stored<T>(&self, r: std::result::Result<T, CacheError>) -> Result<Option<T>> {
        match r {
            Err(e @ (CacheError::Io { .. } | CacheError::ObjectStore { .. })) => {
                if !self.cache_off.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot use the cache; finishing the fetch without it (use --cache-dir for a writable directory, or --no-cache)");
                }
                Ok(None)
            }
            other => Ok(Some(other?)),
        }
    }
}

/// Most REST chunks of one symbol fetched at once; each is cached as soon as it completes, so a
/// run that fails or is stopped keeps what it fetched and a rerun asks only for the rest.
const REST_CHUNKS_IN_FLIGHT: usize = 2;
/// The most candles in one REST chunk (ten pages): what a failed or stopped run can lose.
const REST_CHUNK_CANDLES: i64 = 10_000;

/// Vision files that fail for a reason other than their content (timeouts, 5xx, 403, resets)
/// before the archive is taken as down for the rest of the symbol's request, whose files then come
/// from REST without being asked of the archive.
const VISION_OUTAGE_FILES: usize = 3;

/// Whether a REST failure means the API is unusable now (so the answer goes on without it),
/// rather than a ban (which must stop the run) or a problem with the request itself.
fn rest_outage(e: &RestError) -> bool {
    matches!(
        e,
        RestError::Timeout { .. }
            | RestError::Slow { .. }
            | RestError::Network { .. }
            | RestError::Http { .. }
            | RestError::Malformed { .. }
    ) || matches!(e, RestError::Api { status, .. } if *status >= 500)
}

/// Whether REST may be asked for `kind` on `market` under `policy`: the policy allows it, and the
/// REST client serves the kind ([`crate::rest::serves`]). The one rule for REST's use: in the
/// plan, for the exchange's clock, and as the stand-in for Vision files that fail.
fn rest_allowed(policy: SourcePolicy, market: Market, kind: DataKind) -> bool {
    policy.uses_rest() && crate::rest::serves(market, kind).is_ok()
}

/// Splits `ranges` for REST into what it can answer and what it no longer keeps: the statistics
/// behind the metrics go back 30 days only ([`crate::rest::STATS_HISTORY_MS`]).
fn rest_keeps(
    kind: DataKind,
    now: i64,
    ranges: Vec<TimeRange>,
) -> (Vec<TimeRange>, Vec<TimeRange>) {
    if kind != DataKind::Metrics {
        return (ranges, Vec::new());
    }
    let from = now - crate::rest::STATS_HISTORY_MS;
    let kept = ranges
        .iter()
        .filter_map(|r| TimeRange::new(r.start().max(from), r.end()).ok())
        .collect();
    let gone = ranges
        .iter()
        .filter_map(|r| TimeRange::new(r.start(), r.end().min(from)).ok())
        .collect();
    (kept, gone)
}

fn progress(req: &Request, p: Progress) {
    if let Some(f) = &req.progress {
        f(&p);
    }
}

/// Answers `req` for `symbol`.
pub(crate) async fn fetch_symbol(
    ctx: &Ctx<'_>,
    req: &Request,
    symbol: &Symbol,
) -> Result<SymbolResult> {
    let started = Instant::now();
    let market = req.market;
    let kind = req.kind;
    let schema = output_schema(market, kind);
    let mut summary = Summary::default();
    // A delivery contract's life ends at its delivery, and a discontinued archive series at its
    // last file: the range is answered inside them, and what lies outside is reported as outside
    // the life (not a gap, not missing).
    let delivered = symbol.delivery_time().filter(|_| market.is_futures());
    let (series_first, series_end) = kind.archive_life(market);
    let life_start = series_first.unwrap_or(i64::MIN);
    let life_end = [delivered, series_end]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(i64::MAX);
    let alive = TimeRange::new(
        req.range.start().max(life_start),
        req.range.end().min(life_end),
    );
    let Ok(range) = alive else {
        if ctx.windowed {
            return Ok(SymbolResult {
                outside_life: vec![req.range],
                ..SymbolResult::empty(symbol.clone(), schema)
            });
        }
        return Err(match delivered {
            Some(delivered) if delivered <= req.range.start() => UnavailableError::Delivered {
                symbol: symbol.clone(),
                delivered,
            },
            _ => UnavailableError::OutsideArchive {
                dataset: req.dataset(symbol),
                first: series_first,
                end: series_end,
            },
        }
        .into());
    };
    let outside_life = req.range.subtract(&[range]);
    let local_now = now_ms();
    if range.start() > local_now + 60_000 {
        return Err(UnavailableError::Future {
            symbol: symbol.clone(),
            start: range.start(),
        }
        .into());
    }
    let key = req.dataset(symbol);

    // 1. The cache: what it covers is read, what it knows to be empty is not fetched again.
    let mut batches: Vec<RecordBatch> = Vec::new();
    // One pass: the rows come from the same manifests as the coverage. A corrupt file is
    // quarantined and fetched again, unless the request is offline (which cannot repair).
    let read = match ctx.usable_cache() {
        Some(cache) if ctx.policy == SourcePolicy::Cache => {
            Some(cache.read_covered(&key, range).await?)
        }
        // A cache that cannot be read (a broken directory, a failing disk) is done without.
        Some(cache) => ctx.stored(cache.read_covered_repairing(&key, range).await)?,
        None => None,
    };
    let missing = match read {
        Some((cov, cached)) => {
            summary.failures.extend(cov.quarantined.iter().map(|p| {
                format!(
                    "corrupt cache file {} quarantined ({}); fetched again",
                    p.path, p.reason
                )
            }));
            summary.cache_rows = cached.iter().map(|b| b.num_rows() as u64).sum();
            summary.cache_hits = cov.covered.len() as u64;
            batches.extend(cached);
            cov.missing
        }
        None => vec![range],
    };

    let mut open_row: Option<RecordBatch> = None;
    // The first failure of a source that was down, if any: the answer goes on without it, unless
    // nothing at all could be had.
    let mut outage: Option<Error> = None;
    let mut closed_until = range.end();
    let mut unavailable: Vec<TimeRange> = Vec::new();
    if !missing.is_empty() {
        let rest_allowed = rest_allowed(ctx.policy, market, kind);
        // The exchange's clock decides what is closed and what is published; ask it when REST is
        // allowed (one request of weight 1), else trust the local clock.
        let mut rest_down = false;
        let now = if rest_allowed {
            // One reading per request, shared by its symbols (and passed to the REST pages).
            let mut paid = None;
            let clock = ctx
                .server_now
                .get_or_try_init(|| async {
                    let (now, cost) = ctx.rest.server_time_with_cost(market, ctx.cancel).await?;
                    paid = Some(cost);
                    Ok::<_, RestError>(now)
                })
                .await;
            // The clock request is a REST request like any other: it counts in the summary of the
            // symbol that made it.
            if let Some(cost) = paid {
                summary.rest.requests += cost.requests;
                summary.rest.bytes += cost.bytes;
                summary.rest_weight += cost.weight;
            }
            match clock {
                Ok(now) => *now,
                // The API is down: what Vision and the cache have is still answered.
                Err(e) if rest_outage(&e) => {
                    tracing::warn!(error = %e, "the REST API is unusable; answering from the other sources, with the local clock");
                    summary
                        .failures
                        .push(format!("REST API unusable ({e}); nothing was asked of it"));
                    rest_down = true;
                    outage.get_or_insert(Error::Rest(e));
                    local_now
                }
                Err(e) => return Err(rest_err(e)),
            }
        } else {
            local_now
        };
        let uses_rest = rest_allowed && !rest_down;
        if range.start() >= now {
            return Err(UnavailableError::Future {
                symbol: symbol.clone(),
                start: range.start(),
            }
            .into());
        }
        closed_until = match (req.interval, kind) {
            (Some(i), _) => i.floor(now),
            // A statistic of the last 5 minutes may not be out yet: it is answered, not cached.
            (None, DataKind::Metrics) => now - 5 * crate::time::MINUTE_MS,
            (None, _) => now,
        };
        let frontier = ctx.frontier.get(&key);
        let until = vision_until(kind, req.interval, now, ctx.publish_delay_ms, frontier);
        // Inside the publication delay, whether a day is on Vision yet is asked, not assumed.
        let until = if ctx.policy.uses_vision()
            && frontier.is_none()
            && has_daily_files(kind, req.interval)
        {
            probe_published(ctx, &key, &missing, until, now, &mut summary).await?
        } else {
            until
        };
        let p = plan(&PlanInput {
            missing: &missing,
            policy: ctx.policy,
            kind,
            interval: req.interval,
            vision_until: until,
            rest_allowed,
        });
        unavailable.extend(p.unavailable.iter().copied());
        let mut rest_ranges = p.rest.clone();
        if !uses_rest {
            // The API is down (its clock failed): what only it has is missing.
            unavailable.append(&mut rest_ranges);
        }

        // 2. Vision: the fewest files, downloaded concurrently, each cached as soon as it verifies.
        let mut holes: Vec<(TimeRange, String)> = Vec::new();
        if !p.vision.is_empty() {
            let job = SymbolJob {
                req,
                dataset: &key,
                now,
                rest_allowed,
            };
            let done = fetch_vision(ctx, job, &p.vision, &mut batches, &mut summary).await?;
            // Whatever Vision lacks goes to REST when allowed (and only for the missing part);
            // so do the holes inside its files, which only REST can confirm as exchange gaps.
            // Holes closer than a REST page are asked for together: a file with thousands of
            // one-candle holes costs a page per 1,000 candles, never a request per hole.
            let page_ms = req
                .interval
                .and_then(|i| i.fixed_millis())
                .map_or(0, |ms| ms * HOLE_PAGE_CANDLES);
            let hole_ranges =
                TimeRange::merge_within(done.holes.iter().map(|(r, _)| *r).collect(), page_ms);
            for r in done.lacking.into_iter().chain(hole_ranges) {
                let parts = missing.iter().filter_map(|m| m.intersect(&r));
                if uses_rest {
                    rest_ranges.extend(parts);
                } else {
                    unavailable.extend(parts);
                }
            }
            holes = done.holes;
            if let Some(e) = done.outage {
                outage.get_or_insert(Error::Vision(e));
            }
        }

        // 3. REST: recent data and whatever Vision did not have, in chunks of at most a cache
        //    partition and (candles) REST_CHUNK_CANDLES, each cached as soon as it arrives.
        let chunk_ms = req
            .interval
            .and_then(|i| i.fixed_millis())
            .map_or(i64::MAX, |ms| ms.saturating_mul(REST_CHUNK_CANDLES));
        let (rest_ranges, gone) = rest_keeps(kind, now, TimeRange::merge_all(rest_ranges));
        unavailable.extend(gone);
        let chunks: Vec<TimeRange> = TimeRange::merge_all(rest_ranges)
            .into_iter()
            .flat_map(|r| {
                key.partitions(r)
                    .into_iter()
                    .filter_map(move |p| p.range.intersect(&r))
            })
            .flat_map(|r| {
                let starts =
                    (r.start()..r.end()).step_by(usize::try_from(chunk_ms).unwrap_or(usize::MAX));
                starts.filter_map(move |s| {
                    TimeRange::new(s, s.saturating_add(chunk_ms).min(r.end())).ok()
                })
            })
            .collect();
        let dataset = &key;
        let fetch = |r: TimeRange| async move {
            let data = match kind {
                DataKind::FundingRate => ctx.rest.funding(market, symbol, r, ctx.cancel).await,
                DataKind::AggTrades => ctx.rest.agg_trades(market, symbol, r, ctx.cancel).await,
                DataKind::Trades => ctx.rest.trades(market, symbol, r, ctx.cancel).await,
                DataKind::Metrics => ctx.rest.metrics(market, symbol, r, ctx.cancel).await,
                _ => ctx.rest.klines_at(dataset, r, now, ctx.cancel).await,
            };
            (r, data)
        };
        let mut fetched = std::pin::pin!(
            futures::stream::iter(chunks.iter().copied())
                .map(fetch)
                .buffered(REST_CHUNKS_IN_FLIGHT)
        );
        while let Some((r, data)) = fetched.next().await {
            let data = match data {
                Ok(d) => d,
                Err(e) if rest_outage(&e) => {
                    tracing::warn!(error = %e, range = %r, "REST failed; the rest of the range is reported missing");
                    summary.failures.push(format!(
                        "REST failed for {r} ({e}); it and the later ranges are missing"
                    ));
                    outage.get_or_insert(Error::Rest(e));
                    // This chunk and every later one are missing; the one in flight is dropped
                    // and nothing more is asked of the failing API.
                    unavailable.extend(chunks.iter().filter(|c| c.start() >= r.start()));
                    break;
                }
                Err(e) => return Err(rest_err(e)),
            };
            // A hole in a Vision file that REST fills: the file was short.
            for (hole, file) in &holes {
                if let Some(h) = hole.intersect(&r)
                    && rows_in(&data.batch, kind, h).map_err(Error::Arrow)?.1 > 0
                    && !summary.short_files.contains(file)
                {
                    tracing::warn!(
                        file,
                        window = %h,
                        "a verified Vision file lacks rows the REST API has; took them from REST"
                    );
                    if let Some(cache) = ctx.usable_cache() {
                        ctx.stored(cache.record_short_file(&key, *hole, file).await)?;
                    }
                    summary.short_files.push(file.clone());
                }
            }
            summary.rest.requests += data.requests;
            summary.rest.bytes += data.bytes;
            summary.rest.rows += data.batch.num_rows() as u64;
            summary.rest_weight += data.weight;
            progress(
                req,
                Progress::Fetched {
                    rows: data.batch.num_rows() as u64,
                    bytes: data.bytes,
                },
            );
            let complete_end = r.end().min(closed_until);
            if let (Some(cache), Ok(complete)) =
                (ctx.usable_cache(), TimeRange::new(r.start(), complete_end))
            {
                ctx.stored(
                    cache
                        .write(&key, complete, &data.batch, Provenance::Rest)
                        .await,
                )?;
            }
            if req.include_open
                && let (Some(open), Some(interval)) = (data.open_candle, req.interval)
                && range.contains(open.open_time)
            {
                let mut b = KlineBuilder::new(market, kind, interval, 1);
                if b.push(&open).is_ok() {
                    open_row = Some(with_source(&b.finish(), market, kind, Source::Rest));
                }
            }
            batches.push(with_source(&data.batch, market, kind, Source::Rest));
        }
    }

    // 4. One sorted, de-duplicated answer for exactly [start, end), gaps reported beside it. The
    //    answer stays in consecutive batches (sharing the sources' buffers when they are already
    //    in order), never concatenated into one copy.
    let mut parts = merge_parts(&schema, kind, &batches, range).map_err(Error::Arrow)?;
    drop(batches);
    let gaps = match req.interval {
        Some(interval) => {
            let g =
                kline_gaps_parts(&parts, interval, range, closed_until).map_err(Error::Arrow)?;
            // Parts no allowed source could supply are reported as missing, not as downtime.
            g.into_iter()
                .flat_map(|gap| gap.subtract(&unavailable))
                .collect()
        }
        None => Vec::new(),
    };
    if let Some(open) = open_row {
        parts.push(open);
    }
    parts.retain(|b| b.num_rows() > 0);
    summary.rows = parts.iter().map(|b| b.num_rows() as u64).sum();
    summary.elapsed = started.elapsed();
    summary
        .failures
        .extend(unavailable.iter().map(|r| format!("{NOT_AVAILABLE}{r}")));
    // Every source that could have answered failed: that is an upstream failure, not a short answer.
    if summary.rows == 0
        && !unavailable.is_empty()
        && let Some(e) = outage
    {
        return Err(e);
    }
    if summary.rows == 0
        && unavailable.is_empty()
        && ctx.policy != SourcePolicy::Cache
        && !ctx.windowed
    {
        return Err(UnavailableError::NoData {
            symbol: symbol.clone(),
            range,
        }
        .into());
    }
    let first = parts
        .first()
        .and_then(|b| first_last_ms(b, kind))
        .map(|(f, _)| f);
    let last = parts
        .last()
        .and_then(|b| first_last_ms(b, kind))
        .map(|(_, l)| l);
    Ok(SymbolResult {
        symbol: symbol.clone(),
        schema,
        batches: parts,
        gaps: TimeRange::merge_all(gaps),
        missing: TimeRange::merge_all(unavailable),
        outside_life,
        first_time: first,
        last_time: last,
        summary,
    })
}

/// Extends `until` (the end of what Vision is assumed to have published) over the days after it
/// that it has published already, up to yesterday: each missing day is asked in order with one
/// `.CHECKSUM` request, until one is not there (remembered as the frontier) or the archive fails
/// (those days then go to REST as before).
async fn probe_published(
    ctx: &Ctx<'_>,
    dataset: &Dataset,
    missing: &[TimeRange],
    mut until: i64,
    now: i64,
    summary: &mut Summary,
) -> Result<i64> {
    let today = day_floor(now);
    while until < today {
        let day = TimeRange::new(until, until + DAY_MS)?;
        if missing.iter().any(|m| m.intersect(&day).is_some()) {
            let keys = crate::vision::plan(dataset, day)?;
            let Some(key) = keys.first() else { break };
            let probe = ctx.vision.checksum_counted(key, ctx.cancel).await;
            summary.vision.requests += probe.requests;
            summary.vision.bytes += probe.bytes;
            match probe.outcome {
                Ok(Some(_)) => {
                    tracing::debug!(file = %key.path(), "published within the publication delay");
                }
                Ok(None) => {
                    ctx.frontier.learn(dataset, day.start());
                    break;
                }
                Err(VisionError::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    tracing::debug!(file = %key.path(), error = %e, "cannot tell whether the archive has published this day; using REST for it");
                    break;
                }
            }
        }
        until = day.end();
    }
    Ok(until)
}

fn rest_err(e: RestError) -> Error {
    match e {
        RestError::Cancelled => Error::Cancelled,
        other => Error::Rest(other),
    }
}

/// Cache writes of Vision files in flight at once; the download stream waits when this many are
/// pending, which bounds the memory held for them.
const MAX_PENDING_WRITES: usize = 4;

/// The longest a verified Vision file waits for the rest of its cache partition before it is
/// written anyway, so an interrupted run keeps what it verified (a rerun resumes from there).
const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Verified Vision files waiting to be cached, grouped so each cache partition is written once per
/// request: a file is written when every planned file touching its partitions has arrived, or
/// when it has waited [`FLUSH_AFTER`].
#[derive(Default)]
struct PartitionBatcher {
    /// Planned files not yet arrived, per partition (by partition start).
    waiting: HashMap<i64, usize>,
    /// Arrived files not yet written, with the partitions they touch.
    pending: Vec<(Vec<i64>, Piece)>,
}

impl PartitionBatcher {
    fn parts(key: &Dataset, range: TimeRange) -> Vec<i64> {
        key.partitions(range)
            .iter()
            .map(|p| p.range.start())
            .collect()
    }

    fn plan(&mut self, key: &Dataset, files: &[FileKey]) {
        for f in files {
            for p in Self::parts(key, f.range()) {
                *self.waiting.entry(p).or_default() += 1;
            }
        }
    }

    /// Records that `file` arrived (with data or not); returns the pieces now ready to write.
    fn arrived(&mut self, key: &Dataset, file: &FileKey, pieces: Vec<Piece>) -> Vec<Piece> {
        let parts = Self::parts(key, file.range());
        for p in &parts {
            if let Some(n) = self.waiting.get_mut(p) {
                *n = n.saturating_sub(1);
            }
        }
        for piece in pieces {
            self.pending.push((parts.clone(), piece));
        }
        let waiting = &self.waiting;
        self.pending
            .extract_if(.., |(parts, _)| {
                parts.iter().all(|p| waiting.get(p).is_none_or(|n| *n == 0))
            })
            .map(|(_, piece)| piece)
            .collect()
    }

    /// Everything waiting to be written (when it has waited long enough, or at the end of a round).
    fn take_pending(&mut self) -> Vec<Piece> {
        self.pending.drain(..).map(|(_, p)| p).collect()
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// One symbol's request, as the fetch from a source sees it.
#[derive(Clone, Copy)]
struct SymbolJob<'a> {
    /// The request (for its progress callback and interval).
    req: &'a Request,
    /// The symbol's dataset.
    dataset: &'a Dataset,
    /// The exchange's clock (the local one when REST is not used).
    now: i64,
    /// Whether REST may be asked ([`rest_allowed`]).
    rest_allowed: bool,
}

/// What [`fetch_vision`] could not settle.
struct VisionDone {
    /// Ranges Vision could not supply (not published, or failed integrity after retries).
    lacking: Vec<TimeRange>,
    /// Candle slots missing inside verified files, with the file's name: exchange downtime or a
    /// short file, which only REST can tell apart. Never cached from Vision.
    holes: Vec<(TimeRange, String)>,
    /// The first failure of the archive itself (not of a file's content), if any.
    outage: Option<VisionError>,
}

/// Where `file` has no row though one is due: candle slots of its day or month, funding times of
/// its month. Empty for trades (they have no schedule).
fn file_holes(file: &FileKey, batch: &RecordBatch) -> Result<Vec<TimeRange>> {
    match (file.dataset.kind, file.dataset.interval) {
        (DataKind::FundingRate, _) => Ok(funding_holes(batch, file.range())?),
        (kind, Some(interval)) if kind.has_interval() => Ok(kline_gaps_parts(
            std::slice::from_ref(batch),
            interval,
            file.range(),
            i64::MAX,
        )?),
        _ => Ok(Vec::new()),
    }
}

/// The cache pieces of a verified file: the whole file when it has no holes, else one piece per
/// stretch between them, so a hole is never recorded as complete (a known gap) on Vision's word.
fn file_pieces(
    file: &FileKey,
    batch: &RecordBatch,
    holes: &[TimeRange],
    provenance: Provenance,
) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    for complete in file.range().subtract(holes) {
        let (offset, len) = rows_in(batch, file.dataset.kind, complete)?;
        pieces.push(Piece {
            complete,
            batch: batch.slice(offset, len),
            provenance: provenance.clone(),
        });
    }
    Ok(pieces)
}

/// The cache pieces of a verified Vision file (all of it but its holes), and the holes.
pub(super) fn pieces_of(file: &FileData) -> Result<(Vec<Piece>, Vec<TimeRange>)> {
    let holes = file_holes(&file.key, &file.batch)?;
    let provenance = Provenance::Vision {
        file: file.key.file_name(),
        sha256: file.sha256.clone(),
        etag: file.etag.clone(),
        last_modified: file.last_modified.clone(),
    };
    let pieces = file_pieces(&file.key, &file.batch, &holes, provenance)?;
    Ok((pieces, holes))
}

/// Downloads the Vision files for `ranges`, caching each verified file (all of it but its holes).
/// A 404 near the job's `now` marks the publication frontier.
///
/// Cache writes run while downloads continue (at most [`MAX_PENDING_WRITES`] at once); a partition
/// is written once when all its files arrived, or every [`FLUSH_AFTER`] while they trickle in, never
/// once per file.
async fn fetch_vision(
    ctx: &Ctx<'_>,
    job: SymbolJob<'_>,
    ranges: &[TimeRange],
    batches: &mut Vec<RecordBatch>,
    summary: &mut Summary,
) -> Result<VisionDone> {
    let SymbolJob {
        req,
        dataset: key,
        now,
        rest_allowed,
    } = job;
    let (market, kind) = (key.market, key.kind);
    let mut keys = Vec::new();
    for r in ranges {
        keys.extend(crate::vision::plan(key, *r)?);
    }
    progress(
        req,
        Progress::Planned {
            files: keys.len() as u64,
            pages: 0,
        },
    );
    let write = |pieces: Vec<Piece>| async move {
        match ctx.usable_cache() {
            Some(cache) if !pieces.is_empty() => {
                ctx.stored(cache.write_many(key, pieces).await).map(|_| ())
            }
            _ => Ok(()),
        }
    };
    // A failing file is asked of REST when REST may be used (not `--source vision`).
    let falls_back = rest_allowed;
    let mut outages = 0;
    let mut first_outage = None;
    let mut writes = FuturesUnordered::new();
    let mut lacking = Vec::new();
    let mut holes = Vec::new();
    let mut round = 0;
    while !keys.is_empty() && round < 2 {
        round += 1;
        let mut batcher = PartitionBatcher::default();
        batcher.plan(key, &keys);
        let mut retry_daily = Vec::new();
        let mut pending: HashSet<String> = keys.iter().map(FileKey::path).collect();
        let asked = keys.clone();
        let mut stream = std::pin::pin!(ctx.vision.fetch_files(keys, ctx.cancel));
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let result = tokio::select! {
                biased;
                Some(w) = writes.next(), if !writes.is_empty() => {
                    w?;
                    continue;
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)),
                    if flush_at.is_some() =>
                {
                    flush_at = None;
                    writes.push(write(batcher.take_pending()));
                    continue;
                }
                r = stream.next(), if writes.len() < MAX_PENDING_WRITES => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            let file_key = result.key;
            pending.remove(&file_key.path());
            summary.vision.requests += result.requests;
            summary.vision.bytes += result.bytes;
            let mut pieces = Vec::new();
            match result.outcome {
                Ok(FileOutcome::Data(file)) => {
                    let rows = file.batch.num_rows() as u64;
                    summary.vision.rows += rows;
                    summary.vision_files += 1;
                    progress(
                        req,
                        Progress::Fetched {
                            rows,
                            bytes: result.bytes,
                        },
                    );
                    batches.push(with_source(&file.batch, market, kind, Source::Vision));
                    let (file_pieces, file_holes) = pieces_of(&file)?;
                    pieces = file_pieces;
                    holes.extend(file_holes.into_iter().map(|h| (h, file_key.file_name())));
                }
                Ok(FileOutcome::NotPublished) => {
                    let r = file_key.range();
                    let days: Vec<_> = if round == 1 {
                        ranges
                            .iter()
                            .flat_map(|x| fallback_days(&file_key, x))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    if days.is_empty() {
                        if !file_key.period.is_month()
                            && r.start() >= day_floor(now) - FRONTIER_WINDOW_MS
                        {
                            ctx.frontier.learn(key, r.start());
                        }
                        lacking.push(r);
                    } else {
                        // A month not published yet: its days may be.
                        progress(
                            req,
                            Progress::Planned {
                                files: days.len() as u64,
                                pages: 0,
                            },
                        );
                        retry_daily.extend(days);
                    }
                }
                Err(VisionError::Cancelled) => return Err(Error::Cancelled),
                Err(e) if e.is_integrity() && falls_back => {
                    tracing::warn!(file = %file_key.path(), error = %e, "Vision file failed integrity checks; using REST instead");
                    summary.failures.push(format!("{}: {e}", file_key.path()));
                    lacking.push(file_key.range());
                }
                // The archive is failing (timeouts, 5xx, 403, resets, a trickle): REST has the
                // same rows.
                Err(e) if e.is_transient() && falls_back => {
                    tracing::warn!(file = %file_key.path(), error = %e, "Vision failed; taking the file's period from REST");
                    summary
                        .failures
                        .push(format!("{e}; its period was asked of REST instead"));
                    lacking.push(file_key.range());
                    outages += 1;
                    first_outage.get_or_insert(e);
                    if outages >= VISION_OUTAGE_FILES && !pending.is_empty() {
                        tracing::warn!(
                            files = pending.len(),
                            "the Vision archive looks down; taking the remaining files' periods from REST without asking it"
                        );
                        summary.failures.push(format!(
                            "the Vision archive failed {outages} files; the periods of {} more were taken from REST without asking it",
                            pending.len()
                        ));
                        lacking.extend(
                            asked
                                .iter()
                                .filter(|k| pending.contains(&k.path()))
                                .map(FileKey::range),
                        );
                        pending.clear();
                        break;
                    }
                }
                Err(e) => return Err(Error::Vision(e)),
            }
            let ready = batcher.arrived(key, &file_key, pieces);
            if !ready.is_empty() {
                writes.push(write(ready));
            }
            flush_at = match (batcher.has_pending(), flush_at) {
                (false, _) => None,
                (true, None) => Some(tokio::time::Instant::now() + FLUSH_AFTER),
                (true, at) => at,
            };
        }
        let rest = batcher.take_pending();
        if !rest.is_empty() {
            writes.push(write(rest));
        }
        keys = retry_daily;
    }
    while let Some(w) = writes.next().await {
        w?;
    }
    Ok(VisionDone {
        lacking: TimeRange::merge_all(lacking),
        holes,
        outage: first_outage,
    })
}
