use std::io;
use std::path::PathBuf;

/// Why a collector failed. Its message lands in the function report's `error`.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("running {command}: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CollectError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn parse(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.into(),
            message: message.into(),
        }
    }
}
