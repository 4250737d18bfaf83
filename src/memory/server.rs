//! [`ServerStore`]: long-term memory in a Qdrant server or cluster, through `qdrant-client`
//! (gRPC). Chosen with `--qdrant-url` / `THAU_QDRANT_URL` (`memory.qdrant_url` in
//! `thau.toml`); the collection is created on first use from
//! `memory-schema/collection.json` (vector size, distance, shard number, replication and
//! write-consistency factors, payload indexes).
//!
//! The client is async; the store owns a small tokio runtime of its own and waits on it
//! through a channel, so it can be called from any thread — including an actix arbiter,
//! which is itself inside a runtime where `block_on` would panic.

use std::future::Future;
use std::time::Duration;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, vector_output::Vector as OutVector, Condition, CountPointsBuilder,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance,
    FieldType, Filter, GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder,
    Range, ScrollPointsBuilder, SearchParamsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
    VectorsOutput,
};
use qdrant_client::{Payload, Qdrant};
use uuid::Uuid;

use super::edge::SEARCH_EF;
use super::vector::{
    check_query, CollectionSpec, MemoryPoint, PayloadFilter, PointPayload, ScoredPoint,
    VectorStats, VectorStore,
};
use super::{MemoryError, Result};

/// How long one request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Vector(e.to_string())
}

/// A collection on a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    runtime: tokio::runtime::Runtime,
    spec: CollectionSpec,
    url: String,
}

impl ServerStore {
    /// Connects to `url` and makes sure the collection of `spec` exists (creating it and
    /// its payload indexes if not). A collection of another vector size is an error.
    pub fn connect(url: &str, spec: CollectionSpec) -> Result<ServerStore> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("thau-qdrant")
            .enable_all()
            .build()
            .map_err(|e| MemoryError::io("<tokio runtime>", e))?;
        let client = Qdrant::from_url(url)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .map_err(|e| err(format!("{url}: {e}")))?;
        let store = ServerStore {
            client,
            runtime,
            spec,
            url: url.to_string(),
        };
        store.ensure_collection()?;
        Ok(store)
    }

    /// Runs a future on the store's runtime and waits for it from this thread.
    fn call<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| err(format!("{}: the request was dropped", self.url)))?
    }

    fn ensure_collection(&self) -> Result<()> {
        let client = self.client.clone();
        let spec = self.spec.clone();
        let url = self.url.clone();
        self.call(async move {
            let name = spec.name.clone();
            if client
                .collection_exists(&name)
                .await
                .map_err(|e| err(format!("{url}: {e}")))?
            {
                let info = client.collection_info(&name).await.map_err(err)?;
                let size = info
                    .result
                    .and_then(|r| r.config)
                    .and_then(|c| c.params)
                    .and_then(|p| p.vectors_config)
                    .and_then(|v| match v.config {
                        Some(qdrant_client::qdrant::vectors_config::Config::Params(p)) => {
                            Some(p.size as usize)
                        }
                        _ => None,
                    });
                if size.is_some_and(|s| s != spec.vector_size) {
                    return Err(MemoryError::Unsupported(format!(
                        "{url}: collection `{name}` holds {}-value vectors, the embedder makes {}",
                        size.unwrap_or(0),
                        spec.vector_size
                    )));
                }
                return Ok(());
            }
            let distance = match spec.distance.as_str() {
                "cosine" => Distance::Cosine,
                "dot" => Distance::Dot,
                "euclid" => Distance::Euclid,
                other => {
                    return Err(MemoryError::Unsupported(format!(
                        "collection spec: unknown distance `{other}`"
                    )))
                }
            };
            client
                .create_collection(
                    CreateCollectionBuilder::new(&name)
                        .vectors_config(VectorParamsBuilder::new(spec.vector_size as u64, distance))
                        .shard_number(spec.shard_number)
                        .replication_factor(spec.replication_factor)
                        .write_consistency_factor(spec.write_consistency_factor),
                )
                .await
                .map_err(|e| err(format!("{url}: creating `{name}`: {e}")))?;
            for (field, kind) in &spec.payload_indexes {
                let ty = match kind.as_str() {
                    "keyword" => FieldType::Keyword,
                    "float" => FieldType::Float,
                    "datetime" => FieldType::Datetime,
                    "integer" => FieldType::Integer,
                    other => {
                        return Err(MemoryError::Unsupported(format!(
                            "collection spec: unknown index type `{other}` for `{field}`"
                        )))
                    }
                };
                client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(&name, field, ty).wait(true),
                    )
                    .await
                    .map_err(|e| err(format!("{url}: index on `{field}`: {e}")))?;
            }
            Ok(())
        })
    }

    /// Deletes the whole collection (used by the integration test to clean up).
    pub fn drop_collection(&self) -> Result<()> {
        let client = self.client.clone();
        let name = self.spec.name.clone();
        self.call(async move {
            client.delete_collection(name).await.map_err(err)?;
            Ok(())
        })
    }
}

fn to_filter(f: &PayloadFilter) -> Option<Filter> {
    if f.is_empty() {
        return None;
    }
    let mut must = Vec::new();
    if let Some(s) = &f.source {
        must.push(Condition::matches("source", s.clone()));
    }
    if let Some(m) = f.min_importance {
        must.push(Condition::range(
            "importance",
            Range {
                gte: Some(m as f64),
                ..Default::default()
            },
        ));
    }
    Some(Filter::must(must))
}

fn payload_of(p: &PointPayload) -> Result<Payload> {
    let v = serde_json::to_value(p).map_err(err)?;
    Payload::try_from(v).map_err(err)
}

fn uuid_of(id: Option<PointId>) -> Result<Uuid> {
    match id.and_then(|i| i.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(&s).map_err(err),
        Some(PointIdOptions::Num(n)) => Err(err(format!("point {n} has a numeric id"))),
        None => Err(err("point without id")),
    }
}

fn point_of(
    id: Option<PointId>,
    payload: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
    vectors: Option<VectorsOutput>,
) -> Result<MemoryPoint> {
    let id = uuid_of(id)?;
    let map: serde_json::Map<String, serde_json::Value> = payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect();
    let payload: PointPayload = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| err(format!("point {id}: payload: {e}")))?;
    let vector = match vectors.and_then(|v| v.get_vector()) {
        Some(OutVector::Dense(d)) => d.data,
        _ => Vec::new(),
    };
    Ok(MemoryPoint {
        id,
        payload,
        vector,
    })
}

impl VectorStore for ServerStore {
    fn dim(&self) -> usize {
        self.spec.vector_size
    }

    fn upsert(&mut self, points: Vec<MemoryPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut list = Vec::with_capacity(points.len());
        for p in points {
            p.validate(self.dim())?;
            list.push(PointStruct::new(
                p.id.to_string(),
                p.vector,
                payload_of(&p.payload)?,
            ));
        }
        let client = self.client.clone();
        let name = self.spec.name.clone();
        self.call(async move {
            client
                .upsert_points(UpsertPointsBuilder::new(name, list).wait(true))
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn search(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &PayloadFilter,
        exact: bool,
    ) -> Result<Vec<ScoredPoint>> {
        check_query(vector, self.dim(), limit)?;
        let mut q = QueryPointsBuilder::new(&self.spec.name)
            .query(vector.to_vec())
            .limit(limit as u64)
            .with_payload(true)
            .params(
                SearchParamsBuilder::default()
                    .hnsw_ef(SEARCH_EF.max(limit) as u64)
                    .exact(exact),
            );
        if let Some(f) = to_filter(filter) {
            q = q.filter(f);
        }
        let client = self.client.clone();
        self.call(async move {
            let res = client.query(q).await.map_err(err)?;
            res.result
                .into_iter()
                .map(|sp| {
                    Ok(ScoredPoint {
                        point: point_of(sp.id, sp.payload, None)?,
                        score: sp.score,
                    })
                })
                .collect()
        })
    }

    fn get(&self, id: Uuid) -> Result<MemoryPoint> {
        let client = self.client.clone();
        let name = self.spec.name.clone();
        self.call(async move {
            let res = client
                .get_points(
                    GetPointsBuilder::new(name, vec![PointId::from(id.to_string())])
                        .with_payload(true)
                        .with_vectors(true),
                )
                .await
                .map_err(err)?;
            let p = res
                .result
                .into_iter()
                .next()
                .ok_or_else(|| MemoryError::NotFound {
                    store: "long-term",
                    id: id.to_string(),
                })?;
            point_of(p.id, p.payload, p.vectors)
        })
    }

    fn delete(&mut self, id: Uuid) -> Result<()> {
        self.get(id)?;
        let client = self.client.clone();
        let name = self.spec.name.clone();
        self.call(async move {
            client
                .delete_points(
                    DeletePointsBuilder::new(name)
                        .points(PointsIdsList {
                            ids: vec![PointId::from(id.to_string())],
                        })
                        .wait(true),
                )
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn count(&self) -> Result<usize> {
        let client = self.client.clone();
        let name = self.spec.name.clone();
        self.call(async move {
            let res = client
                .count(CountPointsBuilder::new(name).exact(true))
                .await
                .map_err(err)?;
            Ok(res.result.map_or(0, |r| r.count as usize))
        })
    }

    fn scroll(
        &self,
        from: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<(Vec<MemoryPoint>, Option<Uuid>)> {
        let mut req = ScrollPointsBuilder::new(&self.spec.name)
            .limit(limit.max(1) as u32)
            .with_payload(true)
            .with_vectors(with_vectors);
        if let Some(f) = from {
            req = req.offset(PointId::from(f.to_string()));
        }
        let client = self.client.clone();
        self.call(async move {
            let res = client.scroll(req).await.map_err(err)?;
            let points = res
                .result
                .into_iter()
                .map(|p| point_of(p.id, p.payload, p.vectors))
                .collect::<Result<Vec<_>>>()?;
            let next = res
                .next_page_offset
                .map(|id| uuid_of(Some(id)))
                .transpose()?;
            Ok((points, next))
        })
    }

    fn flush(&mut self) -> Result<()> {
        // Every write above waits for the server to apply it (`wait(true)`).
        Ok(())
    }

    fn optimize(&mut self) -> Result<()> {
        // The server runs its own optimizers in the background.
        Ok(())
    }

    fn stats(&self) -> Result<VectorStats> {
        Ok(VectorStats {
            backend: "qdrant server (qdrant-client)".into(),
            location: format!("{}/collections/{}", self.url, self.spec.name),
            points: self.count()?,
            vector_size: self.dim(),
            indexed: None,
        })
    }
}
