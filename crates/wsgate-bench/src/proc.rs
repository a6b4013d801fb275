//! What the measured proxy costs, read from /proc: CPU time (utime + stime, all threads,
//! live and exited) and resident memory (VmRSS) of a process and all its descendants, so
//! nginx's workers and HAProxy's threads count alongside wsgate's runtime threads.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;

/// A process and its descendants, found anew at every reading (workers may be forked late).
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    root: u32,
    ticks_per_second: u64,
}

impl Tree {
    pub fn new(root: u32) -> anyhow::Result<Tree> {
        stat(root).with_context(|| format!("no process {root} to measure"))?;
        Ok(Tree {
            root,
            ticks_per_second: clock_ticks(),
        })
    }

    /// Total CPU time (user + system) consumed so far by the tree.
    pub fn cpu(&self) -> Duration {
        let ticks: u64 = self
            .members()
            .into_iter()
            .filter_map(|pid| stat(pid).map(|s| s.utime + s.stime))
            .sum();
        Duration::from_micros(ticks * 1_000_000 / self.ticks_per_second)
    }

    /// Sum of VmRSS over the tree, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.members().into_iter().filter_map(vm_rss_kib).sum()
    }

    /// The root and every descendant (one scan of /proc: /proc/PID/task/TID/children is not
    /// available on every kernel).
    fn members(&self) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some(s) = stat(pid) {
                    children.entry(s.ppid).or_default().push(pid);
                }
            }
        }
        let mut members = vec![self.root];
        let mut next = 0;
        while let Some(&pid) = members.get(next) {
            if let Some(kids) = children.get(&pid) {
                members.extend(kids);
            }
            next += 1;
        }
        members
    }
}

/// CPU microseconds per operation.
pub fn per_op(used: Option<Duration>, ops: u64) -> Option<f64> {
    used.filter(|_| ops > 0)
        .map(|used| used.as_secs_f64() * 1e6 / ops as f64)
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Fields after the command name (which may contain spaces and parentheses): state is field 3,
/// ppid 4, utime 14, stime 15 (proc(5)).
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// USER_HZ; `getconf` avoids calling sysconf through unsafe FFI. Linux has used 100 for decades.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 1 2 3";
        let stat = parse_stat(line).expect("parses");
        assert_eq!((stat.ppid, stat.utime, stat.stime), (7, 250, 30));
    }

    #[test]
    fn own_process_is_measurable() {
        let tree = Tree::new(std::process::id()).expect("self");
        assert!(tree.rss_kib() > 0);
        assert!(tree.members().contains(&std::process::id()));
    }

    #[test]
    fn per_op_needs_ops() {
        let ms = Duration::from_millis;
        assert_eq!(per_op(Some(ms(10)), 0), None);
        assert_eq!(per_op(None, 10), None);
        assert_eq!(per_op(Some(ms(10)), 10), Some(1000.0));
    }
}
