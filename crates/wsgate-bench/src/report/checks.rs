//! The upgrade-check table: what each target answered to each check, over every run.

use std::fmt::Write as _;

use super::Table;
use crate::check;

impl Table<'_> {
    pub(super) fn checks(&self, out: &mut String) {
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
}
