//! `thau status`: [`StatusReport`] gathers the health of the actors, the model on disk and
//! the stores of a data directory.

use serde::Serialize;

use crate::home::Home;
use crate::runtime::{ActorStatus, Runtime};

/// Everything `thau status` reports. The JSON form is documented in the README.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub home: String,
    pub initialised: bool,
    pub actors: Vec<ActorStatus>,
    pub model: ModelStatus,
    pub stores: StoreStatus,
}

/// The model as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Age of the newest checkpoint (the configured age when there is none).
    pub age: u32,
    /// Parameter count of the newest checkpoint, if any.
    pub params: Option<u64>,
    /// Directory of the newest checkpoint, if any.
    pub checkpoint: Option<String>,
}

/// Counts of what the data directory holds.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// Ages with a checkpoint directory.
    pub checkpoints: usize,
    /// Images produced by the ImageTool.
    pub images: usize,
    /// Saved actor state files.
    pub actor_states: usize,
}

fn count_entries(dir: &std::path::Path, keep: impl Fn(&std::path::Path) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| keep(&e.path()))
                .count()
        })
        .unwrap_or(0)
}

/// The newest checkpoint on disk, read from its `config.json` (the weights are not loaded).
fn model_status(home: &Home, age: u32) -> ModelStatus {
    let newest = crate::model::checkpoint::newest(&home.checkpoints())
        .ok()
        .flatten();
    let cfg = newest.as_ref().and_then(|dir| {
        let bytes = std::fs::read(dir.join(crate::model::checkpoint::CONFIG)).ok()?;
        serde_json::from_slice::<crate::model::ModelConfig>(&bytes).ok()
    });
    ModelStatus {
        age: cfg.as_ref().map_or(age, |c| c.age),
        params: cfg.as_ref().map(|c| c.param_count()),
        checkpoint: newest.map(|d| d.display().to_string()),
    }
}

/// Builds the report for a running runtime.
pub async fn report(rt: &Runtime) -> StatusReport {
    let home: &Home = &rt.home;
    StatusReport {
        home: home.root.display().to_string(),
        initialised: home.is_initialised(),
        actors: rt.status().await,
        model: model_status(home, rt.config.model.age),
        stores: StoreStatus {
            checkpoints: count_entries(&home.checkpoints(), |p| p.is_dir()),
            images: count_entries(&home.images(), |p| {
                p.extension().is_some_and(|x| x == "png")
            }),
            actor_states: count_entries(&home.runs().join("actors"), |p| {
                p.extension().is_some_and(|x| x == "json")
            }),
        },
    }
}
