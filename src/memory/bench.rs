//! Memory benchmarks: [`vector_bench`] (`thau bench memory`) times the embedded vector
//! store — insert rate, index build, search p50/p99 and recall@10 against exact brute force,
//! all in one run — and [`embed_bench`] (`thau bench embed`) measures how well each
//! embedder retrieves the right answer for a question on a labelled set.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use uuid::Uuid;

use super::edge::{EdgeStore, SEARCH_EF};
use super::embed::{normalize, Embedder};
use super::vector::{MemoryPoint, PayloadFilter, PointPayload, VectorStore};
use super::{MemoryError, Result};

/// The targets of the memory issue.
pub const GOAL_P99_MS: f64 = 5.0;
pub const GOAL_RECALL_AT_10: f64 = 0.95;
/// Points per upsert call while loading.
const INSERT_BATCH: usize = 1000;
/// Query rows scored at once for the exact ground truth ([Q, N] floats in memory).
const EXACT_CHUNK: usize = 64;

/// How the benchmark's vectors are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum VectorData {
    /// Points around 1000 random centres (cosine ≈ 0.7 to their centre), like embeddings
    /// of texts on a limited set of topics.
    Clustered,
    /// Uniform on the sphere: no structure at all, the hardest case for an HNSW graph.
    Uniform,
    /// What THAU stores: the default (hashed n-gram) embeddings of texts made by joining
    /// two random sentences of the corpus (`--corpus`); queries are new pairs.
    Texts,
}

/// What [`vector_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct VectorBenchReport {
    pub points: usize,
    pub dim: usize,
    pub data: VectorData,
    pub queries: usize,
    pub insert_points_per_s: f64,
    pub index_build_s: f64,
    pub indexed_points: Option<usize>,
    pub hnsw_ef: usize,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    pub search_mean_ms: f64,
    pub recall_at_10: f64,
    /// Exact (brute force) search through the store, for comparison.
    pub exact_p50_ms: f64,
    pub goal_p99_ms: f64,
    pub goal_recall_at_10: f64,
    pub meets_goals: bool,
}

/// Draws `n` unit vectors.
struct Sampler {
    rng: rand_chacha::ChaCha8Rng,
    dim: usize,
    centres: Vec<Vec<f32>>,
    sentences: Vec<String>,
    embedder: Option<super::embed::HashEmbedder>,
}

impl Sampler {
    const CENTRES: usize = 1000;

    fn new(dim: usize, data: VectorData, seed: u64, corpus: &Path) -> Result<Sampler> {
        let mut s = Sampler {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            dim,
            centres: Vec::new(),
            sentences: Vec::new(),
            embedder: None,
        };
        match data {
            VectorData::Clustered => {
                s.centres = (0..Self::CENTRES).map(|_| s.gaussian(1.0)).collect();
            }
            VectorData::Uniform => {}
            VectorData::Texts => {
                s.sentences = corpus_sentences(corpus)?;
                s.embedder = Some(super::embed::HashEmbedder::new(dim)?);
            }
        }
        Ok(s)
    }

    fn gaussian(&mut self, scale: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..self.dim)
            .map(|_| {
                let x: f32 = StandardNormal.sample(&mut self.rng);
                x * scale
            })
            .collect();
        normalize(&mut v);
        v
    }

    fn next(&mut self) -> Vec<f32> {
        if let Some(e) = &self.embedder {
            let a = self.rng.random_range(0..self.sentences.len());
            let b = self.rng.random_range(0..self.sentences.len());
            let text = format!("{} {}", self.sentences[a], self.sentences[b]);
            return e.embed_text(&text);
        }
        if self.centres.is_empty() {
            return self.gaussian(1.0);
        }
        let c = self.rng.random_range(0..self.centres.len());
        // Unit noise on a unit centre: cosine to the centre ≈ 1/√2.
        let noise = self.gaussian(1.0);
        let mut v: Vec<f32> = self.centres[c]
            .iter()
            .zip(&noise)
            .map(|(a, b)| a + b)
            .collect();
        normalize(&mut v);
        v
    }
}

/// Sentences of the `.md`/`.txt` files under `dir` (at least 20 characters each).
pub(crate) fn corpus_sentences(dir: &Path) -> Result<Vec<String>> {
    let corpus = crate::model::data::Corpus::load(dir)
        .map_err(|e| MemoryError::BadQuery(format!("--corpus {}: {e}", dir.display())))?;
    let mut out: Vec<String> = corpus
        .examples
        .iter()
        .flat_map(|e| {
            e.text()
                .split(['.', '?', '!', '\n'])
                .map(|s| s.trim().to_string())
                .filter(|s| s.chars().count() >= 20)
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    if out.len() < 100 {
        return Err(MemoryError::BadQuery(format!(
            "--corpus {}: only {} sentences; the texts data needs at least 100",
            dir.display(),
            out.len()
        )));
    }
    Ok(out)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Exact top-`k` ids of every query by brute force (a matmul per chunk of queries).
fn exact_top_k(points: &[Vec<f32>], queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<usize>>> {
    let e = |e: candle_core::Error| MemoryError::Vector(e.to_string());
    let dim = points[0].len();
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    let p = Tensor::from_vec(flat, (points.len(), dim), &Device::Cpu).map_err(e)?; // [N, d]
    let pt = p.t().map_err(e)?; // [d, N]
    let mut out = Vec::with_capacity(queries.len());
    for chunk in queries.chunks(EXACT_CHUNK) {
        let q: Vec<f32> = chunk.iter().flatten().copied().collect();
        let q = Tensor::from_vec(q, (chunk.len(), dim), &Device::Cpu).map_err(e)?; // [q, d]
        let scores: Vec<Vec<f32>> = q.matmul(&pt).and_then(|s| s.to_vec2()).map_err(e)?; // [q, N]
        for row in scores {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.select_nth_unstable_by(k, |&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(k);
            out.push(idx);
        }
    }
    Ok(out)
}

/// Loads `points` random vectors into a fresh embedded store under `dir`, builds the
/// index, then times `queries` searches (top 10) and checks them against brute force.
pub fn vector_bench(
    dir: &Path,
    points: usize,
    dim: usize,
    queries: usize,
    data: VectorData,
    corpus: &Path,
    progress: &mut dyn FnMut(String),
) -> Result<VectorBenchReport> {
    const K: usize = 10;
    if points < K || queries == 0 || dim == 0 {
        return Err(MemoryError::BadQuery(format!(
            "need at least {K} points, 1 query and a positive size"
        )));
    }
    let mut sampler = Sampler::new(dim, data, 7, corpus)?;
    let mut store = EdgeStore::open(dir, dim)?;
    let vectors: Vec<Vec<f32>> = (0..points).map(|_| sampler.next()).collect();
    let ids: Vec<Uuid> = (0..points).map(|_| Uuid::new_v4()).collect();
    let created_at = chrono::Utc::now();

    progress(format!("inserting {points} × {dim} vectors ({data:?})"));
    let t0 = Instant::now();
    for (start, chunk) in vectors.chunks(INSERT_BATCH).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let n = start * INSERT_BATCH + i;
                MemoryPoint {
                    id: ids[n],
                    payload: PointPayload {
                        text: format!("point {n}"),
                        source: "bench".into(),
                        importance: 0.5,
                        created_at,
                        keys: Vec::new(),
                    },
                    vector: v.clone(),
                }
            })
            .collect();
        store.upsert(batch)?;
    }
    let insert_s = t0.elapsed().as_secs_f64();

    progress("building the HNSW index".into());
    let t1 = Instant::now();
    store.optimize()?;
    let index_build_s = t1.elapsed().as_secs_f64();
    let indexed_points = store.stats()?.indexed;

    progress(format!("searching {queries} queries"));
    let qs: Vec<Vec<f32>> = (0..queries).map(|_| sampler.next()).collect();
    let filter = PayloadFilter::default();
    // One untimed search warms the caches (mmap pages, allocator).
    store.search(&qs[0], K, &filter, false)?;
    let mut times = Vec::with_capacity(queries);
    let mut found = Vec::with_capacity(queries);
    for q in &qs {
        let t = Instant::now();
        let hits = store.search(q, K, &filter, false)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(hits.into_iter().map(|h| h.point.id).collect::<Vec<_>>());
    }
    let mut exact_times = Vec::new();
    for q in qs.iter().take(queries.min(50)) {
        let t = Instant::now();
        store.search(q, K, &filter, true)?;
        exact_times.push(t.elapsed().as_secs_f64() * 1e3);
    }

    progress("exact ground truth".into());
    let truth = exact_top_k(&vectors, &qs, K)?;
    let hits: usize = truth
        .iter()
        .zip(&found)
        .map(|(t, f)| t.iter().filter(|&&i| f.contains(&ids[i])).count())
        .sum();
    let recall_at_10 = hits as f64 / (K * queries) as f64;

    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    exact_times.sort_by(f64::total_cmp);
    let p99 = percentile(&times, 0.99);
    Ok(VectorBenchReport {
        points,
        dim,
        data,
        queries,
        insert_points_per_s: points as f64 / insert_s,
        index_build_s,
        indexed_points,
        hnsw_ef: SEARCH_EF,
        search_p50_ms: percentile(&times, 0.5),
        search_p99_ms: p99,
        search_mean_ms: mean,
        recall_at_10,
        exact_p50_ms: percentile(&exact_times, 0.5),
        goal_p99_ms: GOAL_P99_MS,
        goal_recall_at_10: GOAL_RECALL_AT_10,
        meets_goals: p99 < GOAL_P99_MS && recall_at_10 >= GOAL_RECALL_AT_10,
    })
}

/// One labelled retrieval case: a query and the index of the document that answers it.
#[derive(Debug, Clone)]
pub struct RetrievalCase {
    pub query: String,
    pub relevant: usize,
}

/// Documents and queries for [`embed_bench`].
#[derive(Debug, Clone, Default)]
pub struct RetrievalSet {
    pub documents: Vec<String>,
    pub cases: Vec<RetrievalCase>,
}

impl RetrievalSet {
    /// Builds the set from the corpus's `qa.jsonl` files under `dir`: each answer is a
    /// document, and each paraphrase of its question is a query that should find it (the
    /// question itself is left out: it is what a memory would be stored with).
    pub fn from_qa_dir(dir: &Path) -> Result<RetrievalSet> {
        let mut set = RetrievalSet::default();
        let mut files = Vec::new();
        collect_qa(dir, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(MemoryError::BadQuery(format!(
                "{}: no qa.jsonl file found",
                dir.display()
            )));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| MemoryError::io(&file, e))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    MemoryError::BadRecord(format!("{}:{}: {e}", file.display(), i + 1))
                })?;
                let (Some(q), Some(a)) = (v["question"].as_str(), v["answer"].as_str()) else {
                    continue;
                };
                let doc = set.documents.len();
                set.documents.push(format!("{q} {a}"));
                for p in v["paraphrases"].as_array().into_iter().flatten() {
                    if let Some(p) = p.as_str() {
                        set.cases.push(RetrievalCase {
                            query: p.to_string(),
                            relevant: doc,
                        });
                    }
                }
            }
        }
        Ok(set)
    }
}

fn collect_qa(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| MemoryError::io(dir, e))?;
    for entry in rd.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_qa(&p, out)?;
        } else if p.file_name().is_some_and(|n| n == "qa.jsonl") {
            out.push(p);
        }
    }
    Ok(())
}

/// How well one embedder retrieves.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedScore {
    pub embedder: String,
    pub dim: usize,
    pub documents: usize,
    pub queries: usize,
    pub recall_at_1: f64,
    /// What chat puts in the prompt: its default `recall_limit` is 3.
    pub recall_at_3: f64,
    pub recall_at_5: f64,
    pub mrr: f64,
    pub embed_ms_per_text: f64,
}

/// Embeddings of documents and of queries, and the milliseconds it took per text.
type Embedded = (Vec<Vec<f32>>, Vec<Vec<f32>>, f64);

/// The embeddings of `set`'s documents and queries, and the milliseconds per text.
fn embed_set(set: &RetrievalSet, embedder: &dyn Embedder) -> Result<Embedded> {
    let t = Instant::now();
    let docs: Vec<&str> = set.documents.iter().map(String::as_str).collect();
    let doc_v = embedder.embed(&docs)?;
    let queries: Vec<&str> = set.cases.iter().map(|c| c.query.as_str()).collect();
    let q_v = embedder.embed(&queries)?;
    let ms = t.elapsed().as_secs_f64() * 1e3 / (docs.len() + queries.len()).max(1) as f64;
    Ok((doc_v, q_v, ms))
}

/// Documents the hybrid ranking fuses from each side.
const HYBRID_DEPTH: usize = 50;

/// Ranks (1 = best; `None` when not found) → the recall and MRR figures of an [`EmbedScore`].
fn score_ranks(
    name: String,
    dim: usize,
    set: &RetrievalSet,
    ranks: &[Option<usize>],
    ms: f64,
) -> EmbedScore {
    let n = ranks.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    EmbedScore {
        embedder: name,
        dim,
        documents: set.documents.len(),
        queries: set.cases.len(),
        recall_at_1: within(1),
        recall_at_3: within(3),
        recall_at_5: within(5),
        mrr: ranks.iter().flatten().map(|&r| 1.0 / r as f64).sum::<f64>() / n,
        embed_ms_per_text: ms,
    }
}

/// Recall as long-term memory does it ([`super::long_term::LongTerm::recall`]): the
/// embedder's best [`HYBRID_DEPTH`] documents and BM25's fused by reciprocal rank.
pub fn hybrid_bench(set: &RetrievalSet, embedder: &dyn Embedder) -> Result<EmbedScore> {
    let (doc_v, q_v, ms) = embed_set(set, embedder)?;
    let index = super::lexical::LexicalIndex::of_texts(&set.documents)?;
    let mut ranks = Vec::with_capacity(set.cases.len());
    for (case, q) in set.cases.iter().zip(&q_v) {
        let mut by_vector: Vec<(usize, f32)> = doc_v
            .iter()
            .enumerate()
            .map(|(i, d)| (i, super::embed::dot(q, d)))
            .collect();
        by_vector.sort_by(|a, b| b.1.total_cmp(&a.1));
        let by_vector: Vec<usize> = by_vector
            .into_iter()
            .take(HYBRID_DEPTH)
            .map(|(i, _)| i)
            .collect();
        let by_words: Vec<usize> = index
            .search(&case.query, HYBRID_DEPTH, &Default::default())?
            .into_iter()
            .map(|h| h.id.as_u128() as usize)
            .collect();
        let fused = super::recall::fuse_ranks(&[by_vector, by_words]);
        ranks.push(
            fused
                .iter()
                .position(|(i, _)| *i == case.relevant)
                .map(|p| p + 1),
        );
    }
    Ok(score_ranks(
        format!("hybrid: bm25 + {} (rrf)", embedder.name()),
        embedder.dim(),
        set,
        &ranks,
        ms,
    ))
}

/// Embeds the documents and queries of `set` and ranks documents by cosine (exactly).
pub fn embed_bench(set: &RetrievalSet, embedder: &dyn Embedder) -> Result<EmbedScore> {
    let (doc_v, q_v, embed_ms) = embed_set(set, embedder)?;
    let ranks: Vec<Option<usize>> = set
        .cases
        .iter()
        .zip(&q_v)
        .map(|(case, q)| {
            let target = super::embed::dot(q, &doc_v[case.relevant]);
            // Rank = 1 + documents scoring strictly higher than the right one.
            Some(
                1 + doc_v
                    .iter()
                    .enumerate()
                    .filter(|(i, d)| *i != case.relevant && super::embed::dot(q, d) > target)
                    .count(),
            )
        })
        .collect();
    Ok(score_ranks(
        embedder.name(),
        embedder.dim(),
        set,
        &ranks,
        embed_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::embed::HashEmbedder;

    #[test]
    fn exact_top_k_finds_the_nearest() {
        let pts = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.7, 0.7]];
        let got = exact_top_k(&pts, &[vec![1.0, 0.1]], 2).unwrap();
        let mut g = got[0].clone();
        g.sort();
        assert_eq!(g, vec![0, 2]);
    }

    #[test]
    fn embed_bench_ranks_a_paraphrase_first() {
        let set = RetrievalSet {
            documents: vec![
                "water boils at one hundred degrees".into(),
                "cats sleep in the sun".into(),
            ],
            cases: vec![RetrievalCase {
                query: "at what temperature does water boil".into(),
                relevant: 0,
            }],
        };
        let s = embed_bench(&set, &HashEmbedder::default()).unwrap();
        assert_eq!(s.recall_at_1, 1.0);
        assert_eq!(s.mrr, 1.0);
        let h = hybrid_bench(&set, &HashEmbedder::default()).unwrap();
        assert_eq!((h.recall_at_1, h.recall_at_3), (1.0, 1.0));
        assert!(h.embedder.starts_with("hybrid"));
    }

    #[test]
    fn the_hybrid_ranking_finds_by_words_what_vectors_rank_low() {
        // The hash embedder sees letter n-grams, which the words of the distractors share
        // with the query; BM25 sees words (their first letters, `text::stem`), which only
        // the answer shares.
        let mut documents: Vec<String> = (0..20)
            .map(|i| format!("supertemperatures of reboiling saltwaters, table {i}"))
            .collect();
        documents.push("quendralia exports blue pepper".into());
        let set = RetrievalSet {
            cases: vec![RetrievalCase {
                query: "temperature water boil quendralia".into(),
                relevant: 20,
            }],
            documents,
        };
        let vector = embed_bench(&set, &HashEmbedder::default()).unwrap();
        let hybrid = hybrid_bench(&set, &HashEmbedder::default()).unwrap();
        assert!(vector.recall_at_1 < 1.0, "{vector:?}");
        assert_eq!(hybrid.recall_at_1, 1.0);
    }
}
