//! The text of `thau memory stats|list|search|show|forget|export|import|add`.

use std::fmt::{Result, Write};

use thau::commands::memory::{Added, Forgotten, ListedItem, MemoryStats, Shown};
use thau::memory::recall::RecallHit;

use super::clip;
use crate::cli::memory::{MemoryExported, MemoryImported};
use crate::cli::report::{JsonForm, Render};

impl Render for MemoryStats {
    fn text(&self, out: &mut String) -> Result {
        if let Some(sh) = &self.short {
            writeln!(
                out,
                "short     {} conversations, {} turns, {} tokens (budget {} per window, {})",
                sh.conversations, sh.turns, sh.tokens, sh.budget_tokens, sh.counted_by
            )?;
        }
        if let Some(e) = &self.episodic {
            let kinds: Vec<String> = e.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                out,
                "episodic  {} episodes in {} sessions, {} KiB, schema v{} ({})",
                e.episodes,
                e.sessions,
                e.bytes / 1024,
                e.schema_version,
                e.path.display()
            )?;
            if !kinds.is_empty() {
                writeln!(out, "          {}", kinds.join(", "))?;
            }
        }
        if let Some(l) = &self.long {
            writeln!(
                out,
                "long      {} points of {} values, {} indexed; {} at {}; embedder {}",
                l.points,
                l.vector_size,
                l.indexed.map_or("n/a".to_string(), |n| n.to_string()),
                l.backend,
                l.location,
                self.embedder.as_deref().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}

impl Render for Vec<ListedItem> {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{:<8} {:<36} {:<28} {:<5} {:<19} TEXT",
            "STORE", "ID", "SOURCE", "IMP", "AT"
        )?;
        for i in self {
            writeln!(
                out,
                "{:<8} {:<36} {:<28} {:<5} {:<19} {}",
                i.store.name(),
                clip(&i.id, 36),
                clip(&i.source, 28),
                i.importance.map_or("-".into(), |x| format!("{x:.2}")),
                i.at.format("%Y-%m-%d %H:%M:%S"),
                clip(&i.text, 60)
            )?;
        }
        Ok(())
    }
}

impl Render for Vec<RecallHit> {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{:<6} {:<8} {:<36} {:<28} TEXT",
            "SCORE", "STORE", "ID", "SOURCE"
        )?;
        for h in self {
            writeln!(
                out,
                "{:<6.3} {:<8} {:<36} {:<28} {}",
                h.score,
                h.store.name(),
                clip(&h.id, 36),
                clip(&h.source, 28),
                clip(&h.text, 60)
            )?;
        }
        Ok(())
    }
}

/// Both forms are JSON: an entry's full content is structured.
impl Render for Shown {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(self).unwrap_or_default()
        )
    }
}

impl Render for Forgotten {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "forgot {} ({} store, {} entries)",
            self.id,
            self.store.name(),
            self.removed
        )
    }
}

/// With the JSONL on standard output, the summary goes to standard error (with or without
/// `--json`) so that the JSONL stays clean.
impl Render for MemoryExported {
    fn text(&self, out: &mut String) -> Result {
        let c = &self.counts;
        writeln!(
            out,
            "exported {} short-term turns, {} episodes, {} long-term points",
            c.short, c.episodic, c.long
        )
    }

    fn json_form(&self) -> JsonForm {
        if self.to_stdout {
            JsonForm::Text
        } else {
            JsonForm::Json
        }
    }

    fn on_stderr(&self) -> bool {
        self.to_stdout
    }
}

impl Render for MemoryImported {
    fn text(&self, out: &mut String) -> Result {
        let c = &self.0;
        writeln!(
            out,
            "imported {} short-term turns, {} episodes, {} long-term points",
            c.short, c.episodic, c.long
        )
    }
}

impl Render for Added {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{} passages from {} documents: {} stored, {} already in memory",
            self.passages, self.files, self.new, self.known
        )?;
        for r in &self.refused {
            writeln!(out, "refused {}", r.reason)?;
        }
        Ok(())
    }
}
