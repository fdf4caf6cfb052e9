//! Importers that turn the shared Alibaba traces into scenarios. Dirty rows are skipped and
//! counted, never a panic: every importer returns a report of what it kept and what it dropped.

pub mod genai;
pub mod mixed;
pub mod v2018;

use std::collections::BTreeMap;
use std::fmt;

/// What an import kept and skipped, and why.
#[derive(Debug, Default)]
pub struct Report {
    pub rows_read: u64,
    pub jobs_kept: u64,
    pub tasks_kept: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "read {} rows; kept {} jobs with {} tasks",
            self.rows_read, self.jobs_kept, self.tasks_kept
        )?;
        for (why, n) in &self.skipped {
            writeln!(f, "skipped {n}: {why}")?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

/// Reads a CSV file's records, with or without a header, as raw string fields.
pub fn records(
    path: &std::path::Path,
    has_header: bool,
) -> anyhow::Result<csv::Reader<std::fs::File>> {
    use anyhow::Context;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(has_header)
        .flexible(true)
        .from_reader(file))
}
