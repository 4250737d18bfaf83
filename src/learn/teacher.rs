//! The HTTP teacher: an Ollama- (`/api/chat`) or OpenAI-compatible (`/v1/chat/completions`)
//! LLM that proposes new question/answer items about a topic ([`HttpTeacher`]), and the
//! [`QualityFilter`] every answer must pass before THAU learns from it.
//!
//! Chosen with `thau learn --teacher ollama:MODEL@URL` or `openai:MODEL@URL` (the key, if
//! any, from `$THAU_TEACHER_API_KEY` or `$OPENAI_API_KEY`). A teacher that is unreachable,
//! slow, malformed or filtered out costs a counted, logged rejection; the loop goes on with
//! the embedded corpus.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::KnowledgeItem;
use crate::memory::embed::{dot, HashEmbedder};

/// How long one teacher request may take.
pub const TEACHER_TIMEOUT: Duration = Duration::from_secs(60);
/// Most answers remembered for the near-duplicate check.
const SEEN_ANSWERS: usize = 2048;

/// Which teacher to call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeacherSpec {
    pub api: TeacherApi,
    pub model: String,
    /// Base URL, e.g. `http://localhost:11434`.
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherApi {
    Ollama,
    OpenAi,
}

impl std::str::FromStr for TeacherSpec {
    type Err = String;
    /// `ollama:MODEL@URL` or `openai:MODEL@URL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected ollama:MODEL@URL or openai:MODEL@URL (e.g. ollama:llama3.2@http://localhost:11434)";
        let (api, rest) = s.split_once(':').ok_or_else(|| format!("`{s}`: {usage}"))?;
        let api = match api {
            "ollama" => TeacherApi::Ollama,
            "openai" => TeacherApi::OpenAi,
            other => return Err(format!("unknown teacher API `{other}`: {usage}")),
        };
        let (model, url) = rest
            .split_once('@')
            .ok_or_else(|| format!("`{s}`: {usage}"))?;
        if model.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("`{s}`: {usage}"));
        }
        Ok(TeacherSpec {
            api,
            model: model.to_string(),
            url: url.trim_end_matches('/').to_string(),
        })
    }
}

/// Why a teacher's item was not used. Every rejection is logged and counted by reason.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    #[error("teacher unreachable: {0}")]
    Unreachable(String),
    #[error("teacher answered HTTP {status}")]
    HttpStatus { status: u16 },
    #[error("malformed teacher reply: {0}")]
    Malformed(String),
    #[error("empty answer")]
    Empty,
    #[error("answer too short ({chars} characters)")]
    TooShort { chars: usize },
    #[error("answer too long ({chars} characters)")]
    TooLong { chars: usize },
    #[error("answer in {found}, expected {expected}")]
    WrongLanguage { expected: String, found: String },
    #[error("the teacher refused")]
    Refusal,
    #[error("answer truncated")]
    Truncated,
    #[error("near-duplicate of an earlier answer (similarity {similarity:.2})")]
    NearDuplicate { similarity: f32 },
}

impl Rejection {
    /// A short name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Unreachable(_) => "unreachable",
            Rejection::HttpStatus { .. } => "http_status",
            Rejection::Malformed(_) => "malformed",
            Rejection::Empty => "empty",
            Rejection::TooShort { .. } => "too_short",
            Rejection::TooLong { .. } => "too_long",
            Rejection::WrongLanguage { .. } => "wrong_language",
            Rejection::Refusal => "refusal",
            Rejection::Truncated => "truncated",
            Rejection::NearDuplicate { .. } => "near_duplicate",
        }
    }
}

/// One reply from the teacher, before filtering.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub question: String,
    pub answer: String,
    pub paraphrases: Vec<String>,
    /// The API said it stopped at its length limit.
    pub cut_off: bool,
}

/// The checks an answer must pass.
pub struct QualityFilter {
    pub min_chars: usize,
    pub max_chars: usize,
    pub max_similarity: f32,
    seen: Vec<Vec<f32>>,
    embedder: HashEmbedder,
}

impl Default for QualityFilter {
    fn default() -> Self {
        QualityFilter {
            min_chars: 12,
            max_chars: 1200,
            max_similarity: 0.95,
            seen: Vec::new(),
            embedder: HashEmbedder::default(),
        }
    }
}

/// Phrases that mark a refusal rather than an answer (English and Spanish).
const REFUSALS: [&str; 10] = [
    "i can't help",
    "i cannot help",
    "i'm sorry, but",
    "as an ai",
    "i am unable to",
    "i'm unable to",
    "no puedo ayudar",
    "lo siento, pero",
    "como modelo de lenguaje",
    "como una ia",
];

impl QualityFilter {
    /// Accepts the proposal (remembering its answer) or says why not.
    pub fn check(&mut self, p: &Proposal, lang: &str) -> Result<(), Rejection> {
        let a = p.answer.trim();
        if a.is_empty() || p.question.trim().is_empty() {
            return Err(Rejection::Empty);
        }
        let chars = a.chars().count();
        if chars < self.min_chars {
            return Err(Rejection::TooShort { chars });
        }
        if chars > self.max_chars {
            return Err(Rejection::TooLong { chars });
        }
        let lower = a.to_lowercase();
        if REFUSALS.iter().any(|r| lower.contains(r)) {
            return Err(Rejection::Refusal);
        }
        // Cut off by the API, or ending mid-sentence.
        if p.cut_off || !a.ends_with(['.', '!', '?', '"', ')', '»', '…']) {
            return Err(Rejection::Truncated);
        }
        if let Some(info) = whatlang::detect(a) {
            let found = match info.lang() {
                whatlang::Lang::Eng => "en",
                whatlang::Lang::Spa => "es",
                other => other.code(),
            };
            // Only a confident detection can reject: short texts are often ambiguous.
            if info.is_reliable() && found != lang {
                return Err(Rejection::WrongLanguage {
                    expected: lang.to_string(),
                    found: found.to_string(),
                });
            }
        }
        let v = self.embedder.embed_text(a);
        if let Some(similarity) = self
            .seen
            .iter()
            .map(|s| dot(s, &v))
            .filter(|&s| s >= self.max_similarity)
            .reduce(f32::max)
        {
            return Err(Rejection::NearDuplicate { similarity });
        }
        if self.seen.len() >= SEEN_ANSWERS {
            self.seen.remove(0);
        }
        self.seen.push(v);
        Ok(())
    }
}

/// What THAU asks the teacher (the reply must be this JSON object).
fn instruction(topic: &str, lang: &str) -> String {
    let language = if lang == "es" { "Spanish" } else { "English" };
    format!(
        "Write one factual question a curious student might ask about the topic \"{topic}\", \
         its correct answer in one to three complete sentences, and two paraphrases of the \
         question. Write everything in {language}. Reply with only a JSON object: \
         {{\"question\": \"...\", \"answer\": \"...\", \"paraphrases\": [\"...\", \"...\"]}}"
    )
}

#[derive(Deserialize)]
struct ProposalJson {
    question: String,
    answer: String,
    #[serde(default)]
    paraphrases: Vec<String>,
}

/// Calls an Ollama- or OpenAI-compatible chat API.
pub struct HttpTeacher {
    pub spec: TeacherSpec,
    agent: ureq::Agent,
    api_key: Option<String>,
}

impl HttpTeacher {
    pub fn new(spec: TeacherSpec) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TEACHER_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let api_key = std::env::var("THAU_TEACHER_API_KEY")
            .or_else(|_| std::env::var("OPENAI_API_KEY"))
            .ok()
            .filter(|k| !k.is_empty());
        HttpTeacher {
            spec,
            agent,
            api_key,
        }
    }

    /// Asks for a new item about `topic` in `lang` (blocking: call it off the async
    /// arbiters, e.g. in `spawn_blocking`).
    pub fn propose(&self, topic: &str, lang: &str) -> Result<Proposal, Rejection> {
        let messages = serde_json::json!([
            {"role": "system", "content": "You are a careful teacher. You reply with JSON only."},
            {"role": "user", "content": instruction(topic, lang)},
        ]);
        let (url, body) = match self.spec.api {
            TeacherApi::Ollama => (
                format!("{}/api/chat", self.spec.url),
                serde_json::json!({"model": self.spec.model, "messages": messages, "stream": false, "format": "json"}),
            ),
            TeacherApi::OpenAi => (
                format!("{}/v1/chat/completions", self.spec.url),
                serde_json::json!({"model": self.spec.model, "messages": messages, "max_tokens": 400,
                                   "response_format": {"type": "json_object"}}),
            ),
        };
        let mut req = self.agent.post(&url);
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req
            .send_json(&body)
            .map_err(|e| Rejection::Unreachable(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Rejection::HttpStatus { status });
        }
        let reply: serde_json::Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| Rejection::Malformed(e.to_string()))?;
        let (content, cut_off) = match self.spec.api {
            TeacherApi::Ollama => (
                reply["message"]["content"].as_str(),
                reply["done_reason"].as_str() == Some("length"),
            ),
            TeacherApi::OpenAi => (
                reply["choices"][0]["message"]["content"].as_str(),
                reply["choices"][0]["finish_reason"].as_str() == Some("length"),
            ),
        };
        let content = content
            .ok_or_else(|| Rejection::Malformed("no message content in the reply".into()))?;
        let p: ProposalJson = serde_json::from_str(content.trim())
            .map_err(|e| Rejection::Malformed(format!("content is not the asked JSON: {e}")))?;
        Ok(Proposal {
            question: p.question.trim().to_string(),
            answer: p.answer.trim().to_string(),
            paraphrases: p
                .paraphrases
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            cut_off,
        })
    }
}

impl Proposal {
    /// The item THAU learns from (topic and language as asked).
    pub fn into_item(self, topic: &str, lang: &str) -> KnowledgeItem {
        KnowledgeItem::new(topic, lang, &self.question, &self.answer, self.paraphrases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(answer: &str) -> Proposal {
        Proposal {
            question: "¿Qué es el agua?".into(),
            answer: answer.into(),
            paraphrases: vec![],
            cut_off: false,
        }
    }

    #[test]
    fn specs_parse_or_explain() {
        let s: TeacherSpec = "ollama:llama3.2@http://localhost:11434/".parse().unwrap();
        assert_eq!(s.api, TeacherApi::Ollama);
        assert_eq!(s.model, "llama3.2");
        assert_eq!(s.url, "http://localhost:11434");
        assert!("openai:gpt@ftp://x".parse::<TeacherSpec>().is_err());
        assert!("claude:x@http://y"
            .parse::<TeacherSpec>()
            .unwrap_err()
            .contains("unknown"));
    }

    #[test]
    fn the_filter_names_each_rejection() {
        let mut f = QualityFilter::default();
        let good = "El agua es un líquido transparente formado por hidrógeno y oxígeno, y es esencial para la vida.";
        assert_eq!(f.check(&p(good), "es"), Ok(()));
        assert_eq!(
            f.check(&p(good), "es").unwrap_err().kind(),
            "near_duplicate"
        );
        assert_eq!(f.check(&p(""), "es").unwrap_err(), Rejection::Empty);
        assert_eq!(f.check(&p("Sí."), "es").unwrap_err().kind(), "too_short");
        assert_eq!(
            f.check(
                &p("Lo siento, pero no puedo ayudar con esa pregunta sobre el agua."),
                "es"
            )
            .unwrap_err(),
            Rejection::Refusal
        );
        assert_eq!(
            f.check(
                &p("El agua hierve a cien grados cuando la presión es la del nivel del"),
                "es"
            )
            .unwrap_err(),
            Rejection::Truncated
        );
        let english = "Water is a transparent liquid made of hydrogen and oxygen, and every living thing needs it to survive.";
        assert_eq!(
            f.check(&p(english), "es").unwrap_err().kind(),
            "wrong_language"
        );
        let mut cut = p("El agua cubre la mayor parte de la superficie de la Tierra.");
        cut.cut_off = true;
        assert_eq!(f.check(&cut, "es").unwrap_err(), Rejection::Truncated);
    }
}
