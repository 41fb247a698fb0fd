//! For the workspace's tests only. Some tests read real data and reference outputs from the
//! shared folder beside the checkout (`../shared`, or `$CAPTION_SHARED_DIR`): Flickr8k and COCO
//! photos, ImageNet weights, pycocoevalcap fixtures. A user's clone has no such folder, so those
//! tests must be reported as ignored there, never fail and never pass without asserting.
//!
//! A crate whose tests need the folder calls [`declare_shared_data_cfg`] from its build script,
//! which sets `cfg(shared_data)` when the folder exists at build time, and marks each such test
//! `#[cfg_attr(not(shared_data), ignore = "needs ../shared")]`.
//!
//! [`tensorboard`] reads a run's event files back with TensorBoard itself.

pub mod tensorboard;

use std::path::{Path, PathBuf};

/// The environment variable that points at the shared folder elsewhere than `../shared`.
pub const SHARED_DIR_VAR: &str = "CAPTION_SHARED_DIR";

/// Where the shared folder is expected: `$CAPTION_SHARED_DIR`, or `shared` beside the checkout.
pub fn shared_dir_location() -> PathBuf {
    match std::env::var_os(SHARED_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => {
            // This crate lives at <checkout>/crates/test-support.
            let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap_or(Path::new("."));
            checkout.parent().unwrap_or(Path::new("..")).join("shared")
        }
    }
}

/// The shared folder, for a test that is only run when it was present at build time; panics
/// with one clear message if it has gone since.
pub fn shared_dir() -> PathBuf {
    let dir = shared_dir_location();
    assert!(
        dir.is_dir(),
        "this test reads the shared data folder, expected at {} (beside the checkout, or set {SHARED_DIR_VAR}); \
         it was there when the tests were built but is absent now",
        dir.display()
    );
    dir
}

/// For build scripts: sets `cfg(shared_data)` when the shared folder exists, and has Cargo run
/// the script again when `$CAPTION_SHARED_DIR` or the folder's contents change. (A folder that
/// appears after the first build is noticed on the next change of the variable or of the
/// build script: `touch build.rs`.)
pub fn declare_shared_data_cfg() {
    println!("cargo::rustc-check-cfg=cfg(shared_data)");
    println!("cargo::rerun-if-env-changed={SHARED_DIR_VAR}");
    println!("cargo::rerun-if-changed=build.rs");
    let dir = shared_dir_location();
    if dir.is_dir() {
        println!("cargo::rustc-cfg=shared_data");
        println!("cargo::rerun-if-changed={}", dir.display());
    }
}

/// The servers the scale-out tests start: Redis, PostgreSQL (initdb, pg_ctl) and nginx.
pub const LOCAL_SERVERS: [&str; 4] = ["redis-server", "initdb", "pg_ctl", "nginx"];

/// A program on PATH, or where Debian installs PostgreSQL's (`/usr/lib/postgresql/N/bin`) and
/// nginx (`/usr/sbin`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut folders: Vec<PathBuf> = std::env::split_paths(&path).collect();
    folders.push(PathBuf::from("/usr/sbin"));
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = versions.flatten().map(|entry| entry.path().join("bin")).collect();
        // The newest first.
        versions.sort_by(|a, b| b.cmp(a));
        folders.extend(versions);
    }
    folders.into_iter().map(|folder| folder.join(name)).find(|candidate| candidate.is_file())
}

/// For build scripts: sets `cfg(local_servers)` when every program of [`LOCAL_SERVERS`] is
/// installed, so that tests which start them are reported as ignored elsewhere (mark them
/// `#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx")]`).
pub fn declare_local_servers_cfg() {
    println!("cargo::rustc-check-cfg=cfg(local_servers)");
    println!("cargo::rerun-if-env-changed=PATH");
    let missing: Vec<&str> = LOCAL_SERVERS.into_iter().filter(|name| find_program(name).is_none()).collect();
    if missing.is_empty() {
        println!("cargo::rustc-cfg=local_servers");
    } else {
        println!(
            "cargo::warning=the scale-out tests are ignored: {} not installed (Debian: redis-server postgresql nginx)",
            missing.join(", ")
        );
    }
}

/// pycocoevalcap 1.2's wheel (METEOR's data and WordNet synonyms): `$CAPTION_METEOR_DATA`, or
/// `target/meteor-data` in the checkout, where `scripts/test` downloads it. Panics with what to
/// do when it is absent.
pub fn meteor_data() -> PathBuf {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap_or(Path::new("."));
    let path = match std::env::var_os("CAPTION_METEOR_DATA").filter(|p| !p.is_empty()) {
        // Relative paths are meant from the checkout (where the tests are run from).
        Some(path) if Path::new(&path).is_relative() && !Path::new(&path).exists() => checkout.join(path),
        Some(path) => PathBuf::from(path),
        None => checkout.join("target/meteor-data"),
    };
    assert!(
        path.exists(),
        "these tests need pycocoevalcap 1.2's METEOR data at {}, which is not redistributed in the repository: \
         `scripts/test` downloads it (or run `python3 -m pip download --no-deps pycocoevalcap==1.2 -d target/meteor-data`, \
         or set CAPTION_METEOR_DATA to the wheel)",
        path.display()
    );
    path
}
