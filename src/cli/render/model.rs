//! The text of the model commands' reports: `init`, `model ages`, `train`, `eval`,
//! `generate`, `grow`, `export gguf|modelfile`.

use std::fmt::{Result, Write};

use thau::commands::grow::GrowReport;
use thau::commands::train::{CurvePoint, EvalSummary, TrainReport};
use thau::home::InitReport;

use super::{group, verdict};
use crate::cli::model::{Ages, Exported, Generated, Modelfile};
use crate::cli::report::{JsonForm, Render};
use thau::eval::answers::{AnswersReport, Mode, ModeScore};

impl Render for InitReport {
    fn text(&self, out: &mut String) -> Result {
        let root = self.home.display();
        if self.created.is_empty() {
            writeln!(out, "{root} is already initialised; nothing changed")
        } else {
            writeln!(out, "initialised {root}")?;
            for p in &self.created {
                writeln!(out, "  created {}", p.display())?;
            }
            Ok(())
        }
    }
}

impl Render for Ages {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "vocabulary {} tokens, head_dim 64 at every age",
            self.vocab_size
        )?;
        writeln!(
            out,
            "{:>4} {:>8} {:>7} {:>6} {:>7} {:>15}",
            "age", "d_model", "layers", "heads", "d_ff", "parameters"
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "{:>4} {:>8} {:>7} {:>6} {:>7} {:>15}",
                r.age,
                r.d_model,
                r.n_layers,
                r.n_heads,
                r.d_ff,
                group(r.params)
            )?;
        }
        Ok(())
    }
}

impl Render for TrainReport {
    fn text(&self, out: &mut String) -> Result {
        let loss = |c: Option<&CurvePoint>| {
            c.and_then(|c| c.heldout_loss)
                .map_or("n/a".to_string(), |l| format!("{l:.4}"))
        };
        writeln!(
            out,
            "{} steps, {} tokens in {:.0}s ({:.0} tokens/s); held-out loss {} -> {} (unigram baseline {}){}",
            self.steps,
            self.tokens,
            self.seconds,
            self.tokens_per_s,
            loss(self.curve.first()),
            loss(self.curve.last()),
            self.unigram_loss.map_or("n/a".to_string(), |l| format!("{l:.4}")),
            if self.interrupted { " — interrupted" } else { "" }
        )?;
        writeln!(out, "checkpoint {}", self.checkpoint.display())
    }
}

impl Render for EvalSummary {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "checkpoint {} (age {})",
            self.checkpoint.display(),
            self.age
        )?;
        let r = &self.report;
        writeln!(
            out,
            "held-out loss {:.4}  perplexity {:.2}  over {} tokens  (unigram baseline {:.4})",
            r.loss, r.perplexity, r.tokens, r.unigram_loss
        )
    }
}

/// The answer itself was streamed as it was decoded: the text ends its line and names
/// the memories the prompt held.
impl Render for Generated {
    fn text(&self, out: &mut String) -> Result {
        writeln!(out)?;
        if !self.memories.is_empty() {
            writeln!(
                out,
                "  sources: {}",
                thau::commands::chat::sources_line(&self.memories)
            )?;
        }
        Ok(())
    }
}

impl Render for GrowReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "grew age {} ({} parameters) to age {} ({} parameters), new layers {:?}",
            self.from_age,
            group(self.params_before),
            self.to_age,
            group(self.params_after),
            self.placement
        )?;
        match self.max_logit_diff {
            Some(d) => writeln!(
                out,
                "same function: max |logit difference| on a fixed batch {d:.2e}"
            )?,
            None => writeln!(out, "(too large to check the logits here)")?,
        }
        writeln!(
            out,
            "checkpoint {}
continue with: thau train --age {}",
            self.checkpoint.display(),
            self.to_age
        )
    }
}

impl Render for thau::hf::HfExportReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "wrote {} (Hugging Face LlamaForCausalLM, age {}, {} parameters, {} tensors) from {}",
            self.output.display(),
            self.age,
            group(self.parameters),
            self.tensors,
            self.checkpoint.display()
        )?;
        if self.copy_head_dropped {
            writeln!(
                out,
                "the copy head is left out (Llama has none): the export answers as the language model alone"
            )?;
        }
        Ok(())
    }
}

impl Render for thau::hf::HfImportReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "imported {} as age {} ({} parameters): {}",
            self.source.display(),
            self.age,
            group(self.parameters),
            self.checkpoint.display()
        )
    }
}

impl Render for Exported {
    fn text(&self, out: &mut String) -> Result {
        let r = &self.export;
        writeln!(
            out,
            "wrote {} ({} bytes, {} tensors, {:?}) from {}",
            r.path.display(),
            group(r.bytes),
            r.tensors,
            r.weight_type,
            self.from.display()
        )?;
        if !r.fallbacks.is_empty() {
            writeln!(
                out,
                "{} tensors written as q4_0 (a dimension is not a multiple of 256): {}",
                r.fallbacks.len(),
                r.fallbacks.join(", ")
            )?;
        }
        if let Some(v) = &self.verify {
            writeln!(
                out,
                "verified with quantized_llama: {} positions, greedy agreement {:.1}%, max |logit difference| {:.2e}",
                v.positions,
                100.0 * v.greedy_agreement,
                v.max_abs_logit_diff
            )?;
        }
        Ok(())
    }
}

/// On standard output the Modelfile is the output, with or without `--json`; written to
/// a file, it is named (and `--json` prints nothing).
impl Render for Modelfile {
    fn text(&self, out: &mut String) -> Result {
        match &self.written {
            Some(p) => writeln!(out, "wrote {}", p.display()),
            None => out.write_str(&self.text),
        }
    }

    fn json_form(&self) -> JsonForm {
        match self.written {
            Some(_) => JsonForm::Nothing,
            None => JsonForm::Text,
        }
    }
}

/// Goals of answer accuracy (the issue "THAU knows what it learned"): what a session on
/// the shipped corpus must reach.
const GOAL_WITH_MEMORY: f64 = 0.70;
const GOAL_CLOSED_BOOK: f64 = 0.30;

impl Render for AnswersReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{} questions from {} ({}), {:.0} s",
            self.questions,
            self.qa.display(),
            self.target,
            self.seconds
        )?;
        let langs: Vec<&String> = self
            .modes
            .first()
            .map(|m| m.by_lang.keys().collect())
            .unwrap_or_default();
        write!(out, "{:<16} {:>14}", "", "overall")?;
        for l in &langs {
            write!(out, " {:>14}", l)?;
        }
        writeln!(out, " {:>8}", "F1")?;
        let row = |out: &mut String, label: &str, s: &ModeScore| -> Result {
            let cell = |t: &thau::eval::answers::Tally| {
                format!("{}/{} {:>5.1}%", t.correct, t.n, 100.0 * t.accuracy)
            };
            write!(out, "{label:<16} {:>14}", cell(&s.overall))?;
            for l in &langs {
                let c = s.by_lang.get(*l).map(cell).unwrap_or_default();
                write!(out, " {c:>14}")?;
            }
            match s.overall.f1 {
                Some(f) => writeln!(out, " {f:>8.3}"),
                None => writeln!(out),
            }
        };
        for m in &self.modes {
            row(out, m.mode.label(), m)?;
        }
        if let Some(r) = &self.recall_at_3 {
            row(out, "recall@3", r)?;
        }
        let acc = |m: Mode| self.mode(m).map(|s| s.overall.accuracy);
        if let Some(a) = acc(Mode::Memory) {
            writeln!(
                out,
                "goal with memory ≥ {:.0}%: {}",
                100.0 * GOAL_WITH_MEMORY,
                verdict(a >= GOAL_WITH_MEMORY)
            )?;
            if let Some(b) = acc(Mode::RetrievalOnly) {
                writeln!(
                    out,
                    "goal with memory ≥ retrieval only ({:.1}% vs {:.1}%): {}",
                    100.0 * a,
                    100.0 * b,
                    verdict(a >= b)
                )?;
            }
        }
        if let Some(c) = acc(Mode::ClosedBook) {
            writeln!(
                out,
                "goal closed-book ≥ {:.0}%: {}",
                100.0 * GOAL_CLOSED_BOOK,
                verdict(c >= GOAL_CLOSED_BOOK)
            )?;
        }
        Ok(())
    }
}
