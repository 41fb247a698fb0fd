//! One module per command group.

pub mod caption;
pub mod compare;
pub mod config;
pub mod data;
pub mod eval;
pub mod score;
pub mod serve;
pub mod train;
