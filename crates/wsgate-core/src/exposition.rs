//! The two Prometheus text formats of `/metrics`. prometheus-client writes OpenMetrics, which
//! Prometheus asks for; scrapers that do not (curl, `promtool check metrics`, older agents)
//! get the classic text format (0.0.4) with the same samples. The differences that matter
//! here: a classic counter family carries its `_total` suffix in `# HELP`/`# TYPE`, there is
//! no `info` type (it becomes a gauge named `*_info`), and there is no `# EOF` marker.

use std::collections::HashMap;

pub const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics (Prometheus sends it first).
pub fn wants_open_metrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let is_open_metrics = parts
            .next()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("application/openmetrics-text"));
        is_open_metrics && !parts.any(|param| matches!(param, "q=0" | "q=0.0" | "q=0.00"))
    })
}

/// Rewrites an OpenMetrics exposition (as prometheus-client writes it) in the classic format.
pub fn classic(open_metrics: &str) -> String {
    let mut renamed: HashMap<&str, (String, &str)> = HashMap::new();
    for line in open_metrics.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|t| t.split_once(' ')) {
            match kind {
                "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                _ => None,
            };
        }
    }
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match comment.and_then(|(prefix, rest)| {
            let (name, tail) = rest.split_once(' ')?;
            Some((prefix, renamed.get(name)?, tail))
        }) {
            Some(("# TYPE ", (name, kind), _)) => text.push_str(&format!("# TYPE {name} {kind}")),
            Some((prefix, (name, _), tail)) => text.push_str(&format!("{prefix}{name} {tail}")),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_info_take_their_classic_names() {
        let open = "# HELP x_handshakes Upgrade requests.\n# TYPE x_handshakes counter\n\
                    x_handshakes_total{route=\"a\"} 1\n# HELP x_active Live.\n# TYPE x_active gauge\n\
                    x_active 2\n# HELP x_build Version.\n# TYPE x_build info\n\
                    x_build_info{version=\"0.1.0\"} 1\n# EOF\n";
        assert_eq!(
            classic(open),
            "# HELP x_handshakes_total Upgrade requests.\n# TYPE x_handshakes_total counter\n\
             x_handshakes_total{route=\"a\"} 1\n# HELP x_active Live.\n# TYPE x_active gauge\n\
             x_active 2\n# HELP x_build_info Version.\n# TYPE x_build_info gauge\n\
             x_build_info{version=\"0.1.0\"} 1\n"
        );
    }

    #[test]
    fn prometheus_gets_open_metrics_and_others_the_classic_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_open_metrics(prometheus));
        assert!(!wants_open_metrics("*/*"));
        assert!(!wants_open_metrics("text/plain;version=0.0.4"));
        assert!(!wants_open_metrics("application/openmetrics-text;q=0"));
    }
}
