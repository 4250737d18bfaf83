//! Long-term memory as vectors: the [`VectorStore`] trait, its points ([`MemoryPoint`]),
//! their payload ([`PointPayload`]), payload filters ([`PayloadFilter`]) and the
//! collection spec ([`CollectionSpec`], from `memory-schema/collection.json`).
//!
//! Two backends implement it: [`super::edge::EdgeStore`] (embedded Qdrant on disk, the
//! default) and [`super::server::ServerStore`] (a Qdrant server or cluster).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MemoryError, Result};

/// The collection spec shipped in `memory-schema/collection.json`.
pub const COLLECTION_SPEC: &str = include_str!("../../memory-schema/collection.json");
/// Most points one search may return.
pub const MAX_SEARCH_LIMIT: usize = 1000;

/// How the long-term collection is laid out (the server backend creates it from this; the
/// embedded store uses the vector size and distance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    pub vector_size: usize,
    /// Only `cosine` is used: the embedders return unit vectors.
    pub distance: String,
    pub shard_number: u32,
    pub replication_factor: u32,
    pub write_consistency_factor: u32,
    /// Payload field → index type (`keyword`, `float`, `datetime`).
    pub payload_indexes: std::collections::BTreeMap<String, String>,
}

impl CollectionSpec {
    /// The shipped spec with the vector size of the embedder in use.
    pub fn builtin(vector_size: usize) -> CollectionSpec {
        let mut spec: CollectionSpec =
            serde_json::from_str(COLLECTION_SPEC).expect("memory-schema/collection.json is valid");
        spec.vector_size = vector_size;
        spec
    }
}

/// What a point carries besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointPayload {
    pub text: String,
    /// Where it came from: `chat`, `episode`, `corpus`, `import`, a file name...
    pub source: String,
    /// 0 to 1.
    pub importance: f32,
    pub created_at: DateTime<Utc>,
    /// Other phrasings of what the memory answers (a studied question's paraphrases):
    /// recall finds the memory by them too, and only `text` goes into a prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// One long-term memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    pub id: Uuid,
    #[serde(flatten)]
    pub payload: PointPayload,
    /// Unit-length embedding of `payload.text`; empty in listings that skip vectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vector: Vec<f32>,
}

impl MemoryPoint {
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.vector.len() != dim {
            return Err(MemoryError::BadRecord(format!(
                "point {}: vector has {} values, the collection holds {dim}",
                self.id,
                self.vector.len()
            )));
        }
        if self.vector.iter().any(|x| !x.is_finite()) {
            return Err(MemoryError::BadRecord(format!(
                "point {}: vector has a non-finite value",
                self.id
            )));
        }
        if !(0.0..=1.0).contains(&self.payload.importance) {
            return Err(MemoryError::BadRecord(format!(
                "point {}: importance {} is outside 0..1",
                self.id, self.payload.importance
            )));
        }
        Ok(())
    }
}

/// A search result.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredPoint {
    pub point: MemoryPoint,
    /// Cosine similarity to the query (-1..1).
    pub score: f32,
}

/// Conditions on the payload; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PayloadFilter {
    pub source: Option<String>,
    pub min_importance: Option<f32>,
}

impl PayloadFilter {
    pub fn is_empty(&self) -> bool {
        self.source.is_none() && self.min_importance.is_none()
    }

    /// Whether a payload passes (used by brute-force checks and tests).
    pub fn matches(&self, p: &PointPayload) -> bool {
        self.source.as_ref().is_none_or(|s| &p.source == s)
            && self.min_importance.is_none_or(|m| p.importance >= m)
    }
}

/// Counts for `thau memory stats`.
#[derive(Debug, Clone, Serialize)]
pub struct VectorStats {
    pub backend: String,
    pub location: String,
    pub points: usize,
    pub vector_size: usize,
    /// Points covered by an HNSW index (the rest are searched exactly).
    pub indexed: Option<usize>,
}

/// A store of [`MemoryPoint`]s searched by cosine similarity.
pub trait VectorStore: Send {
    fn dim(&self) -> usize;
    /// Inserts or replaces points (by id).
    fn upsert(&mut self, points: Vec<MemoryPoint>) -> Result<()>;
    /// The `limit` nearest points passing `filter`, best first. `exact` skips the index.
    fn search(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &PayloadFilter,
        exact: bool,
    ) -> Result<Vec<ScoredPoint>>;
    /// One point with its vector.
    fn get(&self, id: Uuid) -> Result<MemoryPoint>;
    /// Deletes one point; [`MemoryError::NotFound`] if absent.
    fn delete(&mut self, id: Uuid) -> Result<()>;
    fn count(&self) -> Result<usize>;
    /// A page of points in id order, starting after `after`; returns the next cursor.
    fn scroll(
        &self,
        after: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<(Vec<MemoryPoint>, Option<Uuid>)>;
    /// Makes every write so far durable.
    fn flush(&mut self) -> Result<()>;
    /// Builds the search index over points added since the last call (may take seconds).
    fn optimize(&mut self) -> Result<()>;
    fn stats(&self) -> Result<VectorStats>;
}

/// Checks a query vector against the store's size.
pub fn check_query(vector: &[f32], dim: usize, limit: usize) -> Result<()> {
    if vector.len() != dim {
        return Err(MemoryError::BadQuery(format!(
            "query vector has {} values, the collection holds {dim}",
            vector.len()
        )));
    }
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(MemoryError::BadQuery(format!(
            "limit must be 1..={MAX_SEARCH_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}
