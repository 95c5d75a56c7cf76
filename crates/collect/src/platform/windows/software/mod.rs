//! The `software` worker on Windows: one source, the registry.

pub mod registry;
