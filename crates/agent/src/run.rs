//! Being written.

/// `muster-agent run`. STUB.
pub fn main(_args: crate::cli::RunArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
