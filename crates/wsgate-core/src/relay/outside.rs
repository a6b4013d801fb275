//! Wake-ups from outside the session (the drain, a kick), told apart from the session's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

/// The waker the drain and the kick futures hold: it wakes the session's task and notes that
/// it did. Polling those futures takes their locks (the drain's is one for the whole process,
/// shared by every session), so they are polled when registered and then only after they
/// woke the task, not on every wake-up of the session or every busy-poll spin.
pub(super) struct Outside {
    signal: Arc<Signal>,
    waker: Waker,
}

struct Signal {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Outside {
    /// The waker to poll the futures with, when they are to be polled: the first time (`None`
    /// so far), after they woke the task, or when the task's waker changed (they must hold
    /// the new one).
    pub(super) fn woken<'a>(
        outside: &'a mut Option<Outside>,
        cx: &Context<'_>,
    ) -> Option<&'a Waker> {
        if !outside
            .as_ref()
            .is_some_and(|outside| outside.signal.task.will_wake(cx.waker()))
        {
            let signal = Arc::new(Signal {
                woken: AtomicBool::new(true),
                task: cx.waker().clone(),
            });
            let waker = Waker::from(signal.clone());
            *outside = Some(Outside { signal, waker });
        }
        let outside = outside.as_ref()?;
        outside
            .signal
            .woken
            .swap(false, Ordering::Acquire)
            .then_some(&outside.waker)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn the_drain_and_kick_futures_are_polled_only_after_they_woke_the_task() {
        struct Task(AtomicU64);
        impl Wake for Task {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let woken = Arc::new(Task(AtomicU64::new(0)));
        let task = Waker::from(woken.clone());
        let cx = Context::from_waker(&task);
        let mut outside = None;
        let waker = Outside::woken(&mut outside, &cx)
            .expect("polled the first time, to register")
            .clone();
        assert!(
            Outside::woken(&mut outside, &cx).is_none(),
            "not woken since"
        );
        waker.wake_by_ref();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "the task is woken");
        assert!(Outside::woken(&mut outside, &cx).is_some(), "woken");
        assert!(Outside::woken(&mut outside, &cx).is_none());
    }
}
