//! One module per command group.

pub mod config;
pub mod data;
pub mod score;
