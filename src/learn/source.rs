//! The embedded teacher: [`KnowledgeBase`], what THAU can learn from its corpus, as
//! [`KnowledgeItem`]s — a question, the reference answer, and paraphrases of the question
//! that are never trained on (they decide whether a gap is really closed).
//!
//! Items come from two places in the corpus directory:
//! - `qa.jsonl` lines (`question`, `answer`, `topic`, `lang`, `paraphrases`);
//! - `.md`/`.txt` passages: the title (`# Title`) is a concept, the first paragraph the
//!   reference answer, and the Questioner's templates for the passage's language make the
//!   question (the first template) and its paraphrases (the others);
//! - in a folder without a `qa.jsonl` (documents nobody wrote questions for), the questions
//!   [`super::questions::derive`] finds in every sentence.
//!
//! A file's language is its folder's name when that has two letters (`en/`, `es/`), else
//! the one its words show ([`super::questions::detect_lang`]).
//!
//! The passages themselves (chunked) are also the replay data the Learner mixes in.
//!
//! A text file that is not text (NUL bytes, not UTF-8) is skipped and named in
//! [`KnowledgeBase::skipped`]; one longer than [`MAX_TEXT_BYTES`] is cut there, at a
//! paragraph break. The corpus is refused only when nothing in it is usable.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::memory::passages::{check_text, passage_id};
use crate::memory::NewMemory;
use crate::model::data::Example;
use crate::model::tokenizer::{Message, Role};

/// Most bytes read from one `.md`/`.txt` file: a longer one is cut at its last paragraph
/// break before this, so that deriving questions and training the tokenizer stay quick
/// (1 MiB is about 170,000 words; the cut is named in [`KnowledgeBase::skipped`]).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Errors name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
}

fn bad(path: &Path, message: impl Into<String>) -> SourceError {
    SourceError::Bad {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One thing to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeItem {
    /// Stable id: FNV-1a of the question (the same across runs and machines).
    pub id: String,
    pub topic: String,
    /// `en`, `es`, …
    pub lang: String,
    pub question: String,
    pub answer: String,
    /// Held out from training: used to check that a gap is closed.
    pub paraphrases: Vec<String>,
    /// Asked of a document's own text (a title's template, or
    /// [`super::questions::derive`]): its answer is already a passage's words, so it is not
    /// stored in memory as a question of its own.
    #[serde(default)]
    pub derived: bool,
}

impl KnowledgeItem {
    pub fn new(
        topic: &str,
        lang: &str,
        question: &str,
        answer: &str,
        paraphrases: Vec<String>,
    ) -> Self {
        KnowledgeItem {
            id: format!("{:016x}", fnv1a(question.as_bytes())),
            topic: topic.to_string(),
            lang: lang.to_string(),
            question: question.to_string(),
            answer: answer.to_string(),
            paraphrases,
            derived: false,
        }
    }

    /// The training example: the question as the user, the answer as the assistant.
    pub fn example(&self) -> Example {
        Example::Chat(vec![
            Message::new(Role::User, self.question.clone()),
            Message::new(Role::Assistant, self.answer.clone()),
        ])
    }

    /// The item as a long-term memory: "question answer", recalled by its paraphrases too
    /// (a user asks in words of their own), under a content id, so that storing it again
    /// — when its gap closes, or on the next run — replaces it.
    pub fn memory(&self, source: &str, importance: f32) -> NewMemory {
        let text = format!("{} {}", self.question, self.answer);
        NewMemory {
            id: Some(passage_id(&text)),
            text,
            source: source.to_string(),
            importance,
            keys: self.paraphrases.clone(),
        }
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Question templates per language; `{concept}` is replaced by a passage's title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// Language → templates (the first asks, the others are held-out paraphrases).
    pub by_lang: BTreeMap<String, Vec<String>>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut by_lang = BTreeMap::new();
        by_lang.insert(
            "en".into(),
            vec![
                "What is {concept}?".into(),
                "Can you explain {concept}?".into(),
                "Tell me about {concept}.".into(),
            ],
        );
        by_lang.insert(
            "es".into(),
            vec![
                "¿Qué es {concept}?".into(),
                "¿Puedes explicar {concept}?".into(),
                "Háblame de {concept}.".into(),
            ],
        );
        Templates { by_lang }
    }
}

/// Everything the corpus offers the learning loop.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeBase {
    pub items: Vec<KnowledgeItem>,
    /// Passages (chunked text) for replay and for long-term memory.
    pub passages: Vec<Passage>,
    /// Files left out, or cut, and why ("PATH: reason").
    pub skipped: Vec<String>,
}

/// A chunk of a corpus file.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub topic: String,
    pub lang: String,
    pub source: String,
    pub text: String,
}

#[derive(Deserialize)]
struct QaLine {
    question: String,
    answer: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    paraphrases: Vec<String>,
}

impl KnowledgeBase {
    /// Reads every `qa.jsonl`, `.md` and `.txt` under `dir`.
    pub fn load(dir: &Path, templates: &Templates) -> Result<KnowledgeBase, SourceError> {
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(bad(dir, "no qa.jsonl, .md or .txt files found"));
        }
        let mut kb = KnowledgeBase::default();
        let authored: std::collections::HashSet<PathBuf> = files
            .iter()
            .filter(|f| f.file_name().is_some_and(|n| n == "qa.jsonl"))
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for file in files {
            let is_qa = file.extension().is_some_and(|e| e == "jsonl");
            let text = if is_qa {
                std::fs::read_to_string(&file).map_err(|e| bad(&file, e.to_string()))?
            } else {
                match read_text(&file) {
                    Ok((text, cut)) => {
                        if cut {
                            kb.skipped.push(format!(
                                "{}: cut to its first {} KiB",
                                file.display(),
                                MAX_TEXT_BYTES / 1024
                            ));
                        }
                        text
                    }
                    Err(why) => {
                        tracing::warn!(file = %file.display(), %why, "corpus file skipped");
                        kb.skipped.push(format!("{}: {why}", file.display()));
                        continue;
                    }
                }
            };
            // The language is the name of a two-letter folder (`en/`, `es/`) if there is one.
            let lang = file
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .filter(|n| n.len() == 2)
                .unwrap_or_else(|| super::questions::detect_lang(&text))
                .to_string();
            if is_qa {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let q: QaLine = serde_json::from_str(line)
                        .map_err(|e| bad(&file, format!("line {}: {e}", i + 1)))?;
                    kb.items.push(KnowledgeItem::new(
                        q.topic.as_deref().unwrap_or("general"),
                        q.lang.as_deref().unwrap_or(&lang),
                        &q.question,
                        &q.answer,
                        q.paraphrases,
                    ));
                }
            } else {
                let topic = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("general")
                    .to_string();
                kb.add_passage_file(&file, &topic, &lang, &text, templates);
                if !file.parent().is_some_and(|d| authored.contains(d)) {
                    kb.items
                        .extend(super::questions::derive(&text, &lang).into_iter().map(|d| {
                            KnowledgeItem {
                                derived: true,
                                ..KnowledgeItem::new(
                                    &topic,
                                    &lang,
                                    &d.question,
                                    &d.answer,
                                    d.paraphrases,
                                )
                            }
                        }));
                }
            }
        }
        // A derived question may repeat a title's or another file's, in another case:
        // one item per question.
        let mut asked = std::collections::HashSet::new();
        kb.items
            .retain(|i| asked.insert(crate::eval::score::words(&i.question).join(" ")));
        if kb.items.is_empty() && kb.passages.is_empty() {
            let why = if kb.skipped.is_empty() {
                "no text in its files".to_string()
            } else {
                kb.skipped.join("; ")
            };
            return Err(bad(dir, format!("nothing usable to learn from: {why}")));
        }
        Ok(kb)
    }

    fn add_passage_file(
        &mut self,
        file: &Path,
        topic: &str,
        lang: &str,
        text: &str,
        templates: &Templates,
    ) {
        let source = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut paragraphs = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
        let title = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let (Some(title), Some(tpls)) = (title, templates.by_lang.get(lang)) {
            // The first paragraph that is not the title line answers "what is <title>?".
            let first = paragraphs.clone().find(|p| !p.starts_with('#'));
            if let (Some(answer), Some((ask, others))) = (first, tpls.split_first()) {
                let concept = title.to_lowercase();
                let fill = |t: &String| t.replace("{concept}", &concept);
                self.items.push(KnowledgeItem {
                    derived: true,
                    ..KnowledgeItem::new(
                        topic,
                        lang,
                        &fill(ask),
                        answer,
                        others.iter().map(fill).collect(),
                    )
                });
            }
        }
        let mut chunk = String::new();
        for p in paragraphs.by_ref() {
            if !chunk.is_empty() && chunk.len() + p.len() > crate::model::data::CHUNK_CHARS {
                self.push_passage(topic, lang, &source, std::mem::take(&mut chunk));
            }
            if !chunk.is_empty() {
                chunk.push_str("\n\n");
            }
            chunk.push_str(p);
        }
        if !chunk.is_empty() {
            self.push_passage(topic, lang, &source, chunk);
        }
    }

    fn push_passage(&mut self, topic: &str, lang: &str, source: &str, text: String) {
        self.passages.push(Passage {
            topic: topic.to_string(),
            lang: lang.to_string(),
            source: source.to_string(),
            text,
        });
    }

    /// Topics and how many items each has.
    pub fn topics(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in &self.items {
            *out.entry(i.topic.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn item(&self, id: &str) -> Option<&KnowledgeItem> {
        self.items.iter().find(|i| i.id == id)
    }
}

/// The text of a `.md`/`.txt` file (cut at [`MAX_TEXT_BYTES`], then back to its last
/// paragraph break; `true` when cut), or why it is not text (the reasons long-term memory
/// gives: [`check_text`]).
fn read_text(file: &Path) -> Result<(String, bool), String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let cut = bytes.len() > MAX_TEXT_BYTES;
    if cut {
        bytes.truncate(MAX_TEXT_BYTES);
        // The cut may split the last character: keep what comes before it.
        if let Err(e) = std::str::from_utf8(&bytes) {
            if e.error_len().is_none() {
                bytes.truncate(e.valid_up_to());
            }
        }
    }
    let text = check_text(&bytes)?;
    if !cut {
        return Ok((text, false));
    }
    let end = text.rfind("\n\n").filter(|&i| i > 0).unwrap_or(text.len());
    Ok((text[..end].to_string(), true))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let meta = std::fs::metadata(dir).map_err(|e| bad(dir, e.to_string()))?;
    if meta.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| bad(dir, e.to_string()))? {
        let p = entry.map_err(|e| bad(dir, e.to_string()))?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "md" | "txt" | "jsonl"))
        {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_skipped_by_name_and_a_long_one_is_cut_at_a_paragraph() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("good.md"),
            "# Rivers\n\nA river is water that flows.",
        )
        .unwrap();
        std::fs::write(p.join("latin1.txt"), b"Caf\xe9 con leche.\n").unwrap();
        std::fs::write(p.join("image.txt"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
        let para = "The lighthouse keeper counts 212 steps every night. ".repeat(40);
        let long: String =
            std::iter::repeat_n(format!("{para}\n\n"), MAX_TEXT_BYTES / para.len() + 5).collect();
        std::fs::write(p.join("long.txt"), &long).unwrap();
        let kb = KnowledgeBase::load(p, &Templates::default()).unwrap();
        let named = |f: &str| kb.skipped.iter().find(|s| s.contains(f)).cloned();
        assert!(
            named("latin1.txt").unwrap().contains("not UTF-8"),
            "{:?}",
            kb.skipped
        );
        assert!(
            named("image.txt").unwrap().contains("binary"),
            "{:?}",
            kb.skipped
        );
        assert!(
            named("long.txt").unwrap().contains("cut"),
            "{:?}",
            kb.skipped
        );
        assert!(named("good.md").is_none());
        // The long file is read up to a paragraph break below the limit.
        let long_text: usize = kb
            .passages
            .iter()
            .filter(|x| x.source.ends_with("long.txt"))
            .map(|x| x.text.len())
            .sum();
        assert!(
            long_text > MAX_TEXT_BYTES / 2 && long_text <= MAX_TEXT_BYTES,
            "{long_text}"
        );
        assert!(kb.passages.iter().any(|x| x.text.contains("river")));
        // Nothing usable: refused, with each file's reason.
        std::fs::remove_file(p.join("good.md")).unwrap();
        std::fs::remove_file(p.join("long.txt")).unwrap();
        let err = KnowledgeBase::load(p, &Templates::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nothing usable") && err.contains("latin1.txt"),
            "{err}"
        );
        // An empty directory.
        let empty = tempfile::tempdir().unwrap();
        let err = KnowledgeBase::load(empty.path(), &Templates::default()).unwrap_err();
        assert!(err.to_string().contains("no qa.jsonl"), "{err}");
    }

    #[test]
    fn items_come_from_qa_lines_and_passage_titles() {
        let dir = tempfile::tempdir().unwrap();
        let es = dir.path().join("es");
        std::fs::create_dir_all(&es).unwrap();
        std::fs::write(
            es.join("qa.jsonl"),
            r#"{"question":"¿Qué es el agua?","answer":"Un líquido.","topic":"agua","paraphrases":["¿Qué cosa es el agua?"]}"#,
        )
        .unwrap();
        std::fs::write(
            es.join("rios.md"),
            "# Los ríos\n\nUn río es agua que corre.\n\nOtro párrafo.",
        )
        .unwrap();
        let kb = KnowledgeBase::load(dir.path(), &Templates::default()).unwrap();
        assert_eq!(kb.items.len(), 2);
        let qa = kb.items.iter().find(|i| i.topic == "agua").unwrap();
        assert_eq!(qa.lang, "es");
        assert_eq!(qa.paraphrases, vec!["¿Qué cosa es el agua?"]);
        let t = kb.items.iter().find(|i| i.topic == "rios").unwrap();
        assert_eq!(t.question, "¿Qué es los ríos?");
        assert_eq!(t.answer, "Un río es agua que corre.");
        assert_eq!(t.paraphrases.len(), 2);
        assert_eq!(kb.passages.len(), 1);
        assert!(kb.passages[0].text.contains("Otro párrafo"));
        // That folder's author wrote questions: none are derived for its documents.
        assert!(kb
            .items
            .iter()
            .all(|i| i.topic != "rios" || i.question.starts_with("¿Qué es los")));
        // Ids are stable.
        assert_eq!(
            KnowledgeItem::new("a", "es", "¿Qué es el agua?", "x", vec![]).id,
            qa.id
        );
    }

    #[test]
    fn documents_without_questions_get_derived_ones_in_their_language() {
        let dir = tempfile::tempdir().unwrap();
        let text = "El faro de Punta Gris mide 31 metros y se encendió en 1894. Lo cuidan dos \
                    fareros que viven en Puerto Lino. La lámpara gira cada 12 segundos.";
        std::fs::write(dir.path().join("notas.txt"), text).unwrap();
        std::fs::write(
            dir.path().join("moon.md"),
            "# The Moon\n\nThe Moon is the only natural satellite of the Earth.",
        )
        .unwrap();
        let kb = KnowledgeBase::load(dir.path(), &Templates::default()).unwrap();
        let notas: Vec<&KnowledgeItem> = kb.items.iter().filter(|i| i.topic == "notas").collect();
        // An untitled text in no language folder: its language is read from its words.
        assert!(notas.iter().all(|i| i.lang == "es"));
        let words = text.split_whitespace().count();
        assert!(
            notas.len() * 100 >= 5 * words,
            "{} for {words} words",
            notas.len()
        );
        assert!(notas.iter().all(|i| text.contains(&i.answer)));
        assert!(notas.iter().any(|i| i.question.contains("cuántos metros")));
        // The title's question and the derived definition are one item, not two.
        let moon: Vec<&str> = kb
            .items
            .iter()
            .filter(|i| i.topic == "moon")
            .map(|i| i.question.as_str())
            .collect();
        let defined = moon
            .iter()
            .filter(|q| q.to_lowercase() == "what is the moon?");
        assert_eq!(defined.count(), 1, "{moon:?}");
        assert!(moon.iter().all(|q| !q.is_empty()));
    }
}
