//! The text of `thau tool list|run`.

use std::fmt::{Result, Write};

use thau::tools::image::GeneratedImage;
use thau::tools::ToolManifest;

use crate::cli::report::Render;

impl Render for Vec<ToolManifest> {
    fn text(&self, out: &mut String) -> Result {
        for m in self {
            writeln!(out, "{} (run by {}): {}", m.name, m.actor, m.description)?;
        }
        Ok(())
    }
}

impl Render for GeneratedImage {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{} ({}×{}, backend {}{}, {:.2} s)",
            self.path.display(),
            self.width,
            self.height,
            self.backend,
            if self.fallback {
                ": the offline fallback, no image model"
            } else {
                ""
            },
            self.seconds
        )
    }
}
