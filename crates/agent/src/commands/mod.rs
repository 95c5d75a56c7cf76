//! Remote commands: seed 001's smart queue, run so as not to get in the way of the machine.
//!
//! What the server leases (`GET commands/pending`) goes through [`CommandRuntime::accept`]:
//! each new command is acknowledged `received`, checked ([`verify`]: signature when a signing
//! key is known, expiry, allowed type, well-formed fields; else `rejected`/`expired`, never
//! run) and queued. The queue ([`store`], persisted in `STATE/commands/queue.json`) is ordered
//! by due time, then priority (1 highest), then arrival; [`CommandRuntime::step`] starts, in
//! that order, each due command that may run now, at most `max_concurrent_commands` at once:
//!
//! - a `maintenance_window` command waits for the window (local time, [`clock`]);
//! - priority 2..5 wait while smoothed CPU or memory is over its threshold ([`load`]);
//! - a `package_manager` command waits while another process holds dpkg/apt/rpm's lock, or
//!   on Windows the Windows Installer's mutex ([`pkglock`]);
//! - its named locks are taken on the server; one held elsewhere (409) defers it.
//!
//! Each kind of wait is reported `deferred` once, with its reason. A started command is
//! reported `running`, runs ([`exec`]: its own process group, on Windows its own Job Object
//! (`job`), clean environment, timeout that stops the whole tree, [`proctree`]) and ends `succeeded`, `failed`, `timed_out` or
//! `cancelled` with its exit code and output; its locks are released whatever the end.
//! Status updates wait in a persisted outbox until the server acknowledges them.
//!
//! Invariants: a command id runs at most once per agent (ids of finished commands are
//! remembered, a redelivered lease is acknowledged, not queued again); nothing unverified runs
//! when a key is known; the queue file is replaced whole, never half-written.

pub mod api;
pub mod clock;
pub mod exec;
#[cfg(windows)]
pub mod job;
pub mod load;
pub mod pkglock;
pub mod proctree;
pub mod runtime;
pub mod store;
pub mod verify;

pub use api::{ClientApi, CommandApi};
pub use clock::{Clock, ManualClock, SystemClock, Window};
pub use load::{HostLoad, LoadSample, LoadSource};
pub use runtime::{CommandRuntime, Settings};
pub use verify::SigningKey;

use std::path::Path;

/// The file pinning the tenant's command-signing key, beside the enrolment. It outlives a
/// re-enrolment (which deletes `enrolment.json`), so a server that starts offering another key
/// cannot swap it silently.
pub const PIN_FILE: &str = "command_signing_key.pin";

/// The key commands must be signed with: `[security] command_signing_key` when configured,
/// else the key pinned at the first enrolment that offered one (`offered`, from the
/// registration answer, is pinned then). A different key offered later is refused (logged),
/// and the pinned one stays.
pub fn signing_key(
    state_dir: &Path,
    configured: Option<&str>,
    offered: Option<&str>,
) -> Result<Option<SigningKey>, String> {
    if let Some(text) = configured {
        return SigningKey::from_base64(text)
            .map(Some)
            .map_err(|e| format!("[security] command_signing_key: {e}"));
    }
    let path = state_dir.join(PIN_FILE);
    let pinned = match std::fs::read_to_string(&path) {
        Ok(text) => {
            Some(SigningKey::from_base64(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let offered = match offered.map(SigningKey::from_base64) {
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the server offered an invalid command-signing key");
            None
        }
        None => None,
    };
    match (pinned, offered) {
        (Some(pinned), Some(offered)) if pinned != offered => {
            tracing::error!(
                pinned = %pinned.to_base64(),
                offered = %offered.to_base64(),
                pin_file = %path.display(),
                "the server offers a different command-signing key; keeping the pinned one \
                 (delete the pin file to accept the new key)"
            );
            Ok(Some(pinned))
        }
        (Some(pinned), _) => Ok(Some(pinned)),
        (None, Some(offered)) => {
            crate::atomic::write(&path, offered.to_base64().as_bytes(), Some(0o600))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(key = %offered.to_base64(), "command-signing key pinned");
            Ok(Some(offered))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
