//! Response bodies (spec §3.4, §3.6, §3.7) to dsm's records. Pure functions, no I/O.
//!
//! Decimals arrive as JSON strings (`"0.01634790"`) and times and counts as integers; a number where
//! a string is expected is tolerated, anything else is a malformed body.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::schema::{FundingRecord, KlineRecord, TradeRecord};

use super::SymbolInfo;

/// A decimal sent as a string (Binance's form) or as a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Dec<'a> {
    Str(&'a str),
    Num(f64),
}

impl Dec<'_> {
    fn value(&self, what: &str) -> Result<f64, String> {
        let v = match self {
            Dec::Str(s) => s
                .parse::<f64>()
                .map_err(|_| format!("{what} {s:?} is not a number"))?,
            Dec::Num(n) => *n,
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{what} is not finite"))
        }
    }
}

/// One kline as Binance sends it: a 12-element array.
#[derive(Debug, Deserialize)]
struct RawKline<'a>(
    i64,
    #[serde(borrow)] Dec<'a>,
    #[serde(borrow)] Dec<'a>,
    #[serde(borrow)] Dec<'a>,
    #[serde(borrow)] Dec<'a>,
    #[serde(borrow)] Dec<'a>,
    i64,
    #[serde(borrow)] Dec<'a>,
    i64,
    #[serde(borrow)] Dec<'a>,
    #[serde(borrow)] Dec<'a>,
    IgnoredAny,
);

fn json_error(e: &serde_json::Error, body: &[u8]) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    format!("{e} (body starts {head:?}, {} bytes)", body.len())
}

/// Parses a klines-class body (`[[open_time, "open", ..., "ignore"], ...]`).
pub(crate) fn klines(body: &[u8]) -> Result<Vec<KlineRecord>, String> {
    let raw: Vec<RawKline<'_>> = serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    raw.iter()
        .map(|k| {
            Ok(KlineRecord {
                open_time: k.0,
                open: k.1.value("open")?,
                high: k.2.value("high")?,
                low: k.3.value("low")?,
                close: k.4.value("close")?,
                volume: k.5.value("volume")?,
                close_time: k.6,
                quote_volume: k.7.value("quote volume")?,
                count: k.8,
                taker_buy_volume: k.9.value("taker buy volume")?,
                taker_buy_quote_volume: k.10.value("taker buy quote volume")?,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFunding<'a> {
    funding_time: i64,
    #[serde(borrow)]
    funding_rate: Dec<'a>,
    /// USD-M only; `""` on some old records.
    #[serde(borrow, default)]
    mark_price: Option<Dec<'a>>,
}

#[derive(Debug, Deserialize)]
struct RawStat<'a> {
    timestamp: i64,
    #[serde(borrow, rename = "sumOpenInterest")]
    sum_open_interest: Option<Dec<'a>>,
    #[serde(borrow, rename = "sumOpenInterestValue")]
    sum_open_interest_value: Option<Dec<'a>>,
    #[serde(borrow, rename = "longShortRatio")]
    long_short_ratio: Option<Dec<'a>>,
    #[serde(borrow, rename = "buySellRatio")]
    buy_sell_ratio: Option<Dec<'a>>,
}

/// One statistics point: its time and up to two values.
pub(crate) type StatPoint = (i64, [Option<f64>; 2]);

/// Parses a USD-M statistics body (`/futures/data/...`: `[{"timestamp":..,"sumOpenInterest":..}]`,
/// or `longShortRatio`, or `buySellRatio`) into (time, values) with up to two values: open
/// interest and its value, or the one ratio.
pub(crate) fn stat_points(body: &[u8]) -> Result<Vec<StatPoint>, String> {
    let raw: Vec<RawStat<'_>> = serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    let v = |d: &Option<Dec<'_>>, what: &str| d.as_ref().map(|d| d.value(what)).transpose();
    raw.iter()
        .map(|s| {
            let values = match (&s.sum_open_interest, &s.long_short_ratio, &s.buy_sell_ratio) {
                (Some(_), _, _) => [
                    v(&s.sum_open_interest, "sumOpenInterest")?,
                    v(&s.sum_open_interest_value, "sumOpenInterestValue")?,
                ],
                (_, Some(_), _) => [v(&s.long_short_ratio, "longShortRatio")?, None],
                (_, _, Some(_)) => [v(&s.buy_sell_ratio, "buySellRatio")?, None],
                _ => return Err("a statistic without a value".to_owned()),
            };
            Ok((s.timestamp, values))
        })
        .collect()
}

/// Parses a fundingRate body (`[{"symbol":..,"fundingTime":..,"fundingRate":"..",..}]`).
pub(crate) fn funding(body: &[u8]) -> Result<Vec<FundingRecord>, String> {
    let raw: Vec<RawFunding<'_>> =
        serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    raw.iter()
        .map(|f| {
            let mark_price = match &f.mark_price {
                None | Some(Dec::Str("")) => None,
                Some(p) => Some(p.value("mark price")?),
            };
            Ok(FundingRecord {
                funding_time: f.funding_time,
                funding_rate: f.funding_rate.value("funding rate")?,
                // Filled from the spacing of consecutive records by the caller.
                funding_interval_hours: None,
                mark_price,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct RawAggTrade<'a> {
    a: i64,
    #[serde(borrow)]
    p: Dec<'a>,
    #[serde(borrow)]
    q: Dec<'a>,
    f: i64,
    l: i64,
    #[serde(rename = "T")]
    time: i64,
    m: bool,
    #[serde(rename = "M")]
    best_match: Option<bool>,
}

/// Parses an aggTrades body (`[{"a","p","q","f","l","T","m"[,"M"]}]`, `T` in ms).
pub(crate) fn agg_trades(body: &[u8]) -> Result<Vec<TradeRecord>, String> {
    let raw: Vec<RawAggTrade<'_>> =
        serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    raw.iter()
        .map(|t| {
            Ok(TradeRecord {
                id: t.a,
                price: t.p.value("price")?,
                qty: t.q.value("quantity")?,
                quote_qty: 0.0,
                first_id: t.f,
                last_id: t.l,
                time_us: ms_to_us(t.time)?,
                is_buyer_maker: t.m,
                is_best_match: t.best_match,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrade<'a> {
    id: i64,
    #[serde(borrow)]
    price: Dec<'a>,
    #[serde(borrow)]
    qty: Dec<'a>,
    #[serde(borrow)]
    quote_qty: Dec<'a>,
    time: i64,
    is_buyer_maker: bool,
    is_best_match: Option<bool>,
}

/// Parses a spot historicalTrades body (`[{"id","price","qty","quoteQty","time",...}]`).
pub(crate) fn trades(body: &[u8]) -> Result<Vec<TradeRecord>, String> {
    let raw: Vec<RawTrade<'_>> = serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    raw.iter()
        .map(|t| {
            Ok(TradeRecord {
                id: t.id,
                price: t.price.value("price")?,
                qty: t.qty.value("qty")?,
                quote_qty: t.quote_qty.value("quote qty")?,
                first_id: 0,
                last_id: 0,
                time_us: ms_to_us(t.time)?,
                is_buyer_maker: t.is_buyer_maker,
                is_best_match: t.is_best_match,
            })
        })
        .collect()
}

fn ms_to_us(ms: i64) -> Result<i64, String> {
    ms.checked_mul(1000)
        .ok_or_else(|| format!("trade time {ms} is out of range"))
}

/// Parses `{"serverTime": ms}`.
pub(crate) fn server_time(body: &[u8]) -> Result<i64, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct T {
        server_time: i64,
    }
    serde_json::from_slice::<T>(body)
        .map(|t| t.server_time)
        .map_err(|e| json_error(&e, body))
}

/// Parses a Binance error body `{"code": -1121, "msg": "Invalid symbol."}`.
pub(crate) fn api_error(body: &[u8]) -> Option<(i64, String)> {
    #[derive(Deserialize)]
    struct E {
        code: i64,
        msg: String,
    }
    serde_json::from_slice::<E>(body)
        .ok()
        .map(|e| (e.code, e.msg))
}

/// The ban end in a 418 message ("... IP banned until 1660090423228. ...").
pub(crate) fn banned_until(msg: &str) -> Option<i64> {
    let rest = &msg[msg.find("banned until ")? + "banned until ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The `REQUEST_WEIGHT` limit of an exchangeInfo body: weight per window, window length (ms). With
/// several, the one that allows the least weight per millisecond. `None` when none is stated.
pub(crate) fn weight_limit(body: &[u8]) -> Result<Option<(u32, i64)>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Limit {
        rate_limit_type: String,
        interval: String,
        interval_num: i64,
        limit: u32,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Info {
        #[serde(default)]
        rate_limits: Vec<Limit>,
    }
    let info: Info = serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    let mut best: Option<(u32, i64)> = None;
    for l in info.rate_limits {
        if l.rate_limit_type != "REQUEST_WEIGHT" || l.limit == 0 || l.interval_num <= 0 {
            continue;
        }
        let unit = match l.interval.as_str() {
            "SECOND" => 1000,
            "MINUTE" => 60_000,
            "HOUR" => 3_600_000,
            "DAY" => 86_400_000,
            other => return Err(format!("unknown rate-limit interval {other:?}")),
        };
        let window_ms = l.interval_num.saturating_mul(unit);
        let tighter = best.is_none_or(|(w, ms)| {
            i128::from(l.limit) * i128::from(ms) < i128::from(w) * i128::from(window_ms)
        });
        if tighter {
            best = Some((l.limit, window_ms));
        }
    }
    Ok(best)
}

/// Parses the `symbols` of an exchangeInfo body (spot, USD-M or COIN-M).
pub(crate) fn exchange_info(body: &[u8]) -> Result<Vec<SymbolInfo>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct S {
        symbol: String,
        status: Option<String>,
        contract_status: Option<String>,
        pair: Option<String>,
        contract_type: Option<String>,
        onboard_date: Option<i64>,
        delivery_date: Option<i64>,
    }
    #[derive(Deserialize)]
    struct Info {
        symbols: Vec<S>,
    }
    let info: Info = serde_json::from_slice(body).map_err(|e| json_error(&e, body))?;
    Ok(info
        .symbols
        .into_iter()
        .map(|s| SymbolInfo {
            symbol: s.symbol,
            status: s.status.or(s.contract_status).unwrap_or_default(),
            pair: s.pair,
            contract_type: s.contract_type.filter(|c| !c.is_empty()),
            onboard_date: s.onboard_date,
            delivery_date: s.delivery_date,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spot_kline_example_of_the_spec() {
        // Spec §3.4 (SPOT-REST).
        let body = br#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#;
        let k = klines(body).expect("valid body");
        assert_eq!(k.len(), 1);
        let k = k[0];
        assert_eq!(k.open_time, 1_499_040_000_000);
        assert_eq!(k.open, 0.016_347_9);
        assert_eq!(k.high, 0.8);
        assert_eq!(k.low, 0.015_758);
        assert_eq!(k.close, 0.015_771);
        assert_eq!(k.volume, 148_976.114_278_15);
        assert_eq!(k.close_time, 1_499_644_799_999);
        assert_eq!(k.quote_volume, 2_434.190_553_34);
        assert_eq!(k.count, 308);
        assert_eq!(k.taker_buy_volume, 1_756.874_023_97);
        assert_eq!(k.taker_buy_quote_volume, 28.466_943_68);
    }

    #[test]
    fn parses_the_coin_m_kline_example_of_the_spec() {
        let body = br#"[[1591258320000,"9640.7","9642.4","9640.6","9642.0","206",1591258379999,"2.13660389",48,"119","1.23424865","0"]]"#;
        let k = klines(body).expect("valid body")[0];
        assert_eq!(k.volume, 206.0);
        assert_eq!(k.close_time, 1_591_258_379_999);
        assert_eq!(k.count, 48);
    }

    #[test]
    fn rejects_broken_kline_bodies() {
        assert!(klines(b"[[1,\"2\"]]").is_err(), "short row");
        assert!(klines(b"[[1499040000000,\"x\",\"0.8\",\"0.1\",\"0.2\",\"1\",1,\"1\",3,\"1\",\"1\",\"0\"]]").is_err());
        assert!(klines(b"[[1499040000000,\"0.1\"").is_err(), "truncated");
        assert!(klines(b"{\"code\":-1121,\"msg\":\"Invalid symbol.\"}").is_err());
        assert_eq!(klines(b"[]").expect("empty is valid").len(), 0);
    }

    #[test]
    fn parses_funding_of_both_markets() {
        // Spec §3.4: UM with markPrice, CM without.
        let um = br#"[{"symbol":"BTCUSDT","fundingRate":"-0.03750000","fundingTime":1570608000000,"markPrice":"34287.54619963"}]"#;
        let f = funding(um).expect("valid")[0];
        assert_eq!(f.funding_time, 1_570_608_000_000);
        assert_eq!(f.funding_rate, -0.0375);
        assert_eq!(f.funding_interval_hours, None);
        assert_eq!(f.mark_price, Some(34287.54619963));
        let blank =
            br#"[{"symbol":"BTCUSDT","fundingRate":"0.0001","fundingTime":1,"markPrice":""}]"#;
        assert_eq!(funding(blank).expect("valid")[0].mark_price, None);
        let cm = br#"[{"symbol":"BTCUSD_PERP","fundingTime":1596038400000,"fundingRate":"-0.00300000"}]"#;
        assert_eq!(funding(cm).expect("valid")[0].funding_rate, -0.003);
        assert_eq!(funding(cm).expect("valid")[0].mark_price, None);
    }

    #[test]
    fn parses_errors_time_and_ban() {
        assert_eq!(
            api_error(br#"{"code":-1121,"msg":"Invalid symbol."}"#),
            Some((-1121, "Invalid symbol.".into()))
        );
        assert_eq!(api_error(b"<html>"), None);
        assert_eq!(
            server_time(br#"{"serverTime":1499827319559}"#),
            Ok(1_499_827_319_559)
        );
        // Spec §3.5, spot 418 body.
        assert_eq!(
            banned_until(
                "Way too much request weight used; IP banned until 1660090423228. Please use WebSocket Streams for live updates to avoid bans."
            ),
            Some(1_660_090_423_228)
        );
        assert_eq!(banned_until("Too many requests"), None);
    }

    #[test]
    fn parses_exchange_info_of_spot_and_coin_m() {
        let spot = br#"{"timezone":"UTC","serverTime":1,"rateLimits":[],"exchangeFilters":[],"symbols":[{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","quoteAsset":"BTC"}]}"#;
        let s = exchange_info(spot).expect("valid");
        assert_eq!(s[0].symbol, "ETHBTC");
        assert_eq!(s[0].status, "TRADING");
        assert_eq!(s[0].onboard_date, None);
        // Spec §3.7 (JS-CM-T).
        let cm = br#"{"symbols":[{"symbol":"BTCUSD_200925","pair":"BTCUSD","contractType":"CURRENT_QUARTER","deliveryDate":1601020800000,"onboardDate":1590739200000,"contractStatus":"TRADING","contractSize":100}]}"#;
        let c = &exchange_info(cm).expect("valid")[0];
        assert_eq!(c.status, "TRADING");
        assert_eq!(c.pair.as_deref(), Some("BTCUSD"));
        assert_eq!(c.onboard_date, Some(1_590_739_200_000));
        assert_eq!(c.delivery_date, Some(1_601_020_800_000));
    }

    #[test]
    fn reads_the_tightest_request_weight_limit() {
        let spot = br#"{"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000},{"rateLimitType":"RAW_REQUESTS","interval":"MINUTE","intervalNum":5,"limit":61000}],"symbols":[]}"#;
        assert_eq!(weight_limit(spot), Ok(Some((6000, 60_000))));
        let two = br#"{"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":2400},{"rateLimitType":"REQUEST_WEIGHT","interval":"SECOND","intervalNum":10,"limit":300}]}"#;
        assert_eq!(weight_limit(two), Ok(Some((300, 10_000))));
        assert_eq!(weight_limit(br#"{"rateLimits":[]}"#), Ok(None));
        assert!(weight_limit(b"<html>").is_err());
    }
}
