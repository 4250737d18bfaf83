//! What a question asks of the memories in its prompt: for every row of an answer, a score
//! per position of the memory turn saying how much of the question's wording the text
//! around that position holds. The copy head adds it, times a learned weight, to its
//! pointer's scores ([`super::copy`], "reading"), so that the answer copies from the
//! memory line that matches the question rather than from any line that shares its last
//! word.
//!
//! This is the reader's "exact match" feature of DrQA (Chen et al. 2017, "Reading
//! Wikipedia to Answer Open-Domain Questions"), taken over the sentence a position starts
//! and the few tokens before it. A model trained from scratch for minutes cannot yet match
//! a question to the sentence that answers it through its attention layers; exact token matches are the signal it would
//! have to learn first, and here it has them from its first step. The model still
//! decides, through the pointer's own scores and the learned weight, where in the matched
//! text to start and whether to copy at all.
//!
//! Tokens are compared as words ([`Lexicon`]): case, accents and the leading space folded
//! away (" Water" matches "water"), stop words and punctuation left out (a shared "the" or
//! "?" says nothing about which sentence answers). The window runs to the end of the
//! position's sentence, so a sentence's first token scores everything the sentence says
//! and nothing of the next one. Measured before training on the 236 held-out questions
//! (BM25's best 3 passages, the copy taken from the best-scoring sentence start): 109 hold
//! the fact, against 94 with a fixed window of raw token ids (4 before, 12 after) and 114
//! for the retrieval-only baseline's best sentence.
//!
//! Decoding also uses the lexicon to hold an answer to the memory it copies: [`carry_on`]
//! ends an answer where its copied sentence does (and takes the next one when it refers
//! back), [`copy_extensions`] names the tokens that go on with a copy so that sampling can
//! favour them.
//!
//! It is a pure function of the token ids, the tokenizer's [`Lexicon`] and the chat
//! template (`<|system|>memories<|eot|><|user|>question<|eot|><|assistant|>answer`), so
//! training (whole windows) and decoding (a growing cache) compute the same scores.
//!
//! ```text
//! c(v)   = the word class of token v (none for stop words, punctuation, special tokens)
//! Q      = the distinct classes of the question's tokens
//! w(c)   = 1 / (occurrences of c in the memory turn)      a rare shared word counts more
//! s_j    = Σ w(c) over the distinct c ∈ Q in memory positions j−BEFORE .. end of j's sentence
//! o_j    = s_j / max_k s_k                                 in [0, 1]
//! ```

use std::collections::HashMap;
use std::ops::Range;

use super::tokenizer::{ThauTokenizer, ASSISTANT_ID as ASSISTANT, EOT_ID as EOT, SPECIAL_TOKENS};
use super::tokenizer::{SYSTEM_ID as SYSTEM, TOOL_ID as TOOL, USER_ID as USER};

/// Positions before a memory position that count towards its score: a few, so that the
/// words just before an answer span (its subject) count for its first token.
pub const READ_BEFORE: usize = 4;

const N_SPECIAL: u32 = SPECIAL_TOKENS.len() as u32;
/// A token that stands for no word.
const NO_WORD: u32 = u32::MAX;

/// What the reading knows of a tokenizer's tokens: the word each stands for (folded; none
/// for stop words, punctuation and special tokens), whether its text ends a sentence
/// (`.`, `?`, `!`, or the `-` that starts a memory line) and whether it starts with a
/// space and a capital (or a digit, `¿`, `¡`): a sentence starts after an end only at such
/// a token, as [`crate::memory::passages::sentences`] cuts them, so "0.2", "3.4" and
/// "3 p.m. is" do not split one. Built from the tokenizer ([`Lexicon::of`]) wherever a model is built
/// beside one. The empty lexicon (a model built without a tokenizer, as some tests do)
/// compares raw token ids and knows no sentence ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lexicon {
    word: Vec<u32>,
    ends: Vec<bool>,
    /// The token starts with a space and a capital, a digit, `¿` or `¡`.
    spaced: Vec<bool>,
    /// The token is one of [`crate::text::REFERRING_WORDS`] ("It", " Es").
    refers: Vec<bool>,
    /// The token holds a line break (memory lines are separate memories).
    breaks: Vec<bool>,
    /// The token ends a question (`?`).
    asks: Vec<bool>,
    /// The token's text, so that a span of tokens can be read as words (a word may be
    /// several tokens: "CMYK" is not one in a 4,096-token vocabulary).
    text: Vec<String>,
}

impl Lexicon {
    /// The lexicon of `tok`'s vocabulary.
    pub fn of(tok: &ThauTokenizer) -> Lexicon {
        let texts: Vec<String> = (0..tok.vocab_size() as u32)
            .map(|id| tok.decode(&[id]).unwrap_or_default())
            .collect();
        Lexicon::from_texts(&texts)
    }

    /// The lexicon of tokens whose texts are `texts`, in id order.
    pub fn from_texts<S: AsRef<str>>(texts: &[S]) -> Lexicon {
        let stop: Vec<String> = crate::text::STOP_WORDS
            .iter()
            .map(|w| crate::text::fold(w))
            .collect();
        let mut classes: HashMap<String, u32> = HashMap::new();
        let referring: Vec<String> = crate::text::REFERRING_WORDS
            .iter()
            .map(|w| crate::text::fold(w))
            .collect();
        let mut lex = Lexicon::default();
        for (id, text) in texts.iter().enumerate() {
            let text = text.as_ref();
            let folded = crate::text::fold(text.trim());
            let w = folded.trim_matches(|c: char| !c.is_alphanumeric());
            let special = id < N_SPECIAL as usize;
            lex.word
                .push(if special || w.is_empty() || stop.iter().any(|s| s == w) {
                    NO_WORD
                } else {
                    let next = classes.len() as u32;
                    *classes.entry(w.to_string()).or_insert(next)
                });
            lex.ends
                .push(!special && text.trim_end().ends_with(['.', '?', '!', '-']));
            let opens =
                text.trim_start().chars().next().is_some_and(|c| {
                    c.is_uppercase() || c.is_ascii_digit() || matches!(c, '¿' | '¡')
                });
            lex.spaced
                .push(text.starts_with(char::is_whitespace) && opens);
            lex.refers
                .push(!special && referring.iter().any(|r| r == folded.trim()));
            lex.breaks.push(special || text.contains('\n'));
            lex.asks.push(!special && text.trim_end().ends_with('?'));
            lex.text
                .push(if special { String::new() } else { text.into() });
        }
        lex
    }

    /// The text of `ids` (special tokens left out).
    fn read(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&t| self.text.get(t as usize))
            .map(String::as_str)
            .collect()
    }

    /// The word `id` stands for.
    fn word(&self, id: u32) -> Option<u32> {
        if id < N_SPECIAL {
            return None;
        }
        if self.word.is_empty() {
            return Some(id);
        }
        self.word
            .get(id as usize)
            .copied()
            .filter(|&w| w != NO_WORD)
    }

    /// Whether a sentence starts at `id` after `before`: `before` ends one and `id` is
    /// spaced from it and opens with a capital.
    fn starts(&self, before: u32, id: u32) -> bool {
        let ends = self.ends.get(before as usize).copied().unwrap_or(false);
        ends && self.spaced.get(id as usize).copied().unwrap_or(false)
    }
}

/// Tokens at the end of an answer that must be a run of the memory turn for the answer to
/// count as copying it there ([`carry_on`]): enough that a run shared by chance (a
/// "of the" after the answer's own words) is rare.
pub const COPY_RUN: usize = 4;
/// Sentences an answer is carried into past the one it copied.
pub const CARRIED_SENTENCES: usize = 1;

/// The memory an answer is carried on with ([`carry_on`]): the positions of the memory
/// turn to copy, to the end of their sentence, and whether they start a new sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carry {
    pub span: Range<usize>,
    pub new_sentence: bool,
}

/// Where an answer is about to end (its model chose the end of turn) while its last
/// [`COPY_RUN`] tokens copy a run of the memory turn, the rest of the memory it is carried
/// on with instead, to the end of a sentence:
/// - the rest of the copied sentence, when it goes on ("…where 3 p." of "3 p.m."; "It is
///   measured with a barometer" before its "."). The model that chose to copy a sentence
///   ends it where the memory does, not where its language head guessed;
/// - the memory's next sentence, when that sentence refers back to the copied one
///   ([`crate::text::refers_back`]: "…the Gregorian calendar." → "It was introduced in
///   1582."), or when the copied one is a question (what THAU learned is remembered as
///   "question answer"), for at most [`CARRIED_SENTENCES`] sentences (`carried` counts
///   those already taken).
///
/// The carried words are the memory's, copied whole: a young model pushed into a sentence
/// it did not choose loses its thread ("This is called Rust, eling."). Never past a line
/// break or a special token: each memory line is its own memory. Of several runs of the
/// memory the answer matches, the longest one counts (the first of equals). `None` (end
/// the answer) otherwise, and with the empty lexicon, which knows no sentences.
pub fn carry_on(memory: &[u32], answer: &[u32], lex: &Lexicon, carried: usize) -> Option<Carry> {
    if lex.word.is_empty() || answer.len() < COPY_RUN || memory.len() <= COPY_RUN {
        return None;
    }
    let tail = &answer[answer.len() - COPY_RUN..];
    // (matched length, last memory position of the run)
    let mut best: Option<(usize, usize)> = None;
    for e in COPY_RUN - 1..memory.len() - 1 {
        if &memory[e + 1 - COPY_RUN..=e] != tail {
            continue;
        }
        let len = (0..=e.min(answer.len() - 1))
            .take_while(|&k| memory[e - k] == answer[answer.len() - 1 - k])
            .count();
        if best.is_none_or(|b| len > b.0) {
            best = Some((len, e));
        }
    }
    let (_, e) = best?;
    let flag = |v: &[bool], t: u32| v.get(t as usize).copied().unwrap_or(false);
    let next = memory[e + 1];
    if lex.breaks.get(next as usize).copied().unwrap_or(true) {
        return None;
    }
    let new_sentence = lex.starts(memory[e], next);
    let answered = flag(&lex.refers, next) || flag(&lex.asks, memory[e]);
    if new_sentence && !(answered && carried < CARRIED_SENTENCES) {
        return None;
    }
    // The sentence runs to the next sentence start or line break.
    let end = (e + 2..memory.len())
        .find(|&b| lex.starts(memory[b - 1], memory[b]) || flag(&lex.breaks, memory[b]))
        .unwrap_or(memory.len());
    Some(Carry {
        span: e + 1..end,
        new_sentence,
    })
}

/// The tokens that go on copying the memory turn from the end of `answer` within a
/// sentence: those that follow, in the memory, the longest run of at least `min_run` of
/// the answer's last tokens that the memory holds (each distinct token once), unless they
/// start a new sentence or line — whether an answer goes on past its sentence is the
/// model's choice, and [`carry_on`]'s. Empty when no such run. Decoding favours them
/// ([`crate::model::generate::SamplingParams::copy_bias`]), so that a copy, once begun,
/// keeps to the memory's words.
pub fn copy_extensions(memory: &[u32], answer: &[u32], lex: &Lexicon, min_run: usize) -> Vec<u32> {
    let min_run = min_run.max(1);
    if answer.len() < min_run || memory.len() <= min_run {
        return Vec::new();
    }
    let last = answer[answer.len() - 1];
    let (mut best, mut out) = (0, Vec::new());
    for e in 0..memory.len() - 1 {
        if memory[e] != last {
            continue;
        }
        let len = (0..=e.min(answer.len() - 1))
            .take_while(|&k| memory[e - k] == answer[answer.len() - 1 - k])
            .count();
        if len < min_run || len < best {
            continue;
        }
        if len > best {
            (best, out) = (len, Vec::new());
        }
        let next = memory[e + 1];
        let breaks = lex.breaks.get(next as usize).copied().unwrap_or(false);
        if !out.contains(&next) && !breaks && !lex.starts(memory[e], next) {
            out.push(next);
        }
    }
    out
}

/// Where an answer to `question` starts copying `memory` (a memory turn's tokens): the
/// first token of the memory sentence that holds the most distinct words of the question
/// ([`crate::text::best_match`], the first of equals: memories come best first), or of
/// the sentence after it when that sentence is a question (what THAU studied and learned
/// is remembered as "question answer"). The retrieval-only baseline's choice
/// ([`crate::eval::score::best_sentence`]) made over tokens read as words: a sentence runs
/// from a sentence start or line break to the next, and none starts before the first line break (the header line of
/// [`crate::model::tokenizer::memory_block`]) when there is one. `None` when no
/// sentence shares a word with the question, and with the empty lexicon.
pub fn answer_start(memory: &[u32], question: &[u32], lex: &Lexicon) -> Option<usize> {
    if lex.word.is_empty() {
        return None;
    }
    let flag = |v: &[bool], t: u32| v.get(t as usize).copied().unwrap_or(false);
    // The memory block's header line ("Memories:") is no memory: the sentences start
    // after the first line break, where there is one.
    let first = memory
        .iter()
        .position(|&t| flag(&lex.breaks, t))
        .map_or(0, |b| b + 1);
    // The sentences' first positions, and the end of the memory.
    let mut starts: Vec<usize> = (first..memory.len())
        .filter(|&j| {
            !flag(&lex.breaks, memory[j])
                && (j == 0
                    || lex.starts(memory[j - 1], memory[j])
                    || flag(&lex.breaks, memory[j - 1]))
        })
        .collect();
    starts.push(memory.len());
    // Read as words, so that "CMYK" in four tokens is one word, and "boils" meets "boiling".
    let sentences: Vec<String> = starts
        .windows(2)
        .map(|w| lex.read(&memory[w[0]..w[1]]))
        .collect();
    let i = crate::text::best_match(&lex.read(question), &sentences)?;
    let asks = memory[..starts[i + 1]]
        .iter()
        .rev()
        .find(|&&t| !flag(&lex.breaks, t))
        .is_some_and(|&t| flag(&lex.asks, t));
    let next = starts[i + 1];
    let same_line = next < memory.len()
        && !memory[starts[i]..next]
            .iter()
            .any(|&t| flag(&lex.breaks, t));
    Some(if asks && same_line { next } else { starts[i] })
}

/// Whether `answer` is the whole memory sentence that starts at `start`: copied from its
/// first token to its end (the next sentence start, a line break, or the memory's end).
pub fn copied_whole(memory: &[u32], answer: &[u32], start: usize, lex: &Lexicon) -> bool {
    let end = start + answer.len();
    !answer.is_empty()
        && memory.get(start..end) == Some(answer)
        && (end == memory.len()
            || lex.starts(memory[end - 1], memory[end])
            || lex
                .breaks
                .get(memory[end] as usize)
                .copied()
                .unwrap_or(true))
}

/// The memory token that goes on an answer copying `memory` from `start` (its first
/// token for an empty answer), while every token of the answer is that copy; `None` once
/// the answer left it or the copy reaches the sentence's end (whether an answer goes on
/// past its sentence is the model's choice, and [`carry_on`]'s) or a line break.
pub fn from_start(memory: &[u32], answer: &[u32], start: usize, lex: &Lexicon) -> Option<u32> {
    let at = start + answer.len();
    if at >= memory.len() || memory[start..at] != *answer {
        return None;
    }
    let next = memory[at];
    let breaks = lex.breaks.get(next as usize).copied().unwrap_or(false);
    let ends = at > start && lex.starts(memory[at - 1], next);
    (!breaks && !ends).then_some(next)
}

/// The rows of one answer and what they read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The answer's rows: from its `<|assistant|>` marker (whose row predicts the first
    /// word) up to, not including, its end-of-turn token (or to the end of the ids).
    pub rows: Range<usize>,
    /// Position of the first token of the memory turn's text.
    pub memory_start: usize,
    /// `o_j` for the memory turn's positions, in order.
    pub scores: Vec<f32>,
}

impl Reading {
    /// `(position, score)` of the memory positions.
    pub fn positions(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.scores
            .iter()
            .enumerate()
            .map(|(k, &s)| (self.memory_start + k, s))
    }
}

/// Every answer in `ids` that follows a question with a memory turn before it, and the
/// scores its rows read. An answer whose question shares no word with the memory reads
/// nothing (no entry). A window that starts inside a turn ignores that turn.
pub fn readings(ids: &[u32], lex: &Lexicon) -> Vec<Reading> {
    let mut out = Vec::new();
    // The turn being read: its marker and where its text starts.
    let mut open: Option<(u32, usize)> = None;
    let mut memory: Option<Range<usize>> = None;
    // The last question and the memory turn that came before it.
    let mut asked: Option<(Range<usize>, Range<usize>)> = None;
    for (p, &id) in ids.iter().enumerate() {
        if id == EOT {
            match open.take() {
                Some((SYSTEM, start)) => memory = Some(start..p),
                Some((USER, start)) => asked = memory.clone().map(|m| (start..p, m)),
                Some((ASSISTANT, start)) => close(&mut out, start - 1, p),
                _ => {}
            }
        } else if id < N_SPECIAL && is_marker(id) {
            if let Some((ASSISTANT, start)) = open {
                // A turn that never closed (a cut window): its rows end here.
                close(&mut out, start - 1, p);
            }
            open = Some((id, p + 1));
            if id == ASSISTANT {
                if let Some((question, memory)) = &asked {
                    if let Some(scores) = scores(&ids[memory.clone()], &ids[question.clone()], lex)
                    {
                        out.push(Reading {
                            rows: p..p,
                            memory_start: memory.start,
                            scores,
                        });
                    }
                }
            }
        }
    }
    if let Some((ASSISTANT, start)) = open {
        close(&mut out, start - 1, ids.len());
    }
    out
}

/// The turn markers (`<|system|>`, `<|user|>`, `<|assistant|>`, `<|tool|>`).
fn is_marker(id: u32) -> bool {
    matches!(id, SYSTEM | USER | ASSISTANT | TOOL)
}

/// Sets the end of the rows of the reading that starts at `marker`, if there is one.
fn close(out: &mut [Reading], marker: usize, end: usize) {
    if let Some(r) = out.last_mut().filter(|r| r.rows.start == marker) {
        r.rows.end = end;
    }
}

/// `o_j` over `memory` for `question`; `None` when they share no word.
fn scores(memory: &[u32], question: &[u32], lex: &Lexicon) -> Option<Vec<f32>> {
    let words: Vec<Option<u32>> = memory.iter().map(|&v| lex.word(v)).collect();
    let mut count: HashMap<u32, usize> = HashMap::new();
    for &w in words.iter().flatten() {
        *count.entry(w).or_default() += 1;
    }
    let weight: HashMap<u32, f32> = question
        .iter()
        .filter_map(|&v| lex.word(v))
        .filter_map(|w| count.get(&w).map(|&n| (w, 1.0 / n as f32)))
        .collect();
    if weight.is_empty() {
        return None;
    }
    // end[j]: the first sentence start after j.
    let mut end = vec![memory.len(); memory.len()];
    let mut next = memory.len();
    for j in (0..memory.len()).rev() {
        end[j] = next;
        if j == 0 || lex.starts(memory[j - 1], memory[j]) {
            next = j;
        }
    }
    let mut seen: Vec<u32> = Vec::new();
    let raw: Vec<f32> = (0..memory.len())
        .map(|j| {
            seen.clear();
            let mut s = 0.0;
            for &w in words[j.saturating_sub(READ_BEFORE)..end[j]]
                .iter()
                .flatten()
            {
                if let Some(x) = weight.get(&w) {
                    if !seen.contains(&w) {
                        seen.push(w);
                        s += x;
                    }
                }
            }
            s
        })
        .collect();
    let max = raw.iter().copied().fold(0.0f32, f32::max);
    (max > 0.0).then(|| raw.into_iter().map(|s| s / max).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<|system|>memory<|eot|><|user|>question<|eot|><|assistant|>answer…`
    fn chat(memory: &[u32], question: &[u32], answer: &[u32], closed: bool) -> Vec<u32> {
        let mut ids = vec![SYSTEM];
        ids.extend_from_slice(memory);
        ids.extend([EOT, USER]);
        ids.extend_from_slice(question);
        ids.extend([EOT, ASSISTANT]);
        ids.extend_from_slice(answer);
        if closed {
            ids.push(EOT);
        }
        ids
    }

    /// Token texts for ids 0..200: the special tokens, `.` (10), `?` (9), " The" (20),
    /// " Water" (40), " water" (41), " It" (42), a line break (43), and a distinct
    /// capitalised word for every other id.
    fn lexicon() -> Lexicon {
        let texts: Vec<String> = (0..200)
            .map(|id| match id {
                0..=7 => format!("<|{id}|>"),
                9 => "?".into(),
                10 => ".".into(),
                20 => " The".into(),
                40 => " Water".into(),
                41 => " water".into(),
                42 => " It".into(),
                43 => "\n-".into(),
                _ => format!(" W{id}"),
            })
            .collect();
        Lexicon::from_texts(&texts)
    }

    #[test]
    fn the_lexicon_folds_words_and_leaves_out_stop_words_and_punctuation() {
        let texts: Vec<String> = (0..8)
            .map(|i| format!("<|{i}|>"))
            .chain([" Água", "agua", " the", "?", " y", " sea.", "-", " De"].map(String::from))
            .collect();
        let lex = Lexicon::from_texts(&texts);
        assert_eq!(lex.word(0), None);
        assert_eq!(
            lex.word(8),
            lex.word(9),
            "case, accents and the space fold away"
        );
        assert!(lex.word(8).is_some());
        for stop in [10, 11, 12, 15] {
            assert_eq!(lex.word(stop), None, "token {stop}");
        }
        assert!(lex.word(13).is_some() && lex.word(13) != lex.word(8));
        // After " sea.", "-" or "?" a spaced token starts a sentence; after a word, or
        // before an unspaced token ("3.4"), none does.
        assert!(lex.starts(13, 8) && lex.starts(14, 8) && lex.starts(11, 15));
        assert!(!lex.starts(8, 8) && !lex.starts(10, 8));
        assert!(!lex.starts(13, 9), "\"agua\" is not spaced");
        assert!(!lex.starts(13, 12), "\" y\" is not a capital");
        // A token past the table stands for nothing; without a table ids are words.
        assert_eq!(lex.word(500), None);
        assert_eq!(Lexicon::default().word(500), Some(500));
        assert_eq!(Lexicon::default().word(3), None);
    }

    #[test]
    fn the_answer_reads_the_memory_sentence_that_shares_the_questions_words() {
        // Three sentences of memory; the question shares 30 and 31 with the third, the
        // stop word " the" (20) with all of them, and "water" (as " Water") with the first.
        let mut memory = vec![20, 41, 51, 52, 10];
        memory.extend(100..136);
        memory.push(10);
        memory.extend([20, 30, 31, 53, 10]);
        let ids = chat(&memory, &[20, 40, 30, 31, 9], &[60, 61], true);
        let rs = readings(&ids, &lexicon());
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!(r.memory_start, 1);
        assert_eq!(r.scores.len(), memory.len());
        // Rows: the assistant marker and the two answer tokens, not the end of turn.
        let marker = ids.iter().position(|&x| x == ASSISTANT).unwrap();
        assert_eq!(r.rows, marker..marker + 3);
        // The third sentence's first token scores the most: both rare shared words follow.
        assert_eq!(r.scores[42], 1.0);
        assert_eq!(r.scores.iter().copied().fold(0.0, f32::max), 1.0);
        // The first sentence holds "water" only, as a different-cased token: half.
        assert!((r.scores[0] - 0.5).abs() < 1e-6, "{}", r.scores[0]);
        // The second sentence holds no shared word, and its window stops at its own end:
        // the third sentence's words do not count for it.
        assert_eq!(r.scores[6], 0.0);
        assert_eq!(r.scores[40], 0.0);
    }

    #[test]
    fn an_answer_ends_where_its_copied_sentence_does_and_takes_one_that_refers_back() {
        let lex = lexicon();
        let carry = |span: Range<usize>, new_sentence| Some(Carry { span, new_sentence });
        // "w100 w101 w102 w103. It w104 w105.\n- w106 w107 w108 w109. w110 w111."
        let memory = [
            100, 101, 102, 103, 10, 42, 104, 105, 10, 43, 106, 107, 108, 109, 10, 110, 111, 10,
        ];
        // Copying the first sentence, ended before its ".": the "." comes first.
        assert_eq!(
            carry_on(&memory, &[60, 100, 101, 102, 103], &lex, 0),
            carry(4..5, false)
        );
        // At its end, the next sentence refers back ("It"): it is taken whole, once.
        let whole = [100, 101, 102, 103, 10];
        assert_eq!(carry_on(&memory, &whole, &lex, 0), carry(5..9, true));
        assert_eq!(carry_on(&memory, &whole, &lex, CARRIED_SENTENCES), None);
        // Never into the next memory line, nor into a sentence that names its own subject.
        assert_eq!(carry_on(&memory, &[42, 104, 105, 10], &lex, 0), None);
        assert_eq!(carry_on(&memory, &[107, 108, 109, 10], &lex, 0), None);
        // Mid-sentence, the copy goes on to the sentence's end even after one was taken.
        assert_eq!(
            carry_on(&memory, &[10, 42, 104, 105], &lex, 1),
            carry(8..9, false)
        );
        assert_eq!(
            carry_on(&memory, &[43, 106, 107, 108], &lex, 1),
            carry(13..15, false)
        );
        // An answer of its own words, or too short a run, ends as the model chose.
        assert_eq!(carry_on(&memory, &[60, 61, 102, 103], &lex, 0), None);
        assert_eq!(carry_on(&memory, &[102, 103, 10], &lex, 0), None);
        // A copied question is answered by the sentence after it.
        let asked = [100, 101, 102, 103, 9, 104, 105, 10];
        assert_eq!(
            carry_on(&asked, &[100, 101, 102, 103, 9], &lex, 0),
            carry(5..8, true)
        );
        // The empty lexicon knows no sentences.
        assert_eq!(carry_on(&memory, &whole, &Lexicon::default(), 0), None);
        // Of two runs the answer matches, the longer one counts.
        let twice = [
            50, 100, 101, 102, 103, 10, 51, 52, 53, 100, 101, 102, 103, 44, 45, 10,
        ];
        assert_eq!(
            carry_on(&twice, &[53, 100, 101, 102, 103], &lex, 0),
            carry(13..16, false)
        );
        assert_eq!(
            carry_on(&twice, &[50, 100, 101, 102, 103], &lex, 0),
            carry(5..6, false)
        );
    }

    #[test]
    fn an_answer_starts_at_the_sentence_sharing_most_words_with_its_question() {
        let lex = lexicon();
        // "W109:\n- W100 W101 W102. W103 W101 W104.\n- W105 W106? W107 W108."
        let memory = [
            109, 43, 100, 101, 102, 10, 103, 101, 104, 10, 43, 105, 106, 9, 107, 108, 10,
        ];
        // Two words of the second sentence beat one of the first.
        assert_eq!(answer_start(&memory, &[101, 104, 60], &lex), Some(6));
        // Equals: the first (memories come best first); never the header line.
        assert_eq!(answer_start(&memory, &[101], &lex), Some(2));
        assert_eq!(answer_start(&memory, &[109, 101], &lex), Some(2));
        // A matching question is answered by the sentence after it.
        assert_eq!(answer_start(&memory, &[105, 106], &lex), Some(14));
        // Nothing shared, or no lexicon: no start.
        assert_eq!(answer_start(&memory, &[60, 61], &lex), None);
        assert_eq!(answer_start(&memory, &[101], &Lexicon::default()), None);
        // From a start, the copy goes on to its sentence's end and no further.
        assert_eq!(from_start(&memory, &[], 6, &lex), Some(103));
        assert_eq!(from_start(&memory, &[103, 101], 6, &lex), Some(104));
        assert_eq!(from_start(&memory, &[103, 101, 104], 6, &lex), Some(10));
        assert_eq!(from_start(&memory, &[103, 101, 104, 10], 6, &lex), None);
        // An answer that left the copy is not pushed back into it.
        assert_eq!(from_start(&memory, &[103, 60], 6, &lex), None);
    }

    #[test]
    fn the_answering_sentence_is_found_by_words_not_by_tokens() {
        let texts: Vec<String> = (0..8)
            .map(|i| format!("<|{i}|>"))
            .chain(
                [
                    "\n-",
                    " CM",
                    "YK",
                    " temperature",
                    " temperatures",
                    ".",
                    " Red",
                    " Blue",
                ]
                .map(String::from),
            )
            .collect();
        let lex = Lexicon::from_texts(&texts);
        // "\n- CM Red. Blue CMYK temperature."
        let memory = [8, 9, 14, 13, 15, 9, 10, 11, 13];
        // "CMYK" in two tokens is one word, which the first sentence's "CM" is not.
        assert_eq!(answer_start(&memory, &[9, 10], &lex), Some(4));
        assert_eq!(answer_start(&memory, &[9], &lex), Some(1));
        // Another form of a word, another token, the same search key.
        assert_eq!(answer_start(&memory, &[12], &lex), Some(4));
    }

    #[test]
    fn a_copy_goes_on_with_what_follows_the_longest_run_it_matches() {
        let lex = lexicon();
        let memory = [
            101, 102, 103, 109, 105, 102, 103, 107, 102, 103, 108, 10, 111, 10, 43,
        ];
        let ext = |answer: &[u32]| copy_extensions(&memory, answer, &lex, 2);
        // "102 103" is followed by 109, 107 and 108; "105 102 103" only by 107.
        assert_eq!(ext(&[102, 103]), vec![109, 107, 108]);
        assert_eq!(ext(&[105, 102, 103]), vec![107]);
        assert_eq!(ext(&[106, 102, 103]), vec![109, 107, 108]);
        // The end of a sentence is followed by nothing to favour: the next sentence or line.
        assert_eq!(ext(&[108, 10]), Vec::<u32>::new());
        assert_eq!(ext(&[111, 10]), Vec::<u32>::new());
        // Too short a run, nothing shared, or the memory's last token: nothing.
        assert!(ext(&[103]).is_empty());
        assert!(ext(&[104, 104]).is_empty());
        assert!(ext(&[10, 43]).is_empty());
    }

    #[test]
    fn only_answers_after_a_question_with_memory_read() {
        // No memory turn: nothing to read.
        let mut ids = vec![USER, 30, 31, EOT, ASSISTANT, 30, EOT];
        assert!(readings(&ids, &Lexicon::default()).is_empty());
        // A question that shares nothing with the memory reads nothing.
        assert!(readings(&chat(&[40, 41], &[30], &[40], true), &Lexicon::default()).is_empty());
        // An open answer (decoding) reads up to the end of the ids.
        let open = chat(&[30, 41], &[30], &[41], false);
        assert_eq!(readings(&open, &Lexicon::default())[0].rows.end, open.len());
        // The second question of a conversation reads the same memory turn.
        let mut memory = vec![30, 41];
        memory.extend(100..120);
        memory.push(43);
        ids = chat(&memory, &[30], &[41], true);
        ids.extend([USER, 43, EOT, ASSISTANT, 43]);
        let rs = readings(&ids, &Lexicon::default());
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[1].rows.end, ids.len());
        assert_ne!(rs[0].scores, rs[1].scores);
        // A window that starts inside the memory turn has no memory turn to read.
        let cut = &chat(&[30, 41], &[30], &[41], true)[2..];
        assert!(readings(cut, &Lexicon::default()).is_empty());
    }
}
