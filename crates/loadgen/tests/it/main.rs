//! The load generator's integration tests: one binary, a module per area.

mod commands;
mod load;
