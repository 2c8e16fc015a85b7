//! What a caller asks: a [`Request`] (dataset, range, options), the [`SourcePolicy`] it may use,
//! and the [`Progress`] it can follow.

use std::fmt;
use std::sync::Arc;

use crate::error::InputError;
use crate::market::{DataKind, Dataset, Interval, Market, Symbol};
use crate::time::TimeRange;

/// Which sources a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePolicy {
    /// Cache first, then Vision for what is old enough, then REST (the default).
    #[default]
    Auto,
    /// Offline: the cache only, no network call at all; missing data is reported, not fetched.
    Cache,
    /// The Vision archive only (plus the cache).
    Vision,
    /// The REST API only (plus the cache).
    Rest,
}

impl SourcePolicy {
    /// Whether the Vision archive may be asked (`auto`, `vision`).
    pub fn uses_vision(self) -> bool {
        matches!(self, SourcePolicy::Auto | SourcePolicy::Vision)
    }

    /// Whether the REST API may be asked (`auto`, `rest`).
    pub fn uses_rest(self) -> bool {
        matches!(self, SourcePolicy::Auto | SourcePolicy::Rest)
    }
}

impl std::str::FromStr for SourcePolicy {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        match s {
            "auto" => Ok(SourcePolicy::Auto),
            "cache" => Ok(SourcePolicy::Cache),
            "vision" => Ok(SourcePolicy::Vision),
            "rest" => Ok(SourcePolicy::Rest),
            _ => Err(InputError::Invalid {
                what: "source",
                reason: format!("{s:?}: use auto, cache, vision or rest"),
            }),
        }
    }
}

/// Progress of a running request, for progress bars.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// `files` Vision files and `pages` REST pages are planned.
    Planned {
        /// Vision files to download.
        files: u64,
        /// REST pages (estimated).
        pages: u64,
    },
    /// One Vision file or REST page is done.
    Fetched {
        /// Rows it held.
        rows: u64,
        /// Bytes downloaded.
        bytes: u64,
    },
}

/// A callback that receives [`Progress`] events.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// One request: a market, a kind, one or more symbols, an interval for candles, and `[start, end)`.
#[derive(Clone)]
pub struct Request {
    /// The market.
    pub market: Market,
    /// The data kind.
    pub kind: DataKind,
    /// One or more symbols (they share one budget and one cache).
    pub symbols: Vec<Symbol>,
    /// The interval, for kline-class kinds.
    pub interval: Option<Interval>,
    /// The half-open range on open time.
    pub range: TimeRange,
    /// Include the still-open candle (never cached).
    pub include_open: bool,
    /// Accept an answer that lacks part of the range (listed in [`SymbolResult::missing`](super::SymbolResult::missing)) instead
    /// of failing with [`Error::Incomplete`](crate::Error::Incomplete). Off by default: an answer is complete or an error.
    pub allow_partial: bool,
    /// Overrides the manager's source policy.
    pub source: Option<SourcePolicy>,
    /// Receives progress events.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("market", &self.market)
            .field("kind", &self.kind)
            .field("symbols", &self.symbols)
            .field("interval", &self.interval)
            .field("range", &self.range)
            .field("include_open", &self.include_open)
            .field("allow_partial", &self.allow_partial)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A klines request for one symbol.
    pub fn klines(market: Market, symbol: Symbol, interval: Interval, range: TimeRange) -> Request {
        Request::new(
            market,
            DataKind::Klines,
            vec![symbol],
            Some(interval),
            range,
        )
    }

    /// A request for any kind.
    pub fn new(
        market: Market,
        kind: DataKind,
        symbols: Vec<Symbol>,
        interval: Option<Interval>,
        range: TimeRange,
    ) -> Request {
        Request {
            market,
            kind,
            symbols,
            interval,
            range,
            include_open: false,
            allow_partial: false,
            source: None,
            progress: None,
        }
    }

    /// The dataset of one of the request's symbols.
    pub fn dataset(&self, symbol: &Symbol) -> Dataset {
        Dataset {
            market: self.market,
            kind: self.kind,
            symbol: symbol.clone(),
            interval: self.interval,
        }
    }

    /// The error for a delivery contract whose delivery is at or before the range's start
    /// (nothing of the range exists).
    pub(super) fn delivered_before_start(&self) -> Option<crate::error::UnavailableError> {
        if !self.market.is_futures() {
            return None;
        }
        self.symbols.iter().find_map(|s| {
            let delivered = s.delivery_time()?;
            (delivered <= self.range.start()).then(|| crate::error::UnavailableError::Delivered {
                symbol: s.clone(),
                delivered,
            })
        })
    }

    /// Checks the request before any network call.
    pub fn validate(&self) -> Result<(), InputError> {
        self.market.check(self.kind, self.interval)?;
        if self.symbols.is_empty() {
            return Err(InputError::Invalid {
                what: "request",
                reason: "no symbol given".into(),
            });
        }
        for s in &self.symbols {
            Symbol::for_market(s.as_str(), self.market, self.kind)?;
        }
        Ok(())
    }
}
