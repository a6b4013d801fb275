//! The measured window of a timed scenario (after a warm-up), or a fixed operation count for
//! instruction counting; and the proxy CPU read at the window's edges.

use std::time::Duration;

use tokio::time::Instant;

use crate::proc::Tree;

#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// Run for `warmup + duration`; only operations inside the last `duration` count.
    Timed {
        warmup: Duration,
        duration: Duration,
    },
    /// Run exactly this many operations (split over the loops); all of them count.
    Count(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
    /// `Count` plans: the loops stop by count, the end is a safety bound only.
    pub counted: bool,
}

impl Window {
    /// Starts now. `bound` caps a counted plan so a stuck target cannot hang the run.
    pub fn new(plan: Plan, bound: Duration) -> Window {
        let now = Instant::now();
        match plan {
            Plan::Timed { warmup, duration } => Window {
                start: now + warmup,
                end: now + warmup + duration,
                counted: false,
            },
            Plan::Count(_) => Window {
                start: now,
                end: now + bound,
                counted: true,
            },
        }
    }

    /// Whether an operation that ran from `from` to `to` counts.
    pub fn contains(&self, from: Instant, to: Instant) -> bool {
        self.counted || (from >= self.start && to <= self.end)
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// The share of `plan`'s operations that loop `index` of `loops` runs.
pub fn share(plan: Plan, index: u64, loops: u64) -> Option<u64> {
    match plan {
        Plan::Timed { .. } => None,
        Plan::Count(total) => Some(total / loops + u64::from(index < total % loops)),
    }
}

/// Runs `work` and returns the tree's CPU time spent inside the window: read at the window's
/// edges while `work` runs (timed), or around the whole of `work` (counted).
pub async fn measure<T>(
    tree: Option<Tree>,
    window: Window,
    work: impl Future<Output = T>,
) -> (T, Option<Duration>) {
    let Some(tree) = tree else {
        return (work.await, None);
    };
    if window.counted {
        let before = tree.cpu();
        let out = work.await;
        return (out, Some(tree.cpu().saturating_sub(before)));
    }
    let edges = async {
        tokio::time::sleep_until(window.start).await;
        let before = tree.cpu();
        tokio::time::sleep_until(window.end).await;
        tree.cpu().saturating_sub(before)
    };
    let (out, used) = tokio::join!(work, edges);
    (out, Some(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let plan = Plan::Count(10);
        let shares: Vec<u64> = (0..3).filter_map(|i| share(plan, i, 3)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
    }
}
