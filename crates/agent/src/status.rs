//! Being written.

/// `muster-agent status`. STUB.
pub fn main(_args: &crate::cli::StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
