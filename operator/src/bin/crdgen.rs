//! Writes the four CRDs to `config/crd/bases/` (or the folder given as the only argument).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd/bases"));
    std::fs::create_dir_all(&dir)?;
    for crd in splai_operator::crd::all() {
        let path = dir.join(splai_operator::crd::file_name(&crd));
        std::fs::write(&path, splai_operator::crd::to_yaml(&crd))?;
        println!("{}", path.display());
    }
    Ok(())
}
