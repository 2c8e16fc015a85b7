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
