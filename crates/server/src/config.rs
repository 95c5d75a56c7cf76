//! The server's configuration, passed explicitly to [`crate::run`].

use std::net::SocketAddr;

use crate::store::{DEFAULT_DATABASE_URL, Thresholds};

/// Default address to listen on: loopback only, until an operator says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Default largest request body, before and after gzip: 16 MiB (a full inventory of a host
/// with thousands of packages and processes is a few MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How `muster-server serve` runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (the caller binds; see [`crate::run`]).
    pub listen: SocketAddr,
    /// `sqlite://PATH` (created if missing), or a bare path.
    pub database_url: String,
    pub limits: Limits,
}

/// Bounds on what a request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes, as sent and after gzip decompression; larger is 413.
    pub max_body_bytes: usize,
    /// Latest cpu/memory/disk percentages over which a host is listed in the alerts
    /// (defaults: the seed's 80, 80, 90).
    pub alert_thresholds: Thresholds,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            alert_thresholds: Thresholds::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            limits: Limits::default(),
        }
    }
}
