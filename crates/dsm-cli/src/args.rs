//! The command line: clap definitions for `dsm fetch` and `dsm cache`.
//!
//! This module owns parsing only. Values whose meaning the library defines (markets, kinds,
//! intervals, sources) are parsed with the library's own `FromStr`, so clap's usage error carries the
//! library's message saying what is valid. It must never do any work or touch the network.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use dsm::{DataKind, Interval, Market, SourcePolicy};

/// dsm: fetch Binance market data (klines, funding, trades) from the cheapest correct source — the
/// local cache, the Binance Vision archive or the REST API — into Parquet, Arrow or CSV files.
#[derive(Debug, Parser)]
#[command(name = "dsm", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); also prints error causes.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars and no summary on stderr (errors are still printed).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch data for one or more symbols into a file (or one file per symbol in a directory).
    #[command(after_help = FETCH_EXAMPLES)]
    Fetch(Box<FetchArgs>),
    /// Inspect and maintain the local cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Fill the cache for a whole set of symbols (no output file): each symbol's range clipped
    /// to its life, monthly files for whole months, daily files for the rest, REST for the
    /// recent edge. Resumable: a rerun downloads only what is missing.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(Box<SyncArgs>),
    /// List a market's symbols with their status, listing and delisting or delivery dates, from
    /// exchangeInfo and the Vision archive's listing (delisted symbols included).
    Symbols(SymbolsArgs),
}

const FETCH_EXAMPLES: &str = "\
Examples:
  dsm fetch BTCUSDT --market spot --interval 1m --start 2024-01-01 --end 2024-02-01 -o btc.parquet
  dsm fetch BTCUSDT ETHUSDT --market um --kind funding --start 2023-01-01 -o funding/ --format csv
  dsm fetch BTCUSD_PERP --market cm --interval 1h --start 2024-01-01T00:00:00Z -o cm.arrow --json

TIME is RFC 3339 (2024-01-01T12:00:00Z), a date (2024-01-01 = 00:00 UTC) or epoch milliseconds.
The range is half-open: [start, end) on open time.";

/// Output file format.
const SYNC_EXAMPLES: &str = "\
Examples:
  dsm sync --market um --interval 1h --symbols '*USDT' --start 2020-01-01
  dsm sync --market spot --kind aggtrades --symbols BTCUSDT,ETHUSDT --start 2024-01-01 --end 2024-07-01
  dsm sync --market um --interval 1m --symbols @universe.txt --start 2024-01-01 \\
      --cache-url s3://bucket/dsm --shard 2/4 --json

SPEC is all (delisted symbols included), a glob (*USDT, BTC*), a comma list or @FILE (symbols
separated by commas, spaces or lines; # comments); a list may mix globs and symbols. --shard K/N
runs a stable 1/N of the (symbol, month) units, so N machines sharing one cache split the work
with no coordinator.
Exit 0 when every symbol is complete, 6 when some are not, 4 when an upstream failed.";

/// What data: the market, the kind and the interval (`fetch` and `sync`).
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Market: spot, um (USD-M futures), cm (COIN-M futures) or option.
    #[arg(long, value_parser = parse_market)]
    pub market: Market,
    /// Data kind: klines, mark-klines, index-klines, premium-klines, funding, aggtrades, trades;
    /// from the archive only: metrics, book-depth, book-ticker (um, cm), liquidations (cm),
    /// bvol-index, eoh-summary (option).
    #[arg(long, default_value = "klines", value_parser = parse_kind)]
    pub kind: DataKind,
    /// Candle interval (1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M); kline kinds only.
    #[arg(long, value_parser = parse_interval)]
    pub interval: Option<Interval>,
}

/// Options of `dsm sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// The symbols: all, a glob (*USDT), a comma list, or @FILE.
    #[arg(long, value_name = "SPEC")]
    pub symbols: String,
    /// Start (inclusive).
    #[arg(long, value_name = "TIME")]
    pub start: String,
    /// End (exclusive; default: now).
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Run only share K of N (1 <= K <= N) of the (symbol, month) units.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<dsm::manager::Shard>,
    /// Where data may come from: auto, vision or rest (cache alone has nothing to sync).
    #[arg(long, default_value = "auto", value_parser = parse_source)]
    pub source: SourcePolicy,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `dsm symbols`.
#[derive(Debug, Args)]
pub struct SymbolsArgs {
    /// Market: spot, um or cm.
    #[arg(long, value_parser = parse_market)]
    pub market: Market,
    /// Which symbols: trading, delisted, or all (pending ones too).
    #[arg(long, default_value = "all", value_parser = parse_status)]
    pub status: dsm::manager::StatusFilter,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the list as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `[start, end)` from `--start` and `--end` (RFC 3339, a date or epoch ms); `end` defaults to
/// `now_ms`.
pub fn parse_range(
    start: &str,
    end: Option<&str>,
    now_ms: i64,
) -> Result<dsm::TimeRange, dsm::time::TimeError> {
    let start = dsm::time::parse_instant(start)?;
    let end = match end {
        Some(e) => dsm::time::parse_instant(e)?,
        None => now_ms,
    };
    dsm::TimeRange::new(start, end)
}

fn parse_shard(s: &str) -> Result<dsm::manager::Shard, dsm::InputError> {
    s.parse()
}

fn parse_status(s: &str) -> Result<dsm::manager::StatusFilter, dsm::InputError> {
    s.parse()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Apache Parquet, zstd-compressed (`.parquet`).
    Parquet,
    /// Arrow IPC file (`.arrow`).
    Arrow,
    /// CSV with a header row, RFC 3339 UTC timestamps (`.csv`).
    Csv,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Csv => "csv",
        }
    }

    /// The format for a file extension (case-insensitive), if known.
    pub fn from_extension(ext: &str) -> Option<Format> {
        [Format::Parquet, Format::Arrow, Format::Csv]
            .into_iter()
            .find(|f| ext.eq_ignore_ascii_case(f.extension()))
    }
}

/// `dsm fetch` arguments.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Symbols, upper-case as Binance spells them (BTCUSDT; BTCUSD_PERP on cm).
    #[arg(required = true, value_name = "SYMBOL")]
    pub symbols: Vec<String>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Start of the range (inclusive): RFC 3339, a date, or epoch milliseconds.
    #[arg(long, value_name = "TIME")]
    pub start: String,
    /// End of the range (exclusive); default: now.
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Output: a file whose extension picks the format (.parquet, .arrow, .csv); with several
    /// symbols (or an existing directory) a directory that gets one SYMBOL.EXT file per symbol.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Output format; default: from the extension of --output (parquet for a directory).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Sources to use: auto (cache, then Vision, then REST), cache (offline), vision or rest.
    #[arg(long, default_value = "auto", value_parser = parse_source)]
    pub source: SourcePolicy,
    /// Include the still-open candle (never cached).
    #[arg(long)]
    pub include_open: bool,
    /// Write what was obtained and exit 0 even if part of the range could not be (it is still
    /// reported). Without it such a run writes nothing and exits 6.
    #[arg(long)]
    pub allow_partial: bool,
    /// Neither read nor write the cache.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where dsm finds the cache, the archive and the REST API, and how hard it may use them:
/// options shared by `fetch`, `sync` and `symbols`.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Cache directory (default: the platform cache dir, e.g. ~/.cache/dsm).
    #[arg(long, env = "DSM_CACHE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub cache_dir: Option<PathBuf>,
    /// The cache on S3-compatible storage, shared by many machines: s3://BUCKET/PREFIX.
    /// Credentials, region and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL and AWS_ALLOW_HTTP. It takes the place of --cache-dir for the
    /// data (the cache directory still keeps this machine's REST weight and bans).
    #[arg(long, env = "DSM_CACHE_URL", value_name = "URL")]
    pub cache_url: Option<String>,
    /// Binance Vision archive base URL.
    #[arg(long, env = "DSM_VISION_URL", value_name = "URL")]
    pub vision_url: Option<String>,
    /// REST base URL for all three markets (e.g. an emulator); default: Binance's per-market hosts.
    #[arg(long, env = "DSM_REST_URL", value_name = "URL")]
    pub rest_url: Option<String>,
    /// Most downloads at once: Vision files, and REST pages of each symbol (default 8 and 4).
    /// Every REST request stays within the weight budget whatever this is.
    #[arg(long, env = "DSM_CONCURRENCY", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    /// REST weight budget per rate-limit window, for every market, used instead of 90% of the
    /// limit the server states in exchangeInfo (which dsm reads once a day).
    #[arg(long, env = "DSM_WEIGHT_LIMIT", value_name = "WEIGHT", value_parser = clap::value_parser!(u32).range(1..))]
    pub weight_limit: Option<u32>,
    /// Longest wait, in seconds, for a connection, an answer's headers or the next bytes of a body
    /// (default 10); a body must also average 4 KiB/s over 10 s. A failing attempt is retried 3
    /// times, then the other source is used or the run fails (exit 4).
    #[arg(long, env = "DSM_TIMEOUT", value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// When Binance has banned this IP (HTTP 418, remembered across runs), wait for the ban to end
    /// instead of failing at once (exit 4).
    #[arg(long, env = "DSM_WAIT_ON_BAN")]
    pub wait_on_ban: bool,
}

/// A timeout in seconds (fractions allowed), at least 0.1 s and at most an hour.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{s} s is outside 0.1..=3600"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `dsm cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached partitions: dataset, span, rows, bytes, covered ranges, sources.
    Ls(CacheArgs),
    /// Re-read every cached file and check it against its manifest; bad files are quarantined
    /// (and fetched again on next use). Exits 5 if anything was wrong. With --remote, also asks
    /// the archive whether cached Vision files were re-published, and fetches those again.
    Verify(VerifyArgs),
    /// Remove cached partitions: --all, or those matching every filter given.
    Prune {
        #[command(flatten)]
        common: CacheArgs,
        /// Only this symbol.
        #[arg(long, value_name = "SYMBOL")]
        symbol: Option<String>,
        /// Only this market (spot, um, cm).
        #[arg(long, value_parser = parse_market)]
        market: Option<Market>,
        /// Only partitions whose data ends at or before TIME (RFC 3339, a date, or epoch ms).
        #[arg(long, value_name = "TIME")]
        older_than: Option<String>,
        /// Everything, including quarantined files.
        #[arg(long, conflicts_with_all = ["symbol", "market", "older_than"])]
        all: bool,
    },
    /// Print the cache's total size (data, manifests, quarantine).
    Size(CacheArgs),
}

/// `dsm cache verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CacheArgs,
    /// Also re-read the .CHECKSUM of each cached Vision file; files Binance re-published are
    /// fetched again and listed (`republished`, with changed/added/removed row counts).
    #[arg(long)]
    pub remote: bool,
    /// With --remote: only files whose day or month ends after TIME (RFC 3339, a date, or ms).
    #[arg(long, value_name = "TIME", requires = "remote")]
    pub since: Option<String>,
    /// With --remote: the Binance Vision archive base URL.
    #[arg(long, env = "DSM_VISION_URL", value_name = "URL")]
    pub vision_url: Option<String>,
}

/// Arguments shared by the `dsm cache` subcommands.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Cache directory (default: the platform cache dir, e.g. ~/.cache/dsm).
    #[arg(long, env = "DSM_CACHE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub cache_dir: Option<PathBuf>,
    /// The cache on S3-compatible storage, shared by many machines: s3://BUCKET/PREFIX.
    /// Credentials, region and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL and AWS_ALLOW_HTTP. It takes the place of --cache-dir for the
    /// data (the cache directory still keeps this machine's REST weight and bans).
    #[arg(long, env = "DSM_CACHE_URL", value_name = "URL")]
    pub cache_url: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// An absolute form of a directory argument (the cache store wants absolute paths; a relative one
/// that does not exist yet is mishandled by the library).
fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("an empty path".into());
    }
    std::path::absolute(s).map_err(|e| format!("cannot resolve {s:?}: {e}"))
}

fn parse_market(s: &str) -> Result<Market, dsm::InputError> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<DataKind, dsm::InputError> {
    s.parse()
}

fn parse_interval(s: &str) -> Result<Interval, dsm::InputError> {
    s.parse()
}

fn parse_source(s: &str) -> Result<SourcePolicy, dsm::InputError> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(Format::from_extension("PARQUET"), Some(Format::Parquet));
        assert_eq!(Format::from_extension("arrow"), Some(Format::Arrow));
        assert_eq!(Format::from_extension("csv"), Some(Format::Csv));
        assert_eq!(Format::from_extension("json"), None);
    }
}
