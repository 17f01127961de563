//! The error every fallible step of the binary returns: any error, boxed.
//!
//! A leaf: the wiring (`lib.rs`), the first start (`bootstrap.rs`) and the command line
//! (`cli/`) all return it, and the wiring calls `bootstrap`, so it cannot live in the
//! root without a cycle.

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
