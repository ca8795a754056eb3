//! A fixed-size latency histogram (log-linear buckets, 1.6% precision), so recording never
//! allocates and memory stays the same however many samples a run takes.

/// Values below this are counted exactly.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 6;
const BUCKETS: usize = LINEAR as usize + (64 - 7) * (1 << SUB_BITS);

/// Nanosecond samples of one operation.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let mantissa = value >> (exponent - SUB_BITS);
    LINEAR as usize
        + (exponent as usize - 7) * (1 << SUB_BITS)
        + (mantissa as usize - (1 << SUB_BITS))
}

/// The largest value that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let offset = index - LINEAR as usize;
    let exponent = (offset >> SUB_BITS) as u32 + 7;
    let mantissa = (offset & ((1 << SUB_BITS) - 1)) as u64 + (1 << SUB_BITS);
    let shift = exponent - SUB_BITS;
    ((mantissa + 1) << shift) - 1
}

impl Histogram {
    /// Records one sample.
    pub fn record(&mut self, nanos: u64) {
        self.counts[index(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's bound (at most 1.6% high).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_bound(bucket).min(self.max);
            }
        }
        self.max
    }

    /// How many samples exceed `nanos`.
    pub fn count_above(&self, nanos: u64) -> u64 {
        let first = index(nanos) + 1;
        self.counts[first.min(BUCKETS)..].iter().sum()
    }

    /// Count, mean, p50, p90, p99, p99.9 and max, in nanoseconds, as JSON.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_ns": if self.count == 0 { 0 } else { (self.sum / u128::from(self.count)) as u64 },
            "p50_ns": self.quantile(0.50),
            "p90_ns": self.quantile(0.90),
            "p99_ns": self.quantile(0.99),
            "p999_ns": self.quantile(0.999),
            "max_ns": self.max,
            "over_20us": self.count_above(20_000),
            "over_1ms": self.count_above(1_000_000),
        })
    }
}

/// Formats nanoseconds for people: `850 ns`, `12.3 µs`, `4.56 ms`.
pub fn human(nanos: u64) -> String {
    match nanos {
        0..1_000 => format!("{nanos} ns"),
        1_000..1_000_000 => format!("{:.1} µs", nanos as f64 / 1e3),
        _ => format!("{:.2} ms", nanos as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_precision() {
        for value in [0, 1, 127, 128, 129, 1000, 65_535, 1 << 40, u64::MAX / 3] {
            let bound = upper_bound(index(value));
            assert!(bound >= value, "{value}: bound {bound}");
            assert!(
                bound - value <= value / 64 + 1,
                "{value}: bound {bound} too far"
            );
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut histogram = Histogram::default();
        for value in 1..=10_000 {
            histogram.record(value);
        }
        let p50 = histogram.quantile(0.5);
        assert!((5_000..=5_080).contains(&p50), "{p50}");
        assert_eq!(histogram.quantile(1.0), 10_000);
        assert_eq!(histogram.max(), 10_000);
        assert!(histogram.count_above(9_000) <= 1_000);
    }
}
