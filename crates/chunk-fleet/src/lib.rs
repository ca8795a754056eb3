//! # chunk-fleet
//!
//! placeholder
#![deny(missing_docs)]

pub mod placement;
pub mod store;
