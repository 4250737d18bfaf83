//! What a command hands back and how it is printed: every command returns a report that
//! is [`Render`] (its JSON from `Serialize`, its human text from the [`super::render`]
//! files), and [`print`] is the one place that writes it — pretty JSON with `--json`,
//! else the text. [`Report`] is the same thing behind a `Box`, for the dispatcher.

use serde::Serialize;
use thau::{Result, ThauError};

/// What `--json` prints for a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonForm {
    /// The report as pretty JSON (most reports).
    Json,
    /// The human text: the report is data already (a Modelfile on standard output) or a
    /// note on standard error.
    Text,
    /// Nothing (what there was to say was streamed while the command ran).
    Nothing,
}

/// A command's report.
pub trait Render: Serialize {
    /// Writes the human text (what is printed without `--json`), lines ending in `\n`.
    fn text(&self, out: &mut String) -> std::fmt::Result;

    /// What `--json` prints.
    fn json_form(&self) -> JsonForm {
        JsonForm::Json
    }

    /// Whether the human text goes to standard error (standard output carries data).
    fn on_stderr(&self) -> bool {
        false
    }

    /// The error the command ends with once its report is printed (failed scenarios).
    fn failure(&self) -> Option<ThauError> {
        None
    }
}

/// Prints `r`: JSON (on standard output) with `json` unless the report says otherwise,
/// else its human text.
pub fn print<R: Render + ?Sized>(r: &R, json: bool) {
    let form = if json { r.json_form() } else { JsonForm::Text };
    match form {
        JsonForm::Json => match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode JSON: {e}"),
        },
        JsonForm::Text => {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = r.text(&mut text);
            if r.on_stderr() {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
        }
        JsonForm::Nothing => {}
    }
}

/// Any command's report, as the dispatcher holds it.
pub trait Report {
    /// Prints the report ([`print`]).
    fn print(&self, json: bool);
    /// `Err` when the report says the command failed (after it is printed).
    fn outcome(&self) -> Result<()>;
}

impl<R: Render> Report for R {
    fn print(&self, json: bool) {
        print(self, json)
    }

    fn outcome(&self) -> Result<()> {
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
