//! The text of the self-learning commands: `thau learn`, `stats`, `feedback`, `tune`.

use std::fmt::{Result, Write};

use thau::commands::learn::LearnReport;
use thau::learn::tuning::{Change, Knob};

use super::group;
use crate::cli::learn::{FeedbackRecorded, Stats, TuneState};
use crate::cli::report::Render;

impl Render for LearnReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "session {} ({:.1} min, stopped by {}){}",
            r.session,
            r.seconds / 60.0,
            r.stopped_by,
            if r.fresh_model {
                ", started from a fresh model"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "memory: {} passages of the corpus stored, {} already held; {} questions stored with their answers",
            r.passages_stored, r.passages_known, r.questions_stored
        )?;
        if let Some(after) = &r.accuracy_after {
            let pct = |x: f64| format!("{:.0}%", 100.0 * x);
            let was = |f: fn(&thau::commands::learn::AccuracySample) -> f64| {
                r.accuracy_before
                    .as_ref()
                    .map_or("?".to_string(), |b| pct(f(b)))
            };
            writeln!(
                out,
                "answers holding the fact ({} held-out questions): with memory {} → {}, closed-book {} → {} (retrieval alone {})",
                after.questions,
                was(|a| a.with_memory),
                pct(after.with_memory),
                was(|a| a.closed_book),
                pct(after.closed_book),
                pct(after.retrieval_only)
            )?;
        }
        writeln!(
            out,
            "asked {} questions; {} gaps opened, {} closed, {} still open",
            r.questions_asked, r.gaps.opened, r.gaps.closed, r.gaps.open
        )?;
        for doc in &r.documents_left_out {
            writeln!(out, "left out: {doc}")?;
        }
        if r.reviews > 0 {
            writeln!(
                out,
                "reviewed {} items again: {} still known, {} forgotten and trained again (retention {:.0}%)",
                r.reviews,
                r.reviews - r.lapses.min(r.reviews),
                r.lapses,
                100.0 * (1.0 - r.lapses as f64 / r.reviews as f64)
            )?;
        }
        writeln!(
            out,
            "trained {} rounds, step {} → {}, age {} ({} parameters)",
            r.rounds,
            r.step_before,
            r.step_after,
            r.age,
            group(r.params)
        )?;
        writeln!(
            out,
            "probe loss on {} held-out paraphrases: {:.4} → {:.4} ({:+.1}%)",
            r.probe_items,
            r.probe_loss_before,
            r.probe_loss_after,
            100.0 * (r.probe_loss_after - r.probe_loss_before) / r.probe_loss_before
        )?;
        if r.teacher_accepted > 0 || !r.teacher_rejected.is_empty() {
            let why: Vec<String> = r
                .teacher_rejected
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(
                out,
                "teacher: {} items kept; rejected: {}",
                r.teacher_accepted,
                if why.is_empty() {
                    "none".into()
                } else {
                    why.join(", ")
                }
            )?;
        }
        if let Some(c) = &r.checkpoint {
            writeln!(out, "checkpoint {}", c.display())?;
        }
        Ok(())
    }
}

impl Render for Stats {
    fn text(&self, out: &mut String) -> Result {
        let sessions = match self {
            Stats::Plotted { sessions, plot: p } => {
                writeln!(
                    out,
                    "drew {} points of {} sessions into {} ({}×{})",
                    p.points,
                    p.sessions,
                    p.path.display(),
                    p.width,
                    p.height
                )?;
                sessions
            }
            Stats::Sessions(sessions) => sessions,
        };
        if sessions.is_empty() {
            writeln!(out, "no learning session yet (run `thau learn`)")?;
        }
        writeln!(
            out,
            "{:<22} {:>7} {:>5} {:>6} {:>6} {:>6} {:>7} {:>17} {:>15}",
            "SESSION",
            "MINUTES",
            "AGE",
            "ASKED",
            "GAPS",
            "CLOSED",
            "ROUNDS",
            "PROBE LOSS",
            "ANSWERS (MEM)"
        )?;
        for r in sessions {
            let pct = |a: &Option<thau::commands::learn::AccuracySample>| {
                a.as_ref().map_or("-".to_string(), |a| {
                    format!("{:.0}%", 100.0 * a.with_memory)
                })
            };
            writeln!(
                out,
                "{:<22} {:>7.1} {:>5} {:>6} {:>6} {:>6} {:>7} {:>8.3} → {:<6.3} {:>6} → {:<6}",
                r.session,
                r.seconds / 60.0,
                r.age,
                r.questions_asked,
                r.gaps.opened,
                r.gaps.closed,
                r.rounds,
                r.probe_loss_before,
                r.probe_loss_after,
                pct(&r.accuracy_before),
                pct(&r.accuracy_after)
            )?;
        }
        Ok(())
    }
}

/// One line for a tuning change (`thau tune revert` prints just this).
impl Render for Change {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "#{} {} {} {} → {} ({:?}): {}",
            self.id,
            self.at.format("%Y-%m-%d %H:%M:%S"),
            self.knob.name(),
            self.from,
            self.to,
            self.cause,
            self.reason
        )
    }
}

impl Render for FeedbackRecorded {
    fn text(&self, out: &mut String) -> Result {
        writeln!(out, "recorded thumbs {:?} on {}", self.rating, self.turn)?;
        if let Some(c) = &self.outcome.change {
            c.text(out)?;
        }
        Ok(())
    }
}

impl Render for TuneState {
    fn text(&self, out: &mut String) -> Result {
        let t = &self.state;
        writeln!(
            out,
            "{:<16} {:>12} {:>12}  BOUNDS",
            "KNOB", "CONFIGURED", "NOW"
        )?;
        for k in Knob::ALL {
            let (Some(base), Some(now)) = (t.base.get(&k), t.value(k)) else {
                continue;
            };
            let b = t.config.bounds(k);
            let frozen = if t.frozen.contains(&k) {
                " (frozen)"
            } else {
                ""
            };
            writeln!(
                out,
                "{:<16} {:>12} {:>12}  {} .. {}{frozen}",
                k.name(),
                base,
                now,
                b.min,
                b.max
            )?;
        }
        if t.log.is_empty() {
            writeln!(out, "no change yet")?;
        }
        for c in &t.log {
            c.text(out)?;
        }
        Ok(())
    }
}
