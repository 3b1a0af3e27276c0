//! Pacing one sink's calls of one CloudWatch API against a quota nobody announces.
//!
//! CloudWatch's quotas are per account and region (PutLogEvents 5,000 calls/s, CreateLogStream
//! 50/s, CreateLogGroup 10/s by default), shared by every node and by everything else in the
//! account. No node knows how many others share them, but every node sees ThrottlingException.
//! A [`Governor`] treats its call rate like TCP's congestion window (AIMD):
//!
//! - **additive increase**: each successful call made while the governor was the limit (a
//!   caller had to wait for budget) raises the rate by `increase / rate`, i.e. by `increase`
//!   calls/s per second of full use; before the first throttle (slow start) each such success
//!   raises it by `1 / latency` of that call instead, so the rate grows e-fold per round trip,
//!   as TCP's window doubles per round trip: a lone node with a backlog finds its room within
//!   a few round trips, and a fleet overshoots its share by at most that factor for one round
//!   trip before the first throttles cut it;
//! - **multiplicative decrease**: a throttle cuts the rate the throttled call was sent at by
//!   `decrease` (half) for the whole sink, not only for the throttled call's retry, and empties the budget. Calls issued before
//!   the last cut do not cut again: one congestion event halves once, as in TCP;
//! - a floor (one call per `max_backoff`, the slowest the retry policy ever goes) and a ceiling
//!   (`max_requests_per_second`, for operators who split a known quota).
//!
//! Nodes that do this converge to a share of the quota without talking to each other, the way
//! TCP flows share a link. Budget is a token bucket holding at most a quarter second of calls,
//! so a quiet spell does not end in a burst. Time is passed in, so the contract is tested
//! without sleeping. (Crates like `governor` or `leaky-bucket` pace at a fixed rate; the
//! adapting rate is the point here, and it is a few lines of arithmetic.)

use std::time::{Duration, Instant};

/// How a governor adapts; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Calls per second at start.
    pub initial: f64,
    /// Never slower than this (calls per second).
    pub floor: f64,
    /// Never faster than this (calls per second).
    pub ceiling: f64,
    /// Calls/s gained per second of successful, limited use after the first throttle.
    pub increase: f64,
    /// Factor applied on a throttle.
    pub decrease: f64,
    /// Whether the rate grows per round trip until the first throttle.
    pub slow_start: bool,
}

impl Pace {
    /// PutLogEvents: start at 10 calls/s (like TCP's initial window of 10: a lone node's
    /// backlog of full requests should not spend its first seconds at one call a second; a
    /// fleet starting together is cut to its share by its first throttles), slow start,
    /// +0.1 calls/s per second, halve on throttle.
    pub fn put_log_events(max_backoff: Duration, ceiling: Option<f64>) -> Pace {
        let floor = floor(max_backoff);
        Pace {
            initial: 10.0_f64.max(floor),
            floor,
            ceiling: ceiling.unwrap_or(1e6).max(floor),
            increase: 0.1,
            decrease: 0.5,
            slow_start: true,
        }
    }

    /// CreateLogStream / CreateLogGroup: quotas a hundred times smaller and calls that come in
    /// bursts at start (a node's pods all appear at once), so no slow start: 0.5 calls/s at
    /// first, +0.004 calls/s per second, x0.75 on a throttle. A gentler cut than PutLogEvents'
    /// half: a node cut twice during a fleet's cold start would otherwise lag far behind the
    /// others and hold its streams' events for minutes (8 nodes x 25 streams at 4 creates/s:
    /// drained 87 s after the writers stopped with x0.5 and +0.002, 12 s with these).
    pub fn control_plane(max_backoff: Duration) -> Pace {
        let floor = floor(max_backoff);
        Pace {
            initial: 0.5_f64.max(floor),
            floor,
            ceiling: 1e6,
            increase: 0.004,
            decrease: 0.75,
            slow_start: false,
        }
    }
}

/// Slow start's gain per success is `1 / latency` (at least 1: over round trips slower than a
/// second the rate still grows e-fold per second); a call answered sooner than this counts as this slow,
/// so a very near endpoint grows the rate by at most 100 calls/s per success.
const SLOW_START_MIN_LATENCY: Duration = Duration::from_millis(10);

/// The slowest pace: one call per `max_backoff` (at least one per minute).
fn floor(max_backoff: Duration) -> f64 {
    1.0 / max_backoff.as_secs_f64().clamp(0.01, 60.0)
}

/// Budget for one call, handed back with its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    issued: Instant,
    limited: bool,
    /// The rate when the budget was granted.
    rate: f64,
}

/// One API's pace for one sink.
#[derive(Debug)]
pub struct Governor {
    pace: Pace,
    rate: f64,
    tokens: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
    slow_start: bool,
    /// A caller found no budget since the last grant: the governor is the limit.
    starved: bool,
}

impl Governor {
    /// A governor at `pace.initial`. Its first call's budget comes after a random part of one
    /// interval, so nodes started together (a rollout) do not all call in the same instant.
    /// (Shortening that spread to 100 ms for the control plane, so a lone node's first create
    /// waits less, made the fleet test's cold start throttle creates and cut their pace: 1.03-
    /// 1.05 creates per stream and 18-30 s to drain, against 1.01 and 10-11 s.)
    pub fn new(pace: Pace, now: Instant) -> Governor {
        Governor {
            rate: pace.initial.clamp(pace.floor, pace.ceiling),
            tokens: rand::random::<f64>(),
            refilled: now,
            last_cut: None,
            slow_start: pace.slow_start,
            starved: false,
            pace,
        }
    }

    /// Calls per second allowed now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn capacity(&self) -> f64 {
        (self.rate / 4.0).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.capacity());
        self.refilled = now;
    }

    /// A call's budget if there is one now; otherwise `Err(how long until there is)`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let limited = std::mem::take(&mut self.starved);
            return Ok(Ticket {
                issued: now,
                limited,
                rate: self.rate,
            });
        }
        self.starved = true;
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// The call succeeded (or failed for a reason other than the quota), answered at `now`.
    pub fn on_success(&mut self, ticket: Ticket, now: Instant) {
        if !ticket.limited {
            return;
        }
        let gain = if self.slow_start {
            let latency = now.saturating_duration_since(ticket.issued);
            (1.0 / latency.max(SLOW_START_MIN_LATENCY).as_secs_f64()).max(1.0)
        } else {
            self.pace.increase / self.rate
        };
        self.rate = (self.rate + gain).min(self.pace.ceiling);
    }

    /// The call was throttled: slow the whole sink, unless this congestion was already answered.
    pub fn on_throttle(&mut self, ticket: Ticket, now: Instant) {
        if self.last_cut.is_some_and(|cut| ticket.issued < cut) {
            return;
        }
        self.refill(now);
        self.slow_start = false;
        // Cut from the rate the throttled call was sent at, not from what slow start grew it
        // to while the call was out (TCP's ssthresh is half the flight size at the loss): a
        // node that overshot during the round trip lands at half its last good rate at once
        // instead of halving once per round trip, each costing more throttled calls.
        let sent_at = self.rate.min(ticket.rate);
        self.rate = (sent_at * self.pace.decrease).max(self.pace.floor);
        self.tokens = self.tokens.min(0.0);
        self.last_cut = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pace() -> Pace {
        Pace::put_log_events(Duration::from_secs(30), Some(100.0))
    }

    // The whole contract, driven through `steps` of (advance ms, outcome of the oldest
    // outstanding call: 0 none yet, 1 success, 2 throttle).
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn rate_stays_in_bounds_throttles_cut_it_and_budget_is_never_exceeded(
            steps in prop::collection::vec((0u64..400, 0u8..3), 1..400),
        ) {
            let p = pace();
            let t0 = Instant::now();
            let mut g = Governor::new(p, t0);
            let mut now = t0;
            let mut granted: Vec<(Instant, f64)> = Vec::new();
            let mut outstanding: Vec<Ticket> = Vec::new();
            for (advance, outcome) in steps {
                now += Duration::from_millis(advance);
                let before = g.rate();
                match outcome {
                    1 if !outstanding.is_empty() => {
                        g.on_success(outstanding.remove(0), now);
                        prop_assert!(g.rate() >= before, "a success never slows");
                    }
                    2 if !outstanding.is_empty() => {
                        let t = outstanding.remove(0);
                        let fresh = g.last_cut.is_none_or(|cut| t.issued >= cut);
                        g.on_throttle(t, now);
                        if fresh {
                            prop_assert!((g.rate() - (before.min(t.rate) * p.decrease).max(p.floor)).abs() < 1e-9);
                            prop_assert!(g.try_acquire(now).is_err(), "a throttle empties the budget");
                        } else {
                            prop_assert_eq!(g.rate(), before, "one congestion event cuts once");
                        }
                    }
                    _ => {}
                }
                prop_assert!(g.rate() >= p.floor && g.rate() <= p.ceiling);
                if let Ok(t) = g.try_acquire(now) {
                    granted.push((now, g.rate()));
                    outstanding.push(t);
                }
            }
            // Over any stretch, grants never exceed the burst plus what the fastest rate seen
            // could earn in that time.
            let fastest = granted.iter().map(|(_, r)| *r).fold(p.initial, f64::max);
            for (i, (start, _)) in granted.iter().enumerate() {
                for (j, (end, _)) in granted.iter().enumerate().skip(i) {
                    let secs = end.duration_since(*start).as_secs_f64();
                    let allowed = (fastest / 4.0).max(1.0) + fastest * secs + 1.0;
                    prop_assert!((j - i + 1) as f64 <= allowed, "{} grants in {secs}s", j - i + 1);
                }
            }
        }
    }

    #[test]
    fn unlimited_use_does_not_raise_the_rate() {
        let t0 = Instant::now();
        let mut g = Governor::new(pace(), t0);
        let initial = g.rate();
        for i in 1..50 {
            // One call every 2 s at 10 calls/s allowed: never short of budget.
            let t = g
                .try_acquire(t0 + Duration::from_secs(2 * i))
                .expect("budget");
            g.on_success(t, t0 + Duration::from_secs(2 * i));
        }
        assert_eq!(g.rate(), initial);
    }

    /// Always hungry: ask every 10 ms; every call succeeds, answered `latency_ms` later.
    fn hungry(g: &mut Governor, from: Instant, until: Duration, latency_ms: u64) -> Instant {
        let mut now = from;
        while now < from + until {
            now += Duration::from_millis(10);
            if let Ok(t) = g.try_acquire(now) {
                g.on_success(t, now + Duration::from_millis(latency_ms));
            }
        }
        now
    }

    #[test]
    fn slow_start_grows_per_round_trip_until_the_first_throttle_then_additive() {
        let t0 = Instant::now();
        let mut g = Governor::new(pace(), t0);
        // 50 ms round trips: e-fold per round trip, from 10 to the ceiling (100) in well under
        // a second (a doubling per second would still be near 14 after 0.5 s).
        let now = hungry(&mut g, t0, Duration::from_millis(500), 50);
        let fast = g.rate();
        assert!(fast >= 99.0, "slow start grew to {fast} in 0.5 s");
        let t = g.try_acquire(now + Duration::from_secs(1)).expect("budget");
        g.on_throttle(t, now + Duration::from_secs(1));
        let halved = g.rate();
        assert!((halved - fast / 2.0).abs() < 1e-9);
        hungry(
            &mut g,
            now + Duration::from_secs(2),
            Duration::from_secs(10),
            50,
        );
        let grown = g.rate() - halved;
        // +0.1 calls/s per second: about 1 call/s in 10 s, not a doubling.
        assert!(grown > 0.5 && grown < 1.5, "grew {grown} in 10 s");
    }

    #[test]
    fn slow_start_over_slow_round_trips_still_grows_e_fold_per_second() {
        let t0 = Instant::now();
        let mut g = Governor::new(pace(), t0);
        hungry(&mut g, t0, Duration::from_secs(2), 3_000);
        let rate = g.rate();
        // +1 call/s per success at rate r: about 10 x e^2 after 2 s (as before round trips counted).
        assert!(
            (40.0..=80.0).contains(&rate),
            "grew to {rate} in 2 s from 10"
        );
    }

    #[test]
    fn fleet_of_governors_converges_under_a_shared_quota() {
        // Ten nodes share 50 calls/s (a token bucket like CloudWatch's); each wants more.
        let t0 = Instant::now();
        let mut nodes: Vec<Governor> = (0..10).map(|_| Governor::new(pace(), t0)).collect();
        let (quota, mut tokens) = (50.0, 50.0);
        let (mut calls, mut throttled) = (0u64, 0u64);
        let mut last = t0;
        for ms in (0..300_000u64).step_by(5) {
            let now = t0 + Duration::from_millis(ms);
            tokens = (tokens + now.duration_since(last).as_secs_f64() * quota).min(quota);
            last = now;
            for g in &mut nodes {
                if let Ok(t) = g.try_acquire(now) {
                    if ms > 60_000 {
                        calls += 1;
                    }
                    if tokens >= 1.0 {
                        tokens -= 1.0;
                        g.on_success(t, now);
                    } else {
                        if ms > 60_000 {
                            throttled += 1;
                        }
                        g.on_throttle(t, now);
                    }
                }
            }
        }
        let share = throttled as f64 / calls as f64;
        assert!(share < 0.05, "{throttled} of {calls} throttled");
        let rate: f64 = nodes.iter().map(Governor::rate).sum();
        assert!(
            calls as f64 / 240.0 > 0.7 * quota,
            "uses the quota: {calls} calls in 240 s"
        );
        assert!(
            rate > 0.5 * quota && rate < 1.5 * quota,
            "sum of rates {rate}"
        );
    }
}
