//! Issue 6's "must" and "goal" thresholds, and issue 18's memory and scale targets, judged on
//! the medians.

use std::fmt::Write as _;

use super::Table;
use crate::record::name;

impl Table<'_> {
    /// Issue 6's table: what wsgate must reach, and the goal.
    pub(super) fn targets(&self, out: &mut String) {
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
                "| echo 64 B x 1: RTT p50 over direct | {extra:+.1} us | <= +25 us: {} | <= +15 us: {} |",
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
            .filter(|l| *l != subject && *l != super::FLEET && !l.starts_with("direct"))
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
}

impl Table<'_> {
    /// Issue 18's targets: memory per idle session, large messages, busy polling, handshakes.
    pub(super) fn scale_targets(&self, out: &mut String) {
        let Some(subject) = self.subject() else {
            return;
        };
        let haproxy = self.find("haproxy");
        let _ = writeln!(
            out,
            "\n## Issue 18 targets ({subject})\n\n| scenario | measured | target | verdict |\n|---|---|---|---|"
        );
        let mut row = |what: String,
                       measured: Option<f64>,
                       unit: &str,
                       target: &str,
                       met: fn(f64) -> bool| {
            let _ = writeln!(
                out,
                "| {what} | {} | {target} | {} |",
                measured.map_or("–".to_owned(), |m| format!("{m:.2}{unit}")),
                measured.map_or("–", |m| verdict(met(m)))
            );
        };
        for (scenario, _) in self.rows.iter().filter(|(_, m)| m == name::KIB_PER_SESSION) {
            row(
                format!("{scenario}: memory per session"),
                self.median(scenario, name::KIB_PER_SESSION, subject),
                " KiB",
                "<= 10 KiB",
                |k| k <= 10.0,
            );
        }
        for scenario in ["echo 16 KiB x 64", "echo 16 KiB x 512"] {
            row(
                format!("{scenario}: CPU per round trip vs HAProxy"),
                self.ratio_to(scenario, name::CPU_PER_ROUND_TRIP, subject, haproxy),
                "x",
                "<= 0.8x",
                |r| r <= 0.8,
            );
        }
        // "No worse than today" at 64 B: the worst ratio issue 18 measured.
        for (scenario, today) in [("echo 64 B x 64", 0.93), ("echo 64 B x 512", 0.98)] {
            let r = self.ratio_to(scenario, name::CPU_PER_ROUND_TRIP, subject, haproxy);
            let _ = writeln!(
                out,
                "| {scenario}: CPU per round trip vs HAProxy | {} | <= {today:.2}x (issue 18's figure) | {} |",
                r.map_or("–".to_owned(), |r| format!("{r:.2}x")),
                r.map_or("–", |r| verdict(r <= today))
            );
        }
        let mut row = |what: &str, measured: Option<f64>, target: &str, met: fn(f64) -> bool| {
            let _ = writeln!(
                out,
                "| {what} | {} | {target} | {} |",
                measured.map_or("–".to_owned(), |m| format!("{m:.2}x")),
                measured.map_or("–", |m| verdict(met(m)))
            );
        };
        row(
            "echo 64 B x 1 (busy polling): CPU per round trip vs HAProxy",
            self.ratio_to("echo 64 B x 1", name::CPU_PER_ROUND_TRIP, subject, haproxy),
            "<= 1.0x",
            |r| r <= 1.0,
        );
        row(
            "echo 64 B x 1 (busy polling): RTT p50 vs HAProxy",
            self.ratio_to("echo 64 B x 1", name::RTT_P50, subject, haproxy),
            "<= 0.75x",
            |r| r <= 0.75,
        );
        for (scenario, _) in self
            .rows
            .iter()
            .filter(|(_, m)| m == name::CPU_PER_CONNECTION)
        {
            row(
                &format!("{scenario}: CPU per new connection vs HAProxy"),
                self.ratio_to(scenario, name::CPU_PER_CONNECTION, subject, haproxy),
                "<= 0.7x",
                |r| r <= 0.7,
            );
        }
        let _ = writeln!(
            out,
            "\n100k sessions: not measured by this harness yet (one process may hold 20,000 descriptors on the benchmark machine; see issue 18)."
        );
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
