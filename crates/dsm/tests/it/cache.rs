//! The cache store, from the outside: round trips of every kind, range reads at every boundary,
//! coverage and known gaps, rejected writes, corruption detection, an outside Parquet reader, and
//! crash / multi-process safety. The conformance tests run unchanged against the local back-end,
//! the in-memory object_store back-end and a real S3 server (SeaweedFS, started by `scripts/test.sh`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{DAY, MIN, sym, t};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{TimestampMicrosecondType, TimestampMillisecondType};
use dsm::cache::{CacheError, CacheStore, Dataset, Manifest, Piece, Provenance, PruneFilter};
use dsm::schema::{
    FundingBuilder, FundingRecord, KlineBuilder, KlineRecord, Source, TradeBuilder, TradeRecord,
    output_schema, with_source,
};
use dsm::{DataKind, ErrorCategory, Interval, Market, TimeRange};
use object_store::ObjectStore;
use object_store::memory::InMemory;

fn r(a: &str, b: &str) -> TimeRange {
    TimeRange::new(t(a), t(b)).unwrap()
}

fn vision(file: &str) -> Provenance {
    Provenance::Vision {
        file: file.into(),
        sha256: "ab".repeat(32),
        etag: None,
        last_modified: None,
    }
}

fn kkey(market: Market, kind: DataKind, symbol: &str, i: Interval) -> Dataset {
    Dataset::new(market, kind, sym(symbol), Some(i)).unwrap()
}

fn key(market: Market, kind: DataKind, symbol: &str) -> Dataset {
    Dataset::new(market, kind, sym(symbol), None).unwrap()
}

/// A deterministic candle for `open`: any two writes of the same slot agree.
fn candle(i: Interval, open: i64) -> KlineRecord {
    let p = 100.0 + ((open / MIN) % 1000) as f64 * 0.01;
    KlineRecord {
        open_time: open,
        open: p,
        high: p + 1.0,
        low: p - 1.0,
        close: p + 0.5,
        volume: ((open / MIN) % 97) as f64,
        close_time: i.close_time(open),
        quote_volume: ((open / MIN) % 89) as f64 * 100.0,
        count: (open / MIN) % 13,
        taker_buy_volume: 0.0,
        taker_buy_quote_volume: 0.0,
    }
}

/// Candles of `i` opening in `range`, except those `skip` says are missing.
fn klines_with(
    market: Market,
    kind: DataKind,
    i: Interval,
    range: TimeRange,
    skip: impl Fn(i64) -> bool,
) -> RecordBatch {
    let mut b = KlineBuilder::new(market, kind, i, 1024);
    let mut open = i.ceil(range.start());
    while open < range.end() {
        if !skip(open) {
            b.push(&candle(i, open)).unwrap();
        }
        open = i.next(open);
    }
    b.finish()
}

fn klines(market: Market, kind: DataKind, i: Interval, range: TimeRange) -> RecordBatch {
    klines_with(market, kind, i, range, |_| false)
}

fn funding(range: TimeRange) -> RecordBatch {
    let mut b = FundingBuilder::new(64);
    let step = 8 * 3_600_000;
    let mut ft = range.start() + (step - range.start().rem_euclid(step)) % step;
    while ft < range.end() {
        b.push(&FundingRecord {
            funding_time: ft,
            funding_rate: ((ft / step) % 7) as f64 * 1e-5,
            funding_interval_hours: Some(8),
            mark_price: Some(50_000.0),
        })
        .unwrap();
        ft += step;
    }
    b.finish()
}

/// Two trades per minute; ids derive from the time so overlapping writes agree.
/// Book-depth bands every 30 minutes: two rows share each time, as an archive table's do.
fn book_depth(range: TimeRange) -> RecordBatch {
    use arrow::array::{Float64Array, TimestampMillisecondArray};
    let step = 30 * MIN;
    let first = range.start() + (step - range.start().rem_euclid(step)) % step;
    let times: Vec<i64> = (first..range.end())
        .step_by(step as usize)
        .flat_map(|t| [t, t])
        .collect();
    let n = times.len();
    let band: Vec<f64> = (0..n)
        .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
        .collect();
    let depth: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    RecordBatch::try_new(
        dsm::schema::schema(Market::UsdM, DataKind::BookDepth),
        vec![
            Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")),
            Arc::new(Float64Array::from(band)),
            Arc::new(Float64Array::from(depth.clone())),
            Arc::new(Float64Array::from(depth)),
        ],
    )
    .unwrap()
}

fn trades(market: Market, kind: DataKind, range: TimeRange) -> RecordBatch {
    let mut b = TradeBuilder::new(market, kind, 1024);
    let mut m = range.start() - range.start().rem_euclid(MIN);
    while m < range.end() {
        for (j, off_us) in [(0i64, 123i64), (1, 45_678_901)] {
            let time_us = m * 1000 + off_us;
            if !range.contains(time_us / 1000) {
                continue;
            }
            let id = (m / MIN) * 2 + j;
            b.push(&TradeRecord {
                id,
                price: 50.0 + (id % 100) as f64,
                qty: 1.0 + (id % 3) as f64,
                quote_qty: 10.0,
                first_id: id * 10,
                last_id: id * 10 + 3,
                time_us,
                is_buyer_maker: id % 2 == 0,
                is_best_match: (market == Market::Spot).then_some(true),
            })
            .unwrap();
        }
        m += MIN;
    }
    b.finish()
}

/// Rows of `batches` as one batch (output schema of `key`).
fn concat(key: &Dataset, batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&output_schema(key.market, key.kind), batches).unwrap()
}

/// The base columns (no `source`) of `b`.
fn base(b: &RecordBatch) -> RecordBatch {
    let n = b.num_columns() - 1;
    b.project(&(0..n).collect::<Vec<_>>()).unwrap()
}

fn sources(b: &RecordBatch) -> Vec<String> {
    let c = arrow::compute::cast(
        b.column(b.num_columns() - 1),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let s = c.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_owned()).collect()
}

fn open_times(b: &RecordBatch) -> Vec<i64> {
    b.column(0)
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Back-ends
// ---------------------------------------------------------------------------------------------

enum Backend {
    Local(tempfile::TempDir),
    /// An object store: in memory, or a place in the test S3 server (opened by its URL).
    Object {
        raw: Arc<dyn ObjectStore>,
        url: Option<String>,
    },
}

impl Backend {
    fn local() -> Backend {
        Backend::Local(tempfile::tempdir().unwrap())
    }

    fn memory() -> Backend {
        Backend::Object {
            raw: Arc::new(InMemory::new()),
            url: None,
        }
    }

    fn s3() -> Option<Backend> {
        let url = crate::support::s3_place("conformance")?;
        Some(Backend::Object {
            raw: crate::support::s3_raw(&url),
            url: Some(url),
        })
    }

    fn store(&self) -> CacheStore {
        match self {
            Backend::Local(d) => CacheStore::open(d.path()).unwrap(),
            Backend::Object { url: Some(u), .. } => CacheStore::open_url(u).unwrap(),
            Backend::Object { raw, url: None } => CacheStore::with_object_store(raw.clone()),
        }
    }

    async fn raw(&self, path: &str) -> Vec<u8> {
        match self {
            Backend::Local(d) => std::fs::read(d.path().join(path)).unwrap(),
            Backend::Object { raw, .. } => {
                use object_store::ObjectStoreExt;
                let p = object_store::path::Path::parse(path).unwrap();
                raw.get(&p).await.unwrap().bytes().await.unwrap().to_vec()
            }
        }
    }

    async fn set_raw(&self, path: &str, data: Vec<u8>) {
        match self {
            Backend::Local(d) => std::fs::write(d.path().join(path), data).unwrap(),
            Backend::Object { raw, .. } => {
                use object_store::ObjectStoreExt;
                let p = object_store::path::Path::parse(path).unwrap();
                raw.put(&p, data.into()).await.unwrap();
            }
        }
    }

    /// Every stored path (relative), for assertions about what is on storage.
    async fn paths(&self) -> Vec<String> {
        match self {
            Backend::Local(d) => {
                let mut out = Vec::new();
                let mut stack = vec![d.path().to_owned()];
                while let Some(dir) = stack.pop() {
                    for e in std::fs::read_dir(dir).unwrap() {
                        let e = e.unwrap();
                        if e.file_type().unwrap().is_dir() {
                            stack.push(e.path());
                        } else {
                            let rel = e.path().strip_prefix(d.path()).unwrap().to_owned();
                            out.push(rel.to_string_lossy().into_owned());
                        }
                    }
                }
                out.sort();
                out
            }
            Backend::Object { raw, .. } => {
                use futures::TryStreamExt;
                let v: Vec<object_store::ObjectMeta> = raw.list(None).try_collect().await.unwrap();
                let mut out: Vec<String> = v.into_iter().map(|o| o.location.to_string()).collect();
                out.sort();
                out
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::local()).await; })*
        }
        mod memory_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::memory()).await; })*
        }
        mod s3_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(be) = super::Backend::s3() {
                    super::$name(be).await;
                }
            })*
        }
    };
}

conformance!(
    round_trip_every_kind,
    range_reads_at_every_boundary,
    month_and_week_intervals,
    coverage_after_partial_writes,
    known_gaps_are_recorded_and_reported,
    open_candles_and_future_ranges_are_rejected,
    bad_rows_are_rejected_and_nothing_is_written,
    corrupt_data_file_is_detected,
    corrupt_manifest_is_detected,
    every_flipped_bit_of_a_manifest_is_caught,
    verify_cross_checks_row_groups_against_the_file,
    manifests_with_a_sha256_still_check_their_file,
    read_covered_is_coverage_and_rows_in_one_pass,
    rewrites_replace_files_and_keep_one_per_partition,
    concurrent_tasks_fill_one_partition,
    list_prune_and_size,
    write_many_publishes_each_partition_once,
    other_engines_see_only_current_data,
);

// ---------------------------------------------------------------------------------------------
// Conformance tests
// ---------------------------------------------------------------------------------------------

async fn round_trip_every_kind(be: Backend) {
    let store = be.store();
    // Crosses a month end and (for trades) several day partitions.
    let range = r("2024-01-30T12:00:00Z", "2024-02-01T06:00:00Z");
    let mut cases: Vec<(Dataset, RecordBatch)> = Vec::new();
    for market in [Market::Spot, Market::UsdM, Market::CoinM] {
        let s = match market {
            Market::CoinM => "BTCUSD_PERP",
            _ => "BTCUSDT",
        };
        for kind in [
            DataKind::Klines,
            DataKind::MarkPriceKlines,
            DataKind::IndexPriceKlines,
            DataKind::PremiumIndexKlines,
        ] {
            if market.supports_kind(kind) {
                let k = kkey(market, kind, s, Interval::M1);
                cases.push((k, klines(market, kind, Interval::M1, range)));
            }
        }
        if market.is_futures() {
            cases.push((key(market, DataKind::FundingRate, s), funding(range)));
        }
        for kind in [DataKind::AggTrades, DataKind::Trades] {
            cases.push((key(market, kind, s), trades(market, kind, range)));
        }
    }
    cases.push((
        key(Market::UsdM, DataKind::BookDepth, "BTCUSDT"),
        book_depth(range),
    ));
    assert_eq!(cases.len(), 3 + 6 + 6 + 2 + 1);
    for (k, batch) in &cases {
        assert!(batch.num_rows() > 0, "{k}");
        store.write(k, range, batch, vision("x.zip")).await.unwrap();
        let cov = store.coverage(k, range).await.unwrap();
        assert_eq!(cov.covered, vec![range], "{k}");
        assert!(
            cov.missing.is_empty() && cov.gaps.is_empty(),
            "{k}: {cov:?}"
        );
        let got = store.read(k, range).await.unwrap();
        for b in &got {
            assert_eq!(b.schema(), output_schema(k.market, k.kind), "{k}");
        }
        let got = concat(k, &got);
        let want = with_source(batch, k.market, k.kind, Source::Vision);
        assert_eq!(base(&got), base(&want), "{k}");
        assert!(sources(&got).iter().all(|s| s == "vision"), "{k}");
    }
    // Trades are stored per day: Jan 30, Jan 31 and Feb 1 for this range.
    let list = store.list().await.unwrap();
    let trade_parts = list
        .iter()
        .filter(|p| p.dataset == key(Market::Spot, DataKind::Trades, "BTCUSDT"))
        .count();
    assert_eq!(trade_parts, 3);
}

async fn range_reads_at_every_boundary(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let all = r("2023-12-30", "2024-03-02");
    let batch = klines(Market::Spot, DataKind::Klines, Interval::M1, all);
    store.write(&k, all, &batch, vision("a.zip")).await.unwrap();
    let cases = [
        // (range, expected rows): counts from the calendar (2024 is a leap year).
        (r("2024-02-29", "2024-03-01"), 1440),
        (r("2024-02-01", "2024-03-01"), 29 * 1440),
        (r("2024-01-01", "2024-02-01"), 31 * 1440),
        (r("2023-12-31T23:59:00Z", "2024-01-01T00:01:00Z"), 2),
        (r("2024-01-31T23:59:00Z", "2024-02-01T00:00:00Z"), 1),
        (r("2024-02-01T00:00:00Z", "2024-02-01T00:00:00.001Z"), 1),
        (r("2024-02-28T23:59:30Z", "2024-03-01T00:00:30Z"), 1441),
        (r("2024-01-15T10:00:30Z", "2024-01-15T10:01:00Z"), 0),
        (r("2023-12-30", "2024-03-02"), 63 * 1440),
        (r("2023-01-01", "2023-12-30"), 0),
    ];
    for (range, want) in cases {
        let got = concat(&k, &store.read(&k, range).await.unwrap());
        assert_eq!(got.num_rows(), want, "{range}");
        let times = open_times(&got);
        assert!(times.iter().all(|x| range.contains(*x)), "{range}");
        assert!(times.windows(2).all(|w| w[1] - w[0] == MIN), "{range}");
        if let Some(first) = times.first() {
            assert_eq!(*first, Interval::M1.ceil(range.start()), "{range}");
        }
    }
    let leap = concat(
        &k,
        &store.read(&k, r("2024-02-29", "2024-03-01")).await.unwrap(),
    );
    assert_eq!(
        base(&leap),
        klines(
            Market::Spot,
            DataKind::Klines,
            Interval::M1,
            r("2024-02-29", "2024-03-01")
        )
    );
}

async fn month_and_week_intervals(be: Backend) {
    let store = be.store();
    let k = kkey(Market::UsdM, DataKind::Klines, "BTCUSDT", Interval::Mo1);
    let all = r("2022-01-01", "2025-01-01");
    store
        .write(
            &k,
            all,
            &klines(Market::UsdM, DataKind::Klines, Interval::Mo1, all),
            Provenance::Rest,
        )
        .await
        .unwrap();
    let y2024 = concat(
        &k,
        &store.read(&k, r("2024-01-01", "2025-01-01")).await.unwrap(),
    );
    assert_eq!(y2024.num_rows(), 12);
    assert_eq!(open_times(&y2024)[1], t("2024-02-01"));
    let feb = concat(
        &k,
        &store.read(&k, r("2024-01-15", "2024-03-01")).await.unwrap(),
    );
    assert_eq!(open_times(&feb), vec![t("2024-02-01")]);
    let across = concat(
        &k,
        &store.read(&k, r("2023-12-01", "2024-01-02")).await.unwrap(),
    );
    assert_eq!(open_times(&across), vec![t("2023-12-01"), t("2024-01-01")]);
    assert!(
        store.list().await.unwrap()[0]
            .path
            .ends_with("interval=1mo/year=2022")
    );

    let k = kkey(Market::Spot, DataKind::Klines, "ETHUSDT", Interval::W1);
    // Weeks open on Mondays: 2024-12-30 is a Monday whose week crosses into 2025.
    let all = r("2023-12-25", "2025-01-13");
    store
        .write(
            &k,
            all,
            &klines(Market::Spot, DataKind::Klines, Interval::W1, all),
            Provenance::Rest,
        )
        .await
        .unwrap();
    let dec = concat(
        &k,
        &store.read(&k, r("2024-12-23", "2025-01-06")).await.unwrap(),
    );
    assert_eq!(open_times(&dec), vec![t("2024-12-23"), t("2024-12-30")]);
    let y = concat(
        &k,
        &store.read(&k, r("2024-01-01", "2025-01-01")).await.unwrap(),
    );
    assert_eq!(y.num_rows(), 53); // Mondays of 2024: Jan 1 ... Dec 30
    let cov = store
        .coverage(&k, r("2023-12-01", "2025-02-01"))
        .await
        .unwrap();
    assert_eq!(cov.covered, vec![all]);
    assert_eq!(cov.missing.len(), 2);
}

async fn coverage_after_partial_writes(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M5);
    let w1 = r("2024-01-01", "2024-01-04");
    let w2 = r("2024-01-10", "2024-01-13");
    for (w, p) in [
        (w1, vision("BTCUSDT-5m-2024-01-01.zip")),
        (w2, Provenance::Rest),
    ] {
        store
            .write(
                &k,
                w,
                &klines(Market::Spot, DataKind::Klines, Interval::M5, w),
                p,
            )
            .await
            .unwrap();
    }
    let jan = r("2024-01-01", "2024-02-01");
    let cov = store.coverage(&k, jan).await.unwrap();
    assert_eq!(cov.covered, vec![w1, w2]);
    assert_eq!(
        cov.missing,
        vec![r("2024-01-04", "2024-01-10"), r("2024-01-13", "2024-02-01")]
    );
    // A request that straddles the partition boundary.
    let cov = store
        .coverage(&k, r("2023-12-31", "2024-01-02"))
        .await
        .unwrap();
    assert_eq!(cov.covered, vec![r("2024-01-01", "2024-01-02")]);
    assert_eq!(cov.missing, vec![r("2023-12-31", "2024-01-01")]);

    let w3 = r("2024-01-03", "2024-01-11");
    store
        .write(
            &k,
            w3,
            &klines(Market::Spot, DataKind::Klines, Interval::M5, w3),
            Provenance::Rest,
        )
        .await
        .unwrap();
    let cov = store.coverage(&k, jan).await.unwrap();
    assert_eq!(cov.covered, vec![r("2024-01-01", "2024-01-13")]);
    let got = concat(&k, &store.read(&k, jan).await.unwrap());
    assert_eq!(got.num_rows(), 12 * 288);
    let src = sources(&got);
    assert_eq!(src.iter().filter(|s| *s == "vision").count(), 2 * 288);
    assert_eq!(src.iter().filter(|s| *s == "rest").count(), 10 * 288);
    let info = &store.list().await.unwrap()[0];
    assert_eq!(info.rows, 12 * 288);
    assert_eq!(info.sources.len(), 2);
}

/// Thirty daily files of a month stored in one call: each partition is published once (one new
/// generation), keeps what it held outside the pieces, and records each file's provenance.
async fn write_many_publishes_each_partition_once(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let rest = r("2024-01-01", "2024-01-03");
    store
        .write(
            &k,
            rest,
            &klines(Market::Spot, DataKind::Klines, Interval::M1, rest),
            Provenance::Rest,
        )
        .await
        .unwrap();
    // Jan 10..20 and Feb 1..3 as daily pieces, given out of order.
    let mut days: Vec<i64> = (9..19).chain(31..33).collect();
    days.reverse();
    days.swap(0, 5);
    let jan1 = t("2024-01-01");
    let pieces: Vec<Piece> = days
        .iter()
        .map(|d| {
            let day = TimeRange::new(jan1 + d * DAY, jan1 + (d + 1) * DAY).unwrap();
            Piece {
                complete: day,
                batch: klines(Market::Spot, DataKind::Klines, Interval::M1, day),
                provenance: vision(&format!("BTCUSDT-1m-day{d}.zip")),
            }
        })
        .collect();
    // Overlapping pieces are refused before anything is written.
    let mut overlapping = pieces[..2].to_vec();
    overlapping[1].complete = overlapping[0].complete;
    overlapping[1].batch = overlapping[0].batch.clone();
    let err = store.write_many(&k, overlapping).await.unwrap_err();
    assert!(matches!(err, CacheError::Overlap { .. }), "{err}");
    assert_eq!(store.list().await.unwrap()[0].generation, 1);

    store.write_many(&k, pieces).await.unwrap();
    let info = store.list().await.unwrap();
    assert_eq!(info.len(), 2, "{info:?}");
    let (jan, feb) = (&info[0], &info[1]);
    assert_eq!(jan.partition.start(), jan1);
    assert_eq!(jan.generation, 2, "one publish for ten pieces");
    assert_eq!(feb.generation, 1);
    assert_eq!(jan.covered, vec![rest, r("2024-01-10", "2024-01-20")]);
    assert_eq!(feb.covered, vec![r("2024-02-01", "2024-02-03")]);
    assert_eq!(jan.sources.len(), 11, "REST + ten files: {:?}", jan.sources);
    assert!(jan.sources.contains(&vision("BTCUSDT-1m-day9.zip")));
    let all = r("2024-01-01", "2024-03-01");
    let got = concat(&k, &store.read(&k, all).await.unwrap());
    let want: Vec<RecordBatch> = [
        rest,
        r("2024-01-10", "2024-01-20"),
        r("2024-02-01", "2024-02-03"),
    ]
    .iter()
    .map(|w| klines(Market::Spot, DataKind::Klines, Interval::M1, *w))
    .collect();
    let want = arrow::compute::concat_batches(&want[0].schema(), &want).unwrap();
    assert_eq!(base(&got), want);
    let src = sources(&got);
    assert_eq!(src.iter().filter(|s| *s == "rest").count(), 2 * 1440);
    assert_eq!(src.iter().filter(|s| *s == "vision").count(), 12 * 1440);
}

async fn known_gaps_are_recorded_and_reported(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let day = r("2024-03-05", "2024-03-06");
    let outage = r("2024-03-05T10:00:00Z", "2024-03-05T10:30:00Z");
    let batch = klines_with(Market::Spot, DataKind::Klines, Interval::M1, day, |o| {
        outage.contains(o)
    });
    store.write(&k, day, &batch, vision("d.zip")).await.unwrap();
    let cov = store.coverage(&k, day).await.unwrap();
    assert_eq!(cov.covered, vec![day]);
    assert_eq!(cov.gaps, vec![outage]);
    assert!(cov.missing.is_empty());
    assert_eq!(
        concat(&k, &store.read(&k, day).await.unwrap()).num_rows(),
        1440 - 30
    );
    // Only the part of the gap inside the request is reported.
    let q = r("2024-03-05T10:20:00Z", "2024-03-05T11:00:00Z");
    assert_eq!(
        store.coverage(&k, q).await.unwrap().gaps,
        vec![r("2024-03-05T10:20:00Z", "2024-03-05T10:30:00Z")]
    );
    // Trailing missing candles are a gap too (the range was vouched complete).
    let tail = r("2024-03-06", "2024-03-07");
    let b = klines(
        Market::Spot,
        DataKind::Klines,
        Interval::M1,
        r("2024-03-06", "2024-03-06T23:00:00Z"),
    );
    store.write(&k, tail, &b, Provenance::Rest).await.unwrap();
    assert_eq!(
        store.coverage(&k, tail).await.unwrap().gaps,
        vec![r("2024-03-06T23:00:00Z", "2024-03-07")]
    );
    // Data that later appears for the gap replaces it.
    store
        .write(
            &k,
            outage,
            &klines(Market::Spot, DataKind::Klines, Interval::M1, outage),
            Provenance::Rest,
        )
        .await
        .unwrap();
    let cov = store.coverage(&k, day).await.unwrap();
    assert!(cov.gaps.is_empty(), "{cov:?}");
    assert_eq!(
        concat(&k, &store.read(&k, day).await.unwrap()).num_rows(),
        1440
    );
}

async fn open_candles_and_future_ranges_are_rejected(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let now = dsm::time::now_ms();
    let this_minute = Interval::M1.floor(now);
    // Includes the current, still open candle.
    let range = TimeRange::new(this_minute - 10 * MIN, this_minute + MIN).unwrap();
    let batch = klines(Market::Spot, DataKind::Klines, Interval::M1, range);
    let err = store
        .write(&k, range, &batch, Provenance::Rest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CacheError::OpenCandle { open_time } if open_time == this_minute),
        "{err}"
    );
    assert!(err.to_string().contains("never cached"), "{err}");
    // No rows, but the range claims the open candle's slot complete (it would become a "gap").
    let closed = TimeRange::new(this_minute - 10 * MIN, this_minute).unwrap();
    let rows = klines(Market::Spot, DataKind::Klines, Interval::M1, closed);
    let err = store
        .write(&k, range, &rows, Provenance::Rest)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::OpenCandle { .. }), "{err}");
    // A 1d candle of today is open until midnight even if its rows are not given.
    let kd = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::D1);
    let today = TimeRange::new(Interval::D1.floor(now) - DAY, Interval::D1.floor(now) + 1).unwrap();
    let rows = klines(
        Market::Spot,
        DataKind::Klines,
        Interval::D1,
        TimeRange::new(today.start(), today.start() + 1).unwrap(),
    );
    assert!(matches!(
        store
            .write(&kd, today, &rows, Provenance::Rest)
            .await
            .unwrap_err(),
        CacheError::OpenCandle { .. }
    ));
    // Funding: a complete range cannot end in the future.
    let kf = key(Market::UsdM, DataKind::FundingRate, "BTCUSDT");
    let fr = TimeRange::new(now - DAY, now + DAY).unwrap();
    let err = store
        .write(
            &kf,
            fr,
            &funding(TimeRange::new(now - DAY, now - 1).unwrap()),
            Provenance::Rest,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::NotYetComplete { .. }), "{err}");
    // The closed part alone is accepted.
    store
        .write(&k, closed, &rows_for(&k, closed), Provenance::Rest)
        .await
        .unwrap();
    let cov = store.coverage(&k, range).await.unwrap();
    assert_eq!(cov.covered, vec![closed]);
    assert_eq!(
        cov.missing,
        vec![TimeRange::new(this_minute, this_minute + MIN).unwrap()]
    );
}

fn rows_for(k: &Dataset, range: TimeRange) -> RecordBatch {
    klines(k.market, k.kind, k.interval.unwrap(), range)
}

async fn bad_rows_are_rejected_and_nothing_is_written(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let day = r("2024-01-02", "2024-01-03");
    let batch = rows_for(&k, day);
    // Vouching for less than the batch holds.
    let short = r("2024-01-02", "2024-01-02T12:00:00Z");
    let err = store
        .write(&k, short, &batch, Provenance::Rest)
        .await
        .unwrap_err();
    match &err {
        CacheError::OutOfRange { row, time, range } => {
            assert_eq!(
                (*row, *time, *range),
                (720, t("2024-01-02T12:00:00Z"), short)
            );
        }
        other => panic!("expected OutOfRange, got {other}"),
    }
    assert_eq!(err.category(), ErrorCategory::Local);
    // Unsorted rows.
    let rev = arrow::compute::take_record_batch(
        &batch,
        &arrow::array::UInt32Array::from_iter_values((0..1440u32).rev()),
    )
    .unwrap();
    assert!(matches!(
        store
            .write(&k, day, &rev, Provenance::Rest)
            .await
            .unwrap_err(),
        CacheError::NotSorted { row: 1, .. }
    ));
    // Duplicate rows.
    let dup =
        arrow::compute::concat_batches(&batch.schema(), [&batch.slice(0, 2), &batch.slice(1, 1)])
            .unwrap();
    assert!(matches!(
        store
            .write(&k, day, &dup, Provenance::Rest)
            .await
            .unwrap_err(),
        CacheError::NotSorted { row: 2, .. }
    ));
    // Wrong schema (output schema instead of the base schema, or another kind's).
    let tagged = with_source(&batch, k.market, k.kind, Source::Rest);
    assert!(matches!(
        store
            .write(&k, day, &tagged, Provenance::Rest)
            .await
            .unwrap_err(),
        CacheError::SchemaMismatch { .. }
    ));
    // An invalid key (funding on spot) is an input error.
    let bad = Dataset {
        market: Market::Spot,
        kind: DataKind::FundingRate,
        symbol: sym("BTCUSDT"),
        interval: None,
    };
    let err = store.coverage(&bad, day).await.unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Input);
    let err = dsm::Error::from(err);
    assert_eq!(err.category(), ErrorCategory::Input);
    assert!(store.coverage(&k, day).await.unwrap().covered.is_empty());
    assert!(store.list().await.unwrap().is_empty());
}

/// Stores the rows of `days` for `k`, as from one Vision file.
async fn write_days(store: &CacheStore, k: &Dataset, days: TimeRange) {
    store
        .write(k, days, &rows_for(k, days), vision("v.zip"))
        .await
        .unwrap();
}

/// The path of the store's only manifest (quarantined ones aside).
async fn only_manifest(be: &Backend) -> String {
    let manifests: Vec<String> = be
        .paths()
        .await
        .into_iter()
        .filter(|p| p.contains("manifest") && !p.starts_with("_quarantine/"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    manifests[0].clone()
}

/// The data file of the only partition of `k`.
async fn data_file(store: &CacheStore) -> String {
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 1);
    list[0].data_file.clone().unwrap()
}

async fn corrupt_data_file_is_detected(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let days = r("2024-01-01", "2024-01-08");
    write_days(&store, &k, days).await;
    let file = data_file(&store).await;
    let good = be.raw(&file).await;
    // 1. One flipped byte in the middle of the data.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    be.set_raw(&file, bad).await;
    let err = store.read(&k, days).await.unwrap_err();
    assert!(matches!(err, CacheError::CorruptData { .. }), "{err}");
    assert_eq!(dsm::Error::from(err).category(), ErrorCategory::Integrity);
    // A read that does not touch the damaged row group still works.
    let first_hour = r("2024-01-01", "2024-01-01T01:00:00Z");
    if let Ok(b) = store.read(&k, first_hour).await {
        assert_eq!(base(&concat(&k, &b)), rows_for(&k, first_hour));
    }
    let report = store.verify().await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].reason.contains("CRC-32"), "{report:?}");
    assert!(report.quarantined.contains(&file));
    // Its coverage is gone, so it is fetched again; nothing bad is ever returned.
    assert_eq!(store.coverage(&k, days).await.unwrap().missing, vec![days]);
    assert!(store.read(&k, days).await.unwrap().is_empty());
    assert!(
        be.paths()
            .await
            .iter()
            .any(|p| p.starts_with("_quarantine/") && p.ends_with(".parquet"))
    );
    assert!(store.verify().await.unwrap().is_clean());

    // 2. A truncated file.
    write_days(&store, &k, days).await;
    let file = data_file(&store).await;
    let good = be.raw(&file).await;
    be.set_raw(&file, good[..good.len() - 100].to_vec()).await;
    let err = store.read(&k, days).await.unwrap_err();
    assert!(matches!(err, CacheError::CorruptData { .. }), "{err}");
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(store.coverage(&k, days).await.unwrap().covered.is_empty());
    // The partition is usable again.
    write_days(&store, &k, days).await;
    assert_eq!(
        base(&concat(&k, &store.read(&k, days).await.unwrap())),
        rows_for(&k, days)
    );
}

async fn corrupt_manifest_is_detected(be: Backend) {
    let store = be.store();
    let k = kkey(Market::UsdM, DataKind::Klines, "ETHUSDT", Interval::M15);
    let days = r("2024-05-01", "2024-05-03");
    store
        .write(&k, days, &rows_for(&k, days), Provenance::Rest)
        .await
        .unwrap();
    let manifest = only_manifest(&be).await;
    let text = String::from_utf8(be.raw(&manifest).await).unwrap();
    // Claims more coverage than the file holds rows for: internally inconsistent.
    let tampered = text.replacen("\"rows\": 192", "\"rows\": 193", 1);
    assert_ne!(tampered, text);
    be.set_raw(&manifest, tampered.into_bytes()).await;
    let err = store.read(&k, days).await.unwrap_err();
    assert!(matches!(err, CacheError::CorruptManifest { .. }), "{err}");
    assert_eq!(err.category(), ErrorCategory::Integrity);
    // Coverage treats it as missing, so the data is fetched again.
    assert_eq!(store.coverage(&k, days).await.unwrap().missing, vec![days]);
    // Plain garbage.
    be.set_raw(&manifest, b"{not json".to_vec()).await;
    assert!(matches!(
        store.read(&k, days).await.unwrap_err(),
        CacheError::CorruptManifest { .. }
    ));
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].path.contains("manifest"));
    assert!(store.read(&k, days).await.unwrap().is_empty());
    // A new write replaces the partition cleanly.
    store
        .write(&k, days, &rows_for(&k, days), Provenance::Rest)
        .await
        .unwrap();
    assert_eq!(
        base(&concat(&k, &store.read(&k, days).await.unwrap())),
        rows_for(&k, days)
    );
    assert!(store.verify().await.unwrap().is_clean());
}

/// `read_covered` answers what `coverage` and `read` answer together, across partitions, and
/// treats a corrupt manifest as missing (to be fetched again) where `read` fails.
async fn read_covered_is_coverage_and_rows_in_one_pass(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "ETHUSDT", Interval::M5);
    let (a, c) = (r("2024-01-01", "2024-01-08"), r("2024-01-20", "2024-01-25"));
    for piece in [a, c] {
        store
            .write(&k, piece, &rows_for(&k, piece), vision("v.zip"))
            .await
            .unwrap();
    }
    // From inside the first piece into the next (empty) month partition.
    let range = r("2024-01-05", "2024-02-03");
    let (cov, rows) = store.read_covered(&k, range).await.unwrap();
    assert_eq!(cov, store.coverage(&k, range).await.unwrap());
    assert_eq!(cov.covered, vec![r("2024-01-05", "2024-01-08"), c]);
    assert_eq!(
        cov.missing,
        vec![r("2024-01-08", "2024-01-20"), r("2024-01-25", "2024-02-03")]
    );
    let want = arrow::compute::concat_batches(
        &rows_for(&k, a).schema(),
        &[rows_for(&k, r("2024-01-05", "2024-01-08")), rows_for(&k, c)],
    )
    .unwrap();
    assert_eq!(base(&concat(&k, &rows)), want);
    // Nothing cached in the range: nothing covered, no rows.
    let later = r("2024-01-10", "2024-01-15");
    let (cov, rows) = store.read_covered(&k, later).await.unwrap();
    assert_eq!((cov.covered, cov.missing), (vec![], vec![later]));
    assert!(rows.is_empty());

    // A corrupt manifest: its partition is missing, so it is fetched again, not an error.
    let manifest = only_manifest(&be).await;
    be.set_raw(&manifest, b"{not json".to_vec()).await;
    let (cov, rows) = store.read_covered(&k, range).await.unwrap();
    assert_eq!(cov.missing, vec![range]);
    assert!(rows.is_empty());
    assert!(matches!(
        store.read(&k, range).await.unwrap_err(),
        CacheError::CorruptManifest { .. }
    ));
}

/// Manifests written before whole-file CRC-32s record the data file's SHA-256 instead: such a
/// cache still reads, still verifies clean, and a damaged file is still caught by the SHA-256.
/// An edited manifest document, sealed with its own checksum again as dsm writes it.
fn reseal(m: &serde_json::Value) -> Vec<u8> {
    serde_json::from_value::<Manifest>(m.clone())
        .unwrap()
        .to_bytes()
}

/// Flips every bit of a real manifest, one at a time: each flipped manifest is either rejected
/// (its partition counts as missing, to be fetched again, and `verify` reports it) or still says
/// exactly what the file holds. Never an empty answer that looks covered.
async fn every_flipped_bit_of_a_manifest_is_caught(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::H1);
    let days = r("2024-02-27", "2024-03-01");
    write_days(&store, &k, days).await;
    let manifest = only_manifest(&be).await;
    let good = be.raw(&manifest).await;
    let want = rows_for(&k, days);
    let (mut rejected, mut kept) = (0, 0);
    for i in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[i / 8] ^= 1 << (i % 8);
        be.set_raw(&manifest, bad).await;
        let (cov, rows) = store.read_covered(&k, days).await.unwrap();
        if cov.covered.is_empty() {
            assert_eq!(cov.missing, vec![days], "bit {i}");
            assert!(rows.is_empty(), "bit {i}");
            assert!(
                matches!(
                    store.read(&k, days).await,
                    Err(CacheError::CorruptManifest { .. })
                ),
                "bit {i}"
            );
            rejected += 1;
        } else {
            // Only a change JSON ignores (white space) may pass, and then nothing changed.
            assert_eq!(cov.covered, vec![days], "bit {i}");
            assert!(cov.gaps.is_empty(), "bit {i}");
            assert_eq!(base(&concat(&k, &rows)), want, "bit {i}");
            kept += 1;
        }
    }
    assert!(
        rejected > good.len() * 7,
        "{rejected} rejected, {kept} kept"
    );
    // `verify` reports a flipped manifest, quarantines it, and the partition is fetched again.
    let mut bad = good.clone();
    let at = String::from_utf8_lossy(&good).find("\"max\"").unwrap() + 8;
    bad[at] ^= 0x01;
    be.set_raw(&manifest, bad).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].reason.contains("checksum"), "{report:?}");
    assert_eq!(store.coverage(&k, days).await.unwrap().missing, vec![days]);
}

/// `verify` cross-checks a manifest against its data file: a row group's bounds that disagree
/// with the file are found even when the manifest's own checksum was recomputed.
async fn verify_cross_checks_row_groups_against_the_file(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::H1);
    let days = r("2024-02-27", "2024-03-01");
    write_days(&store, &k, days).await;
    let manifest = only_manifest(&be).await;
    let mut m: serde_json::Value = serde_json::from_slice(&be.raw(&manifest).await).unwrap();
    let g = &mut m["file"]["row_groups"][0];
    let max = g["max"].as_i64().unwrap();
    g["max"] = (max + 3_600_000).into();
    be.set_raw(&manifest, reseal(&m)).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].reason.contains("row group 0"),
        "{report:?}"
    );
}

async fn manifests_with_a_sha256_still_check_their_file(be: Backend) {
    use sha2::Digest;
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let days = r("2024-02-27", "2024-03-01");
    write_days(&store, &k, days).await;
    let file = data_file(&store).await;
    let good = be.raw(&file).await;
    let manifest = only_manifest(&be).await;
    let mut m: serde_json::Value = serde_json::from_slice(&be.raw(&manifest).await).unwrap();
    let data = m["file"].as_object_mut().unwrap();
    assert!(
        data.remove("crc32").is_some(),
        "new manifests carry a CRC-32"
    );
    assert!(data.get("sha256").is_none(), "and no SHA-256");
    let sha = hex::encode(sha2::Sha256::digest(&good));
    data.insert("sha256".into(), sha.into());
    let old_style = reseal(&m);
    be.set_raw(&manifest, old_style.clone()).await;
    assert_eq!(
        base(&concat(&k, &store.read(&k, days).await.unwrap())),
        rows_for(&k, days)
    );
    assert!(store.verify().await.unwrap().is_clean());

    // One flipped byte just before the footer, in the page indexes: no row group's CRC-32 covers
    // it, so only the whole-file checksum can see it.
    let num = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let at = num(&m["file"]["footer"]["offset"]) - 1;
    let groups_end = m["file"]["row_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| num(&g["offset"]) + num(&g["len"]))
        .max()
        .unwrap();
    assert!(
        at >= groups_end,
        "{at} is inside a row group (they end at {groups_end})"
    );
    let mut bad = good.clone();
    bad[at] ^= 0x01;
    be.set_raw(&file, bad).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].reason.contains("SHA-256"), "{report:?}");
    assert!(store.read(&k, days).await.unwrap().is_empty());

    // A manifest with neither checksum is a problem too, not a pass.
    write_days(&store, &k, days).await;
    let manifest = only_manifest(&be).await;
    let mut m: serde_json::Value = serde_json::from_slice(&be.raw(&manifest).await).unwrap();
    m["file"].as_object_mut().unwrap().remove("crc32");
    be.set_raw(&manifest, reseal(&m)).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].reason.contains("no checksum"),
        "{report:?}"
    );
}

async fn rewrites_replace_files_and_keep_one_per_partition(be: Backend) {
    let store = be.store();
    let k = key(Market::Spot, DataKind::AggTrades, "BTCUSDT");
    let day = r("2024-06-01", "2024-06-02");
    let part = |paths: &[String]| {
        paths
            .iter()
            .filter(|p| {
                p.contains("year=2024/month=06/day=01")
                    && p.ends_with(".parquet")
                    && !p.starts_with("_quarantine")
            })
            .count()
    };
    for h in 0..6 {
        let w = TimeRange::new(
            day.start() + h * 4 * 3_600_000,
            day.start() + (h + 1) * 4 * 3_600_000,
        )
        .unwrap();
        store
            .write(&k, w, &trades(k.market, k.kind, w), Provenance::Rest)
            .await
            .unwrap();
        assert_eq!(part(&be.paths().await), 1);
    }
    // A Vision file for the whole day replaces the REST pieces.
    store
        .write(
            &k,
            day,
            &trades(k.market, k.kind, day),
            vision("BTCUSDT-aggTrades-2024-06-01.zip"),
        )
        .await
        .unwrap();
    let got = concat(&k, &store.read(&k, day).await.unwrap());
    assert_eq!(base(&got), trades(k.market, k.kind, day));
    assert!(sources(&got).iter().all(|s| s == "vision"));
    let info = &store.list().await.unwrap()[0];
    assert_eq!(
        info.sources,
        vec![vision("BTCUSDT-aggTrades-2024-06-01.zip")]
    );
    assert_eq!(info.generation, 7);
    assert_eq!(part(&be.paths().await), 1);
    let t0 = got
        .column(5)
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    assert_eq!(t0, day.start() * 1000 + 123);
}

async fn concurrent_tasks_fill_one_partition(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let mut tasks = tokio::task::JoinSet::new();
    for d in 0..8i64 {
        let (store, k) = (store.clone(), k.clone());
        tasks.spawn(async move {
            let w =
                TimeRange::new(t("2024-01-01") + d * DAY, t("2024-01-01") + (d + 1) * DAY).unwrap();
            store.write(&k, w, &rows_for(&k, w), Provenance::Rest).await
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.unwrap().unwrap();
    }
    let all = r("2024-01-01", "2024-01-09");
    assert_eq!(store.coverage(&k, all).await.unwrap().covered, vec![all]);
    assert_eq!(
        base(&concat(&k, &store.read(&k, all).await.unwrap())),
        rows_for(&k, all)
    );
    assert!(store.verify().await.unwrap().is_clean());
}

async fn list_prune_and_size(be: Backend) {
    let store = be.store();
    let a = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::H1);
    let b = kkey(Market::UsdM, DataKind::Klines, "ETHUSDT", Interval::M1);
    let ra = r("2023-12-01", "2024-02-01");
    let rb = r("2024-03-01", "2024-03-03");
    store
        .write(&a, ra, &rows_for(&a, ra), Provenance::Rest)
        .await
        .unwrap();
    store
        .write(&b, rb, &rows_for(&b, rb), Provenance::Rest)
        .await
        .unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let total: u64 = list.iter().map(|p| p.bytes).sum();
    assert!(total > 0);
    assert!(store.size().await.unwrap() >= total);
    assert!(
        list.iter()
            .any(|p| p.path == "klines-v1/market=spot/symbol=BTCUSDT/interval=1h/year=2023")
    );
    // Nothing selected: nothing removed.
    assert_eq!(store.prune(&PruneFilter::default()).await.unwrap().files, 0);
    // Data ending before 2024-01-01: the 2023 partition of BTCUSDT only.
    let rep = store
        .prune(&PruneFilter {
            older_than: Some(t("2024-01-01")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rep.files, 2, "{rep:?}"); // data file + manifest
    assert!(rep.bytes > 0);
    assert_eq!(
        store.coverage(&a, ra).await.unwrap().missing,
        vec![r("2023-12-01", "2024-01-01")]
    );
    let rep = store
        .prune(&PruneFilter {
            market: Some(Market::UsdM),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rep.files, 2);
    assert!(store.coverage(&b, rb).await.unwrap().covered.is_empty());
    assert_eq!(store.list().await.unwrap().len(), 1);
    store
        .prune(&PruneFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(store.list().await.unwrap().is_empty());
    assert!(
        store.size().await.unwrap() < 200,
        "only the cache tag may remain"
    );
}

// ---------------------------------------------------------------------------------------------
// Local back-end only: outside readers, temporaries, crashes and processes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn files_are_plain_hive_partitioned_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(dir.path()).unwrap();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let days = r("2024-01-30", "2024-02-02");
    write_days(&store, &k, days).await;
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 2);
    let mut rows = Vec::new();
    for p in &list {
        let f = p.data_file.as_ref().unwrap();
        assert!(
            f.starts_with("klines-v1/market=spot/symbol=BTCUSDT/interval=1m/year=2024/month=0"),
            "{f}"
        );
        let file = std::fs::File::open(dir.path().join(f)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            rows.push(b.unwrap());
        }
    }
    let got = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    assert_eq!(got.schema().fields().len(), 12);
    assert_eq!(got.schema().field(11).name(), "source");
    assert_eq!(base(&got), rows_for(&k, days));
    assert!(sources(&got).iter().all(|s| s == "vision"));
    assert!(
        dir.path()
            .join(&list[1].path)
            .join("_manifest.json")
            .is_file()
    );
}

#[tokio::test]
async fn stray_temporaries_are_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(dir.path()).unwrap();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let day = r("2024-01-01", "2024-01-02");
    store
        .write(&k, day, &rows_for(&k, day), Provenance::Rest)
        .await
        .unwrap();
    let pdir = dir.path().join(&store.list().await.unwrap()[0].path);
    std::fs::write(pdir.join(".tmp-0123-part-x.parquet"), b"half a file").unwrap();
    std::fs::write(pdir.join("part-00000009-dead.parquet"), b"orphan").unwrap();
    let store = CacheStore::open(dir.path()).unwrap();
    assert!(!pdir.join(".tmp-0123-part-x.parquet").exists());
    let rep = store.verify().await.unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    // The temporary `open` removed and the orphan `verify` removed: the report counts both.
    assert_eq!(rep.removed, 2);
    assert_eq!(store.verify().await.unwrap().removed, 0, "counted once");
    assert_eq!(
        base(&concat(&k, &store.read(&k, day).await.unwrap())),
        rows_for(&k, day)
    );
}

const CHILD_ENV: &str = "DSM_CACHE_TEST_CHILD";

/// A child process that is killed and reaped when dropped (a failing test leaves no writer behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(mode: &str) -> Child {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cache::cache_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env(CHILD_ENV, mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    Child(child)
}

/// The writer process of the crash and multi-process tests (does nothing when run normally).
#[test]
#[ignore = "child process of the crash and multi-process tests; runs only with DSM_CACHE_TEST_CHILD"]
fn cache_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let parts: Vec<&str> = mode.splitn(3, ':').collect();
        let store = CacheStore::open(parts[2]).unwrap();
        let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
        match parts[0] {
            // Write random 1-3 day ranges of Jan-Feb 2024 until killed (at most 20 s).
            "crash" => {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut seed: u64 = std::process::id() as u64 * 2_654_435_761;
                while Instant::now() < deadline {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let d = (seed >> 33) as i64 % 58;
                    let len = 1 + (seed >> 20) as i64 % 3;
                    let w = TimeRange::new(
                        t("2024-01-01") + d * DAY,
                        t("2024-01-01") + (d + len) * DAY,
                    )
                    .unwrap();
                    store
                        .write(&k, w, &rows_for(&k, w), Provenance::Rest)
                        .await
                        .unwrap();
                }
            }
            // Fill the days of January with the given parity, one write per day.
            "fill" => {
                let parity: i64 = parts[1].parse().unwrap();
                for d in (0..31).filter(|d| d % 2 == parity) {
                    let w =
                        TimeRange::new(t("2024-01-01") + d * DAY, t("2024-01-01") + (d + 1) * DAY)
                            .unwrap();
                    store
                        .write(&k, w, &rows_for(&k, w), Provenance::Rest)
                        .await
                        .unwrap();
                }
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

/// Every covered minute has exactly the expected candle, and nothing outside coverage is returned.
async fn check_consistent(store: &CacheStore, k: &Dataset, range: TimeRange) -> Vec<TimeRange> {
    let cov = store.coverage(k, range).await.unwrap();
    let got = concat(k, &store.read(k, range).await.unwrap());
    let times = open_times(&got);
    for c in &cov.covered {
        let a = times.partition_point(|x| *x < c.start());
        let z = times.partition_point(|x| *x < c.end());
        assert_eq!(base(&got.slice(a, z - a)), rows_for(k, *c), "covered {c}");
    }
    cov.covered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writers_never_tear_or_lose_data() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().into_owned();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let all = r("2024-01-01", "2024-03-01");
    {
        let store = CacheStore::open(&root).unwrap();
        let base_day = r("2024-01-15", "2024-01-16");
        store
            .write(&k, base_day, &rows_for(&k, base_day), vision("base.zip"))
            .await
            .unwrap();
    }
    let mut before = vec![r("2024-01-15", "2024-01-16")];
    let started = Instant::now();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..30 {
        let mut child = spawn_child(&format!("crash:0:{root}"));
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1442695040888963407);
        let delay = 30 + (rng >> 40) % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(Pid::from_raw(child.0.id() as i32), Signal::SIGKILL).unwrap();
        child.0.wait().unwrap();
        let store = CacheStore::open(&root).unwrap();
        let tmp_left = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains("/.tmp-"))
            .count();
        assert_eq!(
            tmp_left, 0,
            "iteration {i}: stray temporaries survived open"
        );
        let covered = check_consistent(&store, &k, all).await;
        for b in &before {
            assert!(
                covered.iter().any(|c| c.covers(b)),
                "iteration {i}: lost {b}, now {covered:?}"
            );
        }
        let rep = store.verify().await.unwrap();
        assert!(rep.is_clean(), "iteration {i}: {rep:?}");
        before = covered;
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    assert!(
        before.len() > 1 || before[0] != r("2024-01-15", "2024-01-16"),
        "the writer never published anything"
    );
    // The partition is usable: fill everything and read it back.
    let store = CacheStore::open(&root).unwrap();
    store
        .write(&k, all, &rows_for(&k, all), Provenance::Rest)
        .await
        .unwrap();
    assert_eq!(check_consistent(&store, &k, all).await, vec![all]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fill_one_partition_while_readers_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().into_owned();
    let store = CacheStore::open(&root).unwrap();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let jan = r("2024-01-01", "2024-02-01");
    let mut a = spawn_child(&format!("fill:0:{root}"));
    let mut b = spawn_child(&format!("fill:1:{root}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reads = 0;
    let (mut sa, mut sb) = (None, None);
    while sa.is_none() || sb.is_none() {
        assert!(Instant::now() < deadline, "writers did not finish");
        check_consistent(&store, &k, jan).await;
        reads += 1;
        sa = sa.or(a.0.try_wait().unwrap());
        sb = sb.or(b.0.try_wait().unwrap());
    }
    assert!(sa.unwrap().success() && sb.unwrap().success());
    assert!(reads > 1);
    assert_eq!(check_consistent(&store, &k, jan).await, vec![jan]);
    assert_eq!(
        concat(&k, &store.read(&k, jan).await.unwrap()).num_rows(),
        31 * 1440
    );
    assert!(store.verify().await.unwrap().is_clean());
}

/// What a Hive-style reader (pyarrow, polars, DuckDB, Spark) takes for data: `*.parquet` files
/// none of whose path components starts with `_` or `.`.
fn seen_by_other_engines(paths: &[String]) -> Vec<String> {
    let mut v: Vec<String> = paths
        .iter()
        .filter(|p| {
            p.ends_with(".parquet")
                && !p
                    .split('/')
                    .any(|c| c.starts_with('_') || c.starts_with('.'))
        })
        .cloned()
        .collect();
    v.sort();
    v
}

/// After rewrites, a damaged file found by `verify` and a partition written anew, what another
/// engine reads is exactly the current data files: no manifest, superseded file or quarantined
/// file among them.
async fn other_engines_see_only_current_data(be: Backend) {
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let current = |list: Vec<dsm::cache::PartitionInfo>| {
        let mut v: Vec<String> = list.into_iter().filter_map(|p| p.data_file).collect();
        v.sort();
        v
    };
    for days in [
        r("2024-01-01", "2024-01-03"),
        r("2024-01-03", "2024-01-05"),
        r("2024-01-30", "2024-02-02"),
    ] {
        write_days(&store, &k, days).await;
        assert_eq!(
            seen_by_other_engines(&be.paths().await),
            current(store.list().await.unwrap())
        );
    }
    // January's file is damaged; verify quarantines it (with its manifest) and February stays.
    let january = store.list().await.unwrap()[0].data_file.clone().unwrap();
    let mut bad = be.raw(&january).await;
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    be.set_raw(&january, bad).await;
    assert!(!store.verify().await.unwrap().is_clean());
    let paths = be.paths().await;
    assert!(
        paths.iter().any(|p| p.starts_with("_quarantine/")),
        "{paths:?}"
    );
    assert_eq!(
        seen_by_other_engines(&paths),
        current(store.list().await.unwrap())
    );
    assert_eq!(store.list().await.unwrap().len(), 1);
    // Every manifest is hidden from them too.
    assert!(
        paths
            .iter()
            .filter(|p| p.contains("manifest"))
            .all(|p| p.ends_with("/_manifest.json") || p.starts_with("_quarantine/")),
        "{paths:?}"
    );
}

/// A cache written before manifests were hidden from other engines (`manifest.json`) is read as
/// it is, and its next write moves the partition to `_manifest.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_with_the_old_manifest_name_is_read_and_migrated() {
    let be = Backend::local();
    let Backend::Local(dir) = &be else {
        unreachable!()
    };
    let store = be.store();
    let k = kkey(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1);
    let days = r("2024-01-01", "2024-01-03");
    write_days(&store, &k, days).await;
    let manifest = only_manifest(&be).await;
    let old = manifest.replace("_manifest.json", "manifest.json");
    std::fs::rename(dir.path().join(&manifest), dir.path().join(&old)).unwrap();
    assert_eq!(store.coverage(&k, days).await.unwrap().covered, vec![days]);
    assert_eq!(
        base(&concat(&k, &store.read(&k, days).await.unwrap())),
        rows_for(&k, days)
    );
    assert!(store.verify().await.unwrap().is_clean());
    let more = r("2024-01-03", "2024-01-04");
    write_days(&store, &k, more).await;
    assert_eq!(only_manifest(&be).await, manifest);
    assert_eq!(
        store
            .coverage(&k, r("2024-01-01", "2024-01-04"))
            .await
            .unwrap()
            .covered,
        vec![r("2024-01-01", "2024-01-04")]
    );
}

/// The S3 server the shared-cache tests run against enforces what dsm's publishing relies on:
/// `If-None-Match: *` refuses to replace an object, and `If-Match` refuses a stale ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_s3_server_enforces_conditional_writes() {
    use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
    let Some(url) = crate::support::s3_place("conditional") else {
        return;
    };
    let raw = crate::support::s3_raw(&url);
    let p = object_store::path::Path::parse("x/_manifest.json").unwrap();
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let first = raw.put_opts(&p, "one".into(), create()).await.unwrap();
    let again = raw.put_opts(&p, "two".into(), create()).await.unwrap_err();
    assert!(
        matches!(again, object_store::Error::AlreadyExists { .. }),
        "{again}"
    );
    let v1 = UpdateVersion {
        e_tag: first.e_tag,
        version: first.version,
    };
    let update = |v: UpdateVersion| PutOptions {
        mode: PutMode::Update(v),
        ..Default::default()
    };
    raw.put_opts(&p, "three".into(), update(v1.clone()))
        .await
        .unwrap();
    let stale = raw
        .put_opts(&p, "four".into(), update(v1))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, object_store::Error::Precondition { .. }),
        "{stale}"
    );
    let body = raw.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"three");
}
