//! `thau eval answers`: answer accuracy the way a user sees it. Every question of a QA file
//! goes through the same chat path users get (greedy, with the rest of the configured
//! sampling settings, a fresh conversation each) with memory and closed-book, and a
//! retrieval-only baseline answers with the best retrieved sentence (no model; with the
//! sentence after it where the model's answer would be carried on to it:
//! [`best_sentence`]), so a run shows whether the model loses what memory found. Recall@3
//! says how often the passage holding the answer was among the three best memories.
//!
//! [`collect_local`] asks a runtime in this process, [`collect_remote`] a running
//! `thau serve`; [`score`] turns what they collected into an [`AnswersReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

use super::score::{best_sentence, contains_fact, token_f1, QaItem};
use crate::actors::long_term_memory::RecallLong;
use crate::actors::reply;
use crate::actors::short_term_memory::ForgetWindow;
use crate::chat::{chat_turn, ChatRequest};
use crate::error::{Result, ThauError};
use crate::runtime::Runtime;

/// Memories looked at for recall@k and for the retrieval-only answer.
pub const RECALL_AT: usize = 3;
/// Questions in flight at once on a local runtime (they decode together in one batch).
const CONCURRENCY: usize = 8;
/// How long a remote chat turn may take.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How an answer was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The chat path with memories recalled into the prompt.
    Memory,
    /// The chat path with the weights alone.
    ClosedBook,
    /// No model: the best retrieved sentence.
    RetrievalOnly,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Memory => "with memory",
            Mode::ClosedBook => "closed-book",
            Mode::RetrievalOnly => "retrieval only",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Only the closed-book answers (no memory, no retrieval).
    pub closed_book_only: bool,
    /// Longest answer, in tokens.
    pub max_tokens: usize,
}

/// Answers collected per mode (in the items' order), and the texts retrieved per item.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub answers: BTreeMap<Mode, Vec<String>>,
    pub retrieved: Option<Vec<Vec<String>>>,
}

/// Correct answers out of asked ones.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean token F1 against the reference answers (items that have one).
    pub f1: Option<f64>,
    #[serde(skip)]
    f1_sum: f64,
    #[serde(skip)]
    f1_n: usize,
}

impl Tally {
    fn add(&mut self, correct: bool, f1: Option<f64>) {
        self.n += 1;
        self.correct += usize::from(correct);
        self.accuracy = self.correct as f64 / self.n as f64;
        if let Some(f) = f1 {
            self.f1_sum += f;
            self.f1_n += 1;
            self.f1 = Some(self.f1_sum / self.f1_n as f64);
        }
    }
}

/// One mode's scores, overall and per language.
#[derive(Debug, Clone, Serialize)]
pub struct ModeScore {
    pub mode: Mode,
    pub overall: Tally,
    pub by_lang: BTreeMap<String, Tally>,
}

/// One question's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub question: String,
    pub lang: String,
    pub expect: Vec<String>,
    /// Mode → (answer, whether it holds the fact).
    pub answers: BTreeMap<Mode, (String, bool)>,
    /// Whether a passage holding an expected span was among the best [`RECALL_AT`].
    pub recalled: Option<bool>,
}

/// What `thau eval answers` reports.
#[derive(Debug, Clone, Serialize)]
pub struct AnswersReport {
    pub qa: PathBuf,
    pub questions: usize,
    pub modes: Vec<ModeScore>,
    /// Recall@3 of a passage holding the answer (overall, then per language).
    pub recall_at_3: Option<ModeScore>,
    pub items: Vec<ItemResult>,
    pub seconds: f64,
    /// Where the answers came from: `local` or the server's URL.
    pub target: String,
}

impl AnswersReport {
    pub fn mode(&self, mode: Mode) -> Option<&ModeScore> {
        self.modes.iter().find(|m| m.mode == mode)
    }
}

/// Scores what was collected.
pub fn score(
    qa: PathBuf,
    items: &[QaItem],
    collected: Collected,
    seconds: f64,
    target: String,
) -> AnswersReport {
    let mut results: Vec<ItemResult> = items
        .iter()
        .map(|i| ItemResult {
            question: i.question.clone(),
            lang: i.lang.clone(),
            expect: i.expect.clone(),
            answers: BTreeMap::new(),
            recalled: None,
        })
        .collect();
    let mut modes = Vec::new();
    for (mode, answers) in collected.answers {
        let mut s = ModeScore {
            mode,
            overall: Tally::default(),
            by_lang: BTreeMap::new(),
        };
        for ((item, answer), r) in items.iter().zip(answers).zip(results.iter_mut()) {
            let ok = contains_fact(&answer, &item.expect);
            let f1 = item.answer.as_deref().map(|a| token_f1(&answer, a));
            s.overall.add(ok, f1);
            s.by_lang.entry(item.lang.clone()).or_default().add(ok, f1);
            r.answers.insert(mode, (answer, ok));
        }
        modes.push(s);
    }
    let recall_at_3 = collected.retrieved.map(|retrieved| {
        let mut s = ModeScore {
            mode: Mode::RetrievalOnly,
            overall: Tally::default(),
            by_lang: BTreeMap::new(),
        };
        for ((item, texts), r) in items.iter().zip(&retrieved).zip(results.iter_mut()) {
            let hit = texts
                .iter()
                .take(RECALL_AT)
                .any(|t| contains_fact(t, &item.expect));
            s.overall.add(hit, None);
            s.by_lang
                .entry(item.lang.clone())
                .or_default()
                .add(hit, None);
            r.recalled = Some(hit);
        }
        s
    });
    AnswersReport {
        qa,
        questions: items.len(),
        modes,
        recall_at_3,
        items: results,
        seconds,
        target,
    }
}

fn eval_request(question: &str, memory: bool, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        // A fresh conversation each: no question sees another's turns.
        session: Some(format!("eval-{}", uuid::Uuid::new_v4().simple())),
        message: question.to_string(),
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(0),
        memory: Some(memory),
        token: None,
    }
}

/// Asks a runtime in this process. Conversations are forgotten after each answer, so an
/// evaluation leaves the short-term store as it found it.
pub async fn collect_local(
    rt: &Runtime,
    items: &[QaItem],
    opts: &EvalOptions,
) -> Result<Collected> {
    use futures_util::StreamExt;
    let ask = |memory: bool| {
        futures_util::stream::iter(items.iter().map(move |item| async move {
            let req = eval_request(&item.question, memory, opts.max_tokens);
            let session = req.session.clone().unwrap_or_default();
            let r = chat_turn(rt, req, false, None).await;
            if let Some(s) = &rt.addrs.short_term_memory {
                let _ = s.send(ForgetWindow(session)).await;
            }
            r.map(|r| r.reply).map_err(ThauError::from)
        }))
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
    };
    let mut c = Collected::default();
    let closed: Result<Vec<String>> = ask(false).await.into_iter().collect();
    c.answers.insert(Mode::ClosedBook, closed?);
    if opts.closed_book_only {
        return Ok(c);
    }
    let with: Result<Vec<String>> = ask(true).await.into_iter().collect();
    c.answers.insert(Mode::Memory, with?);
    let long = rt.addrs.long_term_memory.clone().ok_or_else(|| {
        ThauError::Invalid("answers with memory need the LongTermMemory actor enabled".into())
    })?;
    let mut retrieved = Vec::new();
    for item in items {
        let hits = reply(
            "long_term_memory",
            long.send(RecallLong {
                query: item.question.clone(),
                limit: RECALL_AT,
                filter: Default::default(),
            })
            .await,
        )?;
        retrieved.push(hits.into_iter().map(|h| h.point.payload.text).collect());
    }
    c.answers
        .insert(Mode::RetrievalOnly, baseline(items, &retrieved));
    c.retrieved = Some(retrieved);
    Ok(c)
}

fn baseline(items: &[QaItem], retrieved: &[Vec<String>]) -> Vec<String> {
    items
        .iter()
        .zip(retrieved)
        .map(|(i, texts)| best_sentence(&i.question, texts))
        .collect()
}

/// Asks a running `thau serve` at `url` (`http://HOST:PORT`): `POST /chat/message` for the
/// answers, `GET /memory/long/items?q=` for what memory finds. `$THAU_API_KEY` is sent
/// when set.
pub fn collect_remote(url: &str, items: &[QaItem], opts: &EvalOptions) -> Result<Collected> {
    let base = url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ThauError::Invalid(format!(
            "--url {url}: expected http://HOST:PORT"
        )));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REMOTE_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let key = std::env::var("THAU_API_KEY").ok().filter(|k| !k.is_empty());
    let call = |req: ureq::RequestBuilder<ureq::typestate::WithBody>, body: Value| {
        let req = match &key {
            Some(k) => req.header("authorization", format!("Bearer {k}")),
            None => req,
        };
        let mut r = req
            .send_json(body)
            .map_err(|e| ThauError::Runtime(format!("{base}: {e}")))?;
        let status = r.status().as_u16();
        let v: Value = r
            .body_mut()
            .read_json()
            .map_err(|e| ThauError::Runtime(format!("{base}: {e}")))?;
        if status >= 400 {
            return Err(ThauError::Runtime(format!("{base}: {status} {v}")));
        }
        Ok(v)
    };
    let ask = |memory: bool| -> Result<Vec<String>> {
        items
            .iter()
            .map(|item| {
                let r = eval_request(&item.question, memory, opts.max_tokens);
                let v = call(
                    agent.post(format!("{base}/chat/message")),
                    json!({ "message": r.message, "max_tokens": r.max_tokens,
                            "temperature": 0.0, "seed": 0, "memory": memory }),
                )?;
                Ok(v["reply"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    };
    let mut c = Collected::default();
    c.answers.insert(Mode::ClosedBook, ask(false)?);
    if opts.closed_book_only {
        return Ok(c);
    }
    c.answers.insert(Mode::Memory, ask(true)?);
    let mut retrieved = Vec::new();
    for item in items {
        let mut r = agent
            .get(format!("{base}/memory/long/items"))
            .query("q", &item.question)
            .query("limit", RECALL_AT.to_string());
        if let Some(k) = &key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = r
            .call()
            .map_err(|e| ThauError::Runtime(format!("{base}: {e}")))?;
        let v: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| ThauError::Runtime(format!("{base}: {e}")))?;
        let texts = v["hits"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| h["point"]["text"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        retrieved.push(texts);
    }
    c.answers
        .insert(Mode::RetrievalOnly, baseline(items, &retrieved));
    c.retrieved = Some(retrieved);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(q: &str, expect: &str, lang: &str) -> QaItem {
        QaItem {
            question: q.into(),
            expect: vec![expect.into()],
            answer: Some(format!("It is {expect}.")),
            lang: lang.into(),
            topic: None,
            source: None,
        }
    }

    #[test]
    fn scores_per_mode_and_language_with_recall() {
        let items = vec![item("a?", "alpha", "en"), item("b?", "beta", "es")];
        let mut c = Collected::default();
        c.answers
            .insert(Mode::Memory, vec!["It is alpha.".into(), "no".into()]);
        c.answers
            .insert(Mode::ClosedBook, vec!["no".into(), "no".into()]);
        c.retrieved = Some(vec![vec!["x".into(), "alpha here".into()], vec![]]);
        let r = score("qa.jsonl".into(), &items, c, 1.0, "local".into());
        let m = r.mode(Mode::Memory).unwrap();
        assert_eq!((m.overall.n, m.overall.correct), (2, 1));
        assert_eq!(m.by_lang["en"].accuracy, 1.0);
        assert_eq!(m.by_lang["es"].accuracy, 0.0);
        assert!((m.by_lang["en"].f1.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(r.mode(Mode::ClosedBook).unwrap().overall.correct, 0);
        let rc = r.recall_at_3.unwrap();
        assert_eq!((rc.overall.n, rc.overall.correct), (2, 1));
        assert_eq!(r.items[0].recalled, Some(true));
        assert!(r.items[0].answers[&Mode::Memory].1);
    }
}
