//! Helpers the integration tests share.

use std::path::{Path, PathBuf};

use splai_sim::scenario::Scenario;

/// A committed scenario, `scenarios/<name>.yaml`.
pub fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.yaml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every output file of a run, with the one wall-clock field of summary.json blanked.
pub fn outputs(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text
                .lines()
                .filter(|l| !l.contains("\"wall_s\""))
                .collect::<Vec<_>>()
                .join("\n");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}
