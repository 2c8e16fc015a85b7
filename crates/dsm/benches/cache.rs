//! Cache store benchmarks: a year of 1m candles (525,600 rows) written and read back, for each
//! compression codec and column encoding. Results and the choices they led to are in
//! BENCHMARKS.md ("Cache").
//!
//! Run: `cargo bench -p dsm --bench cache` (add a filter such as `read_year` to run a subset;
//! `DSM_BENCH_VARIANTS=snappy_plain,snappy_dict` limits the read benchmarks to those variants).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use dsm::cache::{CacheCompression, CacheEncoding, CacheStore, Dataset, Provenance, WriteOptions};
use dsm::schema::{KlineBuilder, KlineRecord};
use dsm::{DataKind, Interval, Market, Symbol, TimeRange};

const YEAR_START: i64 = 1_672_531_200_000; // 2023-01-01
const YEAR_END: i64 = 1_704_067_200_000; // 2024-01-01

/// A year of 1m candles with a random-walk price (realistic entropy for the codecs).
fn year_of_candles() -> arrow::array::RecordBatch {
    let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, 525_600);
    let mut price = 16_500.0f64;
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut t = YEAR_START;
    while t < YEAR_END {
        let open = price;
        let close = ((open * (1.0 + (next() - 0.5) * 0.002)) * 100.0).round() / 100.0;
        let high = open.max(close) + (next() * 5.0 * 100.0).round() / 100.0;
        let low = open.min(close) - (next() * 5.0 * 100.0).round() / 100.0;
        let volume = (next() * 50.0 * 1e5).round() / 1e5;
        let taker = (volume * next() * 1e5).round() / 1e5;
        b.push(&KlineRecord {
            open_time: t,
            open,
            high,
            low,
            close,
            volume,
            close_time: t + 59_999,
            quote_volume: volume * close,
            count: (next() * 2000.0) as i64,
            taker_buy_volume: taker,
            taker_buy_quote_volume: taker * close,
        })
        .unwrap();
        price = close;
        t += 60_000;
    }
    b.finish()
}

fn key() -> Dataset {
    Dataset::klines(Market::Spot, Symbol::new("BTCUSDT").unwrap(), Interval::M1)
}

fn year() -> TimeRange {
    TimeRange::new(YEAR_START, YEAR_END).unwrap()
}

struct Setup {
    name: String,
    _dir: tempfile::TempDir,
    store: CacheStore,
}

#[allow(clippy::print_stderr)]
fn setups(rt: &tokio::runtime::Runtime) -> Vec<Setup> {
    let batch = year_of_candles();
    use CacheCompression as C;
    use CacheEncoding as E;
    // The default (no codec, delta integers) first; then the other encodings and codecs.
    // Row-group sizes were settled earlier (BENCHMARKS.md): 8,192 throughout.
    let variants = [
        ("none_delta", C::None, E::DeltaIntegers),
        ("snappy_plain", C::Snappy, E::Plain),
        ("snappy_dict", C::Snappy, E::Dictionary),
        ("snappy_delta", C::Snappy, E::DeltaIntegers),
        ("none_plain", C::None, E::Plain),
        ("zstd1_plain", C::Zstd1, E::Plain),
    ];
    let only = std::env::var("DSM_BENCH_VARIANTS").ok();
    let mut out = Vec::new();
    for (name, compression, encoding) in variants {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|v| v == name))
        {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path())
            .unwrap()
            .with_write_options(WriteOptions {
                compression,
                encoding,
                ..WriteOptions::default()
            });
        let started = Instant::now();
        rt.block_on(store.write(&key(), year(), &batch, Provenance::Rest))
            .unwrap();
        let took = started.elapsed();
        let bytes = rt.block_on(store.size()).unwrap();
        eprintln!(
            "cache setup {name}: wrote 525,600 rows in {took:?}, {:.2} MB on disk",
            bytes as f64 / 1e6
        );
        out.push(Setup {
            name: name.into(),
            _dir: dir,
            store,
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batch = year_of_candles();

    let mut g = c.benchmark_group("cache_write_year_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, compression) in [
        ("zstd1", CacheCompression::Zstd1),
        ("snappy", CacheCompression::Snappy),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_with_setup(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    let store =
                        CacheStore::open(dir.path())
                            .unwrap()
                            .with_write_options(WriteOptions {
                                compression,
                                ..WriteOptions::default()
                            });
                    (dir, store)
                },
                |(dir, store)| {
                    rt.block_on(store.write(&key(), year(), &batch, Provenance::Rest))
                        .unwrap();
                    drop(dir);
                },
            )
        });
    }
    g.finish();

    let setups = setups(&rt);
    let mut g = c.benchmark_group("cache_read_year_1m");
    g.sample_size(20).measurement_time(Duration::from_secs(6));
    for s in &setups {
        g.bench_function(BenchmarkId::from_parameter(&s.name), |b| {
            // The answer is freed outside the timing, as a caller frees it after using it.
            b.iter_with_large_drop(|| {
                let v = rt.block_on(s.store.read(&key(), year())).unwrap();
                assert_eq!(v.iter().map(|b| b.num_rows()).sum::<usize>(), 525_600);
                v
            })
        });
    }
    g.finish();

    // The same read with each answer dropped before the next one (outside the timing), as a
    // program reading in a loop does. With glibc's defaults this is no faster than keeping them:
    // glibc gives the freed memory back to the kernel (BENCHMARKS.md, "Cache", session 5).
    let mut g = c.benchmark_group("cache_read_year_1m_answer_dropped");
    g.sample_size(20).measurement_time(Duration::from_secs(6));
    for s in &setups {
        g.bench_function(BenchmarkId::from_parameter(&s.name), |b| {
            b.iter_batched(
                || (),
                |()| {
                    let v = rt.block_on(s.store.read(&key(), year())).unwrap();
                    assert_eq!(v.iter().map(|b| b.num_rows()).sum::<usize>(), 525_600);
                    v
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let day = TimeRange::new(1_686_700_800_000, 1_686_787_200_000).unwrap(); // 2023-06-14
    let mut g = c.benchmark_group("cache_read_day_1m");
    for s in &setups {
        g.bench_function(BenchmarkId::from_parameter(&s.name), |b| {
            b.iter(|| {
                let v = rt.block_on(s.store.read(&key(), day)).unwrap();
                assert_eq!(v.iter().map(|b| b.num_rows()).sum::<usize>(), 1440);
                v
            })
        });
    }
    g.finish();

    if let Some(s) = setups.first() {
        c.bench_function("cache_coverage_year_1m", |b| {
            b.iter(|| rt.block_on(s.store.coverage(&key(), year())).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
