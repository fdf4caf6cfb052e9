//! How well `splai-sim` predicts the real operator: a scenario is run for real (`real`) and in
//! the simulator, both at the same time scale, and compared metric by metric (`report`).
//!
//! This is a crate of its own because the simulator must not depend on a cluster or on the
//! operator, while a real run needs both.

#![forbid(unsafe_code)]

pub mod real;
pub mod report;
