//! One scenario's result as a JSON line (what the scripts collect and `report` reads), and the
//! exact percentiles it carries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Metric names, shared by the scenarios and the report.
pub mod name {
    pub const ROUND_TRIPS: &str = "round trips/s";
    pub const RTT_P50: &str = "RTT p50 (us)";
    pub const RTT_P99: &str = "RTT p99 (us)";
    pub const CPU_PER_ROUND_TRIP: &str = "proxy CPU per round trip (us)";
    pub const CONNECTIONS: &str = "connections/s";
    pub const T101_P50: &str = "time to 101 p50 (us)";
    pub const T101_P99: &str = "time to 101 p99 (us)";
    pub const CPU_PER_CONNECTION: &str = "proxy CPU per connection (us)";
    pub const RSS_BEFORE: &str = "proxy RSS before (KiB)";
    pub const KIB_PER_SESSION: &str = "proxy memory per session (KiB)";
}

/// One scenario run against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The target's name, e.g. `wsgate`, `haproxy`.
    pub label: String,
    /// Which of the repeated runs (1-based).
    pub run: u32,
    /// e.g. `echo 64 B x 64`, `handshake x 32`, `idle 9000`.
    pub scenario: String,
    pub metrics: Vec<Metric>,
    /// Connections or round trips that failed; a non-zero count is shown in the report.
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// `None` when it cannot be measured (no `--pid`, no samples).
    pub value: Option<f64>,
}

impl Record {
    pub fn new(label: &str, run: u32, scenario: String) -> Record {
        Record {
            label: label.to_owned(),
            run,
            scenario,
            metrics: Vec::new(),
            errors: 0,
        }
    }

    pub fn metric(&mut self, name: &str, value: Option<f64>) -> &mut Self {
        self.metrics.push(Metric {
            name: name.to_owned(),
            value,
        });
        self
    }

    /// Prints the JSON line on stdout and a readable line on stderr.
    pub fn emit(&self) {
        let human: Vec<String> = self
            .metrics
            .iter()
            .map(|m| match m.value {
                Some(v) => format!("{} {v:.1}", m.name),
                None => format!("{} -", m.name),
            })
            .collect();
        eprintln!(
            "[{} run {}] {}: {} (errors {})",
            self.label,
            self.run,
            self.scenario,
            human.join(", "),
            self.errors
        );
        println!(
            "{}",
            serde_json::to_string(self).expect("a record always serialises")
        );
    }
}

/// Latency samples in nanoseconds; percentiles are exact (nearest rank over all samples).
#[derive(Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Joins the loops' samples, adding their error counts to `errors`.
    pub fn gather<I>(results: I, errors: &mut u64) -> Result<Samples, tokio::task::JoinError>
    where
        I: IntoIterator<Item = Result<(Samples, u64), tokio::task::JoinError>>,
    {
        let mut samples = Samples::default();
        for result in results {
            let (loop_samples, loop_errors) = result?;
            samples.extend(loop_samples);
            *errors += loop_errors;
        }
        Ok(samples)
    }

    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Sorts once; call after the last `push`.
    pub fn finish(mut self) -> Sorted {
        self.0.sort_unstable();
        Sorted(self.0)
    }
}

pub struct Sorted(Vec<u64>);

impl Sorted {
    /// The `p`th percentile in microseconds (nearest rank), `None` without samples.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Some(self.0[index] as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples = Samples::default();
        for us in 1..=100 {
            samples.push(Duration::from_micros(us));
        }
        let sorted = samples.finish();
        assert_eq!(sorted.percentile_us(50.0), Some(50.0));
        assert_eq!(sorted.percentile_us(99.0), Some(99.0));
        assert_eq!(sorted.percentile_us(100.0), Some(100.0));
        assert_eq!(Samples::default().finish().percentile_us(50.0), None);
    }
}
