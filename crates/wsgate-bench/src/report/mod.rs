//! `report`: turns the JSON lines of every run into markdown: the medians per target with
//! wsgate's ratios to each other target, the upgrade checks (a target that failed one is marked
//! and its figures do not count), and issue 6's "must" and "goal" thresholds.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::check;
use crate::record::Record;

mod checks;
mod thresholds;

/// compare.sh's wsgate with a `cluster` block (issue 15): a column of its own and its ratio to
/// wsgate, never the subject of the other ratios or thresholds.
const FLEET: &str = "wsgate-fleet";

/// (scenario, metric, label) -> the values of every run.
type Values = HashMap<(String, String, String), Vec<f64>>;

pub fn render(records: &[Record], checks: &[check::Report]) -> String {
    let table = Table::new(records, checks);
    let mut out = String::new();
    table.results(&mut out);
    table.checks(&mut out);
    table.targets(&mut out);
    table.scale_targets(&mut out);
    out
}

struct Table<'a> {
    labels: Vec<String>,
    /// (scenario, metric) in the order first seen.
    rows: Vec<(String, String)>,
    values: Values,
    /// (scenario, label) -> errors summed over runs.
    errors: HashMap<(String, String), u64>,
    runs: u32,
    checks: &'a [check::Report],
}

impl<'a> Table<'a> {
    fn new(records: &[Record], checks: &'a [check::Report]) -> Table<'a> {
        let mut table = Table {
            labels: Vec::new(),
            rows: Vec::new(),
            values: HashMap::new(),
            errors: HashMap::new(),
            runs: records.iter().map(|r| r.run).max().unwrap_or(0),
            checks,
        };
        for record in records {
            table.add(record);
        }
        table
    }

    fn add(&mut self, record: &Record) {
        if !self.labels.contains(&record.label) {
            self.labels.push(record.label.clone());
        }
        for metric in &record.metrics {
            let row = (record.scenario.clone(), metric.name.clone());
            if !self.rows.contains(&row) {
                self.rows.push(row.clone());
            }
            if let Some(value) = metric.value {
                self.values
                    .entry((row.0, row.1, record.label.clone()))
                    .or_default()
                    .push(value);
            }
        }
        *self
            .errors
            .entry((record.scenario.clone(), record.label.clone()))
            .or_default() += record.errors;
    }

    fn median(&self, scenario: &str, metric: &str, label: &str) -> Option<f64> {
        let key = (scenario.to_owned(), metric.to_owned(), label.to_owned());
        median(self.values.get(&key)?)
    }

    fn subject(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.starts_with("wsgate") && *l != FLEET)
            .map(String::as_str)
    }

    fn fleet(&self) -> Option<&str> {
        self.labels.iter().find(|l| *l == FLEET).map(String::as_str)
    }

    fn find(&self, prefix: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.to_lowercase().starts_with(prefix))
            .map(String::as_str)
    }

    /// `None`: not checked; `Some(failed check names)` otherwise.
    fn failed_checks(&self, label: &str) -> Option<Vec<String>> {
        let reports: Vec<_> = self.checks.iter().filter(|r| r.label == label).collect();
        if reports.is_empty() {
            return None;
        }
        let mut failed: Vec<String> = Vec::new();
        for check in reports.iter().flat_map(|r| &r.checks) {
            if !check.pass && !failed.contains(&check.name) {
                failed.push(check.name.clone());
            }
        }
        Some(failed)
    }

    fn counts(&self, label: &str) -> bool {
        self.failed_checks(label)
            .is_none_or(|failed| failed.is_empty())
    }

    fn header(&self, label: &str) -> String {
        if self.counts(label) {
            label.to_owned()
        } else {
            format!("{label} †")
        }
    }

    fn results(&self, out: &mut String) {
        let subject = self.subject();
        let others: Vec<&String> = self
            .labels
            .iter()
            .filter(|l| Some(l.as_str()) != subject && *l != FLEET)
            .collect();
        // wsgate-fleet ÷ wsgate: what the cluster costs.
        let fleet = subject.and(self.fleet());
        let runs = match self.runs {
            1 => "1 run".to_owned(),
            n => format!("median of {n} runs"),
        };
        let _ = writeln!(out, "## Results ({runs})\n");
        // "wsgate (no JWT yet)" -> "wsgate" in the ratio headers.
        let short = subject.and_then(|s| s.split_whitespace().next());
        let mut head = String::from("| scenario | metric |");
        let mut rule = String::from("|---|---|");
        for label in &self.labels {
            let _ = write!(head, " {} |", self.header(label));
            rule.push_str("---:|");
        }
        if let Some(short) = short {
            for other in &others {
                let _ = write!(head, " {short} ÷ {other} |");
                rule.push_str("---:|");
            }
        }
        if let (Some(fleet), Some(short)) = (fleet, short) {
            let _ = write!(head, " {fleet} ÷ {short} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        let mut last_scenario = "";
        for (scenario, metric) in &self.rows {
            let shown = if scenario == last_scenario {
                ""
            } else {
                scenario
            };
            last_scenario = scenario;
            let mut line = format!("| {shown} | {metric} |");
            for label in &self.labels {
                let cell = self
                    .median(scenario, metric, label)
                    .map_or("–".into(), number);
                let flag = self.flag(scenario, label);
                let _ = write!(line, " {cell}{flag} |");
            }
            if let Some(subject) = subject {
                let mine = self.median(scenario, metric, subject);
                for other in &others {
                    let theirs = self.median(scenario, metric, other);
                    let _ = write!(line, " {} |", ratio(mine, theirs));
                }
                if let Some(fleet) = fleet {
                    let theirs = self.median(scenario, metric, fleet);
                    let _ = write!(line, " {} |", ratio(theirs, mine));
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\nRatios are {} ÷ the other target for every metric: below 1 is better for latency, \
             CPU and memory, above 1 is better for rates.",
            subject.unwrap_or("wsgate")
        );
        if let (Some(fleet), Some(subject)) = (fleet, subject) {
            let _ = writeln!(
                out,
                "\n{fleet} is {subject} with a `cluster` on a local Redis; `{fleet} ÷ {subject}` is \
                 what the cluster costs (issue 15: a handshake at most one Redis round trip more, \
                 relay figures unchanged). Ratios to the other targets are {subject}'s."
            );
        }
        self.footnotes(out);
    }

    /// `*` when a run of this scenario had errors.
    fn flag(&self, scenario: &str, label: &str) -> &'static str {
        let key = (scenario.to_owned(), label.to_owned());
        if self.errors.get(&key).copied().unwrap_or(0) > 0 {
            " *"
        } else {
            ""
        }
    }

    fn footnotes(&self, out: &mut String) {
        if self.errors.values().any(|&e| e > 0) {
            let _ = writeln!(
                out,
                "\n\\* some connections or round trips of this scenario failed (see the run log)."
            );
        }
        for label in &self.labels {
            match self.failed_checks(label) {
                Some(failed) if !failed.is_empty() => {
                    let _ = writeln!(
                        out,
                        "\n† **{label}: figures do not count**: it failed {} of the upgrade checks \
                         ({}).",
                        failed.len(),
                        failed.join(", ")
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "\n{label}: not checked (no TLS, no authentication: the upper bound)."
                    );
                }
                Some(_) => {}
            }
        }
    }

    fn ratio_to(
        &self,
        scenario: &str,
        metric: &str,
        subject: &str,
        other: Option<&str>,
    ) -> Option<f64> {
        let mine = self.median(scenario, metric, subject)?;
        let theirs = self.median(scenario, metric, other?)?;
        (theirs > 0.0).then(|| mine / theirs)
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn ratio(mine: Option<f64>, theirs: Option<f64>) -> String {
    match (mine, theirs) {
        (Some(m), Some(t)) if t > 0.0 => format!("{:.2}x", m / t),
        _ => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::name;

    fn record(label: &str, run: u32, value: f64) -> Record {
        let mut r = Record::new(label, run, "echo 64 B x 64".to_owned());
        r.metric(name::CPU_PER_ROUND_TRIP, Some(value));
        r
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        let records = [
            record("wsgate", 1, 10.0),
            record("wsgate", 2, 12.0),
            record("wsgate", 3, 11.0),
            record("haproxy", 1, 20.0),
        ];
        let text = render(&records, &[]);
        assert!(text.contains("| 11.0 | 20.0 | 0.55x |"), "{text}");
        assert!(
            text.contains("0.55x | <= 1.2x: met | <= 0.8x: met"),
            "{text}"
        );
    }

    #[test]
    fn fleet_has_its_own_ratio_to_wsgate() {
        let records = [
            record("wsgate", 1, 10.0),
            record("wsgate-fleet", 1, 12.0),
            record("haproxy", 1, 20.0),
        ];
        let text = render(&records, &[]);
        assert!(
            text.contains(
                "| wsgate | wsgate-fleet | haproxy | wsgate ÷ haproxy | wsgate-fleet ÷ wsgate |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 10.0 | 12.0 | 20.0 | 0.50x | 1.20x |"),
            "{text}"
        );
        assert!(
            text.contains("CPU per round trip vs HAProxy | 0.50x"),
            "{text}"
        );
    }

    #[test]
    fn latency_over_direct_carries_its_sign() {
        let p50 = |label: &str, value: f64| {
            let mut r = Record::new(label, 1, "echo 64 B x 1".to_owned());
            r.metric(name::RTT_P50, Some(value));
            r
        };
        let text = render(&[p50("wsgate", 80.0), p50("direct", 60.0)], &[]);
        assert!(
            text.contains("| +20.0 us | <= +25 us: met | <= +15 us: **not met** |"),
            "{text}"
        );
        let text = render(&[p50("wsgate", 58.9), p50("direct", 74.4)], &[]);
        assert!(
            text.contains("| -15.5 us | <= +25 us: met | <= +15 us: met |"),
            "{text}"
        );
    }

    #[test]
    fn failed_checks_mark_the_target() {
        let checks = [check::Report {
            label: "nginx".to_owned(),
            checks: vec![check::Outcome {
                name: "bad signature".to_owned(),
                expected: "refused (4xx)".to_owned(),
                got: "101".to_owned(),
                pass: false,
            }],
            tls: None,
        }];
        let text = render(&[record("nginx", 1, 5.0)], &checks);
        assert!(text.contains("nginx †"), "{text}");
        assert!(text.contains("figures do not count"), "{text}");
        assert!(text.contains("101 **FAIL**"), "{text}");
    }
}
