//! Trace rows as the Alibaba files hold them, dirty ones included, through the importers of the
//! batch-job trace (v2018) and the generative-AI trace (v2026): each row is kept or skipped and
//! counted, never a panic. The importers read files, so each input is written to one first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use splai_sim::import::{genai, v2018};

fn scratch() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        // Memory-backed where there is one: a file is written per input.
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("splai-fuzz-import-{}.csv", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let batch = v2018::Options {
        jobs: Some(50),
        fleet: None,
        workers: 4,
        machine_cores: 8,
        load: Some(0.9),
        max_instances: 20,
        max_task_seconds: 3_600,
        deadline_factor: Some(1.5),
        name: "fuzz",
    };
    let _ = v2018::import(path, &batch, "fuzz");
    let requests = genai::Options {
        jobs: Some(50),
        fleet: None,
        cold_start: None,
        workers: 4,
        load: 0.9,
        name: "fuzz",
    };
    let _ = genai::import(path, &requests, "fuzz");
});
