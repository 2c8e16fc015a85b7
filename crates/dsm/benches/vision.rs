//! Vision parse pipeline: verify (SHA-256) + inflate + parse to Arrow, on realistic files generated
//! by the emulator (a month of 1m klines, days of 1s klines, a month of book ticker, a day of book
//! depth and of metrics), and end-to-end
//! download + verify + parse from the emulator.
//!
//! Breakdown rows: `sha256_only`, `inflate_only` (zip crate reader), `inflate_raw` (flate2/zlib-rs
//! streaming into a 256 KiB buffer), `inflate_libdeflate` (whole entry at once, what `parse_zip`
//! uses), `crc32_only` (over the inflated CSV).
//!
//! Run: `cargo bench -p dsm --bench vision`
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dsm::vision::{FileKey, FileOutcome, VisionClient, VisionConfig, parse_checksum, parse_zip};
use dsm_emulator::{Emulator, EmulatorConfig};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const FILES: &[&str] = &[
    "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip",
    "data/spot/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-01-01.zip",
    "data/spot/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2025-06-01.zip",
    // Archive tables: read by header name, text times, sorted and de-duplicated at the end.
    "data/futures/um/monthly/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-01.zip",
    "data/futures/cm/daily/bookDepth/BTCUSD_PERP/BTCUSD_PERP-bookDepth-2024-01-01.zip",
    "data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-01.zip",
];

struct Sample {
    name: &'static str,
    key: FileKey,
    zip: Vec<u8>,
    checksum: Vec<u8>,
    rows: u64,
}

fn verify_and_parse(s: &Sample) -> usize {
    let expected = parse_checksum(&s.checksum).unwrap();
    let actual = hex::encode(Sha256::digest(&s.zip));
    assert_eq!(expected, actual);
    parse_zip(&s.zip, &s.key).unwrap().num_rows()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(async {
        Emulator::start(
            EmulatorConfig::default().with_now(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
        )
        .await
        .unwrap()
    });
    let http = reqwest::Client::new();
    let samples: Vec<Sample> = FILES
        .iter()
        .map(|path| {
            let key = FileKey::from_path(path).unwrap();
            let url = key.url(&emu.base_url());
            let (zip, checksum) = rt.block_on(async {
                let z = http.get(&url).send().await.unwrap().bytes().await.unwrap();
                let c = http
                    .get(format!("{url}.CHECKSUM"))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                (z.to_vec(), c.to_vec())
            });
            let name = path.rsplit('/').next().unwrap();
            let s = Sample {
                name,
                key,
                zip,
                checksum,
                rows: 0,
            };
            let rows = verify_and_parse(&s) as u64;
            println!("{name}: {} zip bytes, {rows} rows", s.zip.len());
            Sample { rows, ..s }
        })
        .collect();

    let mut g = c.benchmark_group("vision_parse");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for s in &samples {
        g.throughput(Throughput::Elements(s.rows));
        g.bench_function(format!("sha256_only/{}", s.name), |b| {
            b.iter(|| Sha256::digest(&s.zip))
        });
        g.bench_function(format!("inflate_only/{}", s.name), |b| {
            b.iter(|| {
                let mut z = zip::ZipArchive::new(std::io::Cursor::new(&s.zip)).unwrap();
                let mut e = z.by_index(0).unwrap();
                std::io::copy(&mut e, &mut std::io::sink()).unwrap()
            })
        });
        // The raw inflate floor: the entry's deflate stream straight from memory through
        // flate2/zlib-rs into a reused 256 KiB buffer, no zip reader, no CRC.
        let (start, len) = {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(&s.zip)).unwrap();
            let e = z.by_index_raw(0).unwrap();
            (
                e.data_start().unwrap() as usize,
                e.compressed_size() as usize,
            )
        };
        let deflated = &s.zip[start..start + len];
        let mut out = vec![0u8; 256 * 1024];
        g.bench_function(format!("inflate_raw/{}", s.name), |b| {
            b.iter(|| {
                let mut d = flate2::Decompress::new(false);
                loop {
                    let i = d.total_in() as usize;
                    let st = d
                        .decompress(&deflated[i..], &mut out, flate2::FlushDecompress::None)
                        .unwrap();
                    if st == flate2::Status::StreamEnd {
                        break d.total_out();
                    }
                }
            })
        });
        // What the pipeline uses now: the whole entry inflated at once by libdeflate into a
        // buffer of its declared size (allocated per file, as `parse_zip` does), then CRC-32.
        let size = {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(&s.zip)).unwrap();
            z.by_index_raw(0).unwrap().size() as usize
        };
        g.bench_function(format!("inflate_libdeflate/{}", s.name), |b| {
            b.iter(|| {
                let mut text = vec![0u8; size];
                let n = libdeflater::Decompressor::new()
                    .deflate_decompress(deflated, &mut text)
                    .unwrap();
                assert_eq!(n, size);
                text
            })
        });
        let text = {
            let mut t = vec![0u8; size];
            libdeflater::Decompressor::new()
                .deflate_decompress(deflated, &mut t)
                .unwrap();
            t
        };
        g.bench_function(format!("crc32_only/{}", s.name), |b| {
            b.iter(|| crc32fast::hash(&text))
        });
        g.bench_function(format!("verify_inflate_parse/{}", s.name), |b| {
            b.iter(|| verify_and_parse(s))
        });
    }
    g.finish();

    let client = VisionClient::new(VisionConfig::for_base(&emu.base_url())).unwrap();
    let mut g = c.benchmark_group("vision_download");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let s = &samples[0];
    g.throughput(Throughput::Elements(s.rows));
    g.bench_function(format!("fetch/{}", s.name), |b| {
        b.iter(|| {
            rt.block_on(async {
                match client.fetch(&s.key, &CancellationToken::new()).await {
                    Ok(FileOutcome::Data(d)) => d.batch.num_rows(),
                    other => panic!("{other:?}"),
                }
            })
        })
    });
    g.finish();
    rt.block_on(emu.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
