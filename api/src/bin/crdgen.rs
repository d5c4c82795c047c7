//! Writes the CustomResourceDefinitions of the Sluice API as YAML, one file per kind, into the
//! directory given (default `config/crds`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "config/crds".to_owned()),
    );
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in sluice_api::crd::all_yaml() {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}
