//! What the end-to-end tests share: other packages' binaries, and processes that die with the
//! test.

use std::path::PathBuf;
use std::process::Command;

/// Processes killed when the test ends, passed or failed.
pub struct Reaped(pub Vec<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Builds another package's binary (cargo only builds a package's own binaries for its tests)
/// and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join(bin)
}
