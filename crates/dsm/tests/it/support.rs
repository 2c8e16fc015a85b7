//! Set-up shared by the integration tests: time and symbol helpers, and the mapping of dsm's
//! market and kind names onto the emulator's.

use dsm::{DataKind, Market, Symbol, TimeRange};
use dsm_emulator::KlineKind;

/// A minute, an hour and a day in milliseconds.
pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// An instant written as dsm reads it (`2024-01-01`, RFC 3339, epoch ms), in ms.
pub fn t(s: &str) -> i64 {
    dsm::time::parse_instant(s).expect("valid time")
}

/// `[a, b)` in ms.
pub fn range(a: i64, b: i64) -> TimeRange {
    TimeRange::new(a, b).expect("valid range")
}

/// A symbol.
pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("valid symbol")
}

/// The emulator's name of `m`.
pub fn emu_market(m: Market) -> dsm_emulator::Market {
    match m {
        Market::Spot => dsm_emulator::Market::Spot,
        Market::UsdM => dsm_emulator::Market::Um,
        Market::CoinM => dsm_emulator::Market::Cm,
        Market::Option => dsm_emulator::Market::Option,
    }
}

/// The emulator's name of a kline-class `k`.
pub fn emu_kind(k: DataKind) -> KlineKind {
    match k {
        DataKind::Klines => KlineKind::Klines,
        DataKind::MarkPriceKlines => KlineKind::MarkPrice,
        DataKind::IndexPriceKlines => KlineKind::IndexPrice,
        DataKind::PremiumIndexKlines => KlineKind::PremiumIndex,
        other => panic!("{other} is not a kline kind"),
    }
}

/// A fresh, empty place in the test S3 server: `s3://BUCKET/<name>-<random>`. The server is the
/// one `scripts/test.sh` starts (SeaweedFS on loopback); it names its bucket in `DSM_TEST_S3_URL`
/// and its endpoint and credentials in the standard `AWS_*` variables. `None` (with a note on
/// stderr) when no server was started, unless `DSM_REQUIRE_S3` says one must be there.
pub fn s3_place(name: &str) -> Option<String> {
    match std::env::var("DSM_TEST_S3_URL") {
        Ok(base) if !base.is_empty() => Some(format!(
            "{}/{name}-{:016x}",
            base.trim_end_matches('/'),
            rand::random::<u64>()
        )),
        _ => {
            assert!(
                std::env::var_os("DSM_REQUIRE_S3").is_none(),
                "DSM_REQUIRE_S3 is set but DSM_TEST_S3_URL is not: the S3 server did not start"
            );
            eprintln!(
                "skipped: no S3 server (DSM_TEST_S3_URL unset); `bash scripts/test.sh` starts one"
            );
            None
        }
    }
}

/// Direct access to the objects under an `s3://BUCKET/PREFIX` place, as other engines see them.
pub fn s3_raw(url: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
    let rest = url.strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    std::sync::Arc::new(object_store::prefix::PrefixStore::new(
        s3,
        object_store::path::Path::parse(prefix).unwrap(),
    ))
}
