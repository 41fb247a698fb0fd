//! Where the CUDA backend keeps its compiled kernels and autotune results between runs.
//!
//! CubeCL compiles every kernel with NVRTC on first use and, in builds with the `autotune`
//! feature, benchmarks candidate kernels per shape; both are start-up costs a run should pay
//! once per machine, not once per process. CubeCL persists autotune results by default, but
//! only next to a `Cargo.toml` (else in `~/.cache/cubecl`), and keeps compiled kernels in memory
//! only. [`configure`] puts both under one folder before the first kernel runs, unless the user
//! configured CubeCL themselves with a `cubecl.toml` (or a `burn.toml` with a `[cubecl]`
//! section), which then applies as CubeCL documents it.

use std::path::{Path, PathBuf};

/// The environment variable naming the cache folder.
pub const CACHE_DIR_VARIABLE: &str = "CAPTION_KERNEL_CACHE";

/// The configuration files CubeCL reads from the working directory or one above it: its own,
/// and burn's when they have a `[cubecl]` section.
const CUBECL_CONFIG_FILES: [&str; 2] = ["cubecl.toml", "CubeCL.toml"];
const BURN_CONFIG_FILES: [&str; 2] = ["burn.toml", "Burn.toml"];

/// The folder for compiled kernels and autotune results: `$CAPTION_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/caption/cubecl`, else `~/.cache/caption/cubecl`; `None` when none is known.
pub fn cache_dir(variable: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| variable(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    set(CACHE_DIR_VARIABLE)
        .or_else(|| set("XDG_CACHE_HOME").map(|dir| dir.join("caption").join("cubecl")))
        .or_else(|| set("HOME").map(|dir| dir.join(".cache").join("caption").join("cubecl")))
}

/// The CubeCL configuration file that applies in `dir`, if the user wrote one.
pub fn user_config_file(dir: &Path) -> Option<PathBuf> {
    let has_cubecl_section = |path: &Path| std::fs::read_to_string(path).is_ok_and(|text| text.contains("[cubecl"));
    dir.ancestors().find_map(|dir| {
        let own = CUBECL_CONFIG_FILES.iter().map(|name| dir.join(name)).find(|path| path.is_file());
        own.or_else(|| BURN_CONFIG_FILES.iter().map(|name| dir.join(name)).find(|path| has_cubecl_section(path)))
    })
}

/// Applies the cache folder to CubeCL once, before the first kernel; returns where kernels are
/// cached (`None`: a user's CubeCL file decides, or no folder is known).
#[cfg(feature = "cuda")]
pub fn configure() -> Option<PathBuf> {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    use std::sync::OnceLock;

    static CONFIGURED: OnceLock<Option<PathBuf>> = OnceLock::new();
    CONFIGURED
        .get_or_init(|| {
            let working_dir = std::env::current_dir().ok()?;
            if user_config_file(&working_dir).is_some() {
                return None;
            }
            let dir = cache_dir(|name| std::env::var(name).ok())?;
            if CubeClRuntimeConfig::storage().lock().is_some() {
                // A kernel already ran and CubeCL read its configuration; it cannot change now.
                return None;
            }
            let mut config = CubeClRuntimeConfig::default();
            config.compilation.cache = Some(CacheConfig::File(dir.clone()));
            config.autotune.cache = CacheConfig::File(dir.clone());
            CubeClRuntimeConfig::set(config.override_from_env());
            eprintln!("CUDA kernels and autotune results are cached in {} (set {CACHE_DIR_VARIABLE} to move them)", dir.display());
            Some(dir)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    }

    #[test]
    fn the_cache_folder_follows_the_variable_then_xdg_then_home() {
        let all = [(CACHE_DIR_VARIABLE, "/kernels"), ("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")];
        assert_eq!(cache_dir(variables(&all)), Some(PathBuf::from("/kernels")));
        assert_eq!(cache_dir(variables(&all[1..])), Some(PathBuf::from("/xdg/caption/cubecl")));
        assert_eq!(cache_dir(variables(&all[2..])), Some(PathBuf::from("/home/u/.cache/caption/cubecl")));
        assert_eq!(cache_dir(variables(&[(CACHE_DIR_VARIABLE, ""), ("HOME", "/h")])), Some(PathBuf::from("/h/.cache/caption/cubecl")));
        assert_eq!(cache_dir(variables(&[])), None);
    }

    /// Runs without a GPU: it only sets CubeCL's configuration, which a CUDA run reads at its first kernel.
    #[cfg(feature = "cuda")]
    #[test]
    fn cubecl_is_pointed_at_the_cache_folder() {
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
        let working_dir = std::env::current_dir().unwrap();
        let expected = match user_config_file(&working_dir) {
            Some(_) => None,
            None => cache_dir(|name| std::env::var(name).ok()),
        };
        assert_eq!(configure(), expected);
        assert_eq!(configure(), expected, "a second call changes nothing");
        if let Some(dir) = expected {
            let config = CubeClRuntimeConfig::get();
            assert!(matches!(&config.compilation.cache, Some(CacheConfig::File(path)) if *path == dir));
            assert!(matches!(&config.autotune.cache, CacheConfig::File(path) if *path == dir));
        }
    }

    #[test]
    fn a_users_cubecl_file_above_the_working_directory_is_found() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a").join("b");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(user_config_file(&nested), None);
        std::fs::write(root.path().join("a").join("burn.toml"), "[other]\n").unwrap();
        assert_eq!(user_config_file(&nested), None);
        std::fs::write(root.path().join("a").join("burn.toml"), "[cubecl.autotune]\n").unwrap();
        assert_eq!(user_config_file(&nested), Some(root.path().join("a").join("burn.toml")));
        std::fs::write(nested.join("cubecl.toml"), "").unwrap();
        assert_eq!(user_config_file(&nested), Some(nested.join("cubecl.toml")));
    }
}
