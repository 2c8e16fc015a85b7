//! Bad input, named in the market's vocabulary: rejected before any network call.

use super::{DataKind, Interval, Market};
use crate::time::TimeError;

/// The markets that offer `kind`, for messages.
fn offered_on(kind: DataKind) -> String {
    let markets: Vec<&str> = Market::ALL
        .into_iter()
        .filter(|m| m.supports_kind(kind))
        .map(Market::as_str)
        .collect();
    markets.join(", ")
}

/// Bad input: rejected before any network call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Unknown market name.
    #[error("unknown market {0:?}: use spot, um (USD-M futures), cm (COIN-M futures) or option")]
    UnknownMarket(String),
    /// Unknown data kind.
    #[error(
        "unknown data kind {0:?}: use klines, mark-klines, index-klines, premium-klines, funding, aggtrades, trades, metrics, book-depth, book-ticker, liquidations, bvol-index or eoh-summary"
    )]
    UnknownKind(String),
    /// Unknown interval name.
    #[error(
        "unknown interval {0:?}: use 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M (1mo) — names are case-sensitive"
    )]
    UnknownInterval(String),
    /// The interval exists but not on this market.
    #[error("interval {interval} is not offered on {market}: 1s klines exist on spot only")]
    IntervalNotOnMarket {
        /// The interval asked for.
        interval: Interval,
        /// The market asked for.
        market: Market,
    },
    /// The kind exists but not on this market.
    #[error("{kind} data is not offered on {market}: it exists on {}", offered_on(*kind))]
    KindNotOnMarket {
        /// The kind asked for.
        kind: DataKind,
        /// The market asked for.
        market: Market,
    },
    /// A kline-class kind was asked for without an interval.
    #[error("{kind} needs an interval, e.g. 1m or 1h")]
    MissingInterval {
        /// The kind asked for.
        kind: DataKind,
    },
    /// An interval was given for a kind that has none.
    #[error("{kind} has no interval (got {interval}); leave the interval out")]
    UnexpectedInterval {
        /// The kind asked for.
        kind: DataKind,
        /// The interval given.
        interval: Interval,
    },
    /// The symbol is not a valid symbol at all.
    #[error(
        "invalid symbol {symbol:?}: {reason}; symbols are upper-case A-Z, 0-9 and _, like BTCUSDT"
    )]
    InvalidSymbol {
        /// The text given.
        symbol: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A lower-case symbol.
    #[error("invalid symbol {symbol:?}: symbols are upper-case; did you mean {suggestion}?")]
    LowercaseSymbol {
        /// The text given.
        symbol: String,
        /// The upper-case form.
        suggestion: String,
    },
    /// The symbol does not have the form used on that market.
    #[error("symbol {symbol} does not look like a {market} symbol: expected {expected}")]
    SymbolNotOnMarket {
        /// The text given.
        symbol: String,
        /// The market asked for.
        market: Market,
        /// The expected form.
        expected: &'static str,
    },
    /// A time or time range that is not valid.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// Some other invalid setting.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
