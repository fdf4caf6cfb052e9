//! The progress line both engines show on standard error during long runs at a terminal.
//!
//! Hand-written rather than `indicatif`: it is one throttled line, and indicatif would bring its
//! own dependencies (console, unicode-width, ...) to draw it.

use std::time::{Duration, Instant};

/// Steps between looks at the clock: cheap next to a discrete event, and frequent enough for
/// the turmoil engine, whose every step is a simulated millisecond on every host.
const CLOCK_EVERY: u64 = 256;
/// Runs that finish sooner show no line at all.
const QUIET_FOR: Duration = Duration::from_secs(2);
const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// Simulated time and jobs ended, redrawn in place. It writes nothing for runs that finish
/// within two seconds, and never touches the outputs.
pub(crate) struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
    steps: u64,
    shown: bool,
}

impl Progress {
    pub(crate) fn new(on: bool) -> Self {
        let now = Instant::now();
        Progress {
            on,
            started: now,
            last: now,
            steps: 0,
            shown: false,
        }
    }

    /// One step of the engine, at simulated time `at_ms`; `ended` of `jobs` have ended.
    pub(crate) fn tick(&mut self, at_ms: u64, horizon_ms: u64, ended: usize, jobs: usize) {
        self.steps += 1;
        if !self.on || !self.steps.is_multiple_of(CLOCK_EVERY) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < QUIET_FOR
            || now.duration_since(self.last) < REDRAW_EVERY
        {
            return;
        }
        self.last = now;
        self.shown = true;
        eprint!("\r{}", line(at_ms, horizon_ms, ended, jobs));
    }
}

/// Ends the line, if one was drawn, so what follows (an error too) starts on a line of its own.
impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn line(at_ms: u64, horizon_ms: u64, ended: usize, jobs: usize) -> String {
    let done = if jobs == 0 {
        0.0
    } else {
        ended as f64 / jobs as f64
    };
    let width = 30;
    let filled = ((done * width as f64) as usize).min(width);
    format!(
        "[{}{}] {ended}/{jobs} jobs ended, simulated {:.0} s of at most {:.0} s ",
        "#".repeat(filled),
        ".".repeat(width - filled),
        at_ms as f64 / 1000.0,
        horizon_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn the_progress_line_fills_its_bar_with_the_share_of_jobs_ended() {
        assert_eq!(
            line(90_400, 7_200_000, 60, 120),
            "[###############...............] 60/120 jobs ended, simulated 90 s of at most 7200 s "
        );
        assert!(line(0, 1000, 0, 0).starts_with(&format!("[{}] 0/0", ".".repeat(30))));
    }
}
