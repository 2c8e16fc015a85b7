//! Deterministic synthetic data: a stateless price path per series, candles, funding and trades.
//!
//! Every value is a fixed-point integer (mantissa + decimal places) so that the CSV text, the JSON
//! strings and the `f64` in the truth accessors are the same number: `m as f64 / 10^dp` is correctly
//! rounded, exactly what parsing the printed decimal gives.

use crate::market::{DAY_MS, Interval, KlineKind, Market, SeriesFmt, SymbolSpec};

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Uniform in [0, 1).
pub(crate) fn unit(x: u64) -> f64 {
    (splitmix(x) >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) const POW10: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

/// Rounds `v` to `tick_dp` decimals and returns the mantissa at `dp` decimals.
pub(crate) fn to_fixed(v: f64, tick_dp: u8, dp: u8) -> i64 {
    let m = (v * POW10[usize::from(tick_dp)] as f64).round() as i64;
    m.saturating_mul(POW10[usize::from(dp.saturating_sub(tick_dp))])
}

/// The `f64` that parsing the printed decimal `m / 10^dp` yields.
pub(crate) fn fixed_f64(m: i64, dp: u8) -> f64 {
    if m.unsigned_abs() < (1u64 << 53) {
        m as f64 / POW10[usize::from(dp)] as f64
    } else {
        let mut buf = Vec::with_capacity(24);
        write_fixed(&mut buf, m, dp);
        std::str::from_utf8(&buf)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

pub(crate) fn write_int(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    let mut u = v.unsigned_abs();
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Writes `m / 10^dp` as a plain decimal with exactly `dp` decimals (no point when `dp == 0`).
pub(crate) fn write_fixed(buf: &mut Vec<u8>, m: i64, dp: u8) {
    if dp == 0 {
        write_int(buf, m);
        return;
    }
    if m < 0 {
        buf.push(b'-');
    }
    let u = m.unsigned_abs();
    let p = POW10[usize::from(dp)].unsigned_abs();
    let (int, frac) = (u / p, u % p);
    write_int(buf, int as i64);
    buf.push(b'.');
    let mut tmp = [b'0'; 20];
    let mut f = frac;
    for i in (0..usize::from(dp)).rev() {
        tmp[i] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    buf.extend_from_slice(&tmp[..usize::from(dp)]);
}

pub(crate) fn fixed_string(m: i64, dp: u8) -> String {
    let mut b = Vec::with_capacity(24);
    write_fixed(&mut b, m, dp);
    String::from_utf8(b).unwrap_or_default()
}

/// Parses a plain decimal into a mantissa at `dp` decimals (rounding away extra decimals).
pub(crate) fn parse_fixed(s: &str, dp: u8) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut m: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let dp = usize::from(dp);
    for i in 0..dp {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        m = m.checked_mul(10)?.checked_add(d)?;
    }
    if frac.as_bytes().get(dp).is_some_and(|b| *b >= b'5') {
        m += 1;
    }
    Some(if neg { -m } else { m })
}

/// A candle in fixed point (decimals given by the series' [`SeriesFmt`]). Times in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candle {
    pub open_time: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i64,
    pub quote_volume: i64,
    pub count: i64,
    pub taker_buy_volume: i64,
    pub taker_buy_quote_volume: i64,
}

/// Scales (ms) and log-amplitudes of the value-noise octaves of the price path.
const OCTAVES: [(i64, f64); 5] = [
    (30 * DAY_MS, 0.20),
    (DAY_MS, 0.04),
    (3_600_000, 0.008),
    (60_000, 0.0015),
    (1_000, 0.0002),
];

/// One generated series: (market, kind, symbol-or-pair).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub market: Market,
    pub kind: KlineKind,
    /// Symbol as it appears in paths (pair for CM index price klines).
    pub name: String,
    pub fmt: SeriesFmt,
    pub base_price: f64,
    pub contract_size: i64,
    /// First ms with data (candles whose end is after it are included).
    pub listed_ms: i64,
    /// No candle opens at or after this instant (dated contracts).
    pub end_ms: Option<i64>,
    key: u64,
}

impl Series {
    pub(crate) fn new(seed: u64, spec: &SymbolSpec, kind: KlineKind, name: &str) -> Series {
        let key = splitmix(
            seed ^ fnv(name).rotate_left(7)
                ^ kind.tag().wrapping_mul(0x51)
                ^ (spec.market.index() as u64) << 60,
        );
        Series {
            market: spec.market,
            kind,
            name: name.to_string(),
            fmt: SeriesFmt::for_symbol(spec, kind),
            base_price: spec.base_price,
            contract_size: spec.contract_size(),
            listed_ms: spec.listed.timestamp_millis(),
            end_ms: if kind == KlineKind::IndexPrice {
                None
            } else {
                spec.end().map(|d| d.timestamp_millis())
            },
            key,
        }
    }

    fn noise(&self, t: i64, salt: u64) -> f64 {
        let mut acc = 0.0;
        for (i, (scale, amp)) in OCTAVES.iter().enumerate() {
            let k = t.div_euclid(*scale);
            let frac = (t - k * scale) as f64 / *scale as f64;
            let base = self.key ^ salt ^ ((i as u64 + 1) << 56);
            let a = unit(base ^ (k as u64).wrapping_mul(0x9E37)) * 2.0 - 1.0;
            let b = unit(base ^ ((k + 1) as u64).wrapping_mul(0x9E37)) * 2.0 - 1.0;
            acc += amp * (a + (b - a) * frac);
        }
        acc
    }

    /// The (unrounded) value of the series at instant `t` (ms).
    pub(crate) fn value_at(&self, t: i64) -> f64 {
        match self.kind {
            KlineKind::PremiumIndex => self.noise(t, 0x77) * 0.002,
            _ => self.base_price * self.noise(t, 0).exp(),
        }
    }

    pub(crate) fn price_fixed(&self, t: i64) -> i64 {
        to_fixed(self.value_at(t), self.fmt.price_tick_dp, self.fmt.price_dp)
    }

    /// Whether a candle opening at `open` (of length `len`) exists for this series.
    pub(crate) fn has_candle(&self, open: i64, len: i64) -> bool {
        open + len > self.listed_ms && self.end_ms.is_none_or(|e| open < e)
    }

    /// The final (closed) candle opening at `open`.
    pub(crate) fn candle(&self, interval: Interval, open: i64) -> Candle {
        let len = interval.len_at(open);
        let o = self.price_fixed(open);
        let c = self.price_fixed(open + len);
        let h0 = o.max(c);
        let l0 = o.min(c);
        let r = self.key
            ^ (open as u64).wrapping_mul(0xA24B_AED4_963E_E407)
            ^ fnv(interval.vision_name());
        let wig = (len as f64 / 60_000.0).sqrt() * 0.0004;
        let p = self.fmt.price_dp;
        let tick = POW10[usize::from(p - self.fmt.price_tick_dp)];
        let spread = |h: i64, u: f64| -> i64 {
            let d = (h.unsigned_abs() as f64 * wig * u) as i64;
            d - d % tick
        };
        let high = h0 + spread(h0, unit(r ^ 1));
        let low = (l0 - spread(l0, unit(r ^ 2))).max(if self.kind == KlineKind::PremiumIndex {
            i64::MIN / 4
        } else {
            tick
        });
        if self.kind != KlineKind::Klines {
            return Candle {
                open_time: open,
                open: o,
                high,
                low,
                close: c,
                volume: 0,
                quote_volume: 0,
                count: len / 1000,
                taker_buy_volume: 0,
                taker_buy_quote_volume: 0,
            };
        }
        let minutes = len as f64 / 60_000.0;
        let vwap = fixed_f64(o + c + high + low, p) / 4.0;
        let base_qty = 200_000.0 / self.base_price * minutes * (0.3 + 1.4 * unit(r ^ 3));
        let taker = 0.3 + 0.4 * unit(r ^ 4);
        let count = ((minutes * 40.0 * (0.5 + unit(r ^ 5))) as i64).max(1);
        let f = self.fmt;
        let (volume, quote, tb, tbq) = if self.market == Market::Cm {
            let contracts = ((base_qty * vwap / self.contract_size as f64).round() as i64).max(1);
            let base = contracts as f64 * self.contract_size as f64 / vwap;
            let tb = (contracts as f64 * taker).round() as i64;
            let tbq = tb as f64 * self.contract_size as f64 / vwap;
            (
                contracts,
                to_fixed(base, f.quote_dp, f.quote_dp),
                tb,
                to_fixed(tbq, f.quote_dp, f.quote_dp),
            )
        } else {
            let v = to_fixed(base_qty, f.vol_tick_dp, f.vol_dp)
                .max(POW10[usize::from(f.vol_dp - f.vol_tick_dp)]);
            let vf = fixed_f64(v, f.vol_dp);
            let tb = to_fixed(vf * taker, f.vol_tick_dp, f.vol_dp);
            let tbf = fixed_f64(tb, f.vol_dp);
            (
                v,
                to_fixed(vf * vwap, f.quote_dp, f.quote_dp),
                tb,
                to_fixed(tbf * vwap, f.quote_dp, f.quote_dp),
            )
        };
        Candle {
            open_time: open,
            open: o,
            high,
            low,
            close: c,
            volume,
            quote_volume: quote,
            count,
            taker_buy_volume: tb,
            taker_buy_quote_volume: tbq,
        }
    }
}

/// The still-open version of a final candle at `elapsed` of `len` ms: a mid price as close,
/// partial volumes and count. Always differs from the final candle in close, volume or count.
pub(crate) fn open_version(c: &Candle, elapsed: i64, len: i64, price_tick: i64) -> Candle {
    let frac = (elapsed.clamp(0, len - 1)) as f64 / len as f64;
    let scale = |v: i64| (v as f64 * frac).floor() as i64;
    let mut close = c.open + ((c.close - c.open) as f64 * frac) as i64;
    close -= close % price_tick.max(1);
    Candle {
        open_time: c.open_time,
        open: c.open,
        high: c.open.max(close),
        low: c.open.min(close),
        close,
        volume: scale(c.volume),
        quote_volume: scale(c.quote_volume),
        count: if c.volume == 0 {
            elapsed / 1000
        } else {
            scale(c.count)
        },
        taker_buy_volume: scale(c.taker_buy_volume),
        taker_buy_quote_volume: scale(c.taker_buy_quote_volume),
    }
}

/// A funding record in fixed point: rate 8 dp, mark price at the series' price dp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Funding {
    pub time: i64,
    pub interval_hours: i32,
    pub rate: i64,
    pub mark: i64,
}

pub(crate) const FUNDING_DP: u8 = 8;

/// Funding records of a perpetual, every 8 h from 00:00 UTC, with 0–13 ms calc-time jitter.
pub(crate) fn funding_between(mark: &Series, from: i64, to: i64) -> Vec<Funding> {
    let step = 8 * 3_600_000;
    let mut out = Vec::new();
    let mut t = from.div_euclid(step) * step;
    while t < to {
        if t >= mark.listed_ms && mark.end_ms.is_none_or(|e| t < e) {
            let r = mark.key ^ 0xF0 ^ (t as u64).wrapping_mul(0x9E37_79B9);
            let jitter = (splitmix(r) % 14) as i64;
            let rate = 0.0001 + mark.noise(t, 0xF1) * 0.002;
            let time = t + jitter;
            if time >= from && time < to {
                out.push(Funding {
                    time,
                    interval_hours: 8,
                    rate: to_fixed(rate, FUNDING_DP, FUNDING_DP),
                    mark: to_fixed(mark.value_at(t), 8, 8),
                });
            }
        }
        t += step;
    }
    out
}

/// A trade in fixed point. Prices at the series price dp; qty/quote at `TradeFmt` dps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trade {
    pub id: i64,
    pub price: i64,
    pub qty: i64,
    pub quote_qty: i64,
    pub time: i64,
    pub is_buyer_maker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AggTrade {
    pub agg_id: i64,
    pub price: i64,
    pub qty: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub time: i64,
    pub is_buyer_maker: bool,
}

/// Decimals of trade quantities: spot 8/8, UM 3/quote 5, CM contracts printed with 1 dp / base 8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TradeFmt {
    pub qty_dp: u8,
    pub qty_tick_dp: u8,
    pub quote_dp: u8,
}

impl TradeFmt {
    pub(crate) fn for_series(s: &Series) -> TradeFmt {
        match s.market {
            Market::Spot | Market::Option => TradeFmt {
                qty_dp: 8,
                qty_tick_dp: s.fmt.vol_tick_dp,
                quote_dp: 8,
            },
            Market::Um => TradeFmt {
                qty_dp: s.fmt.vol_dp,
                qty_tick_dp: s.fmt.vol_tick_dp,
                quote_dp: 5,
            },
            Market::Cm => TradeFmt {
                qty_dp: 1,
                qty_tick_dp: 0,
                quote_dp: 8,
            },
        }
    }
}

/// Days since 2017-01-01, the base of synthetic trade ids.
/// Day 0 of the synthetic trade ids: 2017-01-01.
const ID_EPOCH_MS: i64 = 1_483_228_800_000;

fn day_index(day_start: i64) -> i64 {
    (day_start - ID_EPOCH_MS).div_euclid(DAY_MS).max(0)
}

/// The start of the day whose synthetic trade (or aggregate trade) ids include `id`.
pub(crate) fn day_of_id(id: i64, per_day: u32) -> i64 {
    ID_EPOCH_MS + id.div_euclid(i64::from(per_day.max(1))).max(0) * DAY_MS
}

/// The synthetic trades of one UTC day (`per_day` of them, evenly spread, whole ms).
pub(crate) fn trades_of_day(s: &Series, day_start: i64, per_day: u32) -> Vec<Trade> {
    let n = i64::from(per_day.max(1));
    let f = TradeFmt::for_series(s);
    let base = day_index(day_start) * n;
    let trades = (0..n)
        .filter_map(|i| {
            let slot = DAY_MS / n;
            let r = s.key ^ 0x7AD3 ^ ((base + i) as u64).wrapping_mul(0x9E37_79B9_7F4A);
            let time = day_start + i * slot + (unit(r) * slot as f64) as i64;
            if time < s.listed_ms || s.end_ms.is_some_and(|e| time >= e) {
                return None;
            }
            let price = s.price_fixed(time);
            let pf = fixed_f64(price, s.fmt.price_dp);
            let (qty, quote) = if s.market == Market::Cm {
                let contracts = 1 + (unit(r ^ 1) * 50.0) as i64;
                let q = contracts * 10;
                let base_q = contracts as f64 * s.contract_size as f64 / pf;
                (q, to_fixed(base_q, f.quote_dp, f.quote_dp))
            } else {
                let q = to_fixed(
                    2_000.0 / s.base_price * (0.05 + unit(r ^ 1)),
                    f.qty_tick_dp,
                    f.qty_dp,
                )
                .max(POW10[usize::from(f.qty_dp - f.qty_tick_dp)]);
                (
                    q,
                    to_fixed(fixed_f64(q, f.qty_dp) * pf, f.quote_dp, f.quote_dp),
                )
            };
            Some(Trade {
                id: base + i,
                price,
                qty,
                quote_qty: quote,
                time,
                is_buyer_maker: unit(r ^ 2) < 0.5,
            })
        })
        .collect::<Vec<_>>();
    // The trades one aggregate trade groups (see `agg_run`) are one taker order's fills: one
    // time, one side, as on Binance, so the first trade of an aggregate at a time is the first
    // trade at that time.
    let mut out = trades;
    let mut i = 0;
    while i < out.len() {
        let end = (i + agg_run(s, out[i].id)).min(out.len());
        let (time, side) = (out[i].time, out[i].is_buyer_maker);
        for t in &mut out[i + 1..end] {
            t.time = time;
            t.is_buyer_maker = side;
        }
        i = end;
    }
    out
}

/// How many trades from trade `id` on make one aggregate trade (1 to 3).
fn agg_run(s: &Series, id: i64) -> usize {
    1 + (splitmix(s.key ^ id as u64) % 3) as usize
}

/// Aggregate trades of one UTC day, derived from its trades: runs of 1–3 trades aggregate.
pub(crate) fn agg_trades_of_day(s: &Series, day_start: i64, per_day: u32) -> Vec<AggTrade> {
    let trades = trades_of_day(s, day_start, per_day);
    let mut out = Vec::with_capacity(trades.len());
    let base = day_index(day_start) * i64::from(per_day.max(1));
    let mut i = 0;
    while i < trades.len() {
        let t = trades[i];
        let end = (i + agg_run(s, t.id)).min(trades.len());
        let qty = trades[i..end].iter().map(|x| x.qty).sum();
        out.push(AggTrade {
            agg_id: base + out.len() as i64,
            price: t.price,
            qty,
            first_id: t.id,
            last_id: trades[end - 1].id,
            time: t.time,
            is_buyer_maker: t.is_buyer_maker,
        });
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_roundtrip_is_exact() {
        for (m, dp, s) in [
            (719_524_000_000_i64, 8, "7195.24000000"),
            (799_728, 1, "79972.8"),
            (-3449, 8, "-0.00003449"),
            (206, 0, "206"),
        ] {
            assert_eq!(fixed_string(m, dp), s);
            assert_eq!(parse_fixed(s, dp), Some(m));
            assert_eq!(fixed_f64(m, dp), s.parse::<f64>().expect("decimal"));
        }
        assert_eq!(parse_fixed("542.0", 1), Some(5420));
        assert_eq!(parse_fixed("7", 2), Some(700));
    }

    #[test]
    fn large_mantissas_parse_like_text() {
        let m = 9_007_199_254_740_993_i64; // 2^53 + 1
        assert_eq!(
            fixed_f64(m, 8),
            fixed_string(m, 8).parse::<f64>().expect("decimal")
        );
    }
}
