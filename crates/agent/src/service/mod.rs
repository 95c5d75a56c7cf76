//! `muster-agent service install|uninstall|start|stop|status`: the agent as a system service.
//!
//! One module per platform with the same public functions (`install`, `uninstall`, `start`,
//! `stop`, `status`), one `cfg` switch picking it:
//!
//! - `unix`: a systemd unit or a System V init script, for machines without the package.
//! - `windows`: a Service Control Manager service (`windows-service`), the agent started as
//!   `muster-agent.exe run --service`; plus the ACL on `%ProgramData%\Muster`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
