//! `thau config show`: the effective configuration (defaults < thau.toml < THAU_* <
//! --set), as TOML (its JSON with `--json`).

use thau::config::ThauConfig;

use super::args::ConfigCommand;

/// `thau config show`.
pub fn show(config: ThauConfig) -> ThauConfig {
    config
}

/// `thau config ...`.
pub fn run(command: ConfigCommand, config: ThauConfig) -> ThauConfig {
    match command {
        ConfigCommand::Show => show(config),
    }
}
