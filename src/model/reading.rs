//! What a question asks of the memories in its prompt: for every row of an answer, a score
//! per position of the memory turn saying how much of the question's wording the text
//! around that position holds. The copy head adds it, times a learned weight, to its
//! pointer's scores ([`super::copy`], "reading"), so that the answer copies from the
//! memory line that matches the question rather than from any line that shares its last
//! word.
//!
//! This is the reader's "exact match" feature of DrQA (Chen et al. 2017, "Reading
//! Wikipedia to Answer Open-Domain Questions"), taken over a window of tokens. A model
//! trained from scratch for minutes cannot yet match a question to the sentence that
//! answers it through its attention layers; exact token matches are the signal it would
//! have to learn first, and here it has them from its first step. The model still
//! decides, through the pointer's own scores and the learned weight, where in the matched
//! text to start and whether to copy at all.
//!
//! It is a pure function of the token ids and the chat template
//! (`<|system|>memories<|eot|><|user|>question<|eot|><|assistant|>answer`), so training
//! (whole windows) and decoding (a growing cache) compute the same scores.
//!
//! ```text
//! Q      = the distinct tokens of the question (special tokens left out)
//! w(v)   = 1 / (occurrences of v in the memory turn)      a rare shared token counts more
//! s_j    = Σ w(v) over the distinct v ∈ Q in memory positions j−BEFORE ..= j+AFTER
//! o_j    = s_j / max_k s_k                                 in [0, 1]
//! ```

use std::collections::HashMap;
use std::ops::Range;

use super::tokenizer::{ASSISTANT_ID as ASSISTANT, EOT_ID as EOT, SPECIAL_TOKENS};
use super::tokenizer::{SYSTEM_ID as SYSTEM, TOOL_ID as TOOL, USER_ID as USER};

/// Positions before a memory position that count towards its score: a few, so that the
/// words just before an answer span (its subject) count for its first token.
pub const READ_BEFORE: usize = 4;
/// Positions after it that count: about a short sentence's worth of tokens, so that the
/// first token of a sentence scores what the sentence goes on to say.
pub const READ_AFTER: usize = 12;

const N_SPECIAL: u32 = SPECIAL_TOKENS.len() as u32;

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
/// scores its rows read. An answer whose question shares no token with the memory reads
/// nothing (no entry). A window that starts inside a turn ignores that turn.
pub fn readings(ids: &[u32]) -> Vec<Reading> {
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
                    if let Some(scores) = scores(&ids[memory.clone()], &ids[question.clone()]) {
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

/// `o_j` over `memory` for `question`; `None` when they share no token.
fn scores(memory: &[u32], question: &[u32]) -> Option<Vec<f32>> {
    let mut count: HashMap<u32, usize> = HashMap::new();
    for &v in memory {
        *count.entry(v).or_default() += 1;
    }
    let weight: HashMap<u32, f32> = question
        .iter()
        .filter(|&&v| v >= N_SPECIAL)
        .filter_map(|&v| count.get(&v).map(|&n| (v, 1.0 / n as f32)))
        .collect();
    if weight.is_empty() {
        return None;
    }
    let mut seen: Vec<u32> = Vec::with_capacity(READ_BEFORE + READ_AFTER + 1);
    let raw: Vec<f32> = (0..memory.len())
        .map(|j| {
            seen.clear();
            let window =
                &memory[j.saturating_sub(READ_BEFORE)..(j + READ_AFTER + 1).min(memory.len())];
            let mut s = 0.0;
            for &v in window {
                if let Some(w) = weight.get(&v) {
                    if !seen.contains(&v) {
                        seen.push(v);
                        s += w;
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

    #[test]
    fn the_answer_reads_the_memory_line_that_shares_the_questions_rare_words() {
        // Two "sentences" of memory, 40 tokens apart; the question shares 30 and 31 with
        // the second and only the common token 20 with both.
        let mut memory = vec![20, 50, 51, 52];
        memory.extend(100..136);
        memory.extend([20, 30, 31, 53]);
        let ids = chat(&memory, &[20, 30, 31, 9], &[60, 61], true);
        let rs = readings(&ids);
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!(r.memory_start, 1);
        assert_eq!(r.scores.len(), memory.len());
        // Rows: the assistant marker and the two answer tokens, not the end of turn.
        let marker = ids.iter().position(|&x| x == ASSISTANT).unwrap();
        assert_eq!(r.rows, marker..marker + 3);
        // The second sentence's first token scores the most: all three shared tokens
        // follow it.
        assert_eq!(r.scores[40], 1.0);
        assert_eq!(r.scores.iter().copied().fold(0.0, f32::max), 1.0);
        // The first sentence holds only the token both share: a low score.
        assert!(r.scores[0] < 0.3, "{}", r.scores[0]);
        // Far from any shared token: nothing.
        assert_eq!(r.scores[20], 0.0);
    }

    #[test]
    fn only_answers_after_a_question_with_memory_read() {
        // No memory turn: nothing to read.
        let mut ids = vec![USER, 30, 31, EOT, ASSISTANT, 30, EOT];
        assert!(readings(&ids).is_empty());
        // A question that shares nothing with the memory reads nothing.
        assert!(readings(&chat(&[40, 41], &[30], &[40], true)).is_empty());
        // An open answer (decoding) reads up to the end of the ids.
        let open = chat(&[30, 41], &[30], &[41], false);
        assert_eq!(readings(&open)[0].rows.end, open.len());
        // The second question of a conversation reads the same memory turn.
        let mut memory = vec![30, 41];
        memory.extend(100..120);
        memory.push(43);
        ids = chat(&memory, &[30], &[41], true);
        ids.extend([USER, 43, EOT, ASSISTANT, 43]);
        let rs = readings(&ids);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[1].rows.end, ids.len());
        assert_ne!(rs[0].scores, rs[1].scores);
        // A window that starts inside the memory turn has no memory turn to read.
        let cut = &chat(&[30, 41], &[30], &[41], true)[2..];
        assert!(readings(cut).is_empty());
    }
}
