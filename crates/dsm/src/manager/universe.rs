//! A market's symbols, survivorship-free: the exchange's `exchangeInfo` for the symbols it lists,
//! and the Vision archive's listing for those it no longer does, with each symbol's life (listing
//! to delisting or delivery). [`Universe`] selects a set of them (`all`, globs, a list, `@FILE`).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, InputError, Result};
use crate::market::{DataKind, Dataset, Interval, Market, Symbol};
use crate::rest::{RestClient, SymbolInfo};
use crate::time::DAY_MS;
use crate::vision::{FileKey, VisionClient};

/// Whether a symbol trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolStatus {
    /// Listed by `exchangeInfo` and alive: `TRADING`, or halted for a while (`HALT`), or a
    /// contract on its way to delivery (`PRE_DELIVERING`, `DELIVERING`).
    Trading,
    /// Announced, not trading yet (`PENDING_TRADING`, `PRE_TRADING`).
    Pending,
    /// Its life is over: delisted (`BREAK`, `END_OF_DAY`, `POST_TRADING`), delivered or settled
    /// (`DELIVERED`, `SETTLING`, `PRE_SETTLE`, `CLOSE`), or only in the archive.
    Delisted,
}

impl SymbolStatus {
    /// The status an `exchangeInfo` word means (an unknown word counts as trading: the
    /// exchange still lists the symbol).
    fn of_exchange(word: &str) -> SymbolStatus {
        match word {
            "PENDING_TRADING" | "PRE_TRADING" => SymbolStatus::Pending,
            "BREAK" | "END_OF_DAY" | "POST_TRADING" | "DELIVERED" | "SETTLING" | "PRE_SETTLE"
            | "CLOSE" => SymbolStatus::Delisted,
            _ => SymbolStatus::Trading,
        }
    }
}

/// Which symbols [`DataSourceManager::symbols`](super::DataSourceManager::symbols) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    /// Trading symbols only (`exchangeInfo` alone: one request).
    Trading,
    /// Symbols that no longer trade.
    Delisted,
    /// Every symbol, pending ones too (the default).
    #[default]
    All,
}

impl std::str::FromStr for StatusFilter {
    type Err = InputError;
    fn from_str(s: &str) -> std::result::Result<Self, InputError> {
        match s {
            "trading" => Ok(StatusFilter::Trading),
            "delisted" => Ok(StatusFilter::Delisted),
            "all" => Ok(StatusFilter::All),
            _ => Err(InputError::Invalid {
                what: "status",
                reason: format!("{s:?}: use trading, delisted or all"),
            }),
        }
    }
}

impl StatusFilter {
    fn keeps(self, status: SymbolStatus) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Trading => status == SymbolStatus::Trading,
            StatusFilter::Delisted => status == SymbolStatus::Delisted,
        }
    }
}

/// One symbol of a market, with its life where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketSymbol {
    /// The symbol.
    pub symbol: Symbol,
    /// Whether it trades.
    pub status: SymbolStatus,
    /// The exchange's own status word (`TRADING`, `BREAK`, ...); `None` when `exchangeInfo` no
    /// longer lists the symbol.
    pub exchange_status: Option<String>,
    /// When it was listed (ms): futures' `onboardDate`, else the day of its first daily candle
    /// file on Vision. `None` for a trading spot symbol (spot's `exchangeInfo` has no date).
    pub listed: Option<i64>,
    /// When its life ended (ms, exclusive): a dated contract's delivery, or the end of the last
    /// day the archive has for a delisted symbol. `None` while it trades.
    pub ended: Option<i64>,
}

impl MarketSymbol {
    /// A symbol `exchangeInfo` lists, with the dates it gives.
    pub(crate) fn from_exchange(symbol: Symbol, info: &SymbolInfo) -> MarketSymbol {
        let status = SymbolStatus::of_exchange(&info.status);
        // Perpetuals carry a placeholder delivery in 2100: only a dated contract ends.
        let ended = symbol.delivery_time();
        MarketSymbol {
            symbol,
            status,
            exchange_status: Some(info.status.clone()),
            listed: info.onboard_date.filter(|&t| t > 0),
            ended,
        }
    }

    /// A symbol only the archive has.
    pub(crate) fn archived(symbol: Symbol) -> MarketSymbol {
        let ended = symbol.delivery_time();
        MarketSymbol {
            symbol,
            status: SymbolStatus::Delisted,
            exchange_status: None,
            listed: None,
            ended,
        }
    }
}

/// A set of symbols: what `--symbols` takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Universe {
    /// Every symbol of the market, delisted ones included.
    All,
    /// The symbols matching any of these globs (`*USDT`, `BTC*`, `SYM0?USDT`; a plain symbol in
    /// the list matches itself).
    Globs(Vec<glob::Pattern>),
    /// These symbols, in this order.
    List(Vec<Symbol>),
}

impl Universe {
    /// Parses a symbol set: `all`, a comma list, or `@FILE` (symbols separated by commas, spaces
    /// or lines; `#` starts a comment). A list holding a glob (a word with `*`, `?` or `[...]`)
    /// is a set of globs: the symbols matching any of them. Symbols are checked for `market` and
    /// `kind` here, before any request.
    ///
    /// ```
    /// use dsm::manager::Universe;
    /// use dsm::{DataKind, Market};
    ///
    /// let u = Universe::parse("BTCUSDT,ETHUSDT", Market::Spot, DataKind::Klines)?;
    /// assert!(matches!(u, Universe::List(ref s) if s.len() == 2));
    /// let g = Universe::parse("*USDT,BTC*", Market::Spot, DataKind::Klines)?;
    /// assert!(g.matches("ETHUSDT") && g.matches("BTCFDUSD") && !g.matches("ETHBTC"));
    /// assert!(Universe::parse("btcusdt", Market::Spot, DataKind::Klines).is_err());
    /// # Ok::<(), dsm::InputError>(())
    /// ```
    pub fn parse(
        spec: &str,
        market: Market,
        kind: DataKind,
    ) -> std::result::Result<Self, InputError> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("all") {
            return Ok(Universe::All);
        }
        let text;
        let words: Vec<&str> = match spec.strip_prefix('@') {
            Some(path) => {
                text = std::fs::read_to_string(path).map_err(|e| InputError::Invalid {
                    what: "symbols",
                    reason: format!("cannot read the symbol file {path}: {e}"),
                })?;
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
                    .filter(|w| !w.is_empty())
                    .collect()
            }
            None => spec
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect(),
        };
        if words.is_empty() {
            return Err(InputError::Invalid {
                what: "symbols",
                reason: match spec.strip_prefix('@') {
                    Some(path) => format!("the symbol file {path} names no symbol"),
                    None => "no symbol given: use all, a glob such as *USDT, a comma list or @FILE"
                        .into(),
                },
            });
        }
        if !words.iter().any(|w| w.contains(['*', '?', '['])) {
            let mut out: Vec<Symbol> = Vec::new();
            for w in words {
                let s = Symbol::for_market(w, market, kind)?;
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            return Ok(Universe::List(out));
        }
        let mut globs: Vec<glob::Pattern> = Vec::new();
        for w in words {
            if !w.contains(['*', '?', '[']) {
                Symbol::for_market(w, market, kind)?;
            }
            let glob = glob::Pattern::new(w).map_err(|e| InputError::Invalid {
                what: "symbols",
                reason: format!("{w:?} is not a valid glob: {e}"),
            })?;
            if !globs.contains(&glob) {
                globs.push(glob);
            }
        }
        Ok(Universe::Globs(globs))
    }

    /// Whether `symbol` belongs to the set.
    pub fn matches(&self, symbol: &str) -> bool {
        match self {
            Universe::All => true,
            Universe::Globs(g) => g.iter().any(|p| p.matches(symbol)),
            Universe::List(l) => l.iter().any(|s| s.as_str() == symbol),
        }
    }
}

/// Reads a market's symbols and their lives from `exchangeInfo` and the archive.
pub(crate) struct Directory<'a> {
    pub vision: &'a VisionClient,
    pub rest: &'a RestClient,
    pub cancel: &'a CancellationToken,
    /// Archive listings in flight at once.
    pub concurrency: usize,
}

impl Directory<'_> {
    /// The symbols of `market` that pass `filter` and belong to `universe`, sorted by name. The
    /// archive is asked about the lives of those alone.
    pub async fn symbols(
        &self,
        market: Market,
        filter: StatusFilter,
        universe: &Universe,
    ) -> Result<Vec<MarketSymbol>> {
        check_market(market)?;
        let mut known: BTreeMap<String, MarketSymbol> = BTreeMap::new();
        for info in self.rest.exchange_symbols(market, self.cancel).await? {
            let Ok(symbol) = Symbol::for_market(&info.symbol, market, DataKind::Klines) else {
                tracing::debug!(symbol = %info.symbol, "exchangeInfo symbol dsm cannot name; skipped");
                continue;
            };
            let s = MarketSymbol::from_exchange(symbol, &info);
            known.insert(info.symbol, s);
        }
        if filter != StatusFilter::Trading {
            let prefix = format!("data/{}/daily/klines/", market.vision_path());
            let listing = self.vision.list(&prefix, self.cancel).await?;
            for dir in &listing.prefixes {
                let name = dir
                    .strip_prefix(&prefix)
                    .unwrap_or(dir)
                    .trim_end_matches('/');
                if known.contains_key(name) {
                    continue;
                }
                match Symbol::for_market(name, market, DataKind::Klines) {
                    Ok(symbol) => {
                        known.insert(name.to_string(), MarketSymbol::archived(symbol));
                    }
                    Err(_) => {
                        tracing::debug!(dir = %name, "archive directory dsm cannot name; skipped")
                    }
                }
            }
        }
        let mut out: Vec<MarketSymbol> = known
            .into_values()
            .filter(|s| filter.keeps(s.status) && universe.matches(s.symbol.as_str()))
            .collect();
        self.fill_lives(market, &mut out, false).await?;
        Ok(out)
    }

    /// Fills what the archive tells of each symbol's life: for a delisted symbol without both
    /// dates, its first and last daily candle files (the whole directory listed); with `listed`
    /// wanted, for a trading one without a listing date, its first file (one request).
    pub async fn fill_lives(
        &self,
        market: Market,
        symbols: &mut [MarketSymbol],
        listed: bool,
    ) -> Result<()> {
        // Owned jobs (index, symbol, whole listing?), so the futures borrow nothing per item.
        let jobs: Vec<(usize, Symbol, bool)> = symbols
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let whole =
                    s.status == SymbolStatus::Delisted && (s.listed.is_none() || s.ended.is_none());
                let first = listed && s.listed.is_none();
                (whole || first).then(|| (i, s.symbol.clone(), whole))
            })
            .collect();
        let found: Vec<(usize, bool, Option<i64>, Option<i64>)> = futures::stream::iter(jobs)
            .map(|(i, symbol, whole)| async move {
                let (first, last) = self.archive_days(market, &symbol, whole).await?;
                Ok::<_, Error>((i, whole, first, last))
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        for (i, whole, first, last) in found {
            let s = &mut symbols[i];
            s.listed = s.listed.or(first);
            if whole {
                s.ended = s.ended.or(last.map(|d| d + DAY_MS));
            }
        }
        Ok(())
    }

    /// The first and (with `whole`) last day of `symbol`'s daily `1d` candle files on Vision.
    async fn archive_days(
        &self,
        market: Market,
        symbol: &Symbol,
        whole: bool,
    ) -> Result<(Option<i64>, Option<i64>)> {
        let dataset = Dataset::klines(market, symbol.clone(), Interval::D1);
        let prefix = format!(
            "data/{}/daily/klines/{}/1d/",
            market.vision_path(),
            symbol.as_str()
        );
        let listing = if whole {
            self.vision.list(&prefix, self.cancel).await?
        } else {
            self.vision.list_first(&prefix, 2, self.cancel).await?
        };
        let days: Vec<i64> = listing
            .keys
            .iter()
            .filter_map(|k| FileKey::for_file(&dataset, k.rsplit('/').next().unwrap_or(k)))
            .map(|f| f.range().start())
            .collect();
        Ok((days.iter().min().copied(), days.iter().max().copied()))
    }
}

/// Symbols are listed for the markets with candles: spot, USD-M and COIN-M.
pub(crate) fn check_market(market: Market) -> std::result::Result<(), InputError> {
    if market == Market::Option {
        return Err(InputError::Invalid {
            what: "market",
            reason: "symbol lists and sync cover spot, um and cm; option data is fetched by symbol (BTCBVOLUSDT, BTCUSDT ...)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_words_map_to_three_statuses() {
        for (word, status) in [
            ("TRADING", SymbolStatus::Trading),
            ("HALT", SymbolStatus::Trading),
            ("DELIVERING", SymbolStatus::Trading),
            ("PENDING_TRADING", SymbolStatus::Pending),
            ("BREAK", SymbolStatus::Delisted),
            ("SETTLING", SymbolStatus::Delisted),
            ("DELIVERED", SymbolStatus::Delisted),
        ] {
            assert_eq!(SymbolStatus::of_exchange(word), status, "{word}");
        }
        assert!(!StatusFilter::Trading.keeps(SymbolStatus::Pending));
        assert!(!StatusFilter::Delisted.keeps(SymbolStatus::Pending));
        assert!(StatusFilter::All.keeps(SymbolStatus::Pending));
    }

    #[test]
    fn a_symbol_set_is_all_globs_a_list_or_a_file() {
        let k = DataKind::Klines;
        assert_eq!(Universe::parse("all", Market::Spot, k), Ok(Universe::All));
        let g = Universe::parse("BTC*", Market::Spot, k).expect("glob");
        assert!(g.matches("BTCUSDT") && !g.matches("ETHBTC"));
        let g = Universe::parse("BTC*, ETHUSDT,*FDUSD", Market::Spot, k).expect("globs");
        for (symbol, member) in [
            ("BTCUSDT", true),
            ("ETHUSDT", true),
            ("SOLFDUSD", true),
            ("ETHUSDC", false),
            ("XETHUSDT", false),
        ] {
            assert_eq!(g.matches(symbol), member, "{symbol}");
        }
        // A plain word in a list of globs is still checked as a symbol, and each glob for syntax.
        assert!(Universe::parse("BTC*,ethusdt", Market::Spot, k).is_err());
        assert!(Universe::parse("BTC*,[ETH", Market::Spot, k).is_err());
        let l = Universe::parse("BTCUSDT, ETHUSDT,BTCUSDT", Market::Spot, k).expect("list");
        assert_eq!(
            l,
            Universe::List(vec![
                Symbol::new("BTCUSDT").expect("s"),
                Symbol::new("ETHUSDT").expect("s")
            ])
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("u.txt");
        std::fs::write(&f, "# my universe\nBTCUSDT\nETHUSDT, BNBUSDT # three\n").expect("write");
        let u = Universe::parse(&format!("@{}", f.display()), Market::Spot, k).expect("file");
        assert!(matches!(u, Universe::List(ref s) if s.len() == 3));
        std::fs::write(&f, "*USDT # perpetuals\nBTCFDUSD\n").expect("write");
        let u = Universe::parse(&format!("@{}", f.display()), Market::Spot, k).expect("file");
        assert!(u.matches("ETHUSDT") && u.matches("BTCFDUSD") && !u.matches("ETHFDUSD"));
        std::fs::write(&f, "# nothing yet\n").expect("write");
        let empty =
            Universe::parse(&format!("@{}", f.display()), Market::Spot, k).expect_err("empty");
        assert!(empty.to_string().contains("names no symbol"), "{empty}");
        let missing = Universe::parse("@/nonexistent/u.txt", Market::Spot, k).expect_err("no file");
        assert!(
            missing.to_string().contains("/nonexistent/u.txt"),
            "{missing}"
        );
        assert!(Universe::parse("BTCUSD_PERP", Market::Spot, k).is_err());
        assert!(Universe::parse(" , ", Market::Spot, k).is_err());
    }
}
