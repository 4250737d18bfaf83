//! The lexical half of long-term recall: [`LexicalIndex`], an SQLite FTS5 index (BM25) over
//! the texts of the long-term points, kept beside the vector store and searched with it
//! ([`super::long_term::LongTerm::recall`] fuses both rankings).
//!
//! Vectors built from hashed n-grams (or a small model's states) find paraphrases but blur
//! rare words — names, numbers, dates — which are what a question about a fact hinges on;
//! BM25 weighs exactly those. The index lives in `<home>/memory/lexical.sqlite` (WAL) for
//! either vector backend, and is rebuilt from the vector store when their counts differ
//! (an older data directory, or a store written by another process).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::vector::PayloadFilter;
use super::{MemoryError, Result};

/// File name under `<home>/memory/`.
pub const LEXICAL_DB: &str = "lexical.sqlite";
/// Most query words used (a pasted page is not a query).
const MAX_QUERY_WORDS: usize = 48;
/// What the index holds, kept in SQLite's `user_version`: an index of another format is
/// emptied on open, and [`super::long_term::LongTerm::with`] rebuilds it from the vectors.
/// 1 (or 0): the texts' words; 2: their search keys ([`crate::text::stems`]) with the
/// memories' other phrasings.
const INDEX_FORMAT: i64 = 2;

/// One lexical match: a point id and its BM25 relevance (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalHit {
    pub id: Uuid,
    pub bm25: f32,
}

/// A text to index.
#[derive(Debug, Clone, Copy)]
pub struct LexicalDoc<'a> {
    pub id: Uuid,
    pub text: &'a str,
    /// Other phrasings the document is found by (see
    /// [`super::vector::PointPayload::keys`]).
    pub keys: &'a [String],
    pub source: &'a str,
    pub importance: f32,
}

/// The FTS5 index of long-term texts.
pub struct LexicalIndex {
    conn: Connection,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex").finish()
    }
}

impl LexicalIndex {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<LexicalIndex> {
        let conn = super::episodic::open_wal(path)?;
        Self::init(conn)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory() -> Result<LexicalIndex> {
        Self::init(Connection::open_in_memory()?)
    }

    /// An index in memory of `texts`, each under the id of its position
    /// (`Uuid::from_u128(i)`; a hit's text is `texts[hit.id.as_u128() as usize]`).
    pub fn of_texts<S: AsRef<str>>(texts: &[S]) -> Result<LexicalIndex> {
        let mut index = Self::in_memory()?;
        let docs: Vec<LexicalDoc> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| LexicalDoc {
                id: Uuid::from_u128(i as u128),
                text: text.as_ref(),
                keys: &[],
                source: "",
                importance: 0.5,
            })
            .collect();
        index.upsert(&docs)?;
        Ok(index)
    }

    fn init(conn: Connection) -> Result<LexicalIndex> {
        // `docs` maps a point id to the FTS row (FTS5 rowids are integers). The FTS rows
        // hold search keys, folded and cut ([`crate::text::stems`]), so "nucleo" finds
        // "núcleo" and "ecosistema" finds "ecosistemas".
        let format: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if format != INDEX_FORMAT {
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS docs_fts; DROP TABLE IF EXISTS docs;
                 PRAGMA user_version = {INDEX_FORMAT};"
            ))?;
        }
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS docs (
                 seq INTEGER PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 source TEXT NOT NULL,
                 importance REAL NOT NULL);
             CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
                 text, tokenize = 'unicode61 remove_diacritics 2');",
        )?;
        Ok(LexicalIndex { conn })
    }

    /// Inserts or replaces documents (by id), in one transaction.
    pub fn upsert(&mut self, docs: &[LexicalDoc]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for d in docs {
            remove(&tx, d.id)?;
            tx.execute(
                "INSERT INTO docs (id, source, importance) VALUES (?1, ?2, ?3)",
                params![d.id.to_string(), d.source, d.importance],
            )?;
            let seq = tx.last_insert_rowid();
            let keys = std::iter::once(d.text)
                .chain(d.keys.iter().map(String::as_str))
                .flat_map(crate::text::stems)
                .collect::<Vec<_>>()
                .join(" ");
            tx.execute(
                "INSERT INTO docs_fts (rowid, text) VALUES (?1, ?2)",
                params![seq, keys],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes one document; whether it was there.
    pub fn delete(&mut self, id: Uuid) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let found = remove(&tx, id)?;
        tx.commit()?;
        Ok(found)
    }

    pub fn contains(&self, id: Uuid) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM docs WHERE id = ?1", [id.to_string()], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    pub fn count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM docs", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Empties the index (before a rebuild).
    pub fn clear(&mut self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM docs; DELETE FROM docs_fts;")?;
        Ok(())
    }

    /// The `limit` documents that best match the words of `query` by BM25, best first.
    /// `query` is plain text, never FTS5 syntax; a query with no searchable word (only
    /// punctuation or stop words) matches nothing.
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        filter: &PayloadFilter,
    ) -> Result<Vec<LexicalHit>> {
        let Some(expr) = match_expr(query) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.id, bm25(docs_fts) AS rank FROM docs_fts JOIN docs d ON d.seq = docs_fts.rowid
             WHERE docs_fts MATCH ?1
               AND (?2 IS NULL OR d.source = ?2)
               AND (?3 IS NULL OR d.importance >= ?3)
             ORDER BY rank LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![expr, filter.source, filter.min_importance, limit as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)),
        )?;
        let mut hits = Vec::new();
        for row in rows {
            let (id, rank) = row?;
            let id = Uuid::parse_str(&id)
                .map_err(|e| MemoryError::BadRecord(format!("lexical index id `{id}`: {e}")))?;
            // FTS5's bm25 is negative, more negative = better.
            hits.push(LexicalHit {
                id,
                bm25: (-rank) as f32,
            });
        }
        Ok(hits)
    }
}

fn remove(tx: &rusqlite::Transaction, id: Uuid) -> Result<bool> {
    let seq: Option<i64> = tx
        .query_row(
            "SELECT seq FROM docs WHERE id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(seq) = seq {
        tx.execute("DELETE FROM docs_fts WHERE rowid = ?1", [seq])?;
        tx.execute("DELETE FROM docs WHERE seq = ?1", [seq])?;
    }
    Ok(seq.is_some())
}

/// The words of `query` worth searching for, lower-cased, deduplicated, in order.
pub fn query_words(query: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in query.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.is_empty() || crate::text::STOP_WORDS.contains(&w.as_str()) || words.contains(&w) {
            continue;
        }
        words.push(w);
        if words.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    words
}

/// An FTS5 expression OR-ing the quoted search keys of `query`'s words; `None` when it
/// has none.
fn match_expr(query: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for w in query_words(query).iter().map(|w| crate::text::stem(w)) {
        if !words.contains(&w) {
            words.push(w);
        }
    }
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc<'a>(n: u128, text: &'a str, source: &'a str) -> LexicalDoc<'a> {
        LexicalDoc {
            id: Uuid::from_u128(n),
            text,
            keys: &[],
            source,
            importance: 0.5,
        }
    }

    #[test]
    fn a_search_finds_other_forms_of_its_words_and_a_memorys_other_phrasings() {
        let keys = ["How hot must water get to boil?".to_string()];
        let mut index = LexicalIndex::in_memory().unwrap();
        index
            .upsert(&[
                doc(1, "Steaming cooks food with vapour.", "a"),
                LexicalDoc {
                    keys: &keys,
                    ..doc(2, "Water turns to vapour at 100 degrees.", "b")
                },
                doc(3, "Los ecosistemas cambian.", "c"),
            ])
            .unwrap();
        let ids = |q: &str| -> Vec<u128> {
            index
                .search(q, 5, &PayloadFilter::default())
                .unwrap()
                .iter()
                .map(|h| h.id.as_u128())
                .collect()
        };
        assert_eq!(ids("boil"), vec![2], "found by its other phrasing's word");
        assert_eq!(
            ids("un ecosistema"),
            vec![3],
            "the singular finds the plural"
        );
        assert_eq!(ids("Ecosistemas")[0], 3);
    }

    #[test]
    fn an_index_of_an_older_format_is_emptied_to_be_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEXICAL_DB);
        {
            let mut index = LexicalIndex::open(&path).unwrap();
            index.upsert(&[doc(1, "water boils", "a")]).unwrap();
            index.conn.execute_batch("PRAGMA user_version = 1").unwrap();
        }
        let mut index = LexicalIndex::open(&path).unwrap();
        assert_eq!(index.count().unwrap(), 0);
        index.upsert(&[doc(1, "water boils", "a")]).unwrap();
        drop(index);
        let again = LexicalIndex::open(&path).unwrap();
        assert_eq!(again.count().unwrap(), 1, "an index of this format is kept");
    }

    #[test]
    fn bm25_ranks_the_passage_with_the_rare_words_first() {
        let mut ix = LexicalIndex::in_memory().unwrap();
        ix.upsert(&[
            doc(1, "The cell is the basic unit of life.", "cells.md"),
            doc(
                2,
                "Mitochondria release energy from food: the powerhouses of the cell.",
                "cells.md",
            ),
            doc(
                3,
                "Rivers carry water from the mountains to the sea.",
                "rivers.md",
            ),
        ])
        .unwrap();
        let hits = ix
            .search(
                "What are the powerhouses of the cell?",
                10,
                &PayloadFilter::default(),
            )
            .unwrap();
        assert_eq!(hits[0].id, Uuid::from_u128(2));
        assert_eq!(hits.len(), 2, "the river passage shares no searched word");
        // Accents are folded both ways.
        ix.upsert(&[doc(4, "El núcleo guarda el ADN.", "celulas.md")])
            .unwrap();
        let hits = ix.search("nucleo", 10, &PayloadFilter::default()).unwrap();
        assert_eq!(hits[0].id, Uuid::from_u128(4));
    }

    #[test]
    fn upsert_replaces_delete_removes_and_filters_apply() {
        let mut ix = LexicalIndex::in_memory().unwrap();
        ix.upsert(&[doc(1, "alpha beta", "a"), doc(2, "alpha gamma", "b")])
            .unwrap();
        ix.upsert(&[doc(1, "delta", "a")]).unwrap();
        assert_eq!(ix.count().unwrap(), 2);
        let f = PayloadFilter::default();
        assert_eq!(ix.search("alpha", 10, &f).unwrap().len(), 1);
        assert_eq!(
            ix.search("delta", 10, &f).unwrap()[0].id,
            Uuid::from_u128(1)
        );
        let only_a = PayloadFilter {
            source: Some("a".into()),
            min_importance: None,
        };
        assert!(ix.search("gamma", 10, &only_a).unwrap().is_empty());
        assert!(ix.delete(Uuid::from_u128(2)).unwrap());
        assert!(!ix.delete(Uuid::from_u128(2)).unwrap());
        assert!(ix.search("gamma", 10, &f).unwrap().is_empty());
        assert!(ix.contains(Uuid::from_u128(1)).unwrap());
    }

    #[test]
    fn queries_are_words_never_syntax() {
        let mut ix = LexicalIndex::in_memory().unwrap();
        ix.upsert(&[doc(1, "NEAR AND OR x", "a")]).unwrap();
        let f = PayloadFilter::default();
        for q in ["\"", "*", "NEAR(", "a OR", "¿?", "", "the of"] {
            ix.search(q, 5, &f).unwrap();
        }
        assert!(ix.search("¿? the of", 5, &f).unwrap().is_empty());
        assert_eq!(query_words("¿Qué es el Núcleo, el núcleo?"), vec!["núcleo"]);
    }
}
