//! A scenario file as a user writes it (YAML): parsed and checked, or refused with the line and
//! field at fault, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splai_sim::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Scenario::parse("fuzz.yaml", text);
    }
});
