//! The tool-calling dataset (`data/datasets/tool_calling.json`): conversations in which
//! image requests are answered with a `generate_image` call and ordinary turns are not
//! ([`load_dataset`]); how `thau train --dataset` mixes it with replay of the corpus
//! ([`mix_with_replay`]); and the held-out measure of what the model learned
//! ([`eval_tool_calls`] on `tool_calling_eval.json`): the share of image requests that get
//! a schema-valid call, and the share of ordinary prompts that wrongly get one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{ToolEvent, ToolRegistry};
use crate::model::data::Example;
use crate::model::generate::{generate, SamplingParams};
use crate::model::tokenizer::{Message, Role, ThauTokenizer};
use crate::model::transformer::Thau;
use crate::model::{ModelError, Result};
use crate::text::{fold, STOP_WORDS};

/// Where named datasets live.
pub const DATASETS_DIR: &str = "data/datasets";
/// Tokens a response may take in the evaluation (a call with a long prompt fits).
const EVAL_MAX_TOKENS: usize = 64;

#[derive(Debug, Deserialize)]
struct DatasetFile {
    examples: Vec<DatasetExample>,
}

#[derive(Debug, Deserialize)]
struct DatasetExample {
    messages: Vec<Message>,
    #[serde(default)]
    #[allow(dead_code)] // Documentation of the file; not needed to train.
    lang: Option<String>,
}

/// A dataset by name (`tool_calling` → `data/datasets/tool_calling.json`) or by path.
pub fn resolve_dataset(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.exists() || name.ends_with(".json") || name.contains('/') {
        p.to_path_buf()
    } else {
        Path::new(DATASETS_DIR).join(format!("{name}.json"))
    }
}

/// The dataset's conversations; every one must end with an assistant turn.
pub fn load_dataset(path: &Path) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let f: DatasetFile =
        serde_json::from_slice(&bytes).map_err(|e| ModelError::file(path, e.to_string()))?;
    if f.examples.is_empty() {
        return Err(ModelError::file(path, "no examples"));
    }
    f.examples
        .into_iter()
        .enumerate()
        .map(|(i, e)| match e.messages.last() {
            Some(m) if m.role == Role::Assistant => Ok(Example::Chat(e.messages)),
            _ => Err(ModelError::file(
                path,
                format!("example {i}: the last turn must be the assistant's"),
            )),
        })
        .collect()
}

/// The training set of `thau train --dataset`: the dataset repeated `repeat` times, plus a
/// `replay_ratio` share of examples drawn (seeded) from `replay` so that what the model
/// knew is not forgotten.
pub fn mix_with_replay(
    dataset: &[Example],
    replay: &[Example],
    repeat: usize,
    replay_ratio: f64,
    seed: u64,
) -> Vec<Example> {
    let mut out: Vec<Example> = (0..repeat.max(1))
        .flat_map(|_| dataset.iter().cloned())
        .collect();
    let r = replay_ratio.clamp(0.0, 0.95);
    let want = ((out.len() as f64) * r / (1.0 - r)).round() as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<&Example> = replay.iter().collect();
    pool.shuffle(&mut rng);
    out.extend(
        pool.into_iter()
            .cycle()
            .take(if replay.is_empty() { 0 } else { want })
            .cloned(),
    );
    out.shuffle(&mut rng);
    out
}

/// An image request of a held-out set: the request, and the subject its call's prompt must
/// hold when the file names one (`{"request": …, "subject": …}`; a plain string names none).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageRequest {
    Plain(String),
    Annotated {
        request: String,
        subject: String,
        #[serde(default)]
        #[allow(dead_code)] // Documentation of the file.
        lang: Option<String>,
    },
}

impl ImageRequest {
    pub fn request(&self) -> &str {
        match self {
            ImageRequest::Plain(r) | ImageRequest::Annotated { request: r, .. } => r,
        }
    }
}

/// An ordinary prompt of a held-out set: a string, or `{"prompt": …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OrdinaryPrompt {
    Plain(String),
    Annotated {
        prompt: String,
        #[serde(default)]
        #[allow(dead_code)] // Documentation of the file.
        lang: Option<String>,
    },
}

impl OrdinaryPrompt {
    pub fn prompt(&self) -> &str {
        match self {
            OrdinaryPrompt::Plain(p) | OrdinaryPrompt::Annotated { prompt: p, .. } => p,
        }
    }
}

/// The held-out prompts (`data/eval/tool_heldout.json`, or the older
/// `tool_calling_eval.json` whose prompts are plain strings).
#[derive(Debug, Clone, Deserialize)]
pub struct ToolEvalSet {
    pub image_requests: Vec<ImageRequest>,
    pub ordinary: Vec<OrdinaryPrompt>,
}

impl ToolEvalSet {
    pub fn load(path: &Path) -> Result<ToolEvalSet> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ModelError::file(path, e.to_string()))
    }
}

/// One evaluated prompt.
#[derive(Debug, Clone, Serialize)]
pub struct ToolEvalSample {
    pub prompt: String,
    pub output: String,
    /// `valid_call`, `invalid_call` or `no_call`.
    pub verdict: &'static str,
}

/// What [`eval_tool_calls`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ToolEvalReport {
    pub image_requests: usize,
    pub valid_calls: usize,
    /// valid_calls / image_requests (goal ≥ 0.9).
    pub call_rate: f64,
    /// Valid calls whose prompt holds the request's subject ([`is_faithful`]): the call is
    /// about what was asked, not only well-formed.
    pub faithful_calls: usize,
    pub ordinary: usize,
    pub wrong_calls: usize,
    /// wrong_calls / ordinary (goal ≤ 0.05).
    pub false_call_rate: f64,
    /// Whether calls were decoded under the tools' grammar, and with which span bias.
    pub constrained: bool,
    pub span_bias: f64,
    /// Tokens generated in answer to the image requests (mostly calls), and their rate.
    pub request_tokens: usize,
    pub request_tokens_per_s: f64,
    pub samples: Vec<ToolEvalSample>,
}

fn verdict(reg: &ToolRegistry, output: &str) -> &'static str {
    let events = reg.scan(output);
    if events.iter().any(|e| matches!(e, ToolEvent::Call { .. })) {
        "valid_call"
    } else if events
        .iter()
        .any(|e| matches!(e, ToolEvent::Invalid { .. }))
    {
        "invalid_call"
    } else {
        "no_call"
    }
}

/// Folded words that are not stop words.
fn content_words(s: &str) -> Vec<String> {
    fold(s)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(str::to_string)
        .collect()
}

/// Whether the first call in `output` is about what `request` asked: its prompt holds
/// every content word of the request's subject (accent-folded), or, for a request whose
/// subject is not given, a content word of 4+ letters of the request.
fn is_faithful(reg: &ToolRegistry, request: &ImageRequest, output: &str) -> bool {
    let Some(prompt) = reg.scan(output).into_iter().find_map(|e| match e {
        ToolEvent::Call { call } => call.arguments["prompt"].as_str().map(str::to_string),
        _ => None,
    }) else {
        return false;
    };
    let said = content_words(&prompt);
    match request {
        ImageRequest::Annotated { subject, .. } => {
            content_words(subject).iter().all(|w| said.contains(w))
        }
        ImageRequest::Plain(r) => content_words(r)
            .iter()
            .any(|w| w.chars().count() >= 4 && said.contains(w)),
    }
}

/// Answers every held-out prompt greedily and checks the answers with the registry, with
/// calls decoded under the tools' grammar when `constrained` (and string arguments favoured
/// to copy the request by `span_bias`, see [`SamplingParams::span_bias`]). An ordinary
/// prompt "wrongly gets a call" when the answer attempts one (valid or not).
pub fn eval_tool_calls(
    model: &Thau,
    tok: &ThauTokenizer,
    reg: &ToolRegistry,
    set: &ToolEvalSet,
    constrained: bool,
    span_bias: f64,
) -> Result<ToolEvalReport> {
    let grammar = if constrained {
        Some(Arc::new(reg.grammar(tok).map_err(ModelError::Config)?))
    } else {
        None
    };
    let params = SamplingParams {
        max_new_tokens: EVAL_MAX_TOKENS,
        temperature: 0.0,
        repetition_penalty: 1.0,
        span_bias,
        ..Default::default()
    };
    let mut samples = Vec::new();
    let answer = |prompt: &str| -> Result<(ToolEvalSample, usize)> {
        let ids = tok.chat_prompt(&[Message::new(Role::User, prompt)])?;
        let g = generate(
            model,
            tok,
            &ids,
            &params,
            &[tok.special.eot],
            grammar.as_ref(),
            &mut |_| true,
        )?;
        let sample = ToolEvalSample {
            prompt: prompt.to_string(),
            verdict: verdict(reg, &g.text),
            output: g.text,
        };
        Ok((sample, g.ids.len()))
    };
    let mut valid = 0;
    let mut faithful = 0;
    let (mut request_tokens, t0) = (0, std::time::Instant::now());
    for r in &set.image_requests {
        let (s, tokens) = answer(r.request())?;
        request_tokens += tokens;
        if s.verdict == "valid_call" {
            valid += 1;
            faithful += usize::from(is_faithful(reg, r, &s.output));
        }
        samples.push(s);
    }
    let request_seconds = t0.elapsed().as_secs_f64();
    let mut wrong = 0;
    for p in &set.ordinary {
        let (s, _) = answer(p.prompt())?;
        wrong += usize::from(s.verdict != "no_call");
        samples.push(s);
    }
    let rate = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Ok(ToolEvalReport {
        image_requests: set.image_requests.len(),
        valid_calls: valid,
        call_rate: rate(valid, set.image_requests.len()),
        faithful_calls: faithful,
        ordinary: set.ordinary.len(),
        wrong_calls: wrong,
        false_call_rate: rate(wrong, set.ordinary.len()),
        constrained,
        span_bias,
        request_tokens,
        request_tokens_per_s: request_tokens as f64 / request_seconds.max(1e-9),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_faithful_when_its_prompt_holds_every_content_word_of_the_subject() {
        let reg = ToolRegistry::builtin().unwrap();
        let req = |r: &str, s: &str| ImageRequest::Annotated {
            request: r.into(),
            subject: s.into(),
            lang: None,
        };
        let call = |p: &str| format!("<TOOL:generate_image>{{\"prompt\": \"{p}\"}}</TOOL>");
        let faro = req(
            "¿Me haces un dibujo de un faro en la tormenta?",
            "un faro en la tormenta",
        );
        assert!(is_faithful(&reg, &faro, &call("Un FARO en una Tormenta")));
        // One content word missing, or no valid call at all, is not faithful.
        assert!(!is_faithful(&reg, &faro, &call("un faro")));
        assert!(!is_faithful(&reg, &faro, "un faro en la tormenta"));
        let owl = req(
            "Illustrate an owl reading a newspaper",
            "an owl reading a newspaper",
        );
        assert!(is_faithful(
            &reg,
            &owl,
            &call("an owl reading the newspaper, ink")
        ));
        assert!(!is_faithful(&reg, &owl, &call("a waterfall")));
        // A plain request (no subject given): a shared word of 4+ letters.
        let plain = ImageRequest::Plain("Draw a snowy mountain".into());
        assert!(is_faithful(&reg, &plain, &call("a mountain")));
    }

    #[test]
    fn the_held_out_tool_prompts_are_enough_in_both_languages_with_subjects_from_the_request() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let set = ToolEvalSet::load(&root.join("data/eval/tool_heldout.json")).unwrap();
        assert!(set.image_requests.len() >= 40 && set.ordinary.len() >= 40);
        for lang in ["es", "en"] {
            let n = set
                .image_requests
                .iter()
                .filter(|r| matches!(r, ImageRequest::Annotated { lang: Some(l), .. } if l == lang))
                .count();
            assert!(n >= 20, "{lang}: {n}");
        }
        for r in &set.image_requests {
            let ImageRequest::Annotated {
                request, subject, ..
            } = r
            else {
                panic!("{r:?} names no subject")
            };
            assert!(
                request.contains(subject.as_str()),
                "{subject} is not in {request}"
            );
        }
    }

    #[test]
    fn the_shipped_dataset_has_enough_examples_in_both_languages_and_valid_calls() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join(DATASETS_DIR).join("tool_calling.json");
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let examples = raw["examples"].as_array().unwrap();
        let count = |lang: &str| examples.iter().filter(|e| e["lang"] == lang).count();
        assert!(examples.len() >= 60 && count("es") >= 30 && count("en") >= 30);
        let reg = ToolRegistry::builtin().unwrap();
        let mut calls = 0;
        for (i, ex) in load_dataset(&path).unwrap().iter().enumerate() {
            let Example::Chat(ms) = ex else { panic!("{i}") };
            let answer = &ms.last().unwrap().content;
            match verdict(&reg, answer) {
                "valid_call" => calls += 1,
                "no_call" => {}
                v => panic!("example {i}: {v}: {answer}"),
            }
        }
        assert!(calls >= 30 && calls < examples.len(), "{calls} calls");
        // Held-out prompts never appear in training.
        let set =
            ToolEvalSet::load(&root.join(DATASETS_DIR).join("tool_calling_eval.json")).unwrap();
        assert_eq!((set.image_requests.len(), set.ordinary.len()), (20, 20));
        let trained: Vec<&str> = examples
            .iter()
            .flat_map(|e| e["messages"].as_array().unwrap())
            .filter_map(|m| m["content"].as_str())
            .collect();
        let prompts = set.image_requests.iter().map(|r| r.request());
        for p in prompts.chain(set.ordinary.iter().map(|p| p.prompt())) {
            assert!(!trained.contains(&p), "{p} is in the training set");
        }
        let mixed = mix_with_replay(
            &load_dataset(&path).unwrap(),
            &[Example::Text("replay".into())],
            2,
            0.5,
            1,
        );
        assert_eq!(mixed.len(), 4 * examples.len());
    }
}
