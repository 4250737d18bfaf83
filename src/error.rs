//! Typed errors shared by the runtime: [`ThauError`] for everything a command can report,
//! [`ConfigError`] for malformed files (always naming the file, line and field).

use std::path::PathBuf;

/// A malformed configuration, agent, tool or schema file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its content is invalid.
    #[error("{file}:{line}:{column}: field `{field}`: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
}

/// Every error a `thau` command can end with.
#[derive(Debug, thiserror::Error)]
pub enum ThauError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("actor `{actor}`: {message}")]
    Actor { actor: String, message: String },
    /// Bad user input: flags, a missing file the user must create first, a malformed file
    /// (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The command could not complete at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// The command ran, and what it checked did not hold (failed scenarios).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}

impl ThauError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ThauError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ThauError> = std::result::Result<T, E>;
