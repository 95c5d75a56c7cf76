//! Integration tests of the wire types.

mod report;
mod schema;
