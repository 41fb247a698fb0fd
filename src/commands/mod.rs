//! One module per command group.

pub mod compare;
pub mod config;
pub mod data;
pub mod score;
