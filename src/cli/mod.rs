//! The `thau` binary's commands: [`args`] says what each takes (clap), one module per
//! command group runs it through the library and returns its report, [`report`] prints a
//! report (JSON with `--json`, else the human text that [`render`] writes), and
//! [`exit_code`] turns an error into the exit status.
//!
//! - [`model`]: `init`, `model ages`, `train`, `eval`, `generate`, `grow`, `export`.
//! - [`serve`]: `status`, `serve`, `chat` (the commands that run the actors).
//! - [`learn`]: `learn`, `stats`, `feedback`, `tune`.
//! - [`memory`], [`tool`], [`replay`], [`bench`], [`config`]: their commands.

pub mod args;
pub mod bench;
pub mod config;
pub mod learn;
pub mod memory;
pub mod model;
pub mod render;
pub mod replay;
pub mod report;
pub mod serve;
pub mod tool;

use thau::config::ThauConfig;
use thau::ThauError;

/// Exit code of a command that failed at run time.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command given bad arguments or configuration.
pub const EXIT_USAGE: u8 = 2;

/// The exit code of a command that ended with `e`: 2 ("bad usage") when the user can fix
/// the input — flags, configuration, a malformed file, an id that names nothing, a model
/// that is already that age — and 1 when the command could not complete at run time
/// ([`ThauError::Runtime`], I/O, actors) or what it checked did not hold
/// ([`ThauError::Failed`]).
pub fn exit_code(e: &ThauError) -> u8 {
    match e {
        ThauError::Config(_)
        | ThauError::Invalid(_)
        | ThauError::Model(thau::model::ModelError::Config(_)) => EXIT_USAGE,
        ThauError::Memory(m) if m.is_user_error() => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

/// Logs go to stderr so that `--json` output on stdout stays parseable.
pub fn init_logging(config: &ThauConfig) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // qdrant-edge warns on every shard open about process-wide flags that only a Qdrant
    // server initialises (its API offers no way to set them); they change nothing here.
    if !config.log.contains("qdrant_edge") {
        if let Ok(d) = "qdrant_edge=error".parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_failures_exit_1_and_bad_input_exits_2() {
        assert_eq!(exit_code(&ThauError::Runtime("x".into())), EXIT_FAILURE);
        assert_eq!(exit_code(&ThauError::Failed("x".into())), EXIT_FAILURE);
        assert_eq!(exit_code(&ThauError::Invalid("x".into())), EXIT_USAGE);
        let config = thau::error::ConfigError::Invalid {
            file: "thau.toml".into(),
            line: 1,
            column: 1,
            field: "seed".into(),
            message: "not a number".into(),
        };
        assert_eq!(exit_code(&ThauError::Config(config)), EXIT_USAGE);
    }
}
