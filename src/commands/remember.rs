//! Documents into a running THAU's long-term memory: [`remember_documents`] reads them
//! (cut into passages by [`crate::memory::passages`]), asks LongTermMemory which passages
//! it already holds, and memorises the others — what `thau learn --corpus` does before its
//! first question, so a document can be recalled into answers before any training.
//! `thau memory add` does the same on the stores directly, without a runtime.

use std::path::PathBuf;

use crate::actors::long_term_memory::{KnownMemories, Memorize};
use crate::actors::reply;
use crate::commands::memory::Added;
use crate::error::Result;
use crate::memory::passages;
use crate::runtime::Runtime;

/// Passages memorised per message (one embedding batch).
const BATCH: usize = 256;

/// Reads the documents under `paths` and memorises their new passages; unreadable
/// documents are refused with their reason. Without a LongTermMemory actor, nothing is
/// stored and nothing fails.
pub async fn remember_documents(rt: &Runtime, paths: &[PathBuf]) -> Result<Added> {
    let (memories, files, refused) = passages::read_all(paths)?;
    for r in &refused {
        tracing::warn!(path = %r.path.display(), reason = %r.reason, "document refused");
    }
    let passages = memories.len();
    let Some(long) = rt.addrs.long_term_memory.clone() else {
        return Ok(Added {
            files,
            passages,
            new: 0,
            known: 0,
            refused,
        });
    };
    let mut seen = std::collections::HashSet::new();
    let mut new = 0;
    for batch in memories.chunks(BATCH) {
        let ids: Vec<_> = batch.iter().filter_map(|m| m.id).collect();
        let known = reply("long_term_memory", long.send(KnownMemories(ids)).await)?;
        let fresh: Vec<_> = batch
            .iter()
            .zip(known)
            .filter(|(m, known)| !known && m.id.is_some_and(|id| seen.insert(id)))
            .map(|(m, _)| m.clone())
            .collect();
        if fresh.is_empty() {
            continue;
        }
        new += fresh.len();
        reply("long_term_memory", long.send(Memorize(fresh)).await)?;
    }
    Ok(Added {
        files,
        passages,
        new,
        known: passages - new,
        refused,
    })
}
