//! # dsm — a Data Source Manager for Binance market data
//!
//! dsm answers one kind of request — "BTCUSDT, spot, 1m candles, from A to B" — from the cheapest
//! source that is right: its local cache, the Binance Vision archive, or the Binance REST API, and
//! returns one sorted, de-duplicated, gap-reported result as Arrow record batches.
//!
//! Ranges are half-open `[start, end)` on open time, UTC. Bad input fails before any network call:
//!
//! ```
//! use dsm::{DataKind, Interval, Market, Symbol, TimeRange};
//!
//! let market: Market = "spot".parse()?;
//! let interval: Interval = "1m".parse()?;
//! market.check(DataKind::Klines, Some(interval))?;
//! let symbol = Symbol::for_market("BTCUSDT", market, DataKind::Klines)?;
//! let range = TimeRange::new(
//!     dsm::time::parse_instant("2024-01-01")?,
//!     dsm::time::parse_instant("2024-01-02")?,
//! )?;
//! assert_eq!(interval.count_in(range.start(), range.end()), 1440);
//! assert_eq!(symbol.as_str(), "BTCUSDT");
//!
//! // `1s` candles exist on spot only:
//! assert!(Market::UsdM.check(DataKind::Klines, Some(Interval::S1)).is_err());
//! # Ok::<(), dsm::InputError>(())
//! ```

#![warn(missing_docs)]

pub mod cache;
mod category;
pub mod error;
mod http;
pub use http::Pace;
pub mod manager;
pub mod market;
pub mod output;
pub mod report;
pub mod rest;
pub mod schema;
pub mod time;
pub mod vision;

pub use category::ErrorCategory;
pub use error::{Error, IncompleteError, Result, UnavailableError};
pub use manager::{
    BlockingManager, DataSourceManager, ManagerConfig, Request, Response, SourcePolicy,
};
pub use market::{DataKind, Dataset, InputError, Interval, Market, Symbol};
pub use time::TimeRange;
