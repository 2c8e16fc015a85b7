//! [`RestClient`]: requests with budget, retries, timeouts and cancellation; klines and funding
//! calls that page a range and merge the pages into one batch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{BodyError, LazyClient, read_body};
use crate::market::InputError;
use crate::market::{DataKind, Dataset, Interval, Market, Symbol};
use crate::schema::{
    FundingBuilder, FundingRecord, KlineBuilder, KlineRecord, TradeBuilder, TradeRecord,
};
use crate::time::{TimeRange, now_ms};

use super::paging::{self, Window};
use super::weight::{self, Acquire, Refusal, ServerLimit, Ticket, WeightBudget};
use super::{CallCost, RestConfig, RestData, RestError, SymbolInfo, parse};

/// Most funding records one request may return (USD-M and COIN-M).
const FUNDING_LIMIT: u32 = 1000;
/// Most trades one aggTrades or historicalTrades request may return.
const TRADES_LIMIT: usize = 1000;
/// The longest time window an aggTrades request may span.
const AGG_TRADES_WINDOW_MS: i64 = 3_600_000;
/// Ban length assumed when a 418 says nothing about it (Binance's shortest ban).
const DEFAULT_BAN: Duration = Duration::from_secs(120);
/// The largest answer accepted (the full spot exchangeInfo is ~20 MB; a page of klines ~200 KB).
const MAX_BODY_BYTES: u64 = 64 << 20;
/// After failing to read a market's limit, how long the documented one is used before asking again.
const LEARN_RETRY: Duration = Duration::from_secs(300);

/// A Binance REST client for market data. Cheap to clone; clones share one HTTP connection pool and
/// one weight budget (and ban state) per market, so every concurrent request of the process stays
/// within the budget.
#[derive(Debug, Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RestConfig,
    http: LazyClient,
    budget: WeightBudget,
    /// Per market: one task at a time asks the server's limit; when it last tried.
    learning: [tokio::sync::Mutex<Option<Instant>>; 3],
}

/// One request to send: where, what it weighs, and what to name in errors.
#[derive(Debug)]
struct Req<'a> {
    market: Market,
    path: String,
    query: Vec<(&'static str, String)>,
    weight: u32,
    symbol: Option<&'a str>,
    interval: Option<Interval>,
    /// The request that learns the market's limit (it must not wait for itself).
    bootstrap: bool,
}

/// What one HTTP attempt brought back.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    used_weight: HashMap<i64, u32>,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

/// The state of one public call: its token, deadline and counters. Pages of the call borrow it.
#[derive(Debug)]
struct Call<'a> {
    inner: &'a Inner,
    cancel: &'a CancellationToken,
    deadline: Option<(Instant, Duration)>,
    requests: AtomicU64,
    bytes: AtomicU64,
    weight: AtomicU64,
}

impl RestClient {
    /// A client with its own HTTP client (connect and read timeouts from `config`).
    pub fn new(config: RestConfig) -> Result<RestClient, RestError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.pace.silence)
            .user_agent(concat!("dsm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RestError::Client)?;
        Ok(RestClient::with_http_client(config, http))
    }

    /// A client that sends through `http` (which should have connect and read timeouts).
    pub fn with_http_client(config: RestConfig, http: reqwest::Client) -> RestClient {
        RestClient::with_lazy_client(config, LazyClient::ready(http))
    }

    /// A client that sends through `http`, built when the first request is sent.
    pub(crate) fn with_lazy_client(config: RestConfig, http: LazyClient) -> RestClient {
        let budget = WeightBudget::new(
            config.spot_weight_per_minute,
            config.futures_weight_per_minute,
            config.weight_window,
            config.weight_limit,
            config.state_dir.clone(),
        );
        RestClient {
            inner: Arc::new(Inner {
                config,
                http,
                budget,
                learning: Default::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RestConfig {
        &self.inner.config
    }

    /// Weight used in the current window of `market`: the count of this process (and of every
    /// process sharing [`RestConfig::state_dir`]), raised to the server's used-weight header when
    /// that is higher.
    pub fn used_weight(&self, market: Market) -> u32 {
        self.inner.budget.used(market)
    }

    /// The weight budget per window of `market` in force now, and the window: the user's
    /// [`RestConfig::weight_limit`], else 90% of the server's limit (once learnt), halved for a
    /// few windows after a 429.
    pub fn weight_limit(&self, market: Market) -> (u32, Duration) {
        let (limit, window_ms) = self.inner.budget.limit(market);
        (limit, Duration::from_millis(window_ms.max(0) as u64))
    }

    /// The end (ms since the epoch) of a 418 ban of `market` in force now, whether this process
    /// received it or another one sharing [`RestConfig::state_dir`] did.
    pub fn banned_until(&self, market: Market) -> Option<i64> {
        self.inner.budget.banned_until(market)
    }

    fn call<'a>(&'a self, cancel: &'a CancellationToken) -> Call<'a> {
        Call {
            inner: &self.inner,
            cancel,
            deadline: self.inner.config.deadline.map(|d| (Instant::now() + d, d)),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            weight: AtomicU64::new(0),
        }
    }

    /// The server's time in ms (`/time`, weight 1).
    pub async fn server_time(
        &self,
        market: Market,
        cancel: &CancellationToken,
    ) -> Result<i64, RestError> {
        self.call(cancel).server_time(market).await
    }

    /// Like [`RestClient::server_time`], and what the call cost, so callers can account for it.
    pub async fn server_time_with_cost(
        &self,
        market: Market,
        cancel: &CancellationToken,
    ) -> Result<(i64, CallCost), RestError> {
        let call = self.call(cancel);
        let now = call.server_time(market).await?;
        Ok((
            now,
            CallCost {
                requests: call.requests.load(Ordering::Relaxed),
                bytes: call.bytes.load(Ordering::Relaxed),
                weight: call.weight.load(Ordering::Relaxed),
            },
        ))
    }

    /// The symbols of `market`'s `exchangeInfo` (weight 20 on spot, 1 on futures). Binance lists
    /// only current symbols: a long-delisted one can be missing here but present on Vision.
    pub async fn exchange_symbols(
        &self,
        market: Market,
        cancel: &CancellationToken,
    ) -> Result<Vec<SymbolInfo>, RestError> {
        let call = self.call(cancel);
        call.get(
            &Req {
                market,
                path: endpoint(market, "exchangeInfo"),
                query: Vec::new(),
                weight: weight::exchange_info_weight(market),
                symbol: None,
                interval: None,
                bootstrap: false,
            },
            parse::exchange_info,
        )
        .await
    }

    /// Candles of a kline-class `dataset` (klines, mark, index or premium-index klines) with open
    /// time in `range`.
    ///
    /// Index-price klines are keyed by pair: the part of the symbol before `_` (`BTCUSD_PERP` →
    /// `BTCUSD`; a USD-M perpetual's pair is the symbol itself). The server's time is read once,
    /// before any page (one `/time`, weight 1; see [`RestData::server_time`]); a range entirely
    /// after it returns an empty batch. Pages are fetched concurrently (at most
    /// [`RestConfig::max_concurrent_pages`]) within the weight budget; any page that fails after its
    /// retries fails the call.
    pub async fn klines(
        &self,
        dataset: &Dataset,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        self.klines_inner(dataset, range, None, cancel).await
    }

    /// Like [`RestClient::klines`], with the server's time `server_now` (ms) already read by the
    /// caller (e.g. once for a request over many symbols), so no `/time` request is made. It must
    /// have been read before this call: an earlier reading only makes a candle that closed since
    /// count as open (left out, never cached), never the reverse.
    pub async fn klines_at(
        &self,
        dataset: &Dataset,
        range: TimeRange,
        server_now: i64,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        self.klines_inner(dataset, range, Some(server_now), cancel)
            .await
    }

    async fn klines_inner(
        &self,
        dataset: &Dataset,
        range: TimeRange,
        server_now: Option<i64>,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        let Dataset {
            market,
            kind,
            ref symbol,
            interval,
        } = *dataset;
        let Some(interval) = interval.filter(|_| kind.has_interval()) else {
            return Err(InputError::Invalid {
                what: "kind",
                reason: format!(
                    "{dataset} is not a candle series; klines() needs a kline kind and an interval"
                ),
            }
            .into());
        };
        dataset.check()?;
        let call = self.call(cancel);
        let (param, name) = if kind == DataKind::IndexPriceKlines {
            let pair = symbol.as_str().split('_').next().unwrap_or(symbol.as_str());
            ("pair", pair)
        } else {
            ("symbol", symbol.as_str())
        };
        // Read the clock before any page: a candle still open when a page is served then has a
        // close time at or after `now` and is never taken for a closed one.
        let now = match server_now {
            Some(now) => now,
            None => call.server_time(market).await?,
        };
        let open_end = interval.next(interval.floor(now));
        let end = range.end().min(open_end);
        let cm_max = i64::try_from(self.inner.config.cm_max_window.as_millis()).unwrap_or(i64::MAX);
        let windows = paging::plan(market, interval, range.start(), end, cm_max);
        tracing::debug!(%market, %kind, symbol = name, %interval, %range, pages = windows.len(), "rest klines");
        let path = endpoint(market, kind.vision_name());
        let series = Series {
            market,
            path: &path,
            param,
            name,
            interval,
            cm_max,
        };
        let pages: Vec<Vec<KlineRecord>> = futures::stream::iter(windows)
            .map(|w| call.window(&series, w))
            .buffered(self.inner.config.max_concurrent_pages.max(1))
            .try_collect()
            .await?;
        let mut rows: Vec<KlineRecord> = pages.into_iter().flatten().collect();
        rows.retain(|r| r.open_time >= range.start() && r.open_time < end);
        rows.sort_by_key(|r| r.open_time);
        let malformed = |reason: String| RestError::Malformed {
            url: format!("{}{path}", self.inner.config.urls.for_market(market)),
            reason,
            attempts: 1,
        };
        let mut closed = KlineBuilder::new(market, kind, interval, rows.len());
        let mut open: Option<KlineRecord> = None;
        for r in &rows {
            if r.close_time >= now {
                // Only the candle containing `now` can be open; it is the last one.
                let mut check = KlineBuilder::new(market, kind, interval, 1);
                check
                    .push(r)
                    .map_err(|e| malformed(format!("open candle: {e}")))?;
                if open.is_some_and(|o| o.open_time != r.open_time) {
                    return Err(malformed(format!(
                        "two open candles (at {} and {}) with server time {now}",
                        open.map_or(0, |o| o.open_time),
                        r.open_time
                    )));
                }
                open = Some(*r);
            } else {
                closed.push(r).map_err(|e| malformed(e.to_string()))?;
            }
        }
        Ok(call.finish(closed.finish(), open, Some(now)))
    }

    /// Funding-rate history of a futures `symbol` with funding time in `range`, paged by
    /// `startTime = last fundingTime + 1` (1000 records per request, weight 1).
    ///
    /// REST does not say a record's funding interval: it is the spacing from the record before
    /// (asked for too, from up to 8 h — Binance's longest interval — before the range), or, for a
    /// symbol's first record, to the one after; a lone record has none. `markPrice` is kept where
    /// the market sends it (USD-M).
    pub async fn funding(
        &self,
        market: Market,
        symbol: &Symbol,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        market.check(DataKind::FundingRate, None)?;
        let call = self.call(cancel);
        let path = endpoint(market, "fundingRate");
        let mut rows: Vec<FundingRecord> = Vec::new();
        let wanted = range;
        // One interval earlier, so the first record's predecessor is known.
        let range =
            TimeRange::new(range.start() - MAX_FUNDING_INTERVAL_MS, range.end()).unwrap_or(wanted);
        let mut cursor = range.start();
        while cursor < range.end() {
            let page = call
                .get(
                    &Req {
                        market,
                        path: path.clone(),
                        query: vec![
                            ("symbol", symbol.to_string()),
                            ("startTime", cursor.to_string()),
                            ("endTime", (range.end() - 1).to_string()),
                            ("limit", FUNDING_LIMIT.to_string()),
                        ],
                        weight: 1,
                        symbol: Some(symbol.as_str()),
                        interval: None,
                        bootstrap: false,
                    },
                    parse::funding,
                )
                .await?;
            let full = page.len() >= FUNDING_LIMIT as usize;
            let last = page.iter().map(|f| f.funding_time).max();
            rows.extend(page.into_iter().filter(|f| range.contains(f.funding_time)));
            match last {
                Some(t) if full && t >= cursor => cursor = t + 1,
                Some(t) if full => {
                    // A full page that does not move forward would loop or lose rows.
                    return Err(RestError::Malformed {
                        url: format!("{}{path}", self.inner.config.urls.for_market(market)),
                        reason: format!(
                            "a full funding page ends at {t}, before its start {cursor}"
                        ),
                        attempts: 1,
                    });
                }
                _ => break,
            }
        }
        rows.sort_by_key(|f| f.funding_time);
        // A record the server repeated is one record (a conflicting repeat stays, and is refused
        // below); its spacing to itself would otherwise hide the interval.
        rows.dedup();
        fill_funding_intervals(&mut rows);
        rows.retain(|f| wanted.contains(f.funding_time));
        let mut b = FundingBuilder::new(rows.len());
        for r in &rows {
            b.push(r).map_err(|e| RestError::Malformed {
                url: format!("{}{path}", self.inner.config.urls.for_market(market)),
                reason: e.to_string(),
                attempts: 1,
            })?;
        }
        Ok(call.finish(b.finish(), None, None))
    }
}

/// The USD-M statistics endpoints behind the archive's `metrics` columns, in the columns' order:
/// (path, the metrics columns it fills).
const STAT_ENDPOINTS: [(&str, &[usize]); 5] = [
    ("/futures/data/openInterestHist", &[0, 1]),
    ("/futures/data/topLongShortAccountRatio", &[2]),
    ("/futures/data/topLongShortPositionRatio", &[3]),
    ("/futures/data/globalLongShortAccountRatio", &[4]),
    ("/futures/data/takerlongshortRatio", &[5]),
];

/// Points per statistics request (Binance's most).
const STATS_LIMIT: i64 = 500;
/// The statistics' period: the archive's metrics are 5-minute rows.
const STATS_PERIOD_MS: i64 = 300_000;

impl RestClient {
    /// The archive's `metrics` rows of a USD-M `symbol` with time in `range`, from the 5-minute
    /// statistics endpoints joined on their time: open interest and its value
    /// (`openInterestHist`), the top traders' account and position long/short ratios, all
    /// accounts' ratio and the takers' buy/sell volume ratio. A value an endpoint lacks is null.
    /// Binance keeps 30 days of them ([`super::STATS_HISTORY_MS`]); each request gives 500 points
    /// (41 h 40 min) at weight 1, so a day costs five requests.
    pub async fn metrics(
        &self,
        market: Market,
        symbol: &Symbol,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        market.check(DataKind::Metrics, None)?;
        super::serves(market, DataKind::Metrics)?;
        let call = self.call(cancel);
        let mut rows: std::collections::BTreeMap<i64, [Option<f64>; 6]> = Default::default();
        let step = STATS_LIMIT * STATS_PERIOD_MS;
        let mut start = range.start();
        while start < range.end() {
            let end = (start + step).min(range.end());
            for (path, columns) in STAT_ENDPOINTS {
                let page = call
                    .get(
                        &Req {
                            market,
                            path: path.to_owned(),
                            query: vec![
                                ("symbol", symbol.to_string()),
                                ("period", "5m".to_owned()),
                                ("startTime", start.to_string()),
                                ("endTime", (end - 1).to_string()),
                                ("limit", STATS_LIMIT.to_string()),
                            ],
                            weight: 1,
                            symbol: Some(symbol.as_str()),
                            interval: None,
                            bootstrap: false,
                        },
                        parse::stat_points,
                    )
                    .await?;
                for (t, values) in page {
                    if !(start..end).contains(&t) {
                        continue;
                    }
                    let row = rows.entry(t).or_default();
                    for (c, v) in columns.iter().zip(values) {
                        row[*c] = v;
                    }
                }
            }
            start = end;
        }
        let schema = crate::schema::schema(market, DataKind::Metrics);
        let times: Vec<i64> = rows.keys().copied().collect();
        let mut cols: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(times)
                    .with_timezone(crate::schema::UTC),
            ),
            Arc::new(arrow::array::StringArray::from(vec![
                symbol.as_str();
                rows.len()
            ])),
        ];
        for c in 0..6 {
            cols.push(Arc::new(arrow::array::Float64Array::from(
                rows.values().map(|r| r[c]).collect::<Vec<_>>(),
            )));
        }
        let batch = arrow::record_batch::RecordBatch::try_new(schema, cols).map_err(|e| {
            RestError::Malformed {
                url: format!("{}/futures/data", self.inner.config.urls.for_market(market)),
                reason: e.to_string(),
                attempts: 1,
            }
        })?;
        Ok(call.finish(batch, None, None))
    }
}

/// Rows of `page` whose time lies in `range`.
fn trades_in(page: &[TradeRecord], range: TimeRange) -> impl Iterator<Item = TradeRecord> + '_ {
    let (lo, hi) = (range.start() * 1000, range.end() * 1000);
    page.iter()
        .filter(move |t| t.time_us >= lo && t.time_us < hi)
        .copied()
}

/// The longest funding interval Binance uses (8 h; some symbols settle every 4 h or 1 h).
const MAX_FUNDING_INTERVAL_MS: i64 = 8 * 3_600_000;

/// Sets each record's `funding_interval_hours` from its spacing to the record before (rounded to
/// whole hours: calc times carry a few ms of jitter); the first record takes the spacing to the
/// one after. Records already carrying an interval keep it.
fn fill_funding_intervals(rows: &mut [FundingRecord]) {
    const HOUR: i64 = 3_600_000;
    let hours = |a: i64, b: i64| {
        i32::try_from((b - a + HOUR / 2) / HOUR)
            .ok()
            .filter(|h| *h > 0)
    };
    let spacing: Vec<Option<i32>> = rows
        .windows(2)
        .map(|w| hours(w[0].funding_time, w[1].funding_time))
        .collect();
    for (i, r) in rows.iter_mut().enumerate() {
        let own = match i {
            0 => spacing.first().copied().flatten(),
            _ => spacing.get(i - 1).copied().flatten(),
        };
        r.funding_interval_hours = r.funding_interval_hours.or(own);
    }
}

impl RestClient {
    /// Aggregate trades of `symbol` with time in `range` (spot weight 4, futures 20 per request).
    ///
    /// Binance answers a time window of at most an hour; ids are contiguous, so once one window
    /// has a trade the rest of the range is paged by `fromId` (1000 a request), whatever the
    /// time windows.
    pub async fn agg_trades(
        &self,
        market: Market,
        symbol: &Symbol,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        market.check(DataKind::AggTrades, None)?;
        let call = self.call(cancel);
        let mut rows = call
            .first_agg_trades(market, symbol, range, TRADES_LIMIT)
            .await?;
        let mut last = rows.last().copied();
        rows.retain(|t| range.contains(t.time_us.div_euclid(1000)));
        while let Some(l) = last
            && l.time_us < range.end() * 1000
        {
            let page = call
                .trades_page(market, symbol, "aggTrades", l.id + 1, parse::agg_trades)
                .await?;
            rows.extend(trades_in(&page, range));
            last = (page.len() >= TRADES_LIMIT)
                .then(|| page.last().copied())
                .flatten();
        }
        self.trade_batch(&call, market, DataKind::AggTrades, "aggTrades", rows)
    }

    /// Trades of a spot `symbol` with time in `range`: the first trade id at the range's start
    /// from one aggTrades request, then `historicalTrades` by `fromId` (weight 25, 1000 a
    /// request; spot serves it without an API key). Futures ask for a key, which dsm does not
    /// use: an [`InputError`] there.
    pub async fn trades(
        &self,
        market: Market,
        symbol: &Symbol,
        range: TimeRange,
        cancel: &CancellationToken,
    ) -> Result<RestData, RestError> {
        market.check(DataKind::Trades, None)?;
        super::serves(market, DataKind::Trades)?;
        let call = self.call(cancel);
        let first = call.first_agg_trades(market, symbol, range, 1).await?;
        let mut rows = Vec::new();
        let mut next = first.first().map(|a| a.first_id);
        while let Some(from) = next {
            let page = call
                .trades_page(market, symbol, "historicalTrades", from, parse::trades)
                .await?;
            rows.extend(trades_in(&page, range));
            next = match page.last() {
                Some(l) if page.len() >= TRADES_LIMIT && l.time_us < range.end() * 1000 => {
                    Some(l.id + 1)
                }
                _ => None,
            };
        }
        self.trade_batch(&call, market, DataKind::Trades, "historicalTrades", rows)
    }

    /// `rows` (in id order, from endpoint `name`) as one validated batch, with what the call
    /// cost.
    fn trade_batch(
        &self,
        call: &Call<'_>,
        market: Market,
        kind: DataKind,
        name: &str,
        rows: Vec<TradeRecord>,
    ) -> Result<RestData, RestError> {
        let mut b = TradeBuilder::new(market, kind, rows.len());
        for r in &rows {
            b.push(r).map_err(|e| RestError::Malformed {
                url: format!(
                    "{}{}",
                    self.inner.config.urls.for_market(market),
                    endpoint(market, name)
                ),
                reason: e.to_string(),
                attempts: 1,
            })?;
        }
        Ok(call.finish(b.finish(), None, None))
    }
}

/// A kline series as its pages request it: the endpoint, the symbol (or pair) parameter, and the
/// COIN-M window limit.
#[derive(Clone, Copy)]
struct Series<'a> {
    market: Market,
    path: &'a str,
    param: &'static str,
    name: &'a str,
    interval: Interval,
    cm_max: i64,
}

/// Weight of one aggTrades request.
fn agg_trades_weight(market: Market) -> u32 {
    match market {
        Market::Spot => 4,
        _ => 20,
    }
}

/// Weight of one historicalTrades request.
const HISTORICAL_TRADES_WEIGHT: u32 = 25;

/// The path of endpoint `name` on `market` (`/api/v3/…`, `/fapi/v1/…`, `/dapi/v1/…`).
fn endpoint(market: Market, name: &str) -> String {
    let prefix = match market {
        Market::Spot => "/api/v3",
        Market::UsdM => "/fapi/v1",
        Market::CoinM => "/dapi/v1",
        Market::Option => "/eapi/v1",
    };
    format!("{prefix}/{name}")
}

/// The used-weight headers of an answer by window length (ms): `x-mbx-used-weight-1m` is
/// `{60000: n}`. (Spot's legacy `x-mbx-used-weight`, without a window, is left out.)
fn used_weight_headers(h: &reqwest::header::HeaderMap) -> HashMap<i64, u32> {
    h.iter()
        .filter_map(|(name, value)| {
            let window = name.as_str().strip_prefix("x-mbx-used-weight-")?;
            let unit_at = window.len().checked_sub(1)?;
            let n: i64 = window[..unit_at].parse().ok()?;
            let unit = match &window[unit_at..] {
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            let used = value.to_str().ok()?.trim().parse().ok()?;
            Some((n * unit, used))
        })
        .collect()
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    // HeaderMap lookups are case-insensitive (names are stored lower-case).
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl Call<'_> {
    fn finish(
        &self,
        batch: arrow::record_batch::RecordBatch,
        open_candle: Option<KlineRecord>,
        server_time: Option<i64>,
    ) -> RestData {
        RestData {
            batch,
            open_candle,
            server_time,
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            weight: self.weight.load(Ordering::Relaxed),
        }
    }

    /// The first page of aggregate trades at or after `range`'s start: hour windows (the most
    /// one request may span) until one has trades, or the range ends. Empty if none.
    async fn first_agg_trades(
        &self,
        market: Market,
        symbol: &Symbol,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<TradeRecord>, RestError> {
        let mut from = range.start();
        while from < range.end() {
            let to = (from + AGG_TRADES_WINDOW_MS).min(range.end());
            let page = self
                .get(
                    &Req {
                        market,
                        path: endpoint(market, "aggTrades"),
                        query: vec![
                            ("symbol", symbol.to_string()),
                            ("startTime", from.to_string()),
                            ("endTime", (to - 1).to_string()),
                            ("limit", limit.to_string()),
                        ],
                        weight: agg_trades_weight(market),
                        symbol: Some(symbol.as_str()),
                        interval: None,
                        bootstrap: false,
                    },
                    parse::agg_trades,
                )
                .await?;
            if !page.is_empty() {
                return Ok(page);
            }
            from = to;
        }
        Ok(Vec::new())
    }

    /// One page of `name` (`aggTrades` or `historicalTrades`) from trade id `from_id` on, checked
    /// to start there and to move forward.
    async fn trades_page(
        &self,
        market: Market,
        symbol: &Symbol,
        name: &str,
        from_id: i64,
        parse: fn(&[u8]) -> Result<Vec<TradeRecord>, String>,
    ) -> Result<Vec<TradeRecord>, RestError> {
        let path = endpoint(market, name);
        let weight = match name {
            "aggTrades" => agg_trades_weight(market),
            _ => HISTORICAL_TRADES_WEIGHT,
        };
        let page = self
            .get(
                &Req {
                    market,
                    path: path.clone(),
                    query: vec![
                        ("symbol", symbol.to_string()),
                        ("fromId", from_id.to_string()),
                        ("limit", TRADES_LIMIT.to_string()),
                    ],
                    weight,
                    symbol: Some(symbol.as_str()),
                    interval: None,
                    bootstrap: false,
                },
                parse,
            )
            .await?;
        if page.first().is_some_and(|t| t.id < from_id) {
            return Err(RestError::Malformed {
                url: format!("{}{path}", self.inner.config.urls.for_market(market)),
                reason: format!("a page from id {from_id} starts before it"),
                attempts: 1,
            });
        }
        Ok(page)
    }

    async fn server_time(&self, market: Market) -> Result<i64, RestError> {
        self.get(
            &Req {
                market,
                path: endpoint(market, "time"),
                query: Vec::new(),
                weight: 1,
                symbol: None,
                interval: None,
                bootstrap: false,
            },
            parse::server_time,
        )
        .await
    }

    /// Fetches every candle of window `w` of `series` (plus follow-ups if a page comes back full).
    async fn window(
        &self,
        series: &Series<'_>,
        mut w: Window,
    ) -> Result<Vec<KlineRecord>, RestError> {
        let Series {
            market,
            path,
            param,
            name,
            interval,
            cm_max,
        } = *series;
        let mut out = Vec::new();
        loop {
            let page = self
                .get(
                    &Req {
                        market,
                        path: path.to_owned(),
                        query: vec![
                            (param, name.to_owned()),
                            ("interval", interval.as_str().to_owned()),
                            ("startTime", w.start.to_string()),
                            ("endTime", (w.end - 1).to_string()),
                            ("limit", w.limit.to_string()),
                        ],
                        weight: weight::klines_weight(market, w.limit),
                        symbol: Some(name),
                        interval: Some(interval),
                        bootstrap: false,
                    },
                    parse::klines,
                )
                .await?;
            let mut opens: Vec<i64> = page.iter().map(|k| k.open_time).collect();
            opens.dedup();
            let next = paging::follow_up(market, interval, &w, &opens, cm_max);
            out.extend(page);
            match next {
                Some(n) if n != w => w = n,
                _ => return Ok(out),
            }
        }
    }

    /// Runs `fut` unless the call is cancelled or its deadline passes first.
    async fn guard<F: Future>(&self, fut: F) -> Result<F::Output, RestError> {
        let deadline = async {
            match self.deadline {
                Some((at, d)) => {
                    tokio::time::sleep_until(at).await;
                    d
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(RestError::Cancelled),
            d = deadline => Err(RestError::DeadlineExceeded { deadline: d }),
            v = fut => Ok(v),
        }
    }

    /// Sleeps until `at`; fails at once if the deadline comes first.
    async fn wait_until(&self, at: Instant) -> Result<(), RestError> {
        if let Some((dl, d)) = self.deadline
            && at > dl
        {
            return Err(RestError::DeadlineExceeded { deadline: d });
        }
        self.guard(tokio::time::sleep_until(at)).await
    }

    async fn acquire(&self, req: &Req<'_>) -> Result<Ticket, RestError> {
        let market = req.market;
        if self.inner.config.learn_limits && !req.bootstrap {
            self.learn_limit(req).await?;
        }
        loop {
            match self.inner.budget.try_acquire(market, req.weight) {
                Err(Refusal::Banned { until_ms }) if self.inner.config.wait_on_ban => {
                    tracing::warn!(%market, until = %crate::time::format_ms(until_ms), "waiting for the ban to end (--wait-on-ban)");
                    let wait = Duration::from_millis((until_ms - now_ms()).max(0) as u64);
                    self.wait_until(Instant::now() + wait).await?;
                }
                Err(Refusal::Banned { until_ms }) => {
                    return Err(RestError::Banned { market, until_ms });
                }
                Ok(Acquire::Granted(t)) => return Ok(t),
                Ok(Acquire::WaitUntil(at)) => {
                    tracing::debug!(%market, wait = ?at.saturating_duration_since(Instant::now()), "weight budget exhausted, waiting");
                    self.wait_until(at).await?;
                }
            }
        }
    }

    /// Learns `req.market`'s `REQUEST_WEIGHT` limit from its `exchangeInfo` unless it is known
    /// (set by the user, or learnt less than a day ago by any process sharing the state
    /// directory). One task asks; the others wait for it. A failure keeps Binance's documented
    /// limits (asked again after a few minutes), except a ban or a cancellation.
    async fn learn_limit(&self, req: &Req<'_>) -> Result<(), RestError> {
        let market = req.market;
        let budget = &self.inner.budget;
        if budget.knows_limit(market) {
            return Ok(());
        }
        let mut tried = self.inner.learning[weight::market_index(market)]
            .lock()
            .await;
        if budget.knows_limit(market) || tried.is_some_and(|t| t.elapsed() < LEARN_RETRY) {
            return Ok(());
        }
        *tried = Some(Instant::now());
        // Spot's full exchangeInfo is megabytes; one symbol's carries the same limits.
        let query = match (market, req.symbol) {
            (Market::Spot, Some(s)) => vec![("symbol", s.to_owned())],
            _ => Vec::new(),
        };
        let info = Req {
            market,
            path: endpoint(market, "exchangeInfo"),
            query,
            weight: weight::exchange_info_weight(market),
            symbol: req.symbol,
            interval: None,
            bootstrap: true,
        };
        match Box::pin(self.get(&info, parse::weight_limit)).await {
            Ok(Some((weight, window_ms))) => {
                tracing::debug!(%market, weight, window_ms, "learnt the server's weight limit");
                budget.learn(
                    market,
                    ServerLimit {
                        weight,
                        window_ms,
                        learned_ms: now_ms(),
                    },
                );
            }
            Ok(None) => {
                tracing::warn!(%market, "exchangeInfo states no REQUEST_WEIGHT limit; keeping Binance's documented limit");
            }
            Err(
                e @ (RestError::Banned { .. }
                | RestError::Cancelled
                | RestError::DeadlineExceeded { .. }),
            ) => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(%market, error = %e, "cannot read the server's weight limit; keeping Binance's documented limit");
            }
        }
        Ok(())
    }

    /// One HTTP attempt: the headers within the connect timeout plus the silence allowed, the body
    /// at the pace allowed and at most `MAX_BODY_BYTES`.
    async fn attempt(&self, http: &reqwest::Client, url: &str) -> Result<Answer, RestError> {
        let pace = self.inner.config.pace;
        let timeout = || RestError::Timeout {
            url: url.to_owned(),
            attempts: 1,
        };
        let net = |e: reqwest::Error| {
            if e.is_timeout() {
                timeout()
            } else {
                RestError::Network {
                    url: url.to_owned(),
                    source: e,
                    attempts: 1,
                }
            }
        };
        let resp = tokio::time::timeout(
            self.inner.config.connect_timeout + pace.silence,
            http.get(url).send(),
        )
        .await
        .map_err(|_| timeout())?
        .map_err(net)?;
        let status = resp.status();
        let h = resp.headers();
        let used_weight = used_weight_headers(h);
        let retry_after = header_u64(h, "retry-after").map(Duration::from_secs);
        let announced = resp.content_length().unwrap_or(0);
        let attempt = pace.attempt_limit(announced.max(1 << 20));
        let body = read_body(resp, pace, MAX_BODY_BYTES, attempt, |_| {})
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { bytes, .. } => RestError::Malformed {
                    url: url.to_owned(),
                    reason: format!(
                        "the answer has {bytes} bytes, more than the {MAX_BODY_BYTES} accepted"
                    ),
                    attempts: 1,
                },
                BodyError::Slow(why) => RestError::Slow {
                    url: url.to_owned(),
                    reason: why.to_string(),
                    attempts: 1,
                },
                BodyError::Net(e) => net(e),
            })?;
        Ok(Answer {
            status,
            used_weight,
            retry_after,
            body: bytes::Bytes::from(body),
        })
    }

    /// Sends `req` with budget, retries and backoff, and parses a 2xx body with `parse`.
    async fn get<T>(
        &self,
        req: &Req<'_>,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, RestError> {
        let cfg = &self.inner.config;
        let http = self.inner.http.client().map_err(RestError::Client)?;
        let market = req.market;
        let mut url = format!("{}{}", cfg.urls.for_market(market), req.path);
        for (i, (k, v)) in req.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(v);
        }
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(cfg.backoff_min)
            .with_max_delay(cfg.backoff_max)
            .with_max_times(cfg.retries as usize)
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(RestError::Cancelled);
            }
            let ticket = self.acquire(req).await?;
            attempts += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.weight
                .fetch_add(u64::from(req.weight), Ordering::Relaxed);
            tracing::trace!(%url, weight = req.weight, "GET");
            let failure = match self.guard(self.attempt(http, &url)).await? {
                Err(e) => e,
                Ok(a) => {
                    if let Some(u) = a.used_weight.get(&ticket.window_ms()) {
                        self.inner.budget.observe(market, ticket, *u);
                    }
                    self.bytes.fetch_add(a.body.len() as u64, Ordering::Relaxed);
                    match self.judge(req, &url, a, &parse) {
                        Verdict::Done(v) => return v.map_err(|e| e.after(attempts)),
                        Verdict::RateLimited(e) => {
                            // The budget pauses the market; the next acquire waits it out.
                            if backoff.next().is_none() {
                                return Err(e);
                            }
                            tracing::warn!(%url, "429 from Binance, waiting for Retry-After");
                            continue;
                        }
                        Verdict::Retry(e) => e,
                    }
                }
            };
            match backoff.next() {
                Some(delay) => {
                    tracing::warn!(error = %failure, ?delay, "transient REST failure, retrying");
                    self.wait_until(Instant::now() + delay).await?;
                }
                None => return Err(failure.after(attempts)),
            }
        }
    }

    /// Decides what an answer means.
    fn judge<T>(
        &self,
        req: &Req<'_>,
        url: &str,
        a: Answer,
        parse: &impl Fn(&[u8]) -> Result<T, String>,
    ) -> Verdict<T> {
        let cfg = &self.inner.config;
        let market = req.market;
        let status = a.status.as_u16();
        let api = parse::api_error(&a.body);
        match status {
            200..=299 => match parse(&a.body) {
                Ok(v) => Verdict::Done(Ok(v)),
                // A truncated or garbled body: worth another try.
                Err(reason) => Verdict::Retry(RestError::Malformed {
                    url: url.to_owned(),
                    reason,
                    attempts: 1,
                }),
            },
            429 => {
                let wait = a.retry_after.unwrap_or(Duration::from_secs(1));
                let e = RestError::RateLimited {
                    market,
                    url: url.to_owned(),
                    retry_after: wait,
                };
                if wait > cfg.max_retry_after {
                    return Verdict::Done(Err(e));
                }
                self.inner
                    .budget
                    .pause(market, now_ms() + wait.as_millis() as i64);
                Verdict::RateLimited(e)
            }
            418 => {
                let from_body = api
                    .as_ref()
                    .and_then(|(_, msg)| parse::banned_until(msg))
                    .map(|until| {
                        Duration::from_millis((until - crate::time::now_ms()).max(0) as u64)
                    });
                let wait = a.retry_after.or(from_body).unwrap_or(DEFAULT_BAN);
                let until_ms = self
                    .inner
                    .budget
                    .ban(market, now_ms() + wait.as_millis() as i64);
                tracing::error!(%market, until = %crate::time::format_ms(until_ms), "IP banned by Binance (418)");
                Verdict::Done(Err(RestError::Banned { market, until_ms }))
            }
            _ => {
                let e = match api {
                    Some((-1121, _)) => RestError::InvalidSymbol {
                        market,
                        symbol: req.symbol.unwrap_or_default().to_owned(),
                    },
                    Some((-1120, _)) => RestError::InvalidInterval {
                        market,
                        interval: req.interval.map(|i| i.to_string()).unwrap_or_default(),
                    },
                    Some((code, msg)) => RestError::Api {
                        url: url.to_owned(),
                        status,
                        code,
                        msg,
                        attempts: 1,
                    },
                    None => RestError::Http {
                        url: url.to_owned(),
                        status,
                        attempts: 1,
                    },
                };
                if (500..=599).contains(&status) {
                    Verdict::Retry(e)
                } else {
                    Verdict::Done(Err(e))
                }
            }
        }
    }
}

enum Verdict<T> {
    Done(Result<T, RestError>),
    Retry(RestError),
    RateLimited(RestError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("valid status"),
            used_weight: HashMap::new(),
            retry_after: None,
            body: bytes::Bytes::from_static(body.as_bytes()),
        }
    }

    fn judge(status: u16, body: &'static str) -> Verdict<Vec<KlineRecord>> {
        let client = RestClient::new(RestConfig::default()).expect("client");
        let token = CancellationToken::new();
        let call = client.call(&token);
        let req = Req {
            market: Market::UsdM,
            path: endpoint(Market::UsdM, "klines"),
            query: Vec::new(),
            weight: 1,
            symbol: Some("BTCUSDT"),
            interval: Some(Interval::M3),
            bootstrap: false,
        };
        call.judge(
            &req,
            "http://x/fapi/v1/klines",
            answer(status, body),
            &parse::klines,
        )
    }

    #[test]
    fn binance_error_codes_become_typed_errors() {
        // Spec §3.6.
        let v = judge(400, r#"{"code":-1120,"msg":"Invalid interval."}"#);
        assert!(matches!(
            v,
            Verdict::Done(Err(RestError::InvalidInterval { market: Market::UsdM, ref interval })) if interval == "3m"
        ));
        let v = judge(400, r#"{"code":-1121,"msg":"Invalid symbol."}"#);
        assert!(matches!(
            v,
            Verdict::Done(Err(RestError::InvalidSymbol { ref symbol, .. })) if symbol == "BTCUSDT"
        ));
        let v = judge(
            400,
            r#"{"code":-1023,"msg":"Start time is greater than end time."}"#,
        );
        assert!(matches!(
            v,
            Verdict::Done(Err(RestError::Api {
                code: -1023,
                status: 400,
                ..
            }))
        ));
    }

    #[test]
    fn geo_block_is_not_retried_and_5xx_is() {
        // Spec §3.1: 451 with code 0 — a configuration problem, retrying cannot help.
        let v = judge(
            451,
            r#"{"code":0,"msg":"Service unavailable from a restricted location"}"#,
        );
        assert!(matches!(
            v,
            Verdict::Done(Err(RestError::Api { status: 451, .. }))
        ));
        assert!(matches!(
            judge(403, "<html>"),
            Verdict::Done(Err(RestError::Http { status: 403, .. }))
        ));
        assert!(matches!(
            judge(503, ""),
            Verdict::Retry(RestError::Http { status: 503, .. })
        ));
        assert!(matches!(
            judge(200, "[[1,"),
            Verdict::Retry(RestError::Malformed { .. })
        ));
        assert!(matches!(judge(200, "[]"), Verdict::Done(Ok(ref v)) if v.is_empty()));
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = RestError::Http {
            url: "https://api.binance.com/api/v3/klines".into(),
            status: 451,
            attempts: 1,
        };
        assert!(e.to_string().contains("geo-block"), "{e}");
        assert!(e.to_string().contains("api.binance.com"), "{e}");
        let e = RestError::Timeout {
            url: "https://api.binance.com/api/v3/time".into(),
            attempts: 1,
        }
        .after(4);
        assert!(e.to_string().contains("4 attempts"), "{e}");
        assert!(e.to_string().contains("--timeout"), "{e}");
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-mbx-used-weight-10s", "7".parse().expect("value"));
        h.insert("x-mbx-used-weight-1m", "42".parse().expect("value"));
        h.insert("x-mbx-used-weight", "42".parse().expect("value"));
        let used = used_weight_headers(&h);
        assert_eq!(used.get(&10_000), Some(&7));
        assert_eq!(used.get(&60_000), Some(&42));
        assert_eq!(used.len(), 2);
        assert_eq!(e.category(), crate::ErrorCategory::Upstream);
        assert_eq!(
            RestError::Cancelled.category(),
            crate::ErrorCategory::Cancelled
        );
    }
}
