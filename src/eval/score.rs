//! Scoring an answer the way a reader would: does it state the fact? [`contains_fact`]
//! looks for any `expect` span in the answer as whole words, case- and accent-folded, with
//! digit group separators ignored ("8,849" is "8849"; "rana" is not found in
//! "membrana"); [`token_f1`] is SQuAD's word-overlap F1 against a reference answer.
//! [`best_sentence`] is the retrieval-only baseline's answer: the retrieved sentence that
//! shares the most words with the question.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use crate::text::fold;

/// One held-out question (`data/eval/qa_heldout.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaItem {
    pub question: String,
    /// Spans, any one of which in an answer shows the fact.
    pub expect: Vec<String>,
    /// A reference answer (for token F1).
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default = "unknown")]
    pub lang: String,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

fn unknown() -> String {
    "unknown".into()
}

/// Parses a JSONL file of [`QaItem`]s, naming the line of the first bad one.
pub fn parse_qa(text: &str) -> Result<Vec<QaItem>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: QaItem =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if item.question.trim().is_empty() {
            return Err(format!("line {}: the question is empty", i + 1));
        }
        if item.expect.iter().all(|e| words(e).is_empty()) {
            return Err(format!(
                "line {}: `expect` holds no word to look for",
                i + 1
            ));
        }
        out.push(item);
    }
    if out.is_empty() {
        return Err("no questions in the file".into());
    }
    Ok(out)
}

/// The folded words of a text.
pub fn words(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `answer` holds one of the `expect` spans as a run of whole words.
pub fn contains_fact(answer: &str, expect: &[String]) -> bool {
    let have = words(answer);
    expect.iter().any(|e| {
        let want = words(e);
        !want.is_empty() && have.windows(want.len()).any(|w| w == want.as_slice())
    })
}

/// SQuAD-style token F1 between an answer and a reference (folded words, counted with
/// multiplicity); 0 when either is empty.
pub fn token_f1(answer: &str, reference: &str) -> f64 {
    let (a, r) = (words(answer), words(reference));
    if a.is_empty() || r.is_empty() {
        return 0.0;
    }
    let mut counts: HashMap<&str, i32> = HashMap::new();
    for w in &r {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &a {
        if let Some(c) = counts.get_mut(w.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / a.len() as f64;
    let rec = common as f64 / r.len() as f64;
    2.0 * p * rec / (p + rec)
}

/// The retrieval-only answer: of the sentences of `passages` (best passage first), the
/// one sharing the most distinct non-stop words with `question`, compared by their search
/// keys ([`crate::text::best_match`]; ties go to the better passage), with the sentence after it when that one refers back to it
/// ([`crate::text::refers_back`]: "It was introduced in 1582."), as the model's answers
/// are carried on ([`crate::model::reading::carry_on`]); a best sentence that is a
/// question gives the sentence after it instead. Empty when nothing was retrieved.
pub fn best_sentence(question: &str, passages: &[String]) -> String {
    // (passage, sentence) of every sentence, in order.
    let mut at: Vec<(usize, usize)> = Vec::new();
    let mut all: Vec<String> = Vec::new();
    for (p, passage) in passages.iter().enumerate() {
        for (i, s) in crate::memory::passages::sentences(passage)
            .into_iter()
            .enumerate()
        {
            at.push((p, i));
            all.push(s);
        }
    }
    let Some((p, i)) = crate::text::best_match(question, &all).map(|k| at[k]) else {
        return String::new();
    };
    let sentences = crate::memory::passages::sentences(&passages[p]);
    let best = &sentences[i];
    match sentences.get(i + 1) {
        // A question is not an answer: what THAU learned is remembered as "question
        // answer", and the answer is the sentence after it.
        Some(next) if best.trim_end().ends_with('?') => next.clone(),
        Some(next) if crate::text::refers_back(next) => format!("{best} {next}"),
        _ => best.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(spans: &[&str]) -> Vec<String> {
        spans.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn facts_are_whole_words_folded() {
        assert!(contains_fact("La RANA salta.", &e(&["rana"])));
        assert!(!contains_fact("La membrana celular.", &e(&["rana"])));
        assert!(contains_fact(
            "Everest mide 8.849 metros",
            &e(&["8849 metros"])
        ));
        assert!(contains_fact("It is 8,849 m high", &e(&["8849"])));
        assert!(contains_fact("el núcleo", &e(&["nucleo"])));
        assert!(contains_fact(
            "at 100 degrees Celsius",
            &e(&["x", "100 degrees"])
        ));
        assert!(!contains_fact("at 1000 degrees", &e(&["100 degrees"])));
        assert!(!contains_fact("", &e(&["a"])));
        // Decimals fold the same on both sides.
        assert!(contains_fact("pH 3.5", &e(&["3.5"])));
    }

    #[test]
    fn f1_counts_overlap_with_multiplicity() {
        assert!((token_f1("the cat sat", "the cat sat") - 1.0).abs() < 1e-9);
        assert_eq!(token_f1("dog", "the cat"), 0.0);
        // 2 shared of 4 answer words and of 2 reference words: p 0.5, r 1 → 2/3.
        assert!((token_f1("the the cat runs", "the cat") - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(token_f1("", "x"), 0.0);
    }

    #[test]
    fn the_baseline_picks_the_sentence_that_shares_the_question_words() {
        let passages = vec![
            "Cells are small. Mitochondria are the powerhouses of the cell.".to_string(),
            "Rivers flow to the sea.".to_string(),
        ];
        assert_eq!(
            best_sentence("What are the powerhouses of a cell?", &passages),
            "Mitochondria are the powerhouses of the cell."
        );
        assert_eq!(best_sentence("anything", &[]), "");
        // A sentence that refers back comes with the one it refers to.
        let calendar = vec![
            "Most of the world uses the Gregorian calendar. It was introduced in 1582. Months vary.".to_string(),
        ];
        assert_eq!(
            best_sentence("When did the Gregorian calendar start?", &calendar),
            "Most of the world uses the Gregorian calendar. It was introduced in 1582."
        );
        let learned = vec!["What do spiders eat? Spiders eat insects.".to_string()];
        assert_eq!(
            best_sentence("spiders eat what", &learned),
            "Spiders eat insects."
        );
    }

    #[test]
    fn qa_files_name_their_bad_line() {
        let ok = r#"{"question":"q?","expect":["x"],"lang":"en"}"#;
        assert_eq!(parse_qa(ok).unwrap()[0].lang, "en");
        let err = parse_qa(&format!("{ok}\n{{\"question\":\"\",\"expect\":[\"x\"]}}")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_qa(r#"{"question":"q","expect":["..."]}"#).is_err());
        assert!(parse_qa("\n").is_err());
    }
}
