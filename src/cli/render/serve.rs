//! The text of `thau status`, `thau serve` (its address, and its shutdown notes on
//! standard error) and `thau chat` (its closing note on standard error).

use std::fmt::{Result, Write};

use thau::status::StatusReport;

use crate::cli::report::{JsonForm, Render};
use crate::cli::serve::{ChatEnded, Listening, Stopped};

impl Render for StatusReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "home: {}{}",
            self.home,
            if self.initialised {
                ""
            } else {
                " (not initialised: run `thau init`)"
            }
        )?;
        writeln!(
            out,
            "\n{:<18} {:<8} {:>8} {:>8}  note",
            "actor", "state", "restarts", "handled"
        )?;
        for a in &self.actors {
            let state = match (a.enabled, a.running) {
                (false, _) => "disabled",
                (true, true) => "running",
                (true, false) => "down",
            };
            writeln!(
                out,
                "{:<18} {:<8} {:>8} {:>8}  {}",
                a.name, state, a.restarts, a.handled, a.note
            )?;
        }
        let m = &self.model;
        writeln!(
            out,
            "\nmodel: age {}, {}, checkpoint {}",
            m.age,
            m.params
                .map_or("no parameters yet".to_string(), |p| format!(
                    "{p} parameters"
                )),
            m.checkpoint.as_deref().unwrap_or("none")
        )?;
        let s = &self.stores;
        writeln!(
            out,
            "stores: {} checkpoint ages, {} images, {} saved actor states",
            s.checkpoints, s.images, s.actor_states
        )
    }
}

impl Render for Listening {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "THAU serving on {} (API key {}); Ctrl-C stops",
            self.listening,
            if self.keyed {
                "required on POST routes"
            } else {
                "not set"
            }
        )
    }
}

/// Notes on standard error, with or without `--json`.
impl Render for Stopped {
    fn text(&self, out: &mut String) -> Result {
        for e in &self.shutdown_errors {
            writeln!(out, "shutdown: {e}")?;
        }
        if self.runtime_held {
            writeln!(
                out,
                "shutdown: requests still hold the runtime; actors stop with the process"
            )?;
        }
        Ok(())
    }

    fn json_form(&self) -> JsonForm {
        JsonForm::Text
    }

    fn on_stderr(&self) -> bool {
        true
    }
}

/// A note on standard error when a person chatted, with or without `--json`.
impl Render for ChatEnded {
    fn text(&self, out: &mut String) -> Result {
        if self.interactive {
            writeln!(out, "conversation {} ended", self.session)?;
        }
        Ok(())
    }

    fn json_form(&self) -> JsonForm {
        JsonForm::Text
    }

    fn on_stderr(&self) -> bool {
        true
    }
}
