//! `thau bench recall`: what recalling memories into a chat prompt costs with many of them.
//! Fills a fresh long-term store (embedded Qdrant, hash embedder, lexical index) with
//! `points` texts made of corpus sentences, then times, for real questions: the hybrid
//! recall chat does ([`LongTerm::recall`]: embedding, vector search, BM25, fusion) against
//! the vector search alone (embedding included). The goal: recall adds at most 20 ms to a
//! chat turn's p50.

use std::path::Path;
use std::time::Instant;

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::bench::{corpus_sentences, percentile};
use super::edge::EdgeStore;
use super::embed::{Embedder, HashEmbedder};
use super::lexical::LexicalIndex;
use super::long_term::{LongTerm, NewMemory};
use super::vector::PayloadFilter;
use super::{MemoryError, Result};

/// Texts stored per batch.
const BATCH: usize = 1_000;
/// Memories recalled per question (chat's default `recall_limit`).
const RECALL_K: usize = 3;
/// The goal: recall's p50, in milliseconds.
pub const GOAL_P50_MS: f64 = 20.0;

/// What `thau bench recall` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RecallBenchReport {
    pub points: usize,
    pub queries: usize,
    pub insert_points_per_s: f64,
    pub index_build_s: f64,
    /// Embedding and vector search alone (what long-term search did before it was hybrid).
    pub vector_p50_ms: f64,
    /// The hybrid recall a chat turn runs.
    pub hybrid_p50_ms: f64,
    pub hybrid_p99_ms: f64,
    pub goal_p50_ms: f64,
    pub meets_goal: bool,
}

/// Runs the benchmark in `dir` (a fresh directory).
pub fn recall_bench(
    dir: &Path,
    points: usize,
    questions: &[String],
    corpus: &Path,
    progress: &mut dyn FnMut(String),
) -> Result<RecallBenchReport> {
    if points == 0 || questions.is_empty() {
        return Err(MemoryError::BadQuery(
            "need at least one point and one question".into(),
        ));
    }
    let sentences = corpus_sentences(corpus)?;
    let dim = super::embed::HASH_DIM;
    let mut lt = LongTerm::with(
        Box::new(EdgeStore::open(&dir.join("vectors"), dim)?),
        Box::new(HashEmbedder::new(dim)?),
        LexicalIndex::open(&dir.join("lexical.sqlite"))?,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    progress(format!("storing {points} memories"));
    let t0 = Instant::now();
    let mut stored = 0;
    while stored < points {
        let n = BATCH.min(points - stored);
        let batch: Vec<NewMemory> = (0..n)
            .map(|i| {
                // Two or three corpus sentences and a serial number: distinct texts with the
                // corpus's words and lengths.
                let k = 2 + (stored + i) % 2;
                let picked: Vec<&str> = sentences
                    .choose_multiple(&mut rng, k)
                    .map(String::as_str)
                    .collect();
                NewMemory {
                    text: format!("{}. Note {}.", picked.join(". "), stored + i),
                    source: "bench".into(),
                    importance: 0.5,
                    id: None,
                    keys: Vec::new(),
                }
            })
            .collect();
        lt.memorize(&batch)?;
        stored += n;
    }
    let insert_s = t0.elapsed().as_secs_f64();
    progress("building the vector index".into());
    let t1 = Instant::now();
    lt.vectors.optimize()?;
    let index_build_s = t1.elapsed().as_secs_f64();
    let filter = PayloadFilter::default();
    let embedder = HashEmbedder::new(dim)?;
    progress(format!("timing {} recalls", questions.len()));
    let (mut vector_ms, mut hybrid_ms) = (Vec::new(), Vec::new());
    for q in questions {
        let t = Instant::now();
        let v = embedder.embed_one(q)?;
        lt.vectors.search(&v, RECALL_K, &filter, false)?;
        vector_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        lt.recall(q, RECALL_K, &filter)?;
        hybrid_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    vector_ms.sort_by(f64::total_cmp);
    hybrid_ms.sort_by(f64::total_cmp);
    let hybrid_p50_ms = percentile(&hybrid_ms, 0.5);
    Ok(RecallBenchReport {
        points,
        queries: questions.len(),
        insert_points_per_s: points as f64 / insert_s.max(1e-9),
        index_build_s,
        vector_p50_ms: percentile(&vector_ms, 0.5),
        hybrid_p50_ms,
        hybrid_p99_ms: percentile(&hybrid_ms, 0.99),
        goal_p50_ms: GOAL_P50_MS,
        meets_goal: hybrid_p50_ms <= GOAL_P50_MS,
    })
}
