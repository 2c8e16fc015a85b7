//! `dsm-emulator`: runs the offline Binance emulator until Ctrl-C / SIGTERM.
//!
//! Prints its base URL on the first line of stdout, then logs to stderr.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use dsm_emulator::{Emulator, EmulatorConfig, Fault, Market, SymbolSpec};

/// Offline Binance emulator (Vision archive + REST) with fault injection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind; loopback by default.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Folder of real files laid out as `data/...` (served byte-identical, taking precedence).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Start of the emulator clock (RFC 3339, `YYYY-MM-DD` or epoch ms); default: real time.
    #[arg(long, value_parser = parse_time)]
    now: Option<DateTime<Utc>>,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A fault, `KIND[=ARG][@GLOB][#N|%P|~N]` (repeatable), e.g. `hang@/data/spot/*#2`. Kinds:
    /// hang; slow=BYTES_PER_SEC; reset (drop mid-body); truncate (short body, full
    /// Content-Length); checksum-mismatch; corrupt-zip (matching .CHECKSUM); short-file[=FRACTION]
    /// (a valid zip and matching .CHECKSUM holding only the first FRACTION of the rows, default
    /// 0.57); no-newline[=BYTES] (an entry that inflates to BYTES with no line break, default
    /// 1 GiB, matching .CHECKSUM); republish[=FRACTION] (the file re-published with FRACTION of
    /// its rows changed, default 0.1, matching .CHECKSUM); missing-checksum; status500; status403; status429; status418;
    /// duplicate-rows; gap=START..END[:SYMBOL] (exchange downtime in every source). GLOB matches
    /// the request path (`*` = anything); #N = first N matching requests; ~N = all after the first N; %P = probability P.
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<Fault>,
    /// Adds a symbol to the universe: `MARKET:SYMBOL:LISTED[:PRICE]` (repeatable), MARKET being
    /// spot, um or cm. A dated contract (`BTCUSDT_250926`, `BTCUSD_250926`) is delivered at
    /// 08:00 UTC on its date: no data after it, and it leaves exchangeInfo.
    #[arg(long = "symbol", value_parser = parse_symbol, value_name = "MARKET:SYMBOL:LISTED[:PRICE]")]
    symbols: Vec<SymbolSpec>,
    /// REST weight limit of every market per window (default: Binance's, 6000 spot and 2400
    /// futures), stated in exchangeInfo and enforced: 429 above it, 418 (a ban) for any request
    /// during a 429's Retry-After.
    #[arg(long, value_name = "WEIGHT")]
    weight_limit: Option<u32>,
    /// Length of the weight window in seconds (default 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    weight_window: u64,
}

fn parse_symbol(s: &str) -> Result<SymbolSpec, String> {
    let mut parts = s.splitn(4, ':');
    let (Some(market), Some(symbol), Some(listed)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{s:?}: use MARKET:SYMBOL:LISTED[:PRICE]"));
    };
    let market = match market {
        "spot" => Market::Spot,
        "um" => Market::Um,
        "cm" => Market::Cm,
        _ => return Err(format!("{market:?}: the market is spot, um or cm")),
    };
    let price = match parts.next() {
        Some(p) => p
            .parse::<f64>()
            .ok()
            .filter(|p| *p > 0.0)
            .ok_or_else(|| format!("{p:?}: the price is a positive number"))?,
        None => 100.0,
    };
    if symbol.is_empty()
        || !symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("{symbol:?}: symbols are A-Z, 0-9 and _"));
    }
    Ok(SymbolSpec::new(market, symbol, parse_time(listed)?, price))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    s.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| format!("{s:?} is not RFC 3339, YYYY-MM-DD or epoch ms"))
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse::<Fault>().map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = EmulatorConfig {
        bind: SocketAddr::new(args.host, args.port),
        seed: args.seed,
        now: args.now,
        root: args.root,
        faults: args.faults,
        ..EmulatorConfig::default()
    };
    config.symbols.extend(args.symbols);
    config.rate_limits.window = std::time::Duration::from_secs(args.weight_window.max(1));
    if let Some(w) = args.weight_limit {
        config.rate_limits.spot_weight_limit = w;
        config.rate_limits.um_weight_limit = w;
        config.rate_limits.cm_weight_limit = w;
    }
    if let Some(root) = &config.root
        && !root.join("data").is_dir()
    {
        tracing::warn!(root = %root.display(), "root has no data/ folder; no real files will be served");
    }
    config
        .symbols
        .sort_by(|a, b| (a.market, &a.symbol).cmp(&(b.market, &b.symbol)));
    let emu = Emulator::start(config)
        .await
        .context("starting the emulator")?;
    #[allow(clippy::print_stdout)]
    {
        use std::io::Write as _;
        println!("{}", emu.base_url());
        let _ = std::io::stdout().flush();
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    emu.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
