//! `muster-server`'s integration tests: a real server on 127.0.0.1:0 over a real SQLite file,
//! and over PostgreSQL too when `MUSTER_TEST_DATABASE_URL` is set (`support::backends`).

mod admin;
mod agent;
mod api;
mod bundle;
mod cli;
mod commands;
mod dashboard;
mod demo;
mod end_to_end;
mod inventory;
mod isolation;
mod limits;
mod ops;
mod support;
