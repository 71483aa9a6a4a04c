//! Latency histograms (HDR, nanoseconds), timed call loops, and the median-of-rounds summaries
//! every scenario reports.

use super::BenchError;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Latencies of one kind of call, in nanoseconds, 3 significant digits, up to 60 s.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        // Bounds and precision are constants that hdrhistogram accepts.
        Latencies(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Adds every value of `other` (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |ns: u64| ns as f64 / 1e6;
        if self.0.is_empty() {
            return LatencySummary { count: 0, mean_ms: 0.0, p50_ms: 0.0, p99_ms: 0.0, max_ms: 0.0 };
        }
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1e6,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Latencies of one alternative, one histogram per round. Its percentiles are the median of
/// the rounds' percentiles, so a burst of other work on the machine during one round moves them
/// less than it would move percentiles of all rounds pooled; its max is the largest of any round.
#[derive(Clone, Debug, Default)]
pub struct RoundLatencies(Vec<Latencies>);

impl RoundLatencies {
    pub fn push(&mut self, round: Latencies) {
        self.0.push(round);
    }

    pub fn summary(&self) -> LatencySummary {
        let rounds: Vec<LatencySummary> = self.0.iter().map(Latencies::summary).filter(|s| s.count > 0).collect();
        let count: u64 = rounds.iter().map(|s| s.count).sum();
        if count == 0 {
            return Latencies::new().summary();
        }
        let of = |f: fn(&LatencySummary) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        LatencySummary {
            count,
            mean_ms: rounds.iter().map(|s| s.mean_ms * s.count as f64).sum::<f64>() / count as f64,
            p50_ms: of(|s| s.p50_ms),
            p99_ms: of(|s| s.p99_ms),
            max_ms: rounds.iter().map(|s| s.max_ms).fold(0.0, f64::max),
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one timed period measured: how many calls completed, in how long, and their latencies.
#[derive(Debug, Default)]
pub struct Sample {
    pub calls: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl Sample {
    /// Calls per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.calls as f64 / self.elapsed.as_secs_f64()
        }
    }
}

/// Runs `call` back to back for `period` (one call in flight at a time), timing each call.
/// `warmup` untimed calls come first, so a connection that was idle during the previous
/// alternative starts warm.
pub async fn run_for(
    period: Duration,
    warmup: u32,
    mut call: impl AsyncFnMut() -> Result<(), BenchError>,
) -> Result<Sample, BenchError> {
    for _ in 0..warmup {
        call().await?;
    }
    let mut sample = Sample::default();
    let start = Instant::now();
    loop {
        let sent = Instant::now();
        if sent - start >= period {
            break;
        }
        call().await?;
        sample.latencies.record(sent.elapsed());
        sample.calls += 1;
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

/// The order of `n` alternatives in round `round`: rotated by the round, and reversed in odd
/// rounds, so that no alternative always runs first, last, or right after the same other one
/// (which could hand it the other's leftovers: dirty pages, a busy WAL writer, a cold cache).
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).map(|k| (round + k) % n).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// A per-round figure (calls/s or a ratio): the median of the rounds and their range.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: Vec<f64>,
}

impl Spread {
    pub fn of(rounds: Vec<f64>) -> Spread {
        let min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread { median: median(&rounds), min, max, rounds }
    }

    /// Half the range as a percentage of the median: the "±" shown next to a median.
    pub fn plus_minus_percent(&self) -> f64 {
        if self.median == 0.0 || self.rounds.len() < 2 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median * 100.0
        }
    }
}

/// The median (mean of the middle two for an even count); 0 for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Exact order statistics of a few samples (failover times), in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct SmallSample {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub max_ms: f64,
    pub values_ms: Vec<f64>,
}

impl SmallSample {
    pub fn of(values_ms: Vec<f64>) -> SmallSample {
        let min_ms = values_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max_ms = values_ms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        SmallSample { count: values_ms.len(), min_ms, p50_ms: median(&values_ms), max_ms, values_ms }
    }
}

/// Per-round ratios `numerator[r] / denominator[r]` of two per-round series measured side by
/// side: pairing the rounds cancels drift of the machine between rounds.
pub fn paired_ratio(numerator: &[f64], denominator: &[f64]) -> Spread {
    Spread::of(numerator.iter().zip(denominator).map(|(n, d)| n / d).collect())
}
