//! EpisodicMemory's store: [`EpisodicStore`], episodes ([`Episode`]) in SQLite.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: every committed transaction
//! survives the process being killed (a power loss may drop the last few). The schema comes
//! from the migrations in `memory-schema/` ([`MIGRATIONS`]), applied in order inside one
//! transaction each and recorded in `schema_version`, so opening a store twice changes
//! nothing. Search uses FTS5 (`bm25`) and re-ranks by [`SearchWeights`]: relevance,
//! importance and recency.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MemoryError, MemoryRecord, Result};

/// The schema migrations, in the order they are applied: (version, name, SQL).
pub const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "0001_episodes.sql",
    include_str!("../../memory-schema/0001_episodes.sql"),
)];

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// FTS candidates fetched before re-ranking by importance and recency.
const SEARCH_CANDIDATES: usize = 200;
/// Longest content an episode may hold (1 MiB): bigger inputs are a mistake, not a memory.
pub const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Most rows one `list` call returns.
pub const MAX_LIST: usize = 10_000;

/// What an episode records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    ChatTurn,
    Question,
    Answer,
    Gap,
    GapClosed,
    TrainingRun,
    Growth,
    ToolCall,
    Feedback,
}

impl EpisodeKind {
    pub const ALL: [EpisodeKind; 9] = [
        EpisodeKind::ChatTurn,
        EpisodeKind::Question,
        EpisodeKind::Answer,
        EpisodeKind::Gap,
        EpisodeKind::GapClosed,
        EpisodeKind::TrainingRun,
        EpisodeKind::Growth,
        EpisodeKind::ToolCall,
        EpisodeKind::Feedback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeKind::ChatTurn => "chat_turn",
            EpisodeKind::Question => "question",
            EpisodeKind::Answer => "answer",
            EpisodeKind::Gap => "gap",
            EpisodeKind::GapClosed => "gap_closed",
            EpisodeKind::TrainingRun => "training_run",
            EpisodeKind::Growth => "growth",
            EpisodeKind::ToolCall => "tool_call",
            EpisodeKind::Feedback => "feedback",
        }
    }
}

impl FromStr for EpisodeKind {
    type Err = MemoryError;
    fn from_str(s: &str) -> Result<Self> {
        EpisodeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = EpisodeKind::ALL.iter().map(|k| k.as_str()).collect();
                MemoryError::BadQuery(format!(
                    "unknown episode kind `{s}` (known: {})",
                    known.join(", ")
                ))
            })
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub id: Uuid,
    /// The conversation or learning session it belongs to.
    pub session: String,
    /// The actor that recorded it.
    pub actor: String,
    pub kind: EpisodeKind,
    pub content: String,
    /// Free-form JSON object (scores, topics, file names...).
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    /// 0 (trivial) to 1 (must not be forgotten).
    #[serde(default = "default_importance")]
    pub importance: f32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
fn default_importance() -> f32 {
    0.5
}

impl Episode {
    /// A new episode stamped now, with importance 0.5 and no metadata.
    pub fn new(
        session: impl Into<String>,
        actor: impl Into<String>,
        kind: EpisodeKind,
        content: impl Into<String>,
    ) -> Episode {
        let now = Utc::now();
        Episode {
            id: Uuid::new_v4(),
            session: session.into(),
            actor: actor.into(),
            kind,
            content: content.into(),
            metadata: empty_object(),
            importance: default_importance(),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn with_importance(mut self, importance: f32) -> Episode {
        self.importance = importance;
        self
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Episode {
        self.metadata = metadata;
        self
    }

    /// Checks what SQLite would otherwise reject with a less helpful message.
    pub fn validate(&self) -> Result<()> {
        if self.content.trim().is_empty() {
            return Err(MemoryError::BadRecord(format!(
                "episode {}: empty content",
                self.id
            )));
        }
        if self.content.len() > MAX_CONTENT_BYTES {
            return Err(MemoryError::BadRecord(format!(
                "episode {}: content of {} bytes exceeds {MAX_CONTENT_BYTES}",
                self.id,
                self.content.len()
            )));
        }
        if !(0.0..=1.0).contains(&self.importance) {
            return Err(MemoryError::BadRecord(format!(
                "episode {}: importance {} is outside 0..1",
                self.id, self.importance
            )));
        }
        if !self.metadata.is_object() {
            return Err(MemoryError::BadRecord(format!(
                "episode {}: metadata must be a JSON object",
                self.id
            )));
        }
        if self.session.is_empty() || self.actor.is_empty() {
            return Err(MemoryError::BadRecord(format!(
                "episode {}: session and actor must not be empty",
                self.id
            )));
        }
        Ok(())
    }

    fn from_row(row: &Row) -> rusqlite::Result<Episode> {
        let text = |i: usize| row.get::<_, String>(i);
        let bad = |i: usize, e: String| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        };
        let time = |i: usize| -> rusqlite::Result<DateTime<Utc>> {
            DateTime::parse_from_rfc3339(&text(i)?)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| bad(i, e.to_string()))
        };
        Ok(Episode {
            id: Uuid::parse_str(&text(0)?).map_err(|e| bad(0, e.to_string()))?,
            session: text(1)?,
            actor: text(2)?,
            kind: text(3)?
                .parse()
                .map_err(|e: MemoryError| bad(3, e.to_string()))?,
            content: text(4)?,
            metadata: serde_json::from_str(&text(5)?).map_err(|e| bad(5, e.to_string()))?,
            importance: row.get::<_, f64>(6)? as f32,
            created_at: time(7)?,
            updated_at: time(8)?,
        })
    }
}

const COLUMNS: &str =
    "id, session, actor, kind, content, metadata, importance, created_at, updated_at";

/// How search results are ranked: `score = relevance·w_rel + importance·w_imp +
/// recency·w_rec`, each term in 0..1. Relevance is `b/(1+b)` of FTS5's (negated) bm25;
/// recency halves every `half_life_hours`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SearchWeights {
    pub relevance: f32,
    pub importance: f32,
    pub recency: f32,
    pub half_life_hours: f32,
}

impl Default for SearchWeights {
    fn default() -> Self {
        SearchWeights {
            relevance: 0.6,
            importance: 0.25,
            recency: 0.15,
            half_life_hours: 24.0 * 7.0,
        }
    }
}

/// Filters shared by `list` and `search`.
#[derive(Debug, Clone, Default)]
pub struct EpisodeFilter {
    pub session: Option<String>,
    pub kind: Option<EpisodeKind>,
}

/// One search result and why it ranks where it does.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeHit {
    pub episode: Episode,
    pub score: f32,
    pub relevance: f32,
    pub recency: f32,
}

/// Counts for `thau memory stats`.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodicStats {
    pub path: PathBuf,
    pub episodes: u64,
    pub sessions: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    pub schema_version: u32,
    pub bytes: u64,
}

/// The SQLite episode store.
pub struct EpisodicStore {
    conn: Connection,
    path: PathBuf,
    pub weights: SearchWeights,
}

/// Opens (creating its directory if needed) the SQLite database at `path` in WAL mode,
/// which lets `thau memory` read while the runtime writes; an error if SQLite refuses WAL.
/// Shared by the episodic store and the lexical index.
pub(super) fn open_wal(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(MemoryError::Unsupported(format!(
            "{}: SQLite refused WAL mode (got `{mode}`)",
            path.display()
        )));
    }
    Ok(conn)
}

impl std::fmt::Debug for EpisodicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpisodicStore")
            .field("path", &self.path)
            .finish()
    }
}

impl EpisodicStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<EpisodicStore> {
        let conn = open_wal(path)?;
        // NORMAL keeps every commit across a process crash without an fsync per
        // transaction.
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
        let mut store = EpisodicStore {
            conn,
            path: path.to_path_buf(),
            weights: SearchWeights::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the migrations not yet recorded; returns the versions applied now.
    pub fn migrate(&mut self) -> Result<Vec<u32>> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TEXT NOT NULL)",
        )?;
        let mut applied = Vec::new();
        for &(version, name, sql) in MIGRATIONS {
            // IMMEDIATE: two processes opening a fresh store cannot both apply a migration.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let done: Option<u32> = tx
                .query_row(
                    "SELECT version FROM schema_version WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, Utc::now().to_rfc3339()],
                )?;
                applied.push(version);
            }
            tx.commit()?;
        }
        Ok(applied)
    }

    /// The highest schema version applied.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?)
    }

    /// Inserts an episode, or replaces the one with the same id.
    pub fn put(&mut self, episode: &Episode) -> Result<()> {
        self.put_many(std::slice::from_ref(episode))
    }

    /// Inserts or replaces episodes in one transaction: all are stored or none.
    pub fn put_many(&mut self, episodes: &[Episode]) -> Result<()> {
        for e in episodes {
            e.validate()?;
        }
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO episodes (id, session, actor, kind, content, metadata, importance,
                                       created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET
                     session = excluded.session, actor = excluded.actor, kind = excluded.kind,
                     content = excluded.content, metadata = excluded.metadata,
                     importance = excluded.importance, created_at = excluded.created_at,
                     updated_at = excluded.updated_at",
            )?;
            for e in episodes {
                stmt.execute(params![
                    e.id.to_string(),
                    e.session,
                    e.actor,
                    e.kind.as_str(),
                    e.content,
                    e.metadata.to_string(),
                    e.importance as f64,
                    e.created_at.to_rfc3339(),
                    e.updated_at.to_rfc3339(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The episode with this id.
    pub fn get(&self, id: Uuid) -> Result<Episode> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM episodes WHERE id = ?1"),
                [id.to_string()],
                Episode::from_row,
            )
            .optional()?
            .ok_or_else(|| MemoryError::NotFound {
                store: "episodic",
                id: id.to_string(),
            })
    }

    /// The newest episodes first, `offset` rows skipped.
    pub fn list(
        &self,
        filter: &EpisodeFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Episode>> {
        let (clause, args) = where_clause(filter, "");
        let sql = format!(
            "SELECT {COLUMNS} FROM episodes {clause} ORDER BY created_at DESC, seq DESC
             LIMIT {} OFFSET {}",
            limit.min(MAX_LIST),
            offset
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), Episode::from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Full-text search: episodes sharing words with `query`, best first.
    ///
    /// The query is plain text, never FTS5 syntax: its words are quoted and OR-ed, so any
    /// input is safe; a query with no word in it is a [`MemoryError::BadQuery`].
    pub fn search(
        &self,
        query: &str,
        filter: &EpisodeFilter,
        limit: usize,
    ) -> Result<Vec<EpisodeHit>> {
        let expr = fts_query(query)?;
        let (clause, mut args) = where_clause(filter, "e.");
        let clause = if clause.is_empty() {
            "WHERE episodes_fts MATCH ?".to_string()
        } else {
            format!("{clause} AND episodes_fts MATCH ?")
        };
        args.push(expr);
        let sql = format!(
            "SELECT e.id, e.session, e.actor, e.kind, e.content, e.metadata, e.importance,
                    e.created_at, e.updated_at, bm25(episodes_fts) AS rank
             FROM episodes_fts JOIN episodes e ON e.seq = episodes_fts.rowid
             {clause} ORDER BY rank LIMIT {SEARCH_CANDIDATES}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
            Ok((Episode::from_row(row)?, row.get::<_, f64>(9)?))
        })?;
        let now = Utc::now();
        let w = self.weights;
        let mut hits = Vec::new();
        for row in rows {
            let (episode, bm25) = row?;
            // FTS5's bm25 is negative, more negative = better.
            let b = (-bm25).max(0.0) as f32;
            let relevance = b / (1.0 + b);
            let age_h = (now - episode.created_at).num_seconds().max(0) as f32 / 3600.0;
            let recency = 0.5f32.powf(age_h / w.half_life_hours.max(1e-3));
            let score =
                w.relevance * relevance + w.importance * episode.importance + w.recency * recency;
            hits.push(EpisodeHit {
                episode,
                score,
                relevance,
                recency,
            });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        Ok(hits)
    }

    /// Deletes one episode; [`MemoryError::NotFound`] if there is none with this id.
    pub fn forget(&mut self, id: Uuid) -> Result<()> {
        let n = self
            .conn
            .execute("DELETE FROM episodes WHERE id = ?1", [id.to_string()])?;
        if n == 0 {
            return Err(MemoryError::NotFound {
                store: "episodic",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Deletes every episode of a session; returns how many.
    pub fn forget_session(&mut self, session: &str) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM episodes WHERE session = ?1", [session])?)
    }

    pub fn count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM episodes", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    pub fn stats(&self) -> Result<EpisodicStats> {
        let (episodes, sessions, oldest, newest): (i64, i64, Option<String>, Option<String>) =
            self.conn.query_row(
                "SELECT COUNT(*), COUNT(DISTINCT session), MIN(created_at), MAX(created_at)
                 FROM episodes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
        let mut by_kind = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT kind, COUNT(*) FROM episodes GROUP BY kind ORDER BY kind")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            by_kind.insert(k, n.max(0) as u64);
        }
        let parse = |s: Option<String>| {
            s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        Ok(EpisodicStats {
            path: self.path.clone(),
            episodes: episodes.max(0) as u64,
            sessions: sessions.max(0) as u64,
            by_kind,
            oldest: parse(oldest),
            newest: parse(newest),
            schema_version: self.schema_version()?,
            bytes,
        })
    }

    /// Writes every episode, oldest first, as [`MemoryRecord`] JSONL; returns the count.
    pub fn export(&self, out: &mut dyn Write) -> Result<usize> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM episodes ORDER BY seq"))?;
        let rows = stmt.query_map([], Episode::from_row)?;
        let mut n = 0;
        for row in rows {
            let line = serde_json::to_string(&MemoryRecord::Episodic(row?))
                .map_err(|e| MemoryError::BadRecord(e.to_string()))?;
            writeln!(out, "{line}").map_err(|e| MemoryError::io("<export>", e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Reads [`MemoryRecord`] JSONL and stores its episodic lines in one transaction
    /// (lines of other stores are skipped); a bad line aborts the import, naming the line,
    /// and stores nothing. Returns the number stored.
    pub fn import(&mut self, input: &mut dyn BufRead) -> Result<usize> {
        let mut episodes = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line.map_err(|e| MemoryError::io("<import>", e))?;
            if line.trim().is_empty() {
                continue;
            }
            if let MemoryRecord::Episodic(e) = MemoryRecord::parse_line(&line, i + 1)? {
                e.validate()
                    .map_err(|err| MemoryError::BadRecord(format!("line {}: {err}", i + 1)))?;
                episodes.push(e);
            }
        }
        self.put_many(&episodes)?;
        Ok(episodes.len())
    }
}

/// `WHERE ...` for a filter, with its arguments.
fn where_clause(filter: &EpisodeFilter, prefix: &str) -> (String, Vec<String>) {
    let mut conds = Vec::new();
    let mut args = Vec::new();
    if let Some(s) = &filter.session {
        conds.push(format!("{prefix}session = ?"));
        args.push(s.clone());
    }
    if let Some(k) = filter.kind {
        conds.push(format!("{prefix}kind = ?"));
        args.push(k.as_str().to_string());
    }
    if conds.is_empty() {
        (String::new(), args)
    } else {
        (format!("WHERE {}", conds.join(" AND ")), args)
    }
}

/// Turns plain text into a safe FTS5 expression: each word quoted, OR-ed.
fn fts_query(query: &str) -> Result<String> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(64)
        .map(|w| format!("\"{w}\""))
        .collect();
    if words.is_empty() {
        return Err(MemoryError::BadQuery(format!(
            "`{query}` has no word to search for"
        )));
    }
    Ok(words.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_query_quotes_words_and_rejects_empty() {
        assert_eq!(
            fts_query("¿Qué es AND \"x\"?").unwrap(),
            r#""Qué" OR "es" OR "AND" OR "x""#
        );
        assert!(matches!(fts_query(" *** "), Err(MemoryError::BadQuery(_))));
    }
}
