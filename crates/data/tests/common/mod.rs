//! Helpers shared by the data crate's integration tests.

pub use caption_test_support::shared_dir;
