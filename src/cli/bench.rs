//! `thau bench KIND`: one function per benchmark, each returning its report. The long
//! benchmarks (memory, learn, grow, serve, load) print progress lines on standard error
//! while they run.

use std::path::PathBuf;

use serde::Serialize;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::{Result, ThauError};

use super::args::{BenchArgs, BenchKind};
use super::report::Report;

/// Progress lines of the long benchmarks go to standard error.
fn progress(line: &str) {
    eprintln!("{line}");
}

/// A scratch directory under `<home>/runs` (removed when dropped).
fn tempfile_dir(home: &Home) -> Result<tempfile::TempDir> {
    let runs = home.runs();
    std::fs::create_dir_all(&runs).map_err(|e| ThauError::io(&runs, e))?;
    tempfile::Builder::new()
        .prefix("bench-memory-")
        .tempdir_in(&runs)
        .map_err(|e| ThauError::io(&runs, e))
}

/// `thau bench memory`: the embedded vector store in a scratch directory.
pub fn memory(home: &Home, a: &BenchArgs) -> Result<thau::memory::bench::VectorBenchReport> {
    let dir = tempfile_dir(home)?;
    Ok(thau::memory::bench::vector_bench(
        dir.path(),
        a.points,
        a.dim,
        a.queries,
        a.data,
        &a.corpus,
        &mut |line: String| progress(&line),
    )?)
}

/// `thau bench recall`: hybrid recall over `--points` memories, timed on the held-out
/// questions.
pub fn recall(home: &Home, a: &BenchArgs) -> Result<thau::memory::recall_bench::RecallBenchReport> {
    const QUESTIONS: &str = "data/eval/qa_heldout.jsonl";
    let text = std::fs::read_to_string(QUESTIONS).map_err(|e| ThauError::io(QUESTIONS, e))?;
    let questions: Vec<String> = thau::eval::score::parse_qa(&text)
        .map_err(|e| ThauError::Invalid(format!("{QUESTIONS}: {e}")))?
        .into_iter()
        .map(|i| i.question)
        .collect();
    let dir = tempfile_dir(home)?;
    Ok(thau::memory::recall_bench::recall_bench(
        dir.path(),
        a.points,
        &questions,
        &a.corpus,
        &mut |line: String| progress(&line),
    )?)
}

/// What `thau bench tools` measured, and on which checkpoint: the held-out prompts
/// answered with calls decoded under the tools' grammar (what users get), and again
/// without it (what the model writes unaided, and the grammar's cost in speed).
#[derive(Debug, Serialize)]
pub struct ToolsBench {
    pub checkpoint: PathBuf,
    pub report: thau::tools::dataset::ToolEvalReport,
    pub unconstrained: thau::tools::dataset::ToolEvalReport,
}

/// `thau bench tools`: tool calling of the newest checkpoint on the held-out prompts.
pub fn tools(home: &Home, a: &BenchArgs) -> Result<ToolsBench> {
    let dir = thau::model::checkpoint::newest(&home.checkpoints())?.ok_or_else(|| {
        ThauError::Invalid(
            "no checkpoint yet: run `thau train --dataset tool_calling` first".into(),
        )
    })?;
    let ck = thau::model::checkpoint::load(&dir, &candle_core::Device::Cpu, false)?;
    let set = thau::tools::dataset::ToolEvalSet::load(&a.tool_eval)?;
    // The manifests are compiled in: a bad one is this build's fault.
    let reg = thau::tools::ToolRegistry::builtin().map_err(ThauError::Runtime)?;
    let model = thau::model::transformer::from_tensors(
        ck.weights.clone(),
        &ck.config,
        &candle_core::Device::Cpu,
    )?;
    let eval = |constrained, bias| {
        thau::tools::dataset::eval_tool_calls(&model, &ck.tokenizer, &reg, &set, constrained, bias)
    };
    // Unconstrained first, so that neither run warms the caches for the other's benefit.
    let unconstrained = eval(false, 0.0)?;
    let report = eval(true, a.span_bias)?;
    Ok(ToolsBench {
        checkpoint: dir,
        report,
        unconstrained,
    })
}

/// `thau bench learn`: gap-steered training against uniform sampling.
pub fn learn(config: &ThauConfig, a: &BenchArgs) -> Result<thau::learn::bench::LearnBenchReport> {
    let plan = thau::learn::bench::LearnBenchPlan {
        steps: a.learn_steps,
        eval_every: a.learn_eval_every,
        replay_ratio: a.learn_replay.clamp(0.0, 1.0),
        pool_factor: a.learn_pool.max(1),
        score: a.learn_score,
        cooldown: a.learn_cooldown,
        known_share: a.learn_known.clamp(0.0, 1.0),
        warm_steps: a.learn_warm,
        seed: config.seed,
        ..Default::default()
    };
    Ok(thau::learn::bench::learn_bench(
        &a.corpus,
        &plan,
        &mut |l| progress(&l),
    )?)
}

/// What `thau bench embed` scored, and on which retrieval set.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct EmbedBench {
    pub scores: Vec<thau::memory::bench::EmbedScore>,
    #[serde(skip)]
    pub documents: usize,
    #[serde(skip)]
    pub queries: usize,
    /// Where the qa.jsonl files were found.
    #[serde(skip)]
    pub qa: PathBuf,
}

/// `thau bench embed`: the hash embedder, THAU's own (when there is a checkpoint) and a
/// BERT directory (`--bert`) on the labelled retrieval set.
pub fn embed(home: &Home, a: &BenchArgs) -> Result<EmbedBench> {
    use thau::memory::embed::{BertEmbedder, Embedder, HashEmbedder, ThauEmbedder};
    let set = thau::memory::bench::RetrievalSet::from_qa_dir(&a.qa)?;
    let mut embedders: Vec<Box<dyn Embedder>> = vec![Box::new(HashEmbedder::default())];
    match ThauEmbedder::from_checkpoints(&home.checkpoints()) {
        Ok(e) => embedders.push(Box::new(e)),
        Err(e) => eprintln!("thau embedder skipped: {e}"),
    }
    if let Some(dir) = &a.bert {
        embedders.push(Box::new(BertEmbedder::load(dir)?));
    }
    let mut scores = embedders
        .iter()
        .map(|e| thau::memory::bench::embed_bench(&set, e.as_ref()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // What long-term memory's recall does with the default embedder.
    scores.push(thau::memory::bench::hybrid_bench(
        &set,
        embedders[0].as_ref(),
    )?);
    Ok(EmbedBench {
        scores,
        documents: set.documents.len(),
        queries: set.cases.len(),
        qa: a.qa.clone(),
    })
}

/// `thau bench grow`: growth 0 → 1 against age 1 from scratch.
pub fn grow(root: &std::path::Path, a: &BenchArgs) -> Result<thau::bench::GrowBenchReport> {
    let plan = thau::bench::GrowPlan {
        steps_before: a.steps_before,
        steps_after: a.steps_after,
        scratch_steps: a.scratch_steps,
        eval_every: a.eval_every.max(1),
        stack: a.stack,
    };
    Ok(thau::bench::grow_bench(root, &plan, &mut |l| progress(l))?)
}

/// `thau bench KIND` (`--seed` replaces the configuration's seed).
pub fn run(home: Home, mut config: ThauConfig, a: BenchArgs) -> Result<Box<dyn Report>> {
    use thau::server::bench::{load_bench, serve_bench};
    if let Some(seed) = a.seed {
        config.seed = seed;
    }
    let root = thau::bench::repo_root();
    Ok(match a.what {
        BenchKind::Train => Box::new(thau::bench::train_bench(
            &root,
            a.steps,
            !a.no_reference,
            &thau::model::device(&config.device)?,
        )?),
        BenchKind::Decode => Box::new(thau::bench::decode_bench(
            &root,
            a.tokens,
            !a.no_reference,
            a.llamacpp,
            &thau::model::device(&config.device)?,
        )?),
        BenchKind::Speed => Box::new(thau::bench::speed_bench(&root, a.steps, a.tokens)?),
        BenchKind::Memory => Box::new(memory(&home, &a)?),
        BenchKind::Tools => Box::new(tools(&home, &a)?),
        BenchKind::Learn => Box::new(learn(&config, &a)?),
        BenchKind::Serve => Box::new(serve_bench(
            home,
            config,
            &a.corpus,
            &a.sessions,
            a.tokens,
            &mut |l| progress(l),
        )?),
        BenchKind::Load => Box::new(load_bench(
            home,
            config,
            &a.corpus,
            a.clients,
            a.seconds,
            a.turn_tokens,
            &mut |l| progress(l),
        )?),
        BenchKind::Embed => Box::new(embed(&home, &a)?),
        BenchKind::Recall => Box::new(recall(&home, &a)?),
        BenchKind::Grow => Box::new(grow(&root, &a)?),
    })
}
