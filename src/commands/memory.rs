//! The work behind `thau memory stats|list|search|show|forget|export|import`: opens the
//! stores of a data directory directly ([`Stores`]) and returns plain serialisable results
//! for the command line to print as tables or JSON.
//!
//! SQLite (WAL) lets these commands read while the runtime runs. The embedded vector store
//! and the short-term windows admit one writer: while `thau serve`/`thau learn` hold them,
//! the commands that need them fail with a clear "in use" error instead of corrupting them.

use std::io::{BufRead, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::ThauConfig;
use crate::error::{Result, ThauError};
use crate::home::Home;
use crate::memory::episodic::{EpisodeFilter, EpisodicStats, EpisodicStore};
use crate::memory::recall::{merge, RecallHit};
use crate::memory::short_term::{ConversationTurn, ShortTermStore, WindowInfo};
use crate::memory::vector::{MemoryPoint, PayloadFilter, VectorStats};
use crate::memory::{
    open_long_term, parse_id, Episode, EpisodeKind, LongTerm, MemoryError, MemoryRecord, StoreKind,
    EPISODIC_DB, SHORT_TERM_FILE,
};

/// Points read per page when exporting the vector store.
const EXPORT_PAGE: usize = 512;
/// Points written per batch when importing.
const IMPORT_BATCH: usize = 256;

/// The stores of one data directory, opened on first use.
pub struct Stores<'a> {
    home: &'a Home,
    config: &'a ThauConfig,
    episodic: Option<EpisodicStore>,
    long: Option<LongTerm>,
}

impl<'a> Stores<'a> {
    pub fn new(home: &'a Home, config: &'a ThauConfig) -> Self {
        Stores {
            home,
            config,
            episodic: None,
            long: None,
        }
    }

    pub fn episodic(&mut self) -> Result<&mut EpisodicStore> {
        if self.episodic.is_none() {
            self.episodic = Some(EpisodicStore::open(&self.home.memory().join(EPISODIC_DB))?);
        }
        Ok(self.episodic.as_mut().expect("opened above"))
    }

    pub fn long(&mut self) -> Result<&mut LongTerm> {
        if self.long.is_none() {
            self.long = Some(open_long_term(
                &self.home.memory(),
                &self.home.checkpoints(),
                &self.config.memory,
            )?);
        }
        Ok(self.long.as_mut().expect("opened above"))
    }

    fn short_path(&self) -> std::path::PathBuf {
        self.home.memory().join(SHORT_TERM_FILE)
    }

    /// The short-term windows, read-only (safe while the runtime runs).
    pub fn short_read(&self) -> Result<ShortTermStore> {
        Ok(ShortTermStore::open_read_only(
            &self.short_path(),
            self.config.memory.short_term_tokens,
            crate::actors::short_term_memory::token_counter(&self.home.checkpoints()),
        )?)
    }

    /// The short-term windows for writing (fails while the runtime holds them).
    pub fn short_write(&self) -> Result<ShortTermStore> {
        Ok(ShortTermStore::open(
            &self.short_path(),
            self.config.memory.short_term_tokens,
            crate::actors::short_term_memory::token_counter(&self.home.checkpoints()),
        )?)
    }
}

fn stores_of(store: Option<StoreKind>) -> Vec<StoreKind> {
    store.map_or_else(|| StoreKind::ALL.to_vec(), |s| vec![s])
}

/// Short-term counts.
#[derive(Debug, Clone, Serialize)]
pub struct ShortStats {
    pub path: std::path::PathBuf,
    pub conversations: usize,
    pub turns: usize,
    pub tokens: usize,
    pub budget_tokens: usize,
    pub counted_by: String,
    pub windows: Vec<WindowInfo>,
}

/// What `thau memory stats` reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MemoryStats {
    pub short: Option<ShortStats>,
    pub episodic: Option<EpisodicStats>,
    pub long: Option<VectorStats>,
    pub embedder: Option<String>,
}

pub fn stats(stores: &mut Stores, store: Option<StoreKind>) -> Result<MemoryStats> {
    let mut out = MemoryStats::default();
    for s in stores_of(store) {
        match s {
            StoreKind::Short => {
                let st = stores.short_read()?;
                let windows = st.windows();
                out.short = Some(ShortStats {
                    path: stores.short_path(),
                    conversations: windows.len(),
                    turns: windows.iter().map(|w| w.turns).sum(),
                    tokens: windows.iter().map(|w| w.tokens).sum(),
                    budget_tokens: st.budget(),
                    counted_by: st.counter().describe(),
                    windows,
                });
            }
            StoreKind::Episodic => out.episodic = Some(stores.episodic()?.stats()?),
            StoreKind::Long => {
                let lt = stores.long()?;
                out.long = Some(lt.stats()?);
                out.embedder = Some(lt.embedder.name());
            }
        }
    }
    Ok(out)
}

/// One row of `thau memory list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListedItem {
    pub store: StoreKind,
    pub id: String,
    /// Conversation/session and kind, or the point's source.
    pub source: String,
    pub importance: Option<f32>,
    pub at: DateTime<Utc>,
    pub text: String,
}

/// What `thau memory list` shows: filters and paging.
#[derive(Debug, Clone, Default)]
pub struct ListArgs {
    pub limit: usize,
    pub offset: usize,
    pub session: Option<String>,
    pub kind: Option<String>,
}

pub fn list(
    stores: &mut Stores,
    store: Option<StoreKind>,
    args: &ListArgs,
) -> Result<Vec<ListedItem>> {
    let kind = args
        .kind
        .as_deref()
        .map(str::parse::<EpisodeKind>)
        .transpose()?;
    let mut out = Vec::new();
    for s in stores_of(store) {
        match s {
            StoreKind::Short => {
                let st = stores.short_read()?;
                out.extend(
                    st.turns()
                        .filter(|t| args.session.as_ref().is_none_or(|c| &t.conversation == c))
                        .map(|t| ListedItem {
                            store: StoreKind::Short,
                            id: t.conversation.clone(),
                            source: format!("conversation:{}/{}", t.conversation, role_name(t)),
                            importance: None,
                            at: t.at,
                            text: t.text.clone(),
                        }),
                );
            }
            StoreKind::Episodic => {
                let filter = EpisodeFilter {
                    session: args.session.clone(),
                    kind,
                };
                let eps = stores
                    .episodic()?
                    .list(&filter, args.limit + args.offset, 0)?;
                out.extend(eps.into_iter().map(|e| ListedItem {
                    store: StoreKind::Episodic,
                    id: e.id.to_string(),
                    source: format!("{}/{}", e.session, e.kind.as_str()),
                    importance: Some(e.importance),
                    at: e.created_at,
                    text: e.content,
                }));
            }
            StoreKind::Long => {
                let vs = &stores.long()?.vectors;
                let mut cursor = None;
                let want = args.limit + args.offset;
                let mut got = 0;
                loop {
                    let (page, next) = vs.scroll(cursor, EXPORT_PAGE.min(want.max(1)), false)?;
                    for p in page {
                        if args
                            .session
                            .as_ref()
                            .is_some_and(|s| &p.payload.source != s)
                        {
                            continue;
                        }
                        got += 1;
                        out.push(ListedItem {
                            store: StoreKind::Long,
                            id: p.id.to_string(),
                            source: p.payload.source,
                            importance: Some(p.payload.importance),
                            at: p.payload.created_at,
                            text: p.payload.text,
                        });
                    }
                    match next {
                        Some(n) if got < want => cursor = Some(n),
                        _ => break,
                    }
                }
            }
        }
    }
    out.sort_by_key(|i| std::cmp::Reverse(i.at));
    Ok(out.into_iter().skip(args.offset).take(args.limit).collect())
}

fn role_name(t: &ConversationTurn) -> String {
    serde_json::to_value(t.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `thau memory search`: one store, or all of them merged.
pub fn search(
    stores: &mut Stores,
    store: Option<StoreKind>,
    query: &str,
    limit: usize,
    filter: &PayloadFilter,
) -> Result<Vec<RecallHit>> {
    if limit == 0 {
        return Err(ThauError::Invalid("--limit must be at least 1".into()));
    }
    let mut lists = Vec::new();
    for s in stores_of(store) {
        lists.push(match s {
            StoreKind::Short => stores
                .short_read()?
                .search(query, limit)?
                .into_iter()
                .map(|(t, score)| RecallHit::from_turn(t, score))
                .collect(),
            StoreKind::Episodic => stores
                .episodic()?
                .search(query, &EpisodeFilter::default(), limit)?
                .into_iter()
                .map(RecallHit::from_episode)
                .collect(),
            StoreKind::Long => stores
                .long()?
                .recall(query, limit, filter)?
                .into_iter()
                .map(RecallHit::from_point)
                .collect(),
        });
    }
    Ok(merge(lists, limit))
}

/// One entry in full, whichever store holds it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum Shown {
    Short {
        conversation: String,
        tokens: usize,
        turns: Vec<ConversationTurn>,
    },
    Episodic(Episode),
    Long(MemoryPoint),
}

/// `thau memory show ID`: a UUID is looked up in episodic then long-term memory; any other
/// id names a short-term conversation.
pub fn show(stores: &mut Stores, store: Option<StoreKind>, id: &str) -> Result<Shown> {
    let as_uuid = parse_id(id);
    for s in stores_of(store) {
        match (s, &as_uuid) {
            (StoreKind::Short, _) => {
                if let Some(w) = stores.short_read()?.window(id) {
                    return Ok(Shown::Short {
                        conversation: id.to_string(),
                        tokens: w.tokens,
                        turns: w.turns.iter().cloned().collect(),
                    });
                }
            }
            (StoreKind::Episodic, Ok(u)) => match stores.episodic()?.get(*u) {
                Ok(e) => return Ok(Shown::Episodic(e)),
                Err(MemoryError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            (StoreKind::Long, Ok(u)) => match stores.long()?.vectors.get(*u) {
                Ok(p) => return Ok(Shown::Long(p)),
                Err(MemoryError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            (_, Err(e)) if store.is_some() => {
                return Err(MemoryError::BadId {
                    id: id.to_string(),
                    reason: e.to_string(),
                }
                .into())
            }
            _ => {}
        }
    }
    Err(not_found(store, id))
}

fn not_found(store: Option<StoreKind>, id: &str) -> ThauError {
    MemoryError::NotFound {
        store: store.map_or("any", StoreKind::name),
        id: id.to_string(),
    }
    .into()
}

/// What `thau memory forget` removed.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    pub store: StoreKind,
    pub id: String,
    /// Entries removed (the turns of a conversation, else 1).
    pub removed: usize,
}

/// `thau memory forget ID`: deletes an episode, a vector point or a whole short-term
/// conversation (resolved as in [`show`]).
pub fn forget(stores: &mut Stores, store: Option<StoreKind>, id: &str) -> Result<Forgotten> {
    let found = show(stores, store, id)?;
    let removed = match &found {
        Shown::Short { conversation, .. } => stores.short_write()?.forget(conversation)?.len(),
        Shown::Episodic(e) => {
            stores.episodic()?.forget(e.id)?;
            1
        }
        Shown::Long(p) => {
            let lt = stores.long()?;
            lt.delete(p.id)?;
            lt.flush()?;
            1
        }
    };
    let store = match found {
        Shown::Short { .. } => StoreKind::Short,
        Shown::Episodic(_) => StoreKind::Episodic,
        Shown::Long(_) => StoreKind::Long,
    };
    Ok(Forgotten {
        store,
        id: id.to_string(),
        removed,
    })
}

/// Entries per store written or read by export/import.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Counts {
    pub short: usize,
    pub episodic: usize,
    pub long: usize,
}

/// `thau memory export`: JSONL of [`MemoryRecord`]s (long-term points with their vectors).
pub fn export_to(
    stores: &mut Stores,
    store: Option<StoreKind>,
    out: &mut dyn Write,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let line = |out: &mut dyn Write, r: &MemoryRecord| -> Result<()> {
        let s = serde_json::to_string(r).map_err(|e| ThauError::Runtime(e.to_string()))?;
        writeln!(out, "{s}").map_err(|e| ThauError::io("<export>", e))
    };
    for s in stores_of(store) {
        match s {
            StoreKind::Short => {
                for t in stores.short_read()?.turns() {
                    line(out, &MemoryRecord::Short(t.clone()))?;
                    counts.short += 1;
                }
            }
            StoreKind::Episodic => counts.episodic = stores.episodic()?.export(out)?,
            StoreKind::Long => {
                let vs = &stores.long()?.vectors;
                let mut cursor = None;
                loop {
                    let (page, next) = vs.scroll(cursor, EXPORT_PAGE, true)?;
                    for p in page {
                        line(out, &MemoryRecord::Long(p))?;
                        counts.long += 1;
                    }
                    match next {
                        Some(n) => cursor = Some(n),
                        None => break,
                    }
                }
            }
        }
    }
    Ok(counts)
}

/// What `thau memory add` stored.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// Documents read.
    pub files: usize,
    /// Passages they (and the text given) hold.
    pub passages: usize,
    /// Passages stored now.
    pub new: usize,
    /// Passages already in memory (read before), left as they were.
    pub known: usize,
    /// Documents that could not be read, with the reason; the others were stored.
    pub refused: Vec<crate::memory::passages::Refused>,
}

/// `thau memory add [TEXT] [--file PATH]...`: splits the text and the documents (files,
/// or the `.md`/`.txt` files of directories) into passages and stores the ones long-term
/// memory does not hold yet. A document that is empty, binary, not UTF-8 or too large is
/// refused with its reason while the rest is stored; refusing everything is an error.
pub fn add(
    stores: &mut Stores,
    text: Option<&str>,
    files: &[std::path::PathBuf],
    source: Option<&str>,
) -> Result<Added> {
    use crate::memory::passages;
    let mut memories = Vec::new();
    if let Some(t) = text {
        if t.trim().is_empty() {
            return Err(ThauError::Invalid("the text to add is empty".into()));
        }
        memories.extend(passages::memories_of(t, source.unwrap_or("cli")));
    }
    if text.is_none() && files.is_empty() {
        return Err(ThauError::Invalid(
            "give a text to remember, or --file PATH".into(),
        ));
    }
    let (from_files, nfiles, refused) = passages::read_all(files)?;
    memories.extend(from_files);
    if memories.is_empty() {
        let why: Vec<String> = refused.iter().map(|r| r.reason.clone()).collect();
        return Err(ThauError::Invalid(format!(
            "nothing to add: {}",
            if why.is_empty() {
                "no .md or .txt document found".to_string()
            } else {
                why.join("; ")
            }
        )));
    }
    let passages = memories.len();
    let lt = stores.long()?;
    // New passages only: already stored, or twice in this input, are skipped.
    let mut seen = std::collections::HashSet::new();
    let mut fresh = Vec::new();
    for m in memories {
        let id = m.id.expect("passages carry content ids");
        if seen.insert(id) && !lt.contains(id)? {
            fresh.push(m);
        }
    }
    let new = fresh.len();
    for batch in fresh.chunks(IMPORT_BATCH) {
        lt.memorize(batch)?;
    }
    if new > 0 {
        lt.vectors.optimize()?;
        lt.flush()?;
    }
    Ok(Added {
        files: nfiles,
        passages,
        new,
        known: passages - new,
        refused,
    })
}

/// Writes an export to `path` atomically (a failed export leaves no partial file).
pub fn export_file(stores: &mut Stores, store: Option<StoreKind>, path: &Path) -> Result<Counts> {
    crate::fsutil::atomic_write_with(path, |w| {
        export_to(stores, store, w).map_err(|e| e.to_string())
    })
}

/// `thau memory import`: reads every line first (a bad line stops the import before
/// anything is written, naming the line), then stores each record where it belongs.
/// Long-term points whose vector does not fit the current embedder are embedded again.
pub fn import_from(
    stores: &mut Stores,
    store: Option<StoreKind>,
    input: &mut dyn BufRead,
) -> Result<Counts> {
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| ThauError::io("<import>", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = MemoryRecord::parse_line(&line, i + 1)?;
        if store.is_none_or(|s| s == r.store()) {
            if let MemoryRecord::Episodic(e) = &r {
                e.validate()
                    .map_err(|err| MemoryError::BadRecord(format!("line {}: {err}", i + 1)))?;
            }
            records.push(r);
        }
    }
    let mut counts = Counts::default();
    let (mut short, mut episodes, mut points) = (Vec::new(), Vec::new(), Vec::new());
    for r in records {
        match r {
            MemoryRecord::Short(t) => short.push(t),
            MemoryRecord::Episodic(e) => episodes.push(e),
            MemoryRecord::Long(p) => points.push(p),
        }
    }
    if !episodes.is_empty() {
        counts.episodic = episodes.len();
        stores.episodic()?.put_many(&episodes)?;
    }
    if !points.is_empty() {
        let lt = stores.long()?;
        let dim = lt.vectors.dim();
        for batch in points.chunks_mut(IMPORT_BATCH) {
            let stale: Vec<usize> = (0..batch.len())
                .filter(|&i| batch[i].vector.len() != dim)
                .collect();
            if !stale.is_empty() {
                let texts: Vec<&str> = stale
                    .iter()
                    .map(|&i| batch[i].payload.text.as_str())
                    .collect();
                for (&i, v) in stale.iter().zip(lt.embedder.embed(&texts)?) {
                    batch[i].vector = v;
                }
            }
            lt.upsert(batch.to_vec())?;
            counts.long += batch.len();
        }
        lt.flush()?;
    }
    if !short.is_empty() {
        let (n, evicted) = stores.short_write()?.import(short)?;
        counts.short = n;
        if !evicted.is_empty() {
            // Turns that no longer fit a window become episodes, as in the running system.
            let eps: Vec<Episode> = evicted
                .into_iter()
                .map(|t| {
                    let mut e =
                        Episode::new(&t.conversation, "import", EpisodeKind::ChatTurn, t.text);
                    e.created_at = t.at;
                    e
                })
                .collect();
            stores.episodic()?.put_many(&eps)?;
        }
    }
    Ok(counts)
}
