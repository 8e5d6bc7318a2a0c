//! When the writer builds its next group: what group commit waits for.
//! At low load a command goes out at once; under load a group waits for
//! the commands its callers send as soon as their answers arrive, so a
//! busy tenant's batches stay full (`docs/benchmarks.md` has the figures).

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::Job;
use crate::log::MAX_BATCH_MESSAGES;

/// Moves every command already queued on the channel to `queue` (up to a
/// few batches' worth).
pub(super) fn drain(rx: &mut mpsc::Receiver<Job>, queue: &mut VecDeque<Job>) {
    while queue.len() < 4 * MAX_BATCH_MESSAGES {
        match rx.try_recv() {
            Ok(job) => queue.push_back(job),
            Err(_) => break,
        }
    }
}

/// Group commit's wait for returning callers. When a batch of many
/// commands commits with nothing else in flight, their callers typically
/// send their next commands at once, but through NATS those take a round
/// trip to arrive. Building the next group from whatever is queued at that
/// instant would split the callers into two cohorts that alternate
/// batches: for a busy tenant, whose batches go one at a time, that halves
/// its throughput. So the next group waits until the queue holds as many
/// commands as were just answered, or for [`RETURNS_WAIT_FACTOR`] times as
/// long as that append took (at most [`RETURNS_MAX_WAIT`]), whichever
/// comes first. A queue already that long (a backlog) does not wait at
/// all. Commands of other tenants wait with them.
#[derive(Default)]
pub(super) struct Returns {
    /// While waiting: the commands the last commit answered, and when the
    /// wait ends anyway.
    waiting: Option<(usize, tokio::time::Instant)>,
}

/// Fewer commands answered than this do not make the next group wait.
const RETURNS_MIN: usize = 8;
/// The wait for returning callers, in appends: under load a served
/// caller's round trip (answer out, next request in) takes about as long
/// as the append that answered it, and the slowest of a hundred up to
/// twice that (`docs/benchmarks.md`).
const RETURNS_WAIT_FACTOR: u32 = 3;
/// The longest wait for returning callers.
const RETURNS_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

impl Returns {
    pub(super) fn answered(&mut self, commands: usize, took: std::time::Duration) {
        self.waiting = (commands >= RETURNS_MIN).then(|| {
            (commands, tokio::time::Instant::now() + (took * RETURNS_WAIT_FACTOR).min(RETURNS_MAX_WAIT))
        });
    }

    /// The instant to wait until before building the next group from a
    /// queue of `queued` commands, if any.
    pub(super) fn hold(&mut self, queued: usize) -> Option<tokio::time::Instant> {
        match self.waiting {
            Some((expected, until)) if queued < expected && until > tokio::time::Instant::now() => {
                Some(until)
            }
            _ => {
                self.waiting = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Returns, RETURNS_MAX_WAIT, RETURNS_MIN, RETURNS_WAIT_FACTOR};

    #[tokio::test(start_paused = true)]
    async fn a_large_commit_holds_the_next_group_until_its_callers_return() {
        let mut returns = Returns::default();
        assert_eq!(returns.hold(0), None, "nothing answered: no wait");
        returns.answered(20, Duration::from_millis(3));
        let until = returns.hold(0).expect("waits for the 20 callers");
        assert_eq!(
            until,
            tokio::time::Instant::now() + Duration::from_millis(3) * RETURNS_WAIT_FACTOR,
            "a few appends' time"
        );
        assert!(returns.hold(19).is_some(), "one caller is still away");
        assert_eq!(returns.hold(20), None, "all returned");
        assert_eq!(returns.hold(0), None, "and the wait is over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_goes_out_at_once() {
        let mut returns = Returns::default();
        returns.answered(1000, Duration::from_millis(3));
        assert_eq!(returns.hold(5000), None, "commands already queued need no wait");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_its_deadline_and_is_bounded() {
        let mut returns = Returns::default();
        returns.answered(100, Duration::from_secs(1));
        let until = returns.hold(0).expect("waits");
        assert_eq!(until, tokio::time::Instant::now() + RETURNS_MAX_WAIT, "never longer than the bound");
        tokio::time::advance(RETURNS_MAX_WAIT).await;
        assert_eq!(returns.hold(0), None, "the deadline passed");
    }

    #[tokio::test(start_paused = true)]
    async fn small_commits_do_not_wait() {
        let mut returns = Returns::default();
        returns.answered(RETURNS_MIN - 1, Duration::from_millis(3));
        assert_eq!(returns.hold(0), None, "a few callers: latency first");
        returns.answered(RETURNS_MIN, Duration::from_millis(3));
        assert!(returns.hold(0).is_some());
        returns.answered(1, Duration::from_millis(3));
        assert_eq!(returns.hold(0), None, "a later small commit ends the wait");
    }
}
