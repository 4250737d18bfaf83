//! The text of `thau replay`: the table of scenarios and steps.

use std::fmt::{Result, Write};

use thau::ThauError;

use crate::cli::replay::Replayed;
use crate::cli::report::Render;

impl Render for Replayed {
    fn text(&self, out: &mut String) -> Result {
        out.write_str(&thau::replay::report::table(&self.0))
    }

    fn failure(&self) -> Option<ThauError> {
        Replayed::failure(self)
    }
}
