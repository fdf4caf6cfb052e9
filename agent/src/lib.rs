//! `splai-worker`, SPLAI's worker agent. So far: [`sandbox`], which runs a `command` task as the
//! issue asks: its own process group, killed whole on timeout or cancel, rlimits on cpu time,
//! memory, open files and file size, a cleared environment with an allow-list, a private working
//! folder, `no_new_privs`, and stdout and stderr captured up to a cap.

#![forbid(unsafe_code)]

pub mod executor;
pub mod sandbox;
