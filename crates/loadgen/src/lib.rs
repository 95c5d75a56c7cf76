//! `muster-loadgen`: a simulated fleet of Muster agents, for load benchmarks of the server.
//!
//! Each simulated agent has its own identity and token, sends what the real agent sends
//! (built with the `muster_proto` types from one real scan, varied per agent) on the real
//! agent's schedule, and the run reports what the server sustained: accepted requests per
//! second, latency percentiles and errors per endpoint, and the server's memory and CPU.
//!
//! - [`schedule`]: when each agent's jobs fall due (one heap for the whole fleet).
//! - [`payload`]: the requests' bodies.
//! - [`fleet`]: identities and the enrolments file.
//! - [`driver`]: enrolment, then the load, over one connection pool.
//! - [`stats`], [`procfs`]: what is measured and how it is printed.
//! - [`commands`]: the commands benchmark (`--commands N`): queue, lease, complete, check.

pub mod cli;
pub mod commands;
pub mod driver;
pub mod fleet;
pub mod payload;
pub mod procfs;
pub mod rng;
pub mod schedule;
pub mod stats;

pub use driver::{LoadConfig, run};
