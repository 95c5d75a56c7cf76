//! `muster-server serve` under systemd (`Type=notify`, `WatchdogSec=`): the agent's sd_notify
//! functions (`muster_agent::daemon`), so both speak the protocol the same way. Without
//! `NOTIFY_SOCKET` every call does nothing.
//!
//! - `READY=1` (with `STATUS=listening on ADDR`) once the migrations are applied and the
//!   listener is bound: [`ready`], which also starts the watchdog.
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, from a task on the server's runtime, so a
//!   runtime that stops scheduling tasks stops the pings and systemd restarts the server.
//! - `STOPPING=1` as soon as the stop is asked for, before requests in flight are finished:
//!   [`stopping`].
//! - SIGHUP does not reload: the server's settings need a restart. [`ignore_sighup`] keeps the
//!   signal from ending the process (its default) and logs that; no `RELOADING=1` is sent.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use muster_agent::daemon;

/// The server is up: tells systemd, and starts the watchdog pings if systemd wants them.
pub fn ready(address: SocketAddr) {
    daemon::notify(&format!("READY=1\nSTATUS=listening on {address}"));
    if let Some(timeout) = daemon::watchdog_interval() {
        tokio::spawn(watchdog(timeout / 2));
    }
}

async fn watchdog(every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        daemon::notify("WATCHDOG=1");
    }
}

/// `shutdown`, followed by `STOPPING=1` the moment it completes.
pub async fn stopping(shutdown: impl Future<Output = ()> + Send + 'static) {
    shutdown.await;
    daemon::notify("STOPPING=1");
}

/// Keeps SIGHUP (a unit's `ExecReload=`, a closed terminal) from killing the server, which
/// does not reload its configuration: each one is logged with that advice.
pub fn ignore_sighup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::warn!(
                            "SIGHUP: muster-server does not reload its configuration; restart \
                             it to apply changes"
                        );
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP"),
        }
    }
}
