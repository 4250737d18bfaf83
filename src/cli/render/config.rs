//! The text of `thau config show`: the configuration as TOML.

use std::fmt::{Result, Write};

use thau::config::ThauConfig;

use crate::cli::report::Render;

impl Render for ThauConfig {
    fn text(&self, out: &mut String) -> Result {
        out.write_str(&self.to_toml())
    }
}
