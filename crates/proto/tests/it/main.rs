//! Integration tests of the wire types.

mod commands;
mod report;
mod schema;
