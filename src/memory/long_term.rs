//! Long-term memory as one store: [`LongTerm`] holds the vector store, the embedder that
//! fills it and the lexical index beside it, writes to both, and recalls by both
//! ([`LongTerm::recall`]: BM25 and vector rankings fused by reciprocal rank).
//!
//! The LongTermMemory actor owns one while the runtime runs; `thau memory` opens one
//! directly when no runtime holds the data directory.

use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::embed::Embedder;
use super::lexical::{LexicalDoc, LexicalIndex, LEXICAL_DB};
use super::recall::fuse_ranks;
use super::vector::{
    MemoryPoint, PayloadFilter, PointPayload, ScoredPoint, VectorStats, VectorStore,
    MAX_SEARCH_LIMIT,
};
use super::{MemoryError, MemorySection, Result};

/// Candidates each ranking contributes to a hybrid recall, per result asked for: a passage
/// ranked low by one method and high by the other must still be in both lists to fuse.
const CANDIDATES_PER_RESULT: usize = 4;
/// Fewest candidates each ranking contributes.
const MIN_CANDIDATES: usize = 20;
/// Points read per page when the lexical index is rebuilt from the vector store.
const REBUILD_PAGE: usize = 512;

/// A text to remember.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    pub text: String,
    pub source: String,
    pub importance: f32,
    /// Store under this id (replacing what it held); a new random id when absent. Passages
    /// of documents use [`super::passages::passage_id`], so re-reading stores nothing twice.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Other phrasings it is recalled by ([`PointPayload::keys`]).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// The vector store, its embedder and the lexical index.
pub struct LongTerm {
    pub vectors: Box<dyn VectorStore>,
    pub embedder: Box<dyn Embedder>,
    lexical: LexicalIndex,
}

impl LongTerm {
    /// Opens the store a configuration names — the Qdrant server at `cfg.qdrant_url`, else
    /// the embedded one in `<memory_dir>/vectors` — with its embedder and the lexical index
    /// (rebuilt when it does not match the vectors).
    pub fn open(memory_dir: &Path, checkpoints: &Path, cfg: &MemorySection) -> Result<LongTerm> {
        let embedder = super::embed::from_setting(&cfg.embedder, checkpoints)?;
        let dim = embedder.dim();
        let vectors: Box<dyn VectorStore> = if cfg.qdrant_url.trim().is_empty() {
            Box::new(super::edge::EdgeStore::open(
                &memory_dir.join(super::VECTOR_DIR),
                dim,
            )?)
        } else {
            Box::new(super::server::ServerStore::connect(
                cfg.qdrant_url.trim(),
                super::vector::CollectionSpec::builtin(dim),
            )?)
        };
        let lexical = LexicalIndex::open(&memory_dir.join(LEXICAL_DB))?;
        Self::with(vectors, embedder, lexical)
    }

    /// Assembles a store from its parts, rebuilding the lexical index if its count differs
    /// from the vector store's.
    pub fn with(
        vectors: Box<dyn VectorStore>,
        embedder: Box<dyn Embedder>,
        lexical: LexicalIndex,
    ) -> Result<LongTerm> {
        let mut lt = LongTerm {
            vectors,
            embedder,
            lexical,
        };
        if lt.lexical.count()? != lt.vectors.count()? {
            lt.rebuild_lexical()?;
        }
        Ok(lt)
    }

    /// Re-indexes every point's text.
    pub fn rebuild_lexical(&mut self) -> Result<usize> {
        self.lexical.clear()?;
        let mut cursor = None;
        let mut n = 0;
        loop {
            let (page, next) = self.vectors.scroll(cursor, REBUILD_PAGE, false)?;
            n += page.len();
            self.lexical.upsert(&docs_of(&page))?;
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        tracing::info!(points = n, "lexical index rebuilt from the vector store");
        Ok(n)
    }

    /// Embeds and stores texts (replacing points of the same id); answers their ids.
    pub fn memorize(&mut self, items: &[NewMemory]) -> Result<Vec<Uuid>> {
        for m in items {
            if m.text.trim().is_empty() {
                return Err(MemoryError::BadRecord("a memory's text is empty".into()));
            }
            if !(0.0..=1.0).contains(&m.importance) {
                return Err(MemoryError::BadRecord(format!(
                    "importance {} is outside 0..1",
                    m.importance
                )));
            }
        }
        // The vector of a memory with other phrasings is that of all of them, as its
        // lexical entry is.
        let texts: Vec<String> = items
            .iter()
            .map(|n| {
                std::iter::once(&n.text)
                    .chain(&n.keys)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = self.embedder.embed(&texts)?;
        let now = Utc::now();
        let points: Vec<MemoryPoint> = items
            .iter()
            .zip(vectors)
            .map(|(n, vector)| MemoryPoint {
                id: n.id.unwrap_or_else(Uuid::new_v4),
                payload: PointPayload {
                    text: n.text.clone(),
                    source: n.source.clone(),
                    importance: n.importance,
                    created_at: now,
                    keys: n.keys.clone(),
                },
                vector,
            })
            .collect();
        let ids = points.iter().map(|p| p.id).collect();
        self.upsert(points)?;
        Ok(ids)
    }

    /// Stores points as they are (an import), in both indexes.
    pub fn upsert(&mut self, points: Vec<MemoryPoint>) -> Result<()> {
        // A crash between the two writes leaves counts that differ, and the next open
        // rebuilds the lexical index from the vectors.
        self.lexical.upsert(&docs_of(&points))?;
        self.vectors.upsert(points)
    }

    /// Whether a point with this id is stored.
    pub fn contains(&self, id: Uuid) -> Result<bool> {
        self.lexical.contains(id)
    }

    /// Deletes one point; [`MemoryError::NotFound`] if absent.
    pub fn delete(&mut self, id: Uuid) -> Result<()> {
        self.vectors.delete(id)?;
        self.lexical.delete(id)?;
        Ok(())
    }

    /// The `limit` memories that best match `query`: the vector ranking (cosine to the
    /// query's embedding) and the lexical one (BM25 over the words) fused by reciprocal
    /// rank. Scores are in 0..1: 1 is first in both rankings, 0.5 first in one and absent
    /// from the other.
    pub fn recall(
        &self,
        query: &str,
        limit: usize,
        filter: &PayloadFilter,
    ) -> Result<Vec<ScoredPoint>> {
        if query.trim().is_empty() {
            return Err(MemoryError::BadQuery("empty query".into()));
        }
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(MemoryError::BadQuery(format!(
                "limit must be 1..={MAX_SEARCH_LIMIT}, got {limit}"
            )));
        }
        let candidates = (limit * CANDIDATES_PER_RESULT).clamp(MIN_CANDIDATES, MAX_SEARCH_LIMIT);
        let v = self.embedder.embed_one(query)?;
        let by_vector = self.vectors.search(&v, candidates, filter, false)?;
        let by_words = self.lexical.search(query, candidates, filter)?;
        let fused = fuse_ranks(&[
            by_vector.iter().map(|h| h.point.id).collect(),
            by_words.iter().map(|h| h.id).collect(),
        ]);
        let mut out = Vec::new();
        for (id, score) in fused.into_iter().take(limit) {
            let point = match by_vector.iter().find(|h| h.point.id == id) {
                Some(h) => h.point.clone(),
                None => match self.vectors.get(id) {
                    Ok(p) => p,
                    // Indexed lexically but gone from the vectors (deleted by another
                    // process): skip it rather than fail the recall.
                    Err(MemoryError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(ScoredPoint {
                point: MemoryPoint {
                    vector: Vec::new(),
                    ..point
                },
                score,
            });
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<VectorStats> {
        self.vectors.stats()
    }

    pub fn flush(&mut self) -> Result<()> {
        self.vectors.flush()
    }
}

fn docs_of(points: &[MemoryPoint]) -> Vec<LexicalDoc<'_>> {
    points
        .iter()
        .map(|p| LexicalDoc {
            id: p.id,
            text: &p.payload.text,
            keys: &p.payload.keys,
            source: &p.payload.source,
            importance: p.payload.importance,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::edge::EdgeStore;
    use crate::memory::embed::HashEmbedder;

    fn store(dir: &Path) -> LongTerm {
        let emb = HashEmbedder::new(64).unwrap();
        LongTerm::with(
            Box::new(EdgeStore::open(&dir.join("v"), 64).unwrap()),
            Box::new(emb),
            LexicalIndex::open(&dir.join("l.sqlite")).unwrap(),
        )
        .unwrap()
    }

    fn mem(text: &str) -> NewMemory {
        NewMemory {
            text: text.into(),
            source: "t.md".into(),
            importance: 0.5,
            id: Some(crate::memory::passages::passage_id(text)),
            keys: Vec::new(),
        }
    }

    #[test]
    fn a_memory_is_recalled_by_its_other_phrasings_and_shows_only_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut lt = store(dir.path());
        lt.memorize(&[
            mem("Steaming cooks food with vapour."),
            NewMemory {
                keys: vec!["How hot must water get to boil?".into()],
                ..mem("Water turns to vapour at 100 degrees.")
            },
        ])
        .unwrap();
        let hits = lt.recall("boil", 1, &PayloadFilter::default()).unwrap();
        assert_eq!(
            hits[0].point.payload.text,
            "Water turns to vapour at 100 degrees."
        );
        assert_eq!(hits[0].point.payload.keys.len(), 1, "kept with the point");
        drop(lt);
        // The lexical index rebuilt from the vectors still knows the other phrasing.
        for f in ["l.sqlite", "l.sqlite-wal", "l.sqlite-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let lt = store(dir.path());
        let hits = lt.recall("boil", 1, &PayloadFilter::default()).unwrap();
        assert_eq!(
            hits[0].point.payload.text,
            "Water turns to vapour at 100 degrees."
        );
    }

    #[test]
    fn hybrid_recall_finds_the_passage_by_its_rare_word() {
        let dir = tempfile::tempdir().unwrap();
        let mut lt = store(dir.path());
        let mut items: Vec<NewMemory> = (0..40)
            .map(|i| {
                mem(&format!(
                    "Passage number {i} talks about rivers and the sea."
                ))
            })
            .collect();
        items.push(mem("Bartola Quiñonero founded Villa Tresmares in 1783."));
        lt.memorize(&items).unwrap();
        let hits = lt
            .recall("who founded Tresmares?", 3, &PayloadFilter::default())
            .unwrap();
        assert!(hits[0].point.payload.text.contains("Bartola"), "{hits:?}");
        assert!(hits[0].score > 0.45 && hits[0].score <= 1.0);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(hits.iter().all(|h| h.point.vector.is_empty()));
    }

    #[test]
    fn same_passage_twice_is_one_point_and_delete_removes_both_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut lt = store(dir.path());
        let a = lt.memorize(&[mem("The nucleus holds DNA.")]).unwrap();
        let b = lt.memorize(&[mem("The  nucleus holds\nDNA.")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(lt.vectors.count().unwrap(), 1);
        assert!(lt.contains(a[0]).unwrap());
        lt.delete(a[0]).unwrap();
        assert!(!lt.contains(a[0]).unwrap());
        assert!(lt
            .recall("nucleus", 3, &PayloadFilter::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_missing_lexical_index_is_rebuilt_from_the_vectors() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut lt = store(dir.path());
            lt.memorize(&[mem("Glassfern beetles glow green at dusk.")])
                .unwrap();
            lt.flush().unwrap();
        }
        for f in ["l.sqlite", "l.sqlite-wal", "l.sqlite-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let lt = store(dir.path());
        let hits = lt
            .recall("glassfern", 1, &PayloadFilter::default())
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert!(
            hits[0].score > 0.5,
            "found by both rankings: {}",
            hits[0].score
        );
    }
}
