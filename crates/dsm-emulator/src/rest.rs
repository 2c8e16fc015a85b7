//! REST market data (spec §3): klines-class endpoints with the §3.3 selection rules, funding history,
//! exchangeInfo, ping/time, weights and the 429/418 regime, error bodies of §3.6.

use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};

use crate::Shared;
use crate::fault::{FaultKind, Group};
use crate::limits::Verdict;
use crate::market::{DAY_MS, Interval, KlineKind, Market};
use crate::reply::{Reply, parse_query};
use crate::synth::{self, Candle, FUNDING_DP, Funding};

const JSON: &str = "application/json;charset=UTF-8";

fn error(code: i32, msg: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_REQUEST,
        JSON,
        serde_json::json!({"code": code, "msg": msg}).to_string(),
    )
}

pub(crate) fn too_many(m: Market, limit: u32) -> Reply {
    let msg = match m {
        Market::Spot => format!(
            "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        ),
        _ => format!(
            "Too many requests; current limit is {limit} requests per minute. Please use the websocket for live updates to avoid polling the API."
        ),
    };
    Reply::new(
        StatusCode::TOO_MANY_REQUESTS,
        JSON,
        serde_json::json!({"code": -1003, "msg": msg}).to_string(),
    )
}

pub(crate) fn banned(m: Market, until_ms: i64) -> Reply {
    let msg = match m {
        Market::Spot => format!(
            "Way too much request weight used; IP banned until {until_ms}. Please use WebSocket Streams for live updates to avoid bans."
        ),
        _ => format!(
            "Way too many requests; IP banned until {until_ms}. Please use the websocket for live updates to avoid bans."
        ),
    };
    Reply::new(
        StatusCode::IM_A_TEAPOT,
        JSON,
        serde_json::json!({"code": -1003, "msg": msg}).to_string(),
    )
}

fn mandatory(p: &str) -> Reply {
    error(
        -1102,
        &format!("Mandatory parameter '{p}' was not sent, was empty/null, or malformed."),
    )
}

fn illegal(p: &str, range: &str) -> Reply {
    error(
        -1100,
        &format!("Illegal characters found in parameter '{p}'; legal range is '{range}'."),
    )
}

fn invalid_value(p: &str) -> Reply {
    error(
        -1130,
        &format!("Data sent for parameter '{p}' is not valid."),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Klines(KlineKind),
    Funding,
    /// `aggTrades` (every market).
    AggTrades,
    /// Spot `historicalTrades` (no key needed); futures need an API key.
    HistoricalTrades,
    ExchangeInfo,
    Ping,
    Time,
    /// USD-M 5-minute statistics (`/futures/data/...`): the archive's metrics, 30 days back.
    Stats(Stat),
}

/// One of the USD-M statistics endpoints, and the metrics column it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    OpenInterest,
    TopAccounts,
    TopPositions,
    AllAccounts,
    TakerVolume,
}

/// How far back the statistics endpoints answer (Binance: "only the data of the latest 30 days").
const STATS_DAYS: i64 = 30;

fn endpoint(m: Market, name: &str) -> Option<Endpoint> {
    Some(match (m, name) {
        (_, "klines") => Endpoint::Klines(KlineKind::Klines),
        (Market::Spot, "uiKlines") => Endpoint::Klines(KlineKind::Klines),
        (Market::Um | Market::Cm, "markPriceKlines") => Endpoint::Klines(KlineKind::MarkPrice),
        (Market::Um | Market::Cm, "indexPriceKlines") => Endpoint::Klines(KlineKind::IndexPrice),
        (Market::Um | Market::Cm, "premiumIndexKlines") => {
            Endpoint::Klines(KlineKind::PremiumIndex)
        }
        (Market::Um | Market::Cm, "fundingRate") => Endpoint::Funding,
        (_, "aggTrades") => Endpoint::AggTrades,
        (_, "historicalTrades") => Endpoint::HistoricalTrades,
        (_, "exchangeInfo") => Endpoint::ExchangeInfo,
        (Market::Um, "data/openInterestHist") => Endpoint::Stats(Stat::OpenInterest),
        (Market::Um, "data/topLongShortAccountRatio") => Endpoint::Stats(Stat::TopAccounts),
        (Market::Um, "data/topLongShortPositionRatio") => Endpoint::Stats(Stat::TopPositions),
        (Market::Um, "data/globalLongShortAccountRatio") => Endpoint::Stats(Stat::AllAccounts),
        (Market::Um, "data/takerlongshortRatio") => Endpoint::Stats(Stat::TakerVolume),
        (_, "ping") => Endpoint::Ping,
        (_, "time") => Endpoint::Time,
        _ => return None,
    })
}

type Params = Vec<(String, String)>;

fn param<'a>(q: &'a Params, k: &str) -> Option<&'a str> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

fn futures_kline_weight(limit: i64) -> u32 {
    match limit {
        ..100 => 1,
        100..500 => 2,
        500..=1000 => 5,
        _ => 10,
    }
}

fn weight(m: Market, ep: Endpoint, q: &Params) -> u32 {
    match (m, ep) {
        (Market::Spot, Endpoint::Klines(_)) => 2,
        (_, Endpoint::Klines(_)) => {
            let limit = param(q, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(500);
            futures_kline_weight(limit)
        }
        (Market::Spot, Endpoint::ExchangeInfo) => 20,
        (Market::Spot, Endpoint::AggTrades) => 4,
        (_, Endpoint::AggTrades) => 20,
        (_, Endpoint::HistoricalTrades) => 25,
        _ => 1,
    }
}

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    m: Market,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Reply {
    let name = path
        .strip_prefix(m.rest_prefix())
        .or_else(|| path.strip_prefix("/futures"))
        .unwrap_or("")
        .trim_start_matches('/');
    let Some(ep) = endpoint(m, name) else {
        return Reply::new(StatusCode::NOT_FOUND, "text/html", "");
    };
    let q = parse_query(query);
    let verdict = shared
        .limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .charge(m, weight(m, ep, &q));
    let secs = |d: std::time::Duration| d.as_secs_f64().ceil().max(1.0) as u64;
    let (reply, used) = match verdict {
        Verdict::Ok { used } => {
            let r = dispatch(shared, m, ep, path, &q, headers);
            (r, used)
        }
        Verdict::TooMany { used, retry_after } => (
            too_many(m, shared.rate_limits.limit(m)).header(header::RETRY_AFTER, secs(retry_after)),
            used,
        ),
        Verdict::Banned { used, retry_after } => {
            let until = shared.now_ms() + retry_after.as_millis() as i64;
            (
                banned(m, until).header(header::RETRY_AFTER, secs(retry_after)),
                used,
            )
        }
    };
    let (_, _, label) = shared.rate_limits.window_label();
    let mut reply = reply.header(format!("x-mbx-used-weight-{label}"), used);
    if m == Market::Spot {
        reply = reply.header("x-mbx-used-weight", used);
    }
    reply
}

fn dispatch(
    shared: &Arc<Shared>,
    m: Market,
    ep: Endpoint,
    path: &str,
    q: &Params,
    headers: &HeaderMap,
) -> Reply {
    match ep {
        Endpoint::Ping => Reply::new(StatusCode::OK, JSON, "{}"),
        Endpoint::Time => Reply::new(
            StatusCode::OK,
            JSON,
            format!("{{\"serverTime\":{}}}", shared.now_ms()),
        ),
        Endpoint::ExchangeInfo => exchange_info(shared, m, q),
        Endpoint::Klines(kind) => {
            let dup = duplicate(shared, path);
            klines(shared, m, kind, q, headers, dup)
        }
        Endpoint::Funding => {
            let dup = duplicate(shared, path);
            funding(shared, m, q, dup)
        }
        Endpoint::AggTrades => agg_trades(shared, m, q),
        Endpoint::Stats(stat) => stats(shared, stat, q),
        Endpoint::HistoricalTrades if m == Market::Spot => historical_trades(shared, m, q),
        // Binance asks for an API key here: dsm has none, like most of its users.
        Endpoint::HistoricalTrades => Reply::new(
            StatusCode::UNAUTHORIZED,
            JSON,
            serde_json::json!({"code": -2014, "msg": "API-key format invalid."}).to_string(),
        ),
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The symbol, limit (default 500, at most 1000) and optional `fromId`, `startTime`, `endTime` of
/// a trades request, or the error reply.
struct TradeQuery<'a> {
    symbol: &'a str,
    limit: usize,
    from_id: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
}

fn trade_query<'a>(shared: &Shared, m: Market, q: &'a Params) -> Result<TradeQuery<'a>, Reply> {
    let symbol = match param(q, "symbol") {
        None | Some("") => return Err(mandatory("symbol")),
        Some(s) if !legal_symbol(s) => return Err(illegal("symbol", "^[A-Z0-9-_.]{1,20}$")),
        Some(s) => s,
    };
    if shared.store.spec(m, symbol).is_none() {
        return Err(error(-1121, "Invalid symbol."));
    }
    let limit = match parse_num(q, "limit")? {
        None => 500,
        Some(0) => return Err(invalid_value("limit")),
        Some(l) => l.min(1000) as usize,
    };
    Ok(TradeQuery {
        symbol,
        limit,
        from_id: parse_num(q, "fromId")?,
        start: parse_num(q, "startTime")?,
        end: parse_num(q, "endTime")?,
    })
}

/// Rows with id at or after `from_id`, day after day (ids grow with time), at most `limit`,
/// none after `now`.
fn rows_from_id<T>(
    from_id: i64,
    limit: usize,
    per_day: u32,
    now: i64,
    day_rows: impl Fn(chrono::NaiveDate) -> Vec<T>,
    id: impl Fn(&T) -> i64,
    time: impl Fn(&T) -> i64,
) -> Vec<T> {
    let mut day = synth::day_of_id(from_id, per_day);
    let mut out = Vec::new();
    while out.len() < limit && day <= now {
        let Some(date) = chrono::DateTime::from_timestamp_millis(day).map(|t| t.date_naive())
        else {
            break;
        };
        out.extend(
            day_rows(date)
                .into_iter()
                .filter(|r| id(r) >= from_id && time(r) <= now)
                .take(limit - out.len()),
        );
        day += DAY_MS;
    }
    out
}

/// Rows with time in `[lo, hi]`, at most `limit` from the first (or, `latest`, the last).
fn rows_between<T>(
    lo: i64,
    hi: i64,
    limit: usize,
    latest: bool,
    day_rows: impl Fn(chrono::NaiveDate) -> Vec<T>,
    time: impl Fn(&T) -> i64,
) -> Vec<T> {
    let mut out = Vec::new();
    let mut day = lo.div_euclid(DAY_MS) * DAY_MS;
    while day <= hi {
        let Some(date) = chrono::DateTime::from_timestamp_millis(day).map(|t| t.date_naive())
        else {
            break;
        };
        out.extend(
            day_rows(date)
                .into_iter()
                .filter(|r| (lo..=hi).contains(&time(r))),
        );
        if !latest && out.len() >= limit {
            break;
        }
        day += DAY_MS;
    }
    if latest {
        let n = out.len();
        out.into_iter().skip(n.saturating_sub(limit)).collect()
    } else {
        out.into_iter().take(limit).collect()
    }
}

/// `aggTrades`: by `fromId`, or by a time window of at most one hour, or the latest.
fn agg_trades(shared: &Arc<Shared>, m: Market, q: &Params) -> Reply {
    let tq = match trade_query(shared, m, q) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let Some((series, tf)) = shared.store.trade_fmt(m, tq.symbol) else {
        return error(-1121, "Invalid symbol.");
    };
    let now = shared.now_ms();
    let day_rows = |d| shared.store.agg_trades_day(m, tq.symbol, d);
    let rows = match (tq.from_id, tq.start, tq.end) {
        (Some(id), _, _) => rows_from_id(
            id,
            tq.limit,
            shared.store.trades_per_day,
            now,
            day_rows,
            |t| t.agg_id,
            |t| t.time,
        ),
        (None, Some(s), Some(e)) if e - s > HOUR_MS => {
            return error(-1127, "More than 1 hours between startTime and endTime.");
        }
        (None, Some(s), Some(e)) if s > e => {
            return error(-1023, "Start time is greater than end time.");
        }
        (None, Some(s), e) => {
            let hi = e.unwrap_or(s + HOUR_MS).min(now);
            rows_between(s, hi, tq.limit, false, day_rows, |t| t.time)
        }
        (None, None, Some(e)) => {
            rows_between(e - HOUR_MS, e.min(now), tq.limit, false, day_rows, |t| {
                t.time
            })
        }
        (None, None, None) => {
            rows_between(now - HOUR_MS, now, tq.limit, true, day_rows, |t| t.time)
        }
    };
    let spot = m == Market::Spot;
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|t| {
            let mut o = serde_json::json!({
                "a": t.agg_id,
                "p": synth::fixed_string(t.price, series.fmt.price_dp),
                "q": synth::fixed_string(t.qty, tf.qty_dp),
                "f": t.first_id,
                "l": t.last_id,
                "T": t.time,
                "m": t.is_buyer_maker,
            });
            if spot {
                o["M"] = serde_json::Value::Bool(true);
            }
            o
        })
        .collect();
    Reply::new(
        StatusCode::OK,
        JSON,
        serde_json::Value::Array(v).to_string(),
    )
}

/// Spot `historicalTrades`: from `fromId`, or the latest.
fn historical_trades(shared: &Arc<Shared>, m: Market, q: &Params) -> Reply {
    let tq = match trade_query(shared, m, q) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let Some((series, tf)) = shared.store.trade_fmt(m, tq.symbol) else {
        return error(-1121, "Invalid symbol.");
    };
    let now = shared.now_ms();
    let day_rows = |d| shared.store.trades_day(m, tq.symbol, d);
    let rows = match tq.from_id {
        Some(id) => rows_from_id(
            id,
            tq.limit,
            shared.store.trades_per_day,
            now,
            day_rows,
            |t| t.id,
            |t| t.time,
        ),
        None => rows_between(now - DAY_MS, now, tq.limit, true, day_rows, |t| t.time),
    };
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "price": synth::fixed_string(t.price, series.fmt.price_dp),
                "qty": synth::fixed_string(t.qty, tf.qty_dp),
                "quoteQty": synth::fixed_string(t.quote_qty, tf.quote_dp),
                "time": t.time,
                "isBuyerMaker": t.is_buyer_maker,
                "isBestMatch": true,
            })
        })
        .collect();
    Reply::new(
        StatusCode::OK,
        JSON,
        serde_json::Value::Array(v).to_string(),
    )
}

fn duplicate(shared: &Shared, path: &str) -> bool {
    shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(Group::Content, |f| {
            f.kind == FaultKind::DuplicateRows && f.matches(path)
        })
        .is_some()
}

/// Repeats every 7th row (the first included) right after itself.
fn dup_rows<T: Clone>(rows: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(rows.len() + rows.len() / 7 + 1);
    for (i, r) in rows.into_iter().enumerate() {
        if i % 7 == 0 {
            out.push(r.clone());
        }
        out.push(r);
    }
    out
}

fn legal_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn parse_num(q: &Params, k: &str) -> Result<Option<i64>, Reply> {
    match param(q, k) {
        None | Some("") => Ok(None),
        Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse().map(Some).map_err(|_| illegal(k, "^[0-9]{1,20}$"))
        }
        Some(_) => Err(illegal(k, "^[0-9]{1,20}$")),
    }
}

fn klines(
    shared: &Arc<Shared>,
    m: Market,
    kind: KlineKind,
    q: &Params,
    headers: &HeaderMap,
    dup: bool,
) -> Reply {
    let sym_param = if kind == KlineKind::IndexPrice {
        "pair"
    } else {
        "symbol"
    };
    let sym = match param(q, sym_param) {
        None | Some("") => return mandatory(sym_param),
        Some(s) => s,
    };
    if !legal_symbol(sym) {
        return illegal(sym_param, "^[A-Z0-9-_.]{1,20}$");
    }
    let iv = match param(q, "interval") {
        None | Some("") => return mandatory("interval"),
        Some(i) => i,
    };
    let Some(series) = shared.store.series(m, kind, sym) else {
        return error(-1121, "Invalid symbol.");
    };
    let Some(iv) = Interval::from_rest(iv).filter(|i| i.valid_for(m)) else {
        return error(-1120, "Invalid interval.");
    };
    let limit = match parse_num(q, "limit") {
        Err(e) => return e,
        Ok(None) => 500,
        Ok(Some(0)) => return invalid_value("limit"),
        Ok(Some(l)) => l,
    };
    let max = if m == Market::Spot { 1000 } else { 1500 };
    let limit = limit.min(max) as usize;
    let micros_in = |v: i64| {
        if m == Market::Spot && v >= 1_000_000_000_000_000 {
            v / 1000
        } else {
            v
        }
    };
    let start = match parse_num(q, "startTime") {
        Err(e) => return e,
        Ok(v) => v.map(micros_in),
    };
    let end = match parse_num(q, "endTime") {
        Err(e) => return e,
        Ok(v) => v.map(micros_in),
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return if m == Market::Spot {
            Reply::new(StatusCode::OK, JSON, "[]")
        } else {
            error(-1023, "Start time is greater than end time.")
        };
    }
    let now = shared.now_ms();
    let store = &shared.store;
    let rows = if m == Market::Cm {
        let w = shared.cm_max_window_days * DAY_MS;
        let (lo, hi) = match (start, end) {
            (None, None) => (now - w, now),
            (Some(s), None) => (s, (s + w).min(now)),
            (None, Some(e)) => (e - w, e),
            (Some(s), Some(e)) => {
                if e - s > w {
                    if shared.cm_window_error {
                        return invalid_value("endTime");
                    }
                    (e - w, e)
                } else {
                    (s, e)
                }
            }
        };
        store.select(&series, iv, lo, hi, limit, now, false)
    } else {
        match (start, end) {
            (None, None) => store.select(&series, iv, i64::MIN / 4, now, limit, now, false),
            (Some(s), None) => store.select(&series, iv, s, now, limit, now, true),
            (None, Some(e)) => store.select(&series, iv, i64::MIN / 4, e, limit, now, false),
            (Some(s), Some(e)) => store.select(&series, iv, s, e, limit, now, true),
        }
    };
    let rows = if dup { dup_rows(rows) } else { rows };
    let micros = m == Market::Spot
        && headers
            .get("x-mbx-time-unit")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("microsecond"));
    let unit = if micros { 1000 } else { 1 };
    let f = series.fmt;
    let mut out = String::with_capacity(rows.len() * 160 + 2);
    out.push('[');
    for (i, c) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_candle(&mut out, c, iv.len_at(c.open_time), unit, f);
    }
    out.push(']');
    Reply::new(StatusCode::OK, JSON, out)
}

fn write_candle(out: &mut String, c: &Candle, len: i64, unit: i64, f: crate::market::SeriesFmt) {
    let s = |m: i64, dp: u8| synth::fixed_string(m, dp);
    let _ = write!(
        out,
        "[{},\"{}\",\"{}\",\"{}\",\"{}\",\"{}\",{},\"{}\",{},\"{}\",\"{}\",\"0\"]",
        c.open_time * unit,
        s(c.open, f.price_dp),
        s(c.high, f.price_dp),
        s(c.low, f.price_dp),
        s(c.close, f.price_dp),
        s(c.volume, f.vol_dp),
        (c.open_time + len) * unit - 1,
        s(c.quote_volume, f.quote_dp),
        c.count,
        s(c.taker_buy_volume, f.vol_dp),
        s(c.taker_buy_quote_volume, f.quote_dp),
    );
}

/// A statistics endpoint: the metrics rows of the last 30 days (and not after now) with time in
/// `[startTime, endTime]`, ascending, at most `limit` (default 30, at most 500); 5-minute periods
/// only.
fn stats(shared: &Arc<Shared>, stat: Stat, q: &Params) -> Reply {
    let Some(sym) = param(q, "symbol").filter(|s| !s.is_empty()) else {
        return mandatory("symbol");
    };
    match param(q, "period") {
        None => return mandatory("period"),
        Some("5m") => {}
        Some(_) => return invalid_value("period"),
    }
    let limit = match parse_num(q, "limit") {
        Err(e) => return e,
        Ok(None) => 30,
        Ok(Some(l)) if l <= 0 => return invalid_value("limit"),
        Ok(Some(l)) => l.min(500) as usize,
    };
    let (start, end) = match (parse_num(q, "startTime"), parse_num(q, "endTime")) {
        (Err(e), _) | (_, Err(e)) => return e,
        (Ok(s), Ok(e)) => (s, e),
    };
    let store = &shared.store;
    let kind = crate::tables::TableKind::Metrics;
    let Some((first, _)) = kind.life(store, Market::Um, sym) else {
        return error(-1121, "Invalid symbol.");
    };
    let now = shared.now_ms();
    let lo = start
        .unwrap_or(i64::MIN)
        .max(now - STATS_DAYS * DAY_MS)
        .max(first);
    let hi = end.unwrap_or(now).min(now);
    let mut out = Vec::new();
    let mut day = lo.div_euclid(DAY_MS) * DAY_MS;
    while day <= hi && out.len() < limit {
        let date = crate::market::ms_to_date(day);
        for r in kind.rows(store.seed, sym, date) {
            if r.time < lo || r.time > hi || out.len() == limit {
                continue;
            }
            let f = &r.fields;
            let ratio = |v: &str| {
                let x: f64 = v.parse().unwrap_or(1.0);
                let long = x / (1.0 + x);
                serde_json::json!({
                    "symbol": sym, "longShortRatio": v, "longAccount": format!("{long:.4}"),
                    "shortAccount": format!("{:.4}", 1.0 - long), "timestamp": r.time,
                })
            };
            out.push(match stat {
                Stat::OpenInterest => serde_json::json!({
                    "symbol": sym, "sumOpenInterest": f[1], "sumOpenInterestValue": f[2],
                    "timestamp": r.time,
                }),
                Stat::TopAccounts => ratio(&f[3]),
                Stat::TopPositions => ratio(&f[4]),
                Stat::AllAccounts => ratio(&f[5]),
                Stat::TakerVolume => serde_json::json!({
                    "buySellRatio": f[6], "buyVol": "1000.000", "sellVol": "1000.000",
                    "timestamp": r.time,
                }),
            });
        }
        day += DAY_MS;
    }
    Reply::new(
        StatusCode::OK,
        JSON,
        serde_json::Value::Array(out).to_string(),
    )
}

fn funding(shared: &Arc<Shared>, m: Market, q: &Params, dup: bool) -> Reply {
    let sym = param(q, "symbol").filter(|s| !s.is_empty());
    if m == Market::Cm && sym.is_none() {
        return mandatory("symbol");
    }
    if let Some(s) = sym {
        if !legal_symbol(s) {
            return illegal("symbol", "^[A-Z0-9-_.]{1,20}$");
        }
        if shared.store.spec(m, s).is_none() {
            return error(-1121, "Invalid symbol.");
        }
    }
    let limit = match parse_num(q, "limit") {
        Err(e) => return e,
        Ok(None) => 100,
        Ok(Some(0)) => return invalid_value("limit"),
        Ok(Some(l)) => l.min(1000) as usize,
    };
    let (start, end) = match (parse_num(q, "startTime"), parse_num(q, "endTime")) {
        (Err(e), _) | (_, Err(e)) => return e,
        (Ok(s), Ok(e)) => (s, e),
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return error(-1023, "Start time is greater than end time.");
    }
    let now = shared.now_ms();
    let hi = end.unwrap_or(now).min(now);
    let symbols: Vec<String> = match sym {
        Some(s) => vec![s.to_string()],
        None => shared
            .store
            .symbols
            .iter()
            .filter(|s| s.market == m && s.is_perpetual())
            .map(|s| s.symbol.clone())
            .collect(),
    };
    let mut rows: Vec<(String, Funding)> = Vec::new();
    for s in &symbols {
        let lo = start.unwrap_or(i64::MIN / 4);
        rows.extend(
            shared
                .store
                .funding(m, s, lo, hi.saturating_add(1))
                .into_iter()
                .map(|f| (s.clone(), f)),
        );
    }
    rows.sort_by_key(|(s, f)| (f.time, s.clone()));
    let rows: Vec<_> = if start.is_some() {
        rows.into_iter().take(limit).collect()
    } else {
        let n = rows.len();
        rows.into_iter().skip(n.saturating_sub(limit)).collect()
    };
    let rows = if dup { dup_rows(rows) } else { rows };
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|(s, f)| {
            let mut o = serde_json::json!({
                "symbol": s,
                "fundingTime": f.time,
                "fundingRate": synth::fixed_string(f.rate, FUNDING_DP),
            });
            if m == Market::Um {
                o["markPrice"] = serde_json::Value::String(synth::fixed_string(f.mark, 8));
            }
            o
        })
        .collect();
    Reply::new(
        StatusCode::OK,
        JSON,
        serde_json::Value::Array(v).to_string(),
    )
}

fn exchange_info(shared: &Arc<Shared>, m: Market, q: &Params) -> Reply {
    let now = shared.now_ms();
    let mut wanted: Option<Vec<String>> = None;
    if m == Market::Spot {
        if let Some(s) = param(q, "symbol") {
            wanted = Some(vec![s.to_string()]);
        } else if let Some(s) = param(q, "symbols") {
            match serde_json::from_str::<Vec<String>>(s) {
                Ok(v) => wanted = Some(v),
                Err(_) => {
                    return illegal(
                        "symbols",
                        "^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$",
                    );
                }
            }
        }
        if let Some(w) = &wanted
            && w.iter().any(|s| shared.store.spec(m, s).is_none())
        {
            return error(-1121, "Invalid symbol.");
        }
    }
    let symbols: Vec<serde_json::Value> = shared
        .store
        .symbols
        .iter()
        .filter(|s| s.market == m)
        .filter(|s| s.listed.timestamp_millis() <= now)
        .filter(|s| s.delivery().is_none_or(|d| d.timestamp_millis() > now))
        // A delisted symbol leaves exchangeInfo, unless it is kept with status BREAK.
        .filter(|s| {
            s.break_after_delisting || s.delisted.is_none_or(|d| d.timestamp_millis() > now)
        })
        .filter(|s| wanted.as_ref().is_none_or(|w| w.contains(&s.symbol)))
        .map(|s| {
            let (base, quote) = s.assets();
            let dp = crate::market::futures_price_dp(s.base_price);
            match m {
                Market::Spot => serde_json::json!({
                    "symbol": s.symbol,
                    "status": if s.delisted.is_some_and(|d| d.timestamp_millis() <= now) { "BREAK" } else { "TRADING" }, "baseAsset": base, "baseAssetPrecision": 8,
                    "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": true, "filters": [],
                    "permissions": [], "permissionSets": [["SPOT"]],
                }),
                Market::Um => serde_json::json!({
                    "symbol": s.symbol, "pair": s.pair(),
                    "contractType": if s.is_perpetual() { "PERPETUAL" } else { "CURRENT_QUARTER" },
                    "deliveryDate": s.delivery().map_or(4_133_404_800_000, |d| d.timestamp_millis()),
                    "onboardDate": s.listed.timestamp_millis(), "status": "TRADING",
                    "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
                    "pricePrecision": dp, "quantityPrecision": 3, "underlyingType": "COIN", "filters": [],
                }),
                Market::Cm | Market::Option => serde_json::json!({
                    "symbol": s.symbol, "pair": s.pair(),
                    "contractType": if s.is_perpetual() { "PERPETUAL" } else { "CURRENT_QUARTER" },
                    "deliveryDate": s.delivery().map_or(4_133_404_800_000, |d| d.timestamp_millis()),
                    "onboardDate": s.listed.timestamp_millis(), "contractStatus": "TRADING",
                    "contractSize": s.contract_size(), "baseAsset": base, "quoteAsset": quote,
                    "marginAsset": base, "pricePrecision": dp, "quantityPrecision": 0, "filters": [],
                }),
            }
        })
        .collect();
    let limit = shared.rate_limits.limit(m);
    let (interval, interval_num, _) = shared.rate_limits.window_label();
    let body = serde_json::json!({
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": interval_num, "limit": limit},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    });
    Reply::new(StatusCode::OK, JSON, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_brackets() {
        assert_eq!(futures_kline_weight(99), 1);
        assert_eq!(futures_kline_weight(100), 2);
        assert_eq!(futures_kline_weight(499), 2);
        assert_eq!(futures_kline_weight(500), 5);
        assert_eq!(futures_kline_weight(1000), 5);
        assert_eq!(futures_kline_weight(1001), 10);
    }

    #[test]
    fn symbols() {
        assert!(legal_symbol("BTCUSD_PERP"));
        assert!(!legal_symbol("btcusdt"));
        assert!(!legal_symbol(""));
    }
}
