//! The text of `thau bench KIND`: each benchmark's figures, and every goal marked with
//! [`verdict`].

use std::fmt::{Result, Write};

use thau::bench::{BenchReport, GrowBenchReport, SpeedReport};
use thau::learn::bench::LearnBenchReport;
use thau::memory::bench::VectorBenchReport;
use thau::memory::recall_bench::RecallBenchReport;
use thau::server::bench::{LoadBenchReport, ServeBenchReport};
use thau::ThauError;

use super::{clip, group, verdict};
use crate::cli::bench::{EmbedBench, ToolsBench};
use crate::cli::report::Render;

/// `thau bench tools`: the share of image requests that must get a schema-valid call.
const GOAL_CALL_RATE: f64 = 0.95;
/// `thau bench tools`: the share of image requests whose call must hold their subject.
const GOAL_FAITHFUL_RATE: f64 = 0.9;
/// `thau bench tools`: the least share of unconstrained decoding speed the grammar keeps.
const GOAL_GRAMMAR_SPEED: f64 = 0.9;
/// `thau bench tools`: the most ordinary prompts that may wrongly get a call.
const GOAL_FALSE_CALL_RATE: f64 = 0.05;

impl Render for BenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "thau {} (age {}, {} parameters, {}, {} threads): {:.1} tokens/s",
            r.bench,
            r.config.age,
            r.config.params,
            r.config.device,
            r.config.threads,
            r.tokens_per_s
        )?;
        if let Some([f, b, o]) = r.split_s {
            writeln!(
                out,
                "  per step: forward {f:.3}s  backward {b:.3}s  optimizer {o:.3}s"
            )?;
        }
        match (r.reference_tokens_per_s, r.ratio) {
            (Some(t), Some(x)) => {
                writeln!(out, "{}: {:.1} tokens/s", r.reference, t)?;
                if let Some([f, b, o]) = r.reference_split_s {
                    writeln!(
                        out,
                        "  per step: forward {f:.3}s  backward {b:.3}s  optimizer {o:.3}s"
                    )?;
                }
                writeln!(out, "ratio thau / reference: {x:.2}x")?;
            }
            _ => writeln!(out, "reference {}", r.reference)?,
        }
        if let Some(l) = &r.llamacpp {
            match (l.tokens_per_s, l.ratio) {
                (Some(t), Some(x)) => writeln!(
                    out,
                    "{} on the same model (f32 GGUF): {t:.1} tokens/s; ratio thau / llama.cpp: {x:.2}x",
                    l.note
                )?,
                _ => writeln!(out, "llama.cpp {}", l.note)?,
            }
        }
        Ok(())
    }
}

impl Render for SpeedReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(out, "cpu: {}", r.train.config.cpu)?;
        r.train.text(out)?;
        r.decode.text(out)?;
        let against_goal = |x: Option<f64>| match x {
            Some(x) => format!(
                "{x:.2}× (goal ≥ {:.1}: {})",
                r.goal_ratio,
                verdict(x >= r.goal_ratio)
            ),
            None => "not measured".into(),
        };
        writeln!(
            out,
            "training, thau / pytorch: {}",
            against_goal(r.train.ratio)
        )?;
        writeln!(
            out,
            "batch-1 decode, thau / llama.cpp: {}",
            against_goal(r.decode.llamacpp.as_ref().and_then(|l| l.ratio))
        )
    }
}

impl Render for GrowBenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "age 0 ({} parameters) for {} steps, grown to age 1 ({} parameters) for {} more, vs age 1 from scratch for {} steps",
            group(r.params_age0), r.steps_before, group(r.params_age1), r.steps_after, r.scratch_steps
        )?;
        writeln!(
            out,
            "target: the scratch run's final held-out loss {:.4}",
            r.target_loss
        )?;
        for p in &r.paths {
            match (p.flops_to_target, p.ratio) {
                (Some(f), Some(x)) => writeln!(
                    out,
                    "  {:<8} reaches it at {:.3e} FLOPs: {:.2}x the scratch FLOPs",
                    p.name, f, x
                )?,
                _ => writeln!(
                    out,
                    "  {:<8} does not reach it within its budget (best {:.4})",
                    p.name, p.best_loss
                )?,
            }
        }
        Ok(())
    }
}

impl Render for VectorBenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "embedded vector store (qdrant-edge): {} points × {} ({:?}), {} queries, top 10",
            r.points, r.dim, r.data, r.queries
        )?;
        writeln!(
            out,
            "insert        {:>10.0} points/s (batches of 1000, each flushed)",
            r.insert_points_per_s
        )?;
        writeln!(
            out,
            "index build   {:>10.2} s ({} points indexed)",
            r.index_build_s,
            r.indexed_points.map_or("?".into(), |n| n.to_string())
        )?;
        writeln!(
            out,
            "search        p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms (HNSW, ef {})",
            r.search_p50_ms, r.search_p99_ms, r.search_mean_ms, r.hnsw_ef
        )?;
        writeln!(
            out,
            "exact search  p50 {:.3} ms (brute force in the store)",
            r.exact_p50_ms
        )?;
        writeln!(
            out,
            "recall@10     {:.4} against exact brute force",
            r.recall_at_10
        )?;
        writeln!(
            out,
            "goals         p99 < {} ms: {} ({:.2}× the limit); recall@10 ≥ {}: {}",
            r.goal_p99_ms,
            verdict(r.search_p99_ms < r.goal_p99_ms),
            r.search_p99_ms / r.goal_p99_ms,
            r.goal_recall_at_10,
            verdict(r.recall_at_10 >= r.goal_recall_at_10)
        )
    }
}

impl Render for ToolsBench {
    fn text(&self, out: &mut String) -> Result {
        let (r, u) = (&self.report, &self.unconstrained);
        for s in &r.samples {
            writeln!(
                out,
                "{:<13} {:<45} {}",
                s.verdict,
                s.prompt,
                s.output.replace('\n', " ")
            )?;
        }
        writeln!(
            out,
            "checkpoint {} (grammar with span bias {})",
            self.checkpoint.display(),
            r.span_bias
        )?;
        writeln!(
            out,
            "image requests with a schema-valid call: {}/{} = {:.0}% (goal ≥ 95%: {}; unconstrained {}/{})",
            r.valid_calls,
            r.image_requests,
            100.0 * r.call_rate,
            verdict(r.call_rate >= GOAL_CALL_RATE),
            u.valid_calls,
            u.image_requests
        )?;
        let faithful = |x: &thau::tools::dataset::ToolEvalReport| {
            x.faithful_calls as f64 / x.image_requests.max(1) as f64
        };
        writeln!(
            out,
            "  faithful (the prompt holds the request's subject): {}/{} = {:.0}% (goal ≥ 90%: {}; unconstrained {}/{})",
            r.faithful_calls,
            r.image_requests,
            100.0 * faithful(r),
            verdict(faithful(r) >= GOAL_FAITHFUL_RATE),
            u.faithful_calls,
            u.image_requests
        )?;
        writeln!(
            out,
            "ordinary prompts that got a call: {}/{} = {:.0}% (goal ≤ 5%: {}; unconstrained {}/{})",
            r.wrong_calls,
            r.ordinary,
            100.0 * r.false_call_rate,
            verdict(r.false_call_rate <= GOAL_FALSE_CALL_RATE),
            u.wrong_calls,
            u.ordinary
        )?;
        let ratio = r.request_tokens_per_s / u.request_tokens_per_s.max(1e-9);
        writeln!(
            out,
            "decoding the answers to image requests: {:.1} tokens/s with the grammar, {:.1} without = {:.2}× (goal ≥ 0.90×: {})",
            r.request_tokens_per_s,
            u.request_tokens_per_s,
            ratio,
            verdict(ratio >= GOAL_GRAMMAR_SPEED)
        )
    }
}

impl Render for LearnBenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "{} items, model {} parameters, {} steps × {} rows per arm, held-out paraphrase loss:",
            r.items,
            group(r.params),
            r.plan.steps,
            r.plan.batch_size
        )?;
        if let Some(w) = r.warm_loss {
            writeln!(
                out,
                "both arms start from a model trained {} steps on {} of the {} items (held-out loss {w:.4})",
                r.plan.warm_steps, r.known_items, r.items
            )?;
        }
        writeln!(out, "{:>6} {:>10} {:>12}", "STEP", "UNIFORM", "GAP-STEERED")?;
        for ((s, u), (_, g)) in r.uniform.curve.iter().zip(&r.gap_steered.curve) {
            writeln!(out, "{s:>6} {u:>10.4} {g:>12.4}")?;
        }
        match (r.steps_to_uniform_final, r.step_ratio) {
            (Some(s), Some(ratio)) => writeln!(
                out,
                "gap-steered reached uniform's final loss {:.4} at step {s}: {ratio:.2}× the steps (goal ≤ {}: {})",
                r.uniform.final_loss(),
                r.goal_step_ratio,
                verdict(ratio <= r.goal_step_ratio)
            )?,
            _ => writeln!(
                out,
                "gap-steered did not reach uniform's final loss {:.4} (goal ≤ {}×: {})",
                r.uniform.final_loss(),
                r.goal_step_ratio,
                verdict(false)
            )?,
        }
        writeln!(
            out,
            "wall time: uniform {:.1} s, gap-steered {:.1} s ({:.2}×, scoring the candidates)",
            r.uniform.seconds, r.gap_steered.seconds, r.time_ratio
        )
    }
}

impl Render for EmbedBench {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "{} documents, {} paraphrase queries from {}",
            self.documents,
            self.queries,
            self.qa.display()
        )?;
        writeln!(
            out,
            "{:<40} {:>5} {:>9} {:>9} {:>9} {:>6} {:>10}",
            "EMBEDDER", "DIM", "RECALL@1", "RECALL@3", "RECALL@5", "MRR", "MS/TEXT"
        )?;
        for s in &self.scores {
            writeln!(
                out,
                "{:<40} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>6.3} {:>10.3}",
                clip(&s.embedder, 40),
                s.dim,
                s.recall_at_1,
                s.recall_at_3,
                s.recall_at_5,
                s.mrr,
                s.embed_ms_per_text
            )?;
        }
        Ok(())
    }
}

impl Render for ServeBenchReport {
    fn text(&self, out: &mut String) -> Result {
        writeln!(
            out,
            "serve bench on {}: {} tokens per chat, greedy",
            self.model, self.tokens
        )?;
        writeln!(out, "sessions  tokens  seconds  aggregate tok/s  ratio  per-session tok/s  TTFT p50 ms  p99 ms  batch  steps s  prompt tok")?;
        for r in &self.rounds {
            writeln!(
                out,
                "{:>8}  {:>6}  {:>7.2}  {:>15.1}  {:>5.2}  {:>17.1}  {:>11.0}  {:>6.0}  {:>5.1}  {:>7.2}  {:>10.0}",
                r.sessions,
                r.tokens,
                r.seconds,
                r.aggregate_tokens_per_s,
                r.ratio_to_first,
                r.per_session_tokens_per_s,
                r.ttft_p50_ms,
                r.ttft_p99_ms,
                r.mean_batch,
                r.step_seconds,
                r.mean_prompt_tokens
            )?;
        }
        Ok(())
    }
}

/// The figures are printed, then the command exits 1 if any session saw an error.
impl Render for LoadBenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = &self.load;
        writeln!(
            out,
            "load bench on {}: {} WebSocket sessions for {:.0} s, {} tokens per answer",
            self.model, r.sessions, self.seconds, self.tokens
        )?;
        writeln!(
            out,
            "sessions held {}/{} · errors {} · {} turns ({:.1}/s) · turn latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            r.held,
            r.sessions,
            r.errors,
            r.turns,
            r.turns_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms
        )?;
        for e in &r.error_samples {
            writeln!(out, "error: {e}")?;
        }
        Ok(())
    }

    fn failure(&self) -> Option<ThauError> {
        (self.load.errors > 0)
            .then(|| ThauError::Failed(format!("{} sessions saw errors", self.load.errors)))
    }
}

impl Render for RecallBenchReport {
    fn text(&self, out: &mut String) -> Result {
        let r = self;
        writeln!(
            out,
            "hybrid recall over {} memories (embedded store, hash embedder), {} held-out questions, top 3",
            r.points, r.queries
        )?;
        writeln!(
            out,
            "insert        {:>10.0} memories/s; index build {:.2} s",
            r.insert_points_per_s, r.index_build_s
        )?;
        writeln!(
            out,
            "vector only   p50 {:.3} ms (embedding + search)",
            r.vector_p50_ms
        )?;
        writeln!(
            out,
            "hybrid        p50 {:.3} ms, p99 {:.3} ms (+ BM25 and fusion: ×{:.2} of vector only)",
            r.hybrid_p50_ms,
            r.hybrid_p99_ms,
            r.hybrid_p50_ms / r.vector_p50_ms.max(1e-9)
        )?;
        writeln!(
            out,
            "goal: recall adds ≤ {:.0} ms to a chat turn's p50: {}",
            r.goal_p50_ms,
            verdict(r.meets_goal)
        )
    }
}
