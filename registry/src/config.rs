//! The configuration file, its environment overrides and its checks live
//! in `berth_config`, shared with the operator that writes the file; the
//! registry uses them from here.

pub use berth_config::*;
