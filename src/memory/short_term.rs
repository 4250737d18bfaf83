//! ShortTermMemory's store: [`ShortTermStore`], one window of recent turns per
//! conversation ([`ConversationTurn`]), each window kept under a token budget.
//!
//! Tokens are counted by a [`TokenCounter`]: the model's own tokenizer once one exists
//! ([`ThauTokenizer`]), a word count before that ([`WordCounter`]). When a turn pushes a
//! window over budget the oldest turns are evicted and handed back to the caller, which
//! files them in episodic memory: nothing leaves short-term memory silently. The windows
//! are saved to one JSON file (atomically) after every change, so `thau memory` can read
//! them and a restart keeps them.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{MemoryError, Result};
use crate::model::tokenizer::{Message, Role, ThauTokenizer};

/// Default token budget of one window (a quarter of the smallest age's context).
pub const DEFAULT_BUDGET_TOKENS: usize = 256;
/// Longest conversation name accepted.
pub const MAX_CONVERSATION_NAME: usize = 128;

/// Counts tokens the way the model will see them.
pub trait TokenCounter: Send {
    fn count(&self, text: &str) -> usize;
    /// What counts the tokens, for status lines.
    fn describe(&self) -> String;
}

impl TokenCounter for ThauTokenizer {
    fn count(&self, text: &str) -> usize {
        // Encoding only fails on internal tokenizer errors; a word count is the fallback.
        self.encode(text)
            .map(|ids| ids.len())
            .unwrap_or_else(|_| WordCounter.count(text))
    }
    fn describe(&self) -> String {
        format!("model tokenizer ({} tokens)", self.vocab_size())
    }
}

/// Whitespace-separated words: the approximation used before a tokenizer has been trained.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count().max(1)
    }
    fn describe(&self) -> String {
        "word count (no tokenizer trained yet)".into()
    }
}

/// One turn held in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationTurn {
    pub conversation: String,
    pub role: Role,
    pub text: String,
    /// Tokens counted when the turn arrived.
    pub tokens: usize,
    pub at: DateTime<Utc>,
}

/// The turns of one conversation, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    pub turns: VecDeque<ConversationTurn>,
    pub tokens: usize,
}

impl Window {
    /// The window as chat messages, for building a prompt.
    pub fn messages(&self) -> Vec<Message> {
        self.turns
            .iter()
            .map(|t| Message::new(t.role, t.text.clone()))
            .collect()
    }
}

/// Summary of one window for `thau memory stats/list`.
#[derive(Debug, Clone, Serialize)]
pub struct WindowInfo {
    pub conversation: String,
    pub turns: usize,
    pub tokens: usize,
    pub last_at: Option<DateTime<Utc>>,
}

/// All windows, saved to `path`.
pub struct ShortTermStore {
    path: PathBuf,
    /// Held by a writable store: one writer per file (the actor, or `thau memory`).
    lock: Option<super::DirLock>,
    windows: BTreeMap<String, Window>,
    budget: usize,
    counter: Box<dyn TokenCounter>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    budget_tokens: usize,
    windows: BTreeMap<String, Window>,
}

impl ShortTermStore {
    /// Opens the windows saved at `path` (none if the file does not exist yet) for writing,
    /// taking its lock ([`MemoryError::InUse`] if another process has it).
    pub fn open(path: &Path, budget: usize, counter: Box<dyn TokenCounter>) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = format!(
            ".{}.lock",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let lock = super::DirLock::acquire_named(dir, &name)?;
        let mut store = Self::open_read_only(path, budget, counter)?;
        store.lock = Some(lock);
        Ok(store)
    }

    /// Opens the saved windows for reading only (no lock; [`Self::save`] fails).
    pub fn open_read_only(
        path: &Path,
        budget: usize,
        counter: Box<dyn TokenCounter>,
    ) -> Result<Self> {
        if budget == 0 {
            return Err(MemoryError::BadQuery(
                "short-term budget must be at least 1 token".into(),
            ));
        }
        let windows = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<Saved>(&bytes)
                    .map_err(|e| MemoryError::BadRecord(format!("{}: {e}", path.display())))?
                    .windows
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(MemoryError::io(path, e)),
        };
        Ok(ShortTermStore {
            path: path.to_path_buf(),
            lock: None,
            windows,
            budget,
            counter,
        })
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn counter(&self) -> &dyn TokenCounter {
        self.counter.as_ref()
    }

    /// Replaces the token counter (when a tokenizer becomes available).
    pub fn set_counter(&mut self, counter: Box<dyn TokenCounter>) {
        self.counter = counter;
    }

    /// Appends a turn; returns the turns evicted to keep the window within budget, oldest
    /// first. The newest turn always stays, even if alone it exceeds the budget.
    pub fn push(
        &mut self,
        conversation: &str,
        role: Role,
        text: &str,
    ) -> Result<Vec<ConversationTurn>> {
        check_conversation(conversation)?;
        let turn = ConversationTurn {
            conversation: conversation.to_string(),
            role,
            text: text.to_string(),
            tokens: self.counter.count(text),
            at: Utc::now(),
        };
        let evicted = self.insert(turn);
        self.save()?;
        Ok(evicted)
    }

    fn insert(&mut self, turn: ConversationTurn) -> Vec<ConversationTurn> {
        let w = self.windows.entry(turn.conversation.clone()).or_default();
        w.tokens += turn.tokens;
        w.turns.push_back(turn);
        let mut evicted = Vec::new();
        while w.tokens > self.budget && w.turns.len() > 1 {
            if let Some(old) = w.turns.pop_front() {
                w.tokens -= old.tokens;
                evicted.push(old);
            }
        }
        evicted
    }

    pub fn window(&self, conversation: &str) -> Option<&Window> {
        self.windows.get(conversation)
    }

    pub fn windows(&self) -> Vec<WindowInfo> {
        self.windows
            .iter()
            .map(|(name, w)| WindowInfo {
                conversation: name.clone(),
                turns: w.turns.len(),
                tokens: w.tokens,
                last_at: w.turns.back().map(|t| t.at),
            })
            .collect()
    }

    /// Every turn of every window (conversation order, then oldest first).
    pub fn turns(&self) -> impl Iterator<Item = &ConversationTurn> {
        self.windows.values().flat_map(|w| w.turns.iter())
    }

    /// Turns that share words with `query`, scored by the fraction of query words they
    /// contain (0..1), best first.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<(ConversationTurn, f32)>> {
        let wanted = words(query);
        if wanted.is_empty() {
            return Err(MemoryError::BadQuery(format!(
                "`{query}` has no word to search for"
            )));
        }
        let mut hits: Vec<_> = self
            .turns()
            .filter_map(|t| {
                let have = words(&t.text);
                let shared = wanted.iter().filter(|w| have.contains(*w)).count();
                (shared > 0).then(|| (t.clone(), shared as f32 / wanted.len() as f32))
            })
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.at.cmp(&a.0.at)));
        hits.truncate(limit);
        Ok(hits)
    }

    /// Drops a whole window and returns its turns (for the caller to file as episodes).
    pub fn forget(&mut self, conversation: &str) -> Result<Vec<ConversationTurn>> {
        let w = self
            .windows
            .remove(conversation)
            .ok_or_else(|| MemoryError::NotFound {
                store: "short-term",
                id: conversation.to_string(),
            })?;
        self.save()?;
        Ok(w.turns.into())
    }

    /// Restores exported turns (keeping their token counts and times), evicting as usual;
    /// returns (turns stored, turns evicted on the way).
    pub fn import(
        &mut self,
        turns: Vec<ConversationTurn>,
    ) -> Result<(usize, Vec<ConversationTurn>)> {
        for t in &turns {
            check_conversation(&t.conversation)?;
        }
        let n = turns.len();
        let evicted = turns.into_iter().flat_map(|t| self.insert(t)).collect();
        self.save()?;
        Ok((n, evicted))
    }

    /// Writes the windows to disk atomically.
    pub fn save(&self) -> Result<()> {
        if self.lock.is_none() {
            return Err(MemoryError::Unsupported(format!(
                "{}: opened read-only",
                self.path.display()
            )));
        }
        let saved = Saved {
            budget_tokens: self.budget,
            windows: self.windows.clone(),
        };
        let bytes =
            serde_json::to_vec(&saved).map_err(|e| MemoryError::BadRecord(e.to_string()))?;
        crate::fsutil::atomic_write(&self.path, &bytes).map_err(|e| match e {
            crate::ThauError::Io { path, source } => MemoryError::io(path, source),
            other => MemoryError::BadRecord(other.to_string()),
        })
    }
}

fn check_conversation(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > MAX_CONVERSATION_NAME {
        return Err(MemoryError::BadId {
            id: name.to_string(),
            reason: format!("a conversation name has 1 to {MAX_CONVERSATION_NAME} characters"),
        });
    }
    Ok(())
}

/// Lower-cased words, for overlap scoring.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_evicts_oldest_and_keeps_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("st.json");
        let mut st = ShortTermStore::open(&path, 5, Box::new(WordCounter)).unwrap();
        assert!(st
            .push("c", Role::User, "one two three")
            .unwrap()
            .is_empty());
        let ev = st.push("c", Role::Assistant, "four five six").unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].text, "one two three");
        // A single turn over budget stays (alone).
        let ev = st.push("c", Role::User, "a b c d e f g h").unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(st.window("c").unwrap().turns.len(), 1);
        // Reopened from disk: same windows.
        let again = ShortTermStore::open_read_only(&path, 5, Box::new(WordCounter)).unwrap();
        assert!(matches!(
            ShortTermStore::open(&path, 5, Box::new(WordCounter)),
            Err(MemoryError::InUse { .. })
        ));
        assert_eq!(again.window("c").unwrap().tokens, 8);
    }
}
