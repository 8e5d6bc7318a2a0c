//! Where the views stand against the log: what `/healthz` answers and what
//! `/metrics` reports as lag and reachability. Its own module so that the
//! core (which measures it) and the metrics (which report it) both import
//! it without importing each other.

/// Whether the views have caught up with the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The log's last position; `None` when the log did not answer.
    pub log_head: Option<u64>,
    /// The lowest position every view includes.
    pub views_at: u64,
}

impl Health {
    /// Serving is healthy once the log answers and every view includes it.
    pub fn ready(&self) -> bool {
        self.log_head.is_some_and(|head| self.views_at >= head)
    }

    /// Events in the log the views do not include yet (0 when the log is
    /// unreachable: nothing is known to be missing).
    pub fn lag_events(&self) -> u64 {
        self.log_head.map_or(0, |head| head.saturating_sub(self.views_at))
    }

    /// `/healthz`'s `status`: `ok`, `catching_up` or `log_unreachable`.
    pub fn status(&self) -> &'static str {
        match (self.log_head, self.ready()) {
            (None, _) => "log_unreachable",
            (Some(_), false) => "catching_up",
            (Some(_), true) => "ok",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn healthy_once_the_views_include_the_whole_log() {
        let check = |log_head, views_at| {
            let health = Health { log_head, views_at };
            (health.ready(), health.lag_events(), health.status())
        };
        assert_eq!(check(Some(10), 10), (true, 0, "ok"));
        assert_eq!(check(Some(10), 7), (false, 3, "catching_up"));
        assert_eq!(check(Some(0), 0), (true, 0, "ok"));
        // An unreachable log is never healthy, and no lag is claimed.
        assert_eq!(check(None, 7), (false, 0, "log_unreachable"));
    }
}
