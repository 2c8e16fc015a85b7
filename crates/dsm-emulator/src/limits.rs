//! REST request-weight accounting: fixed windows per market aligned to the window length on the wall
//! clock, 429 when a request takes the weight over the limit, 418 (IP ban) for any request made during
//! the Retry-After period that followed a 429, and 418 for everything during the ban.
//!
//! Runs on real time (tokio `Instant`, so a paused tokio clock works too), not on the emulator clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::market::Market;

/// Rate-limit knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Spot weight limit per window (Binance: 6000).
    pub spot_weight_limit: u32,
    /// USDⓈ-M weight limit per window (Binance: 2400).
    pub um_weight_limit: u32,
    /// COIN-M weight limit per window (Binance: 2400).
    pub cm_weight_limit: u32,
    /// Window length (Binance: 1 minute). Windows are aligned to multiples of it.
    pub window: Duration,
    /// The Retry-After period after a 429; `None` = until the current window ends.
    pub retry_after: Option<Duration>,
    /// Ban length after a request during the Retry-After period (Binance: 2 minutes and up).
    pub ban: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            spot_weight_limit: 6000,
            um_weight_limit: 2400,
            cm_weight_limit: 2400,
            window: Duration::from_secs(60),
            retry_after: None,
            ban: Duration::from_secs(120),
        }
    }
}

impl RateLimits {
    /// The window as Binance states it: `exchangeInfo`'s `interval` and `intervalNum`, and the
    /// used-weight header's suffix (`("MINUTE", 1, "1m")`, `("SECOND", 10, "10s")`).
    pub fn window_label(&self) -> (&'static str, u64, String) {
        let secs = self.window.as_secs().max(1);
        let (name, unit, letter) = if secs.is_multiple_of(86_400) {
            ("DAY", 86_400, 'd')
        } else if secs.is_multiple_of(3600) {
            ("HOUR", 3600, 'h')
        } else if secs.is_multiple_of(60) {
            ("MINUTE", 60, 'm')
        } else {
            ("SECOND", 1, 's')
        };
        (name, secs / unit, format!("{}{letter}", secs / unit))
    }

    /// The limit of a market.
    pub fn limit(&self, m: Market) -> u32 {
        match m {
            Market::Spot => self.spot_weight_limit,
            Market::Um => self.um_weight_limit,
            Market::Cm => self.cm_weight_limit,
            // No REST here: nothing is ever admitted.
            Market::Option => 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct MarketState {
    window_id: i128,
    used: u32,
    retry_until: Option<Instant>,
    banned_until: Option<Instant>,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok { used: u32 },
    TooMany { used: u32, retry_after: Duration },
    Banned { used: u32, retry_after: Duration },
}

#[derive(Debug)]
pub(crate) struct Limiter {
    cfg: RateLimits,
    /// Real-time origin: wall-clock ms at `origin`.
    origin: Instant,
    origin_wall_ms: i128,
    state: [MarketState; 4],
}

impl Limiter {
    pub(crate) fn new(cfg: RateLimits) -> Limiter {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i128)
            .unwrap_or(0);
        Limiter {
            cfg,
            origin: Instant::now(),
            origin_wall_ms: wall,
            state: [MarketState::default(); 4],
        }
    }

    fn wall_ms(&self, t: Instant) -> i128 {
        self.origin_wall_ms + t.saturating_duration_since(self.origin).as_millis() as i128
    }

    fn window_ms(&self) -> i128 {
        (self.cfg.window.as_millis() as i128).max(1)
    }

    fn roll(&mut self, m: Market, now: Instant) {
        let id = self.wall_ms(now).div_euclid(self.window_ms());
        let st = &mut self.state[m.index()];
        if st.window_id != id {
            st.window_id = id;
            st.used = 0;
        }
    }

    pub(crate) fn used(&mut self, m: Market) -> u32 {
        self.roll(m, Instant::now());
        self.state[m.index()].used
    }

    /// Charges `weight` to market `m` and decides.
    pub(crate) fn charge(&mut self, m: Market, weight: u32) -> Verdict {
        let now = Instant::now();
        self.roll(m, now);
        let window_end = {
            let w = self.window_ms();
            let wall = self.wall_ms(now);
            let end = (wall.div_euclid(w) + 1) * w;
            Duration::from_millis((end - wall).max(1) as u64)
        };
        let ban = self.cfg.ban;
        let limit = self.cfg.limit(m);
        let retry_after = self.cfg.retry_after.unwrap_or(window_end);
        let st = &mut self.state[m.index()];
        if let Some(b) = st.banned_until {
            if b > now {
                return Verdict::Banned {
                    used: st.used,
                    retry_after: b - now,
                };
            }
            st.banned_until = None;
        }
        if let Some(r) = st.retry_until {
            if r > now {
                st.retry_until = None;
                st.banned_until = Some(now + ban);
                return Verdict::Banned {
                    used: st.used,
                    retry_after: ban,
                };
            }
            st.retry_until = None;
        }
        st.used = st.used.saturating_add(weight);
        if st.used > limit {
            st.retry_until = Some(now + retry_after);
            return Verdict::TooMany {
                used: st.used,
                retry_after,
            };
        }
        Verdict::Ok { used: st.used }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_limit_then_ban_then_recovers() {
        let mut l = Limiter::new(RateLimits {
            spot_weight_limit: 4,
            window: Duration::from_secs(3600),
            retry_after: Some(Duration::from_secs(1)),
            ban: Duration::from_millis(50),
            ..RateLimits::default()
        });
        assert!(matches!(l.charge(Market::Spot, 2), Verdict::Ok { used: 2 }));
        assert!(matches!(l.charge(Market::Spot, 2), Verdict::Ok { used: 4 }));
        assert!(matches!(l.charge(Market::Spot, 2), Verdict::TooMany { .. }));
        assert!(matches!(l.charge(Market::Spot, 2), Verdict::Banned { .. }));
        // Other markets are independent.
        assert!(matches!(l.charge(Market::Um, 1), Verdict::Ok { used: 1 }));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // The ban is over; the hour-long window still holds the weight, so this is a new 429.
        assert!(matches!(l.charge(Market::Spot, 0), Verdict::TooMany { .. }));
    }
}
