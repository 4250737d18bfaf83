//! Open-book training items: a question asked with passages in its context — the one that
//! holds the answer and one that does not, in either order — answered with the reference
//! answer. Trained beside the closed-book items, they teach THAU to find the answer in its
//! recalled memories and copy it, which is how it answers in chat (see
//! [`crate::chat::with_memories`]: the same [`memory_block`] layout).
//!
//! [`Shelf`] holds the corpus cut into passages the way long-term memory cuts documents
//! ([`crate::memory::passages::split`]) and finds, for an item, the passage that holds its
//! answer (the most answer words) and the best-ranked other passage for its question
//! (BM25), as recall would rank it.

use std::collections::HashSet;

use super::source::{KnowledgeBase, KnowledgeItem};
use crate::eval::score::words;
use crate::memory::lexical::LexicalIndex;
use crate::memory::passages::split;
use crate::memory::vector::PayloadFilter;
use crate::memory::MemoryError;
use crate::model::data::Example;
use crate::model::tokenizer::{memory_block, Message, Role};

/// Most characters of memories in one open-book item: about the default recall budget of
/// 160 tokens, so training contexts are as long as the ones chat builds, and an item with
/// its question and answer fits a 256-token window.
pub const OPEN_BOOK_MEMORY_CHARS: usize = 560;
/// Candidates BM25 offers when looking for a distractor.
const DISTRACTOR_CANDIDATES: usize = 4;
/// A passage holds an item's answer when it has at least this share of the answer's words.
const GOLD_MIN_SHARE: f64 = 0.5;

/// The corpus as passages, searchable.
pub struct Shelf {
    passages: Vec<String>,
    words: Vec<HashSet<String>>,
    index: LexicalIndex,
}

impl Shelf {
    /// Cuts the corpus's passages as long-term memory does and indexes them.
    pub fn new(kb: &KnowledgeBase) -> Result<Shelf, MemoryError> {
        let mut passages: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for p in &kb.passages {
            for piece in split(&p.text) {
                if seen.insert(piece.text.clone()) {
                    passages.push(piece.text);
                }
            }
        }
        let index = LexicalIndex::of_texts(&passages)?;
        let words = passages
            .iter()
            .map(|p| words(p).into_iter().collect())
            .collect();
        Ok(Shelf {
            passages,
            words,
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The passage that holds `item`'s answer (most of its words), if one does.
    pub fn gold(&self, item: &KnowledgeItem) -> Option<usize> {
        let want: Vec<String> = words(&item.answer);
        if want.is_empty() {
            return None;
        }
        let (best, share) = self
            .words
            .iter()
            .enumerate()
            .map(|(i, have)| {
                let n = want.iter().filter(|w| have.contains(*w)).count();
                (i, n as f64 / want.len() as f64)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (share >= GOLD_MIN_SHARE).then_some(best)
    }

    /// The passages for `item`'s open-book example: the gold passage and the question's
    /// best other BM25 match, ordered by `gold_first`, within [`OPEN_BOOK_MEMORY_CHARS`]
    /// (the distractor is dropped when both do not fit). Empty without a gold passage.
    pub fn passages_for(&self, item: &KnowledgeItem, gold_first: bool) -> Vec<&str> {
        let Some(gold) = self.gold(item) else {
            return Vec::new();
        };
        let distractor = self
            .index
            .search(
                &item.question,
                DISTRACTOR_CANDIDATES,
                &PayloadFilter::default(),
            )
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.id.as_u128() as usize)
            .find(|&i| i != gold && i < self.passages.len());
        let g = self.passages[gold].as_str();
        match distractor.map(|d| self.passages[d].as_str()) {
            Some(d) if g.chars().count() + d.chars().count() <= OPEN_BOOK_MEMORY_CHARS => {
                if gold_first {
                    vec![g, d]
                } else {
                    vec![d, g]
                }
            }
            _ => vec![g],
        }
    }

    /// `item` asked with its passages in the context; `None` when no passage holds its
    /// answer. The gold passage's place follows a hash of the question and its answer, so
    /// neither position nor the question alone tells where the answer is (the same
    /// question with another answer may find it in the other place).
    pub fn example(&self, item: &KnowledgeItem) -> Option<Example> {
        let key = format!("{}\n{}", item.question, item.answer);
        let gold_first = super::source::fnv1a(key.as_bytes()).is_multiple_of(2);
        self.asked(item, gold_first)
    }

    /// `item` open-book with the gold passage in each place (one example when it has no
    /// distractor): what replay trains, so that reading the right passage — wherever
    /// recall put it — is what lowers the loss. Empty when no passage holds its answer.
    pub fn both_orders(&self, item: &KnowledgeItem) -> Vec<Example> {
        let mut out: Vec<Example> = [true, false]
            .into_iter()
            .filter_map(|first| self.asked(item, first))
            .collect();
        out.dedup_by(|a, b| a.text() == b.text());
        out
    }

    fn asked(&self, item: &KnowledgeItem, gold_first: bool) -> Option<Example> {
        let passages = self.passages_for(item, gold_first);
        (!passages.is_empty()).then(|| {
            Example::Chat(vec![
                Message::new(Role::System, memory_block(&passages)),
                Message::new(Role::User, item.question.clone()),
                Message::new(Role::Assistant, item.answer.clone()),
            ])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::source::Passage;

    fn kb() -> KnowledgeBase {
        let passage = |text: &str| Passage {
            topic: "t".into(),
            lang: "en".into(),
            source: "t.md".into(),
            text: text.into(),
        };
        KnowledgeBase {
            items: Vec::new(),
            passages: vec![
                passage("# Cells\n\nThe cell is the basic unit of every living thing.\n\nMitochondria release energy from food and are called the powerhouses of the cell."),
                passage("Rivers carry water from the mountains down to the sea, and the cell phone tower stands by the river."),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_item_sees_the_passage_with_its_answer_and_a_distractor() {
        let shelf = Shelf::new(&kb()).unwrap();
        assert_eq!(shelf.len(), 3);
        let item = KnowledgeItem::new(
            "t",
            "en",
            "Which part of the cell releases energy?",
            "Mitochondria release energy from food.",
            vec![],
        );
        let gold = shelf.passages_for(&item, true);
        assert_eq!(gold.len(), 2);
        assert!(gold[0].starts_with("Mitochondria"));
        assert!(!gold[1].starts_with("Mitochondria"));
        assert_eq!(shelf.passages_for(&item, false)[1], gold[0]);
        let Some(Example::Chat(ms)) = shelf.example(&item) else {
            panic!("an open-book example")
        };
        assert_eq!(ms[0].role, Role::System);
        assert!(ms[0].content.starts_with("Memories:\n- "));
        assert_eq!(ms[2].content, item.answer);
        // Replay asks it with the gold passage in each place.
        let both = shelf.both_orders(&item);
        assert_eq!(both.len(), 2);
        assert_ne!(both[0].text(), both[1].text());
        assert!(both
            .iter()
            .any(|e| e.text() == shelf.example(&item).unwrap().text()));
        // No passage holds this answer: no open-book item.
        let none = KnowledgeItem::new("t", "en", "q?", "Quasars are far away.", vec![]);
        assert!(shelf.example(&none).is_none());
        assert!(shelf.both_orders(&none).is_empty());
    }
}
