//! [`EdgeStore`]: long-term memory in embedded Qdrant (`qdrant-edge`), on disk, no server.
//!
//! One shard lives in one directory and only one process may open it: the store takes a
//! [`DirLock`] first, so a second opener gets [`MemoryError::InUse`] instead of corrupting
//! it. Every write is flushed before it returns, so points survive a killed process;
//! [`VectorStore::optimize`] builds the HNSW index once a segment passes the indexing
//! threshold (before that, search is exact).

use std::path::{Path, PathBuf};

use qdrant_edge::{
    Condition, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldCondition,
    Filter, HnswIndexConfig, JsonPath, Match, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, Range, ScrollRequest, SearchParams, SearchRequest, UpdateOperation,
    VectorStructInternal, WithPayloadInterface, WithVector,
};
use qdrant_edge::{NamedQuery, Payload, VectorInternal};
use uuid::Uuid;

use super::vector::{
    check_query, MemoryPoint, PayloadFilter, PointPayload, ScoredPoint, VectorStats, VectorStore,
};
use super::{DirLock, MemoryError, Result};

/// Beam width of an HNSW search: measured by `thau bench memory` to give recall@10 ≥ 0.95
/// on 100k points (qdrant's own default leaves it to `ef_construct`).
pub const SEARCH_EF: usize = 128;
/// HNSW graph degree and build beam.
pub const HNSW_M: usize = 16;
pub const HNSW_EF_CONSTRUCT: usize = 128;

fn err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Vector(e.to_string())
}

/// Embedded Qdrant shard owned by this process.
pub struct EdgeStore {
    // Field order matters: the shard (which flushes on drop) goes before the lock.
    shard: EdgeShard,
    dim: usize,
    dir: PathBuf,
    _lock: DirLock,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .finish()
    }
}

impl EdgeStore {
    /// Opens the shard in `dir`, creating it for `dim`-sized cosine vectors if it does not
    /// exist. An existing shard of another size is an error (the embedder changed).
    pub fn open(dir: &Path, dim: usize) -> Result<EdgeStore> {
        if dim == 0 {
            return Err(MemoryError::BadQuery("vector size must be positive".into()));
        }
        let lock = DirLock::acquire(dir)?;
        let exists = dir.join("edge_config.json").is_file();
        let shard = if exists {
            EdgeShard::load(dir, None).map_err(|e| err(format!("{}: {e}", dir.display())))?
        } else {
            let config = EdgeConfigBuilder::new()
                .vector(
                    "",
                    EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
                )
                .hnsw_config(HnswIndexConfig {
                    m: HNSW_M,
                    ef_construct: HNSW_EF_CONSTRUCT,
                    ..Default::default()
                })
                .build();
            EdgeShard::new(dir, config).map_err(|e| err(format!("{}: {e}", dir.display())))?
        };
        let have = shard.config().vectors.get("").map(|v| v.size);
        match have {
            Some(size) if size == dim => {}
            Some(size) => {
                return Err(MemoryError::Unsupported(format!(
                    "{}: the store holds {size}-value vectors but the embedder makes {dim}; \
                     export it, move it away and import it again to re-embed",
                    dir.display()
                )))
            }
            None => {
                return Err(err(format!(
                    "{}: the shard has no default vector",
                    dir.display()
                )))
            }
        }
        Ok(EdgeStore {
            shard,
            dim,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The vector size of an existing store, without opening it.
    pub fn stored_dim(dir: &Path) -> Option<usize> {
        let bytes = std::fs::read(dir.join("edge_config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["vectors"][""]["size"].as_u64().map(|n| n as usize)
    }
}

/// A payload key as qdrant's path type (the names are fixed ASCII identifiers).
fn key(name: &str) -> JsonPath {
    JsonPath::try_from(name).expect("payload keys are plain identifiers")
}

fn to_filter(f: &PayloadFilter) -> Option<Filter> {
    if f.is_empty() {
        return None;
    }
    let mut must = Vec::new();
    if let Some(s) = &f.source {
        must.push(Condition::Field(FieldCondition::new_match(
            key("source"),
            Match::from(s.clone()),
        )));
    }
    if let Some(m) = f.min_importance {
        must.push(Condition::Field(FieldCondition::new_range(
            key("importance"),
            Range {
                gte: Some((m as f64).into()),
                lt: None,
                gt: None,
                lte: None,
            },
        )));
    }
    Some(Filter {
        must: Some(must),
        ..Filter::default()
    })
}

fn payload_json(p: &PointPayload) -> serde_json::Value {
    let mut v = serde_json::json!({
        "text": p.text,
        "source": p.source,
        "importance": p.importance,
        "created_at": p.created_at.to_rfc3339(),
    });
    if !p.keys.is_empty() {
        v["keys"] = serde_json::json!(p.keys);
    }
    v
}

fn uuid_of(id: PointId) -> Result<Uuid> {
    match id {
        PointId::Uuid(u) => Ok(u),
        PointId::NumId(n) => Err(err(format!(
            "point {n} has a numeric id; THAU writes UUIDs"
        ))),
    }
}

fn dense_of(v: Option<VectorStructInternal>) -> Vec<f32> {
    match v {
        Some(VectorStructInternal::Single(d)) => d,
        Some(VectorStructInternal::Named(mut m)) => match m.remove("") {
            Some(VectorInternal::Dense(d)) => d,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn point_of(
    id: PointId,
    payload: Option<Payload>,
    vector: Option<VectorStructInternal>,
) -> Result<MemoryPoint> {
    let id = uuid_of(id)?;
    let map = payload.map(|p| p.0).unwrap_or_default();
    let payload: PointPayload = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| err(format!("point {id}: payload: {e}")))?;
    Ok(MemoryPoint {
        id,
        payload,
        vector: dense_of(vector),
    })
}

impl VectorStore for EdgeStore {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, points: Vec<MemoryPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        for p in &points {
            p.validate(self.dim)?;
        }
        let list = points
            .into_iter()
            .map(|p| {
                PointStruct::new(PointId::Uuid(p.id), p.vector, payload_json(&p.payload)).into()
            })
            .collect();
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(list)),
            ))
            .map_err(err)?;
        // qdrant-edge 0.7.2 writes the WAL but does not replay it on load: only flushed
        // segments survive a killed process (tests/memory.rs shows points lost otherwise).
        // Flushing here makes a returned upsert a committed one; batch writes to amortise it.
        self.shard.flush();
        Ok(())
    }

    fn search(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &PayloadFilter,
        exact: bool,
    ) -> Result<Vec<ScoredPoint>> {
        check_query(vector, self.dim, limit)?;
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(vector.to_vec())),
            filter: to_filter(filter),
            params: Some(SearchParams {
                hnsw_ef: Some(SEARCH_EF.max(limit)),
                exact,
                ..Default::default()
            }),
            limit,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: None,
        };
        self.shard
            .search(request)
            .map_err(err)?
            .into_iter()
            .map(|sp| {
                Ok(ScoredPoint {
                    point: point_of(sp.id, sp.payload, None)?,
                    score: sp.score,
                })
            })
            .collect()
    }

    fn get(&self, id: Uuid) -> Result<MemoryPoint> {
        let mut found = self
            .shard
            .retrieve(
                &[PointId::Uuid(id)],
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(true)),
            )
            .map_err(err)?;
        let r = found.pop().ok_or_else(|| MemoryError::NotFound {
            store: "long-term",
            id: id.to_string(),
        })?;
        point_of(r.id, r.payload, r.vector)
    }

    fn delete(&mut self, id: Uuid) -> Result<()> {
        self.get(id)?;
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints {
                    ids: vec![PointId::Uuid(id)],
                },
            ))
            .map_err(err)?;
        self.shard.flush();
        Ok(())
    }

    fn count(&self) -> Result<usize> {
        self.shard
            .count(qdrant_edge::CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(err)
    }

    fn scroll(
        &self,
        from: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<(Vec<MemoryPoint>, Option<Uuid>)> {
        let (records, next) = self
            .shard
            .scroll(ScrollRequest {
                offset: from.map(PointId::Uuid),
                limit: Some(limit.max(1)),
                filter: None,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(with_vectors),
                order_by: None,
            })
            .map_err(err)?;
        let points = records
            .into_iter()
            .map(|r| point_of(r.id, r.payload, r.vector))
            .collect::<Result<Vec<_>>>()?;
        Ok((points, next.map(uuid_of).transpose()?))
    }

    fn flush(&mut self) -> Result<()> {
        self.shard.flush();
        Ok(())
    }

    fn optimize(&mut self) -> Result<()> {
        self.shard.optimize().map_err(err)?;
        Ok(())
    }

    fn stats(&self) -> Result<VectorStats> {
        let info = self.shard.info();
        Ok(VectorStats {
            backend: "qdrant-edge (embedded)".into(),
            location: self.dir.display().to_string(),
            points: self.count()?,
            vector_size: self.dim,
            indexed: Some(info.indexed_vectors_count),
        })
    }
}
