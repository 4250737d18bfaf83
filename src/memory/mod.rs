//! THAU's memory at three levels, as plain stores that the memory actors own and that
//! `thau memory` opens directly:
//!
//! - [`short_term::ShortTermStore`]: one window of recent turns per conversation, with a
//!   token budget counted by the model's own tokenizer; evicted turns become episodes.
//! - [`episodic::EpisodicStore`]: episodes in SQLite (WAL, migrations from `memory-schema/`,
//!   FTS5 full-text search ranked by relevance, importance and recency).
//! - [`vector::VectorStore`]: long-term memory as vectors with payloads, on embedded Qdrant
//!   ([`edge::EdgeStore`], the default) or a Qdrant server/cluster ([`server::ServerStore`]).
//! - [`embed::Embedder`]: text to vectors (hashed character n-grams by default, the THAU
//!   model's pooled hidden states, or a local sentence-transformer).
//! - [`lexical::LexicalIndex`]: SQLite FTS5 (BM25) over the long-term texts; with the
//!   vectors and the embedder it makes [`long_term::LongTerm`], whose recall fuses both.
//! - [`passages`]: documents cut into passages with content ids (`thau memory add`).
//! - [`recall`]: one ranked list merged from the three stores, and rank fusion;
//!   [`MemoryRecord`]: the JSONL line that `thau memory export/import` writes and reads.

pub mod bench;
pub mod edge;
pub mod embed;
pub mod episodic;
pub mod lexical;
pub mod long_term;
pub mod passages;
pub mod recall;
pub mod recall_bench;
pub mod server;
pub mod short_term;
pub mod vector;

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use episodic::{Episode, EpisodeKind};

/// File names under `<home>/memory/`.
pub const EPISODIC_DB: &str = "episodic.sqlite";
pub const VECTOR_DIR: &str = "vectors";
pub const SHORT_TERM_FILE: &str = "short_term.json";

/// The memory stores' settings: the `[memory]` section of `thau.toml` (see `thau memory --help` and `memory-schema/README.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Embedder for long-term memory: `hash`, `thau` or `bert:<dir>`.
    pub embedder: String,
    /// A Qdrant server or cluster for long-term memory (e.g. `http://localhost:6334`);
    /// empty: the embedded store in `<home>/memory/vectors`. `$THAU_QDRANT_URL` also sets it.
    pub qdrant_url: String,
    /// Token budget of one short-term conversation window.
    pub short_term_tokens: usize,
    /// Put the memories that best match each chat message into its prompt (a request's
    /// `"memory": false` turns it off for that turn).
    pub recall: bool,
    /// Most memories put into one prompt.
    pub recall_limit: usize,
    /// Most tokens the recalled memories may take in one prompt.
    pub recall_tokens: usize,
    /// Memories scoring below this (0..1, see `LongTerm::recall`) are left out.
    pub recall_min_score: f32,
    /// Slots for episodes (past conversations, learning events) found by full-text search,
    /// after long-term memories; 0 keeps episodes out of prompts.
    pub recall_episodes: usize,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            embedder: "hash".into(),
            qdrant_url: String::new(),
            short_term_tokens: short_term::DEFAULT_BUDGET_TOKENS,
            recall: true,
            recall_limit: 3,
            recall_tokens: 160,
            recall_min_score: 0.0,
            recall_episodes: 0,
        }
    }
}

pub use long_term::{LongTerm, NewMemory};

/// Opens the long-term store a configuration names (see [`LongTerm::open`]).
pub fn open_long_term(
    memory_dir: &Path,
    checkpoints: &Path,
    cfg: &MemorySection,
) -> Result<LongTerm> {
    LongTerm::open(memory_dir, checkpoints, cfg)
}

/// The three stores, as named on the command line (`--store short|episodic|long`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Short,
    Episodic,
    Long,
}

impl StoreKind {
    pub const ALL: [StoreKind; 3] = [StoreKind::Short, StoreKind::Episodic, StoreKind::Long];

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Short => "short",
            StoreKind::Episodic => "episodic",
            StoreKind::Long => "long",
        }
    }
}

/// What can go wrong in a memory store. Every variant names what the user can fix.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{store} memory has no entry `{id}`")]
    NotFound { store: &'static str, id: String },
    #[error("bad id `{id}`: {reason}")]
    BadId { id: String, reason: String },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("bad record: {0}")]
    BadRecord(String),
    #[error("{path}: the store is in use by another THAU process (stop `thau serve`/`thau learn` first)")]
    InUse { path: PathBuf },
    #[error("{0}")]
    Unsupported(String),
    #[error("episodic store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("vector store: {0}")]
    Vector(String),
    #[error("embedder: {0}")]
    Embed(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MemoryError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MemoryError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is the user's to fix (bad input) rather than a failure.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            MemoryError::NotFound { .. }
                | MemoryError::BadId { .. }
                | MemoryError::BadQuery(_)
                | MemoryError::BadRecord(_)
        )
    }
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;

/// Parses a user-given id as a UUID, with an error that says what was expected.
pub fn parse_id(id: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id.trim()).map_err(|e| MemoryError::BadId {
        id: id.to_string(),
        reason: format!("expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8 ({e})"),
    })
}

/// An exclusive advisory lock on a store directory, held while a process owns the store
/// (qdrant-edge allows one open shard per directory; two writers would corrupt it).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub const FILE: &'static str = ".thau.lock";

    /// Takes the lock of `dir` or fails at once with [`MemoryError::InUse`].
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        Self::acquire_named(dir, Self::FILE)
    }

    /// Takes the lock file `name` in `dir` (for stores that share a directory).
    pub fn acquire_named(dir: &Path, name: &str) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
        let path = dir.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| MemoryError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(MemoryError::InUse {
                path: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(MemoryError::io(&path, e)),
        }
    }
}

/// One line of a `thau memory export` file: any store's entry, tagged with its store, so
/// one file can carry all three and `thau memory import` puts each back where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum MemoryRecord {
    Short(short_term::ConversationTurn),
    Episodic(Episode),
    Long(vector::MemoryPoint),
}

impl MemoryRecord {
    pub fn store(&self) -> StoreKind {
        match self {
            MemoryRecord::Short(_) => StoreKind::Short,
            MemoryRecord::Episodic(_) => StoreKind::Episodic,
            MemoryRecord::Long(_) => StoreKind::Long,
        }
    }

    /// Parses one JSONL line, naming the line on error.
    pub fn parse_line(line: &str, line_no: usize) -> Result<MemoryRecord> {
        serde_json::from_str(line)
            .map_err(|e| MemoryError::BadRecord(format!("line {line_no}: {e}")))
    }
}
