//! Reading the YAML into the [`raw`](super::raw) structs without stopping at the first
//! structural problem. serde stops at the first unknown key or misplaced list; so that
//! `wsgate check` reports every problem in one run, the part of the text serde could not read
//! is blanked (line breaks kept, so every later line number stays true) and the text is read
//! again, until it reads or a round finds nothing it can set aside.

use super::Problem;
use super::raw;

/// Structural problems reported in one run at most; past this the file is mostly wrong.
const MAX_ROUNDS: usize = 32;

/// What serde produces for a problem in the data (not in the YAML syntax): only these are
/// looked past. Anything else in a later round could be an artefact of the blanking, so the
/// rounds stop there and what was found so far is reported.
const DATA_PROBLEMS: [&str; 7] = [
    "unknown field",
    "invalid type",
    "invalid value",
    "invalid length",
    "unknown variant",
    "duplicate field",
    // serde-saphyr's words for a mapping or a scalar where a list belongs, and the like.
    "expected ",
];

/// The root, with the structural problems met on the way; `Err` when the file could not be
/// read at all (every problem found is in it).
pub(super) fn read(text: &str) -> Result<(raw::Root, Vec<Problem>), Vec<Problem>> {
    let mut text = text.to_owned();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let problem = match once(&text) {
            Ok(root) => return Ok((root, problems)),
            Err(problem) => problem,
        };
        let first = problems.is_empty();
        let data = DATA_PROBLEMS.iter().any(|p| problem.message.starts_with(p));
        if !first && (!data || problems.iter().any(|p| p.line == problem.line)) {
            // An artefact of the blanking, or a problem that blanking did not remove.
            return Err(problems);
        }
        let line = problem.line;
        problems.push(problem);
        if !data || !blank(&mut text, line) {
            return Err(problems);
        }
    }
    Err(problems)
}

/// True when `problem` follows from a structural problem already reported: a key blanked
/// because its value could not be read is then also missing, or its parent is. Only a missing
/// key can follow so; any other problem at those paths stands on its own and is reported.
pub(super) fn follows(structural: &[Problem], problem: &Problem) -> bool {
    problem.message.starts_with("is required")
        && structural.iter().any(|s| {
            s.path == problem.path
                || s.path
                    .strip_prefix(problem.path.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
}

fn once(text: &str) -> Result<raw::Root, Problem> {
    if text.trim().is_empty() {
        return Err(Problem {
            path: String::new(),
            line: 1,
            message: "the file is empty; listen, admin and routes are required".to_owned(),
        });
    }
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|error| {
            path = error.path().to_string();
            error.into_inner()
        })
    });
    result.map_err(|error| {
        let line = error.location().map_or(0, |loc| loc.line());
        let mut message = error.without_snippet().to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // serde-saphyr names the YAML event it wanted; say what the user should write.
        for (event, wanted) in [
            ("expected sequence start", "expected a list"),
            (
                "expected mapping start",
                "expected a mapping (key: value lines)",
            ),
        ] {
            if let Some(rest) = message.strip_prefix(event) {
                message = format!("{wanted}{rest}");
            }
        }
        // `Spanned<T>` shows up in serde's path as a `value` field; users never wrote it.
        path = path.replace(".value", "");
        if path == "." || path == "value" {
            path.clear();
        }
        Problem {
            path,
            line,
            message,
        }
    })
}

/// Blanks line `line` (1-based) and the lines nested under it, keeping every line break. A
/// line that opens a sequence item (`- key: value`) keeps its `-`, so the item's other keys
/// stay in it. False when there is nothing to blank.
fn blank(text: &mut String, line: u64) -> bool {
    let Some(index) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return false;
    };
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let Some(target) = lines.get(index) else {
        return false;
    };
    if target.trim().is_empty() {
        return false;
    }
    let indent = target.len() - target.trim_start().len();
    let mut column = indent;
    let mut kept = String::new();
    let mut rest = &target[indent..];
    while let Some(after) = rest.strip_prefix('-').filter(|a| a.starts_with(' ')) {
        let spaces = after.len() - after.trim_start().len();
        kept.push_str(&" ".repeat(column - indent - kept.len()));
        kept.push('-');
        column += 1 + spaces;
        rest = &after[spaces..];
    }
    let blanked = if kept.is_empty() {
        String::new()
    } else {
        format!("{}{kept}", " ".repeat(indent))
    };
    if blanked == *target {
        return false;
    }
    lines[index] = blanked;
    // Lines nested deeper than the blanked key (its block value) go too.
    for next in lines.iter_mut().skip(index + 1) {
        let trimmed = next.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            next.clear();
            continue;
        }
        if next.len() - trimmed.len() <= column {
            break;
        }
        next.clear();
    }
    *text = lines.join("\n");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blanked(text: &str, line: u64) -> String {
        let mut text = text.to_owned();
        assert!(blank(&mut text, line));
        text
    }

    #[test]
    fn blanking_keeps_lines_and_sequence_items() {
        let text = "a:\n  b: 1\n  c:\n    d: 2\n\n    e: 3\n  f: 4\n";
        assert_eq!(blanked(text, 3), "a:\n  b: 1\n\n\n\n\n  f: 4\n");
        let items = "l:\n  - x: 1\n    y: 2\n  - z: 3\n";
        assert_eq!(blanked(items, 2), "l:\n  -\n    y: 2\n  - z: 3\n");
        assert_eq!(blanked(items, 3), "l:\n  - x: 1\n\n  - z: 3\n");
        let nested = "l:\n  - - x: 1\n      y: 2\n";
        assert_eq!(blanked(nested, 2), "l:\n  - -\n      y: 2\n");
        let mut empty = "a:\n\n".to_owned();
        assert!(!blank(&mut empty, 2));
        assert!(!blank(&mut empty, 0));
        assert!(!blank(&mut empty, 9));
        // An item left empty by an earlier round goes whole.
        assert_eq!(blanked("l:\n  -\n  - a: 1\n", 2), "l:\n\n  - a: 1\n");
    }

    #[test]
    fn a_problem_under_a_reported_path_follows_from_it() {
        let at = |path: &str| Problem {
            path: path.to_owned(),
            line: 1,
            message: "is required".to_owned(),
        };
        let structural = [at("routes[0].origins.bogus"), at("listen.tls")];
        assert!(follows(&structural, &at("routes[0].origins")));
        assert!(follows(&structural, &at("listen.tls")));
        assert!(!follows(&structural, &at("routes[0].origin")));
        assert!(!follows(&structural, &at("listen.tls.cert")));
        assert!(!follows(&structural, &at("routes[1].origins")));
        let other = Problem {
            message: "an earlier route has the same host and path".to_owned(),
            ..at("routes[0].origins")
        };
        assert!(!follows(&structural, &other), "not a missing key: reported");
    }
}
