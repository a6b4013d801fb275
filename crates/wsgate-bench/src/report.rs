//! `report`: turns the JSON lines of every run into markdown: the medians per target with
//! wsgate's ratios to each other target, the upgrade checks (a target that failed one is marked
//! and its figures do not count), and issue 6's "must" and "goal" thresholds.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::check;
use crate::record::{Record, name};

/// (scenario, metric, label) -> the values of every run.
type Values = HashMap<(String, String, String), Vec<f64>>;

pub fn render(records: &[Record], checks: &[check::Report]) -> String {
    let table = Table::new(records, checks);
    let mut out = String::new();
    table.results(&mut out);
    table.checks(&mut out);
    table.targets(&mut out);
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
            .find(|l| l.starts_with("wsgate"))
            .map(String::as_str)
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
            .filter(|l| Some(l.as_str()) != subject)
            .collect();
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
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\nRatios are {} ÷ the other target for every metric: below 1 is better for latency, \
             CPU and memory, above 1 is better for rates.",
            subject.unwrap_or("wsgate")
        );
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

    fn checks(&self, out: &mut String) {
        let mut labels: Vec<&str> = Vec::new();
        for report in self.checks {
            if !labels.contains(&report.label.as_str()) {
                labels.push(&report.label);
            }
        }
        if labels.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n## Upgrade checks (before measuring, every run)\n");
        let mut head = String::from("| check | expected |");
        let mut rule = String::from("|---|---|");
        for label in &labels {
            let _ = write!(head, " {} |", self.header(label));
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        let names: Vec<(&str, &str)> = self
            .checks
            .first()
            .map(|r| {
                r.checks
                    .iter()
                    .map(|c| (c.name.as_str(), c.expected.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        for (name, expected) in names {
            let mut line = format!("| {name} | {expected} |");
            for label in &labels {
                let _ = write!(line, " {} |", self.check_cell(label, name));
            }
            let _ = writeln!(out, "{line}");
        }
        let mut line = String::from("| TLS negotiated | |");
        for label in &labels {
            let tls = self
                .checks
                .iter()
                .find(|r| r.label == *label)
                .and_then(|r| r.tls.clone())
                .unwrap_or_default();
            let _ = write!(line, " {tls} |");
        }
        let _ = writeln!(out, "{line}");
    }

    /// What the target answered (every distinct answer over the runs) and pass/FAIL.
    fn check_cell(&self, label: &str, name: &str) -> String {
        let outcomes: Vec<&check::Outcome> = self
            .checks
            .iter()
            .filter(|r| r.label == label)
            .flat_map(|r| r.checks.iter().filter(|c| c.name == name))
            .collect();
        let mut answers: Vec<&str> = Vec::new();
        for outcome in &outcomes {
            if !answers.contains(&outcome.got.as_str()) {
                answers.push(&outcome.got);
            }
        }
        let verdict = if outcomes.iter().all(|o| o.pass) {
            "pass"
        } else {
            "**FAIL**"
        };
        format!("{} {verdict}", answers.join(" / "))
    }

    /// Issue 6's table: what wsgate must reach, and the goal.
    fn targets(&self, out: &mut String) {
        let Some(subject) = self.subject() else {
            return;
        };
        let _ = writeln!(out, "\n## Issue 6 thresholds ({subject})\n");
        if !self.counts(subject) {
            let _ = writeln!(
                out,
                "{subject} failed upgrade checks, so none of these can be claimed yet.\n"
            );
        }
        let _ = writeln!(
            out,
            "| scenario | measured | must | goal |\n|---|---|---|---|"
        );
        let haproxy = self.find("haproxy");
        let cpu = [
            ("echo 64 B x 64", 1.2, 0.8),
            ("echo 64 B x 512", 1.2, 0.8),
            ("echo 16 KiB x 64", 1.0, 0.8),
            ("echo 16 KiB x 512", 1.0, 0.7),
        ];
        for (scenario, must, goal) in cpu {
            let r = self.ratio_to(scenario, name::CPU_PER_ROUND_TRIP, subject, haproxy);
            threshold_row(
                out,
                &format!("{scenario}: CPU per round trip vs HAProxy"),
                r,
                |r| {
                    (
                        r <= must,
                        r <= goal,
                        format!("<= {must:?}x"),
                        format!("<= {goal:?}x"),
                    )
                },
            );
        }
        self.rate_rows(out, subject, haproxy);
        if let (Some(mine), Some(direct)) = (
            self.median("echo 64 B x 1", name::RTT_P50, subject),
            self.find("direct")
                .and_then(|d| self.median("echo 64 B x 1", name::RTT_P50, d)),
        ) {
            let extra = mine - direct;
            let _ = writeln!(
                out,
                "| echo 64 B x 1: RTT p50 over direct | +{extra:.1} us | <= +25 us: {} | <= +15 us: {} |",
                verdict(extra <= 25.0),
                verdict(extra <= 15.0)
            );
        }
        for (scenario, _) in self
            .rows
            .iter()
            .filter(|(_, m)| m == name::CPU_PER_CONNECTION)
        {
            let r = self.ratio_to(scenario, name::CPU_PER_CONNECTION, subject, haproxy);
            threshold_row(
                out,
                &format!("{scenario}: CPU per new connection vs HAProxy"),
                r,
                |r| (r <= 1.0, r <= 0.75, "<= 1.0x".into(), "<= 0.75x".into()),
            );
        }
        for (scenario, _) in self.rows.iter().filter(|(_, m)| m == name::KIB_PER_SESSION) {
            let kib = self.median(scenario, name::KIB_PER_SESSION, subject);
            let measured = kib.map_or("–".to_owned(), |k| format!("{k:.1} KiB"));
            let _ = writeln!(
                out,
                "| {scenario}: memory per session | {measured} | <= 32 KiB: {} | <= 16 KiB: {} |",
                kib.map_or("–", |k| verdict(k <= 32.0)),
                kib.map_or("–", |k| verdict(k <= 16.0))
            );
        }
    }

    /// Round trips/s of every echo scenario: must reach 0.9x HAProxy, goal the best peer.
    fn rate_rows(&self, out: &mut String, subject: &str, haproxy: Option<&str>) {
        let peers: Vec<&String> = self
            .labels
            .iter()
            .filter(|l| *l != subject && !l.starts_with("direct"))
            .collect();
        for (scenario, _) in self.rows.iter().filter(|(_, m)| m == name::ROUND_TRIPS) {
            let mine = self.median(scenario, name::ROUND_TRIPS, subject);
            let best = peers
                .iter()
                .filter_map(|p| self.median(scenario, name::ROUND_TRIPS, p))
                .fold(None, |best: Option<f64>, v| {
                    Some(best.map_or(v, |b| b.max(v)))
                });
            let vs_haproxy = self.ratio_to(scenario, name::ROUND_TRIPS, subject, haproxy);
            let goal = match (mine, best) {
                (Some(m), Some(b)) => verdict(m >= b),
                _ => "–",
            };
            let _ = writeln!(
                out,
                "| {scenario}: round trips/s vs HAProxy | {} | >= 0.9x: {} | >= best peer: {goal} |",
                vs_haproxy.map_or("–".to_owned(), |r| format!("{r:.2}x")),
                vs_haproxy.map_or("–", |r| verdict(r >= 0.9)),
            );
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

fn threshold_row(
    out: &mut String,
    what: &str,
    ratio: Option<f64>,
    judge: impl Fn(f64) -> (bool, bool, String, String),
) {
    let Some(r) = ratio else {
        let _ = writeln!(out, "| {what} | – | – | – |");
        return;
    };
    let (must, goal, must_text, goal_text) = judge(r);
    let _ = writeln!(
        out,
        "| {what} | {r:.2}x | {must_text}: {} | {goal_text}: {} |",
        verdict(must),
        verdict(goal)
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
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
