//! Helpers shared by the data crate's integration tests.

use std::path::PathBuf;

/// The shared real data (`../shared` beside the repository, or `$CAPTION_SHARED_DIR`).
/// Fails with one clear message when it is absent, instead of an obscure file-not-found later.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("CAPTION_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(
        dir.join("data").is_dir(),
        "these tests read real datasets from the shared folder, expected at {} (beside the repository \
         checkout, or set CAPTION_SHARED_DIR); it is absent",
        dir.display()
    );
    dir
}
