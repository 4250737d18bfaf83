//! The scenario format: a TOML file checked against `scenarios/schema.json` (with the
//! `jsonschema` crate), then read into a [`Scenario`] of [`Step`]s, each one [`Action`] with
//! its [`Expect`]ations. Every error is a [`ScenarioError`] naming the file, the line and
//! the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The JSON Schema of scenario files (the copy in the repository is the one compiled in).
pub const SCHEMA: &str = include_str!("../../scenarios/schema.json");

/// Largest scenario file read.
pub const MAX_SCENARIO_BYTES: u64 = 4 * 1024 * 1024;

/// The action keys of a step, one of which each step has.
pub const ACTIONS: [&str; 7] = [
    "say", "remember", "close", "check", "learn", "feedback", "wait_ms",
];

/// A scenario file that cannot be used: where, and why.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The field, as `steps[2].expect.regex` (empty for the whole file).
    pub field: String,
    pub message: String,
}

/// A scripted conversation or learning session.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub model: ModelSpec,
    pub settings: Settings,
    pub steps: Vec<Step>,
}

/// The model a scenario talks to in a fresh data directory.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub age: Option<u32>,
    /// A checkpoint directory, resolved against the scenario's folder.
    pub checkpoint: Option<PathBuf>,
    pub train: Option<TrainSpec>,
}

/// Training a model before the first step.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Resolved against the scenario's folder.
    pub corpus: Option<PathBuf>,
    pub text: Option<String>,
    pub steps: u64,
    #[serde(default)]
    pub size: ModelSize,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub lr: Option<f64>,
}

fn default_vocab() -> usize {
    512
}
fn default_seq_len() -> usize {
    64
}
fn default_batch() -> usize {
    4
}

/// `tiny` (a few hundred thousand parameters, seconds to train) or the age's own shape.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelSize {
    #[default]
    Tiny,
    Age,
}

/// Sampling and configuration overrides.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub temperature: Option<f64>,
    pub max_tokens: Option<usize>,
    pub detect_tools: Option<bool>,
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// One step: its action, what is expected of it, and where it is in the file.
#[derive(Debug, Clone)]
pub struct Step {
    pub action: Action,
    pub expect: Expect,
    /// 1-based line of the step in its file.
    pub line: Option<usize>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A user turn in `session` (the scenario's conversation when `None`).
    Say {
        text: String,
        session: Option<String>,
        max_tokens: Option<usize>,
    },
    /// Store a text in long-term memory.
    Remember(String),
    /// Close a conversation: its turns are filed as episodes.
    Close { session: Option<String> },
    /// Memory assertions.
    Check(Check),
    /// A self-learning session of `questions` questions.
    Learn(LearnSpec),
    /// Rate the last turn.
    Feedback { up: bool, note: Option<String> },
    /// Pause.
    Wait(u64),
}

impl Action {
    /// The action's key in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Say { .. } => "say",
            Action::Remember(_) => "remember",
            Action::Close { .. } => "close",
            Action::Check(_) => "check",
            Action::Learn(_) => "learn",
            Action::Feedback { .. } => "feedback",
            Action::Wait(_) => "wait_ms",
        }
    }
}

/// Memory assertions.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub episodes: Option<EpisodeCheck>,
    pub recall: Option<RecallCheck>,
    pub window: Option<WindowCheck>,
}

/// Episodic memory holds between `min` and `max` episodes of `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EpisodeCheck {
    pub kind: String,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// Recall of `query` returns at least `min_hits` hits (one containing `contains`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecallCheck {
    pub query: String,
    pub min_hits: Option<usize>,
    pub contains: Option<String>,
}

/// A conversation's short-term window holds `turns` turns.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowCheck {
    pub session: Option<String>,
    pub turns: usize,
}

/// A learning step.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LearnSpec {
    pub questions: usize,
    /// Resolved against the scenario's folder.
    pub corpus: Option<PathBuf>,
}

/// What is expected of a step.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default, deserialize_with = "one_or_many")]
    pub contains: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub not_contains: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub regex: Vec<String>,
    #[serde(skip)]
    pub compiled: Vec<regex::Regex>,
    pub equals: Option<String>,
    pub tool_called: Option<ToolExpect>,
    pub no_tool: Option<bool>,
    pub error: Option<String>,
    pub gaps_found: Option<u64>,
    pub heldout_loss: Option<LossExpect>,
    pub ratings: Option<u64>,
}

/// A tool call the turn must make: its name and a subset of its arguments.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolExpect {
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// How the held-out probe loss must move in a learning step.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LossExpect {
    Decreased,
    NotIncreased,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A step as written: every key optional, checked into a [`Step`] by [`RawStep::check`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    say: Option<String>,
    session: Option<String>,
    max_tokens: Option<usize>,
    #[serde(default)]
    expect: Expect,
    remember: Option<String>,
    close: Option<bool>,
    check: Option<Check>,
    learn: Option<LearnSpec>,
    feedback: Option<String>,
    note: Option<String>,
    wait_ms: Option<u64>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    model: ModelSpec,
    #[serde(default)]
    settings: Settings,
    steps: Vec<serde_json::Value>,
}

/// Which expectation keys each action takes.
fn allowed_expectations(kind: &str) -> &'static [&'static str] {
    match kind {
        "say" => &[
            "contains",
            "not_contains",
            "regex",
            "equals",
            "tool_called",
            "no_tool",
            "error",
        ],
        "learn" => &["gaps_found", "heldout_loss"],
        "feedback" => &["ratings"],
        _ => &[],
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let whole = |message: String| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        if meta.len() > MAX_SCENARIO_BYTES {
            return Err(whole(format!(
                "{} bytes; scenario files are at most {MAX_SCENARIO_BYTES}",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| whole(format!("not UTF-8: {e}")))?;
        Scenario::parse(path, &text)
    }

    /// Checks scenario `text` (read from `file`, against which relative paths resolve).
    pub fn parse(file: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let err = |pointer: &[String], message: String| ScenarioError {
            file: file.to_path_buf(),
            line: line_of(text, pointer),
            field: field_name(pointer),
            message,
        };
        let value: toml::Value = toml::from_str(text).map_err(|e| ScenarioError {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_at(text, s.start)),
            field: String::new(),
            message: e.message().trim().to_string(),
        })?;
        let json = serde_json::to_value(&value).map_err(|e| err(&[], e.to_string()))?;
        validate(&json).map_err(|(pointer, message)| err(&pointer, message))?;
        let raw: RawScenario = serde_json::from_value(json).map_err(|e| err(&[], e.to_string()))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut model = raw.model;
        model.checkpoint = model.checkpoint.map(|p| dir.join(p));
        if let Some(t) = &mut model.train {
            t.corpus = t.corpus.as_ref().map(|p| dir.join(p));
            let at = ["model".to_string(), "train".to_string()];
            match (&t.corpus, &t.text) {
                (None, None) | (Some(_), Some(_)) => {
                    return Err(err(&at, "give exactly one of `corpus` and `text`".into()))
                }
                (Some(c), None) if !c.exists() => {
                    let mut at = at.to_vec();
                    at.push("corpus".into());
                    return Err(err(&at, format!("{} does not exist", c.display())));
                }
                _ => {}
            }
        }
        if let Some(c) = &model.checkpoint {
            if !c.is_dir() {
                return Err(err(
                    &["model".into(), "checkpoint".into()],
                    format!("{} is not a directory", c.display()),
                ));
            }
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (i, v) in raw.steps.into_iter().enumerate() {
            let at = vec!["steps".to_string(), i.to_string()];
            let step: RawStep = serde_json::from_value(v).map_err(|e| err(&at, e.to_string()))?;
            let mut step = step
                .check(dir)
                .map_err(|(sub, message)| err(&[at.clone(), sub].concat(), message))?;
            step.line = line_of(text, &at);
            steps.push(step);
        }
        Ok(Scenario {
            file: file.to_path_buf(),
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            model,
            settings: raw.settings,
            steps,
        })
    }
}

impl RawStep {
    /// Exactly one action, expectations that fit it, regexes that compile.
    fn check(self, dir: &Path) -> Result<Step, (Vec<String>, String)> {
        let present: Vec<&str> = [
            self.say.is_some(),
            self.remember.is_some(),
            self.close.is_some(),
            self.check.is_some(),
            self.learn.is_some(),
            self.feedback.is_some(),
            self.wait_ms.is_some(),
        ]
        .iter()
        .zip(ACTIONS)
        .filter(|(p, _)| **p)
        .map(|(_, k)| k)
        .collect();
        let kind = match present.as_slice() {
            [k] => *k,
            [] => {
                return Err((
                    vec![],
                    format!("a step needs one action: {}", ACTIONS.join(", ")),
                ))
            }
            many => {
                return Err((
                    vec![many[1].to_string()],
                    format!(
                        "a step takes one action, this one has {}",
                        many.join(" and ")
                    ),
                ))
            }
        };
        let only_with = |key: &str, set: bool, kinds: &[&str]| {
            if set && !kinds.contains(&kind) {
                Err((
                    vec![key.to_string()],
                    format!("`{key}` goes with {}, not `{kind}`", kinds.join(" or ")),
                ))
            } else {
                Ok(())
            }
        };
        only_with("session", self.session.is_some(), &["say", "close"])?;
        only_with("max_tokens", self.max_tokens.is_some(), &["say"])?;
        only_with("note", self.note.is_some(), &["feedback"])?;
        let mut expect = self.expect;
        let given = serde_json::to_value(&expect).unwrap_or_default();
        let allowed = allowed_expectations(kind);
        if let Some(obj) = given.as_object() {
            for (k, v) in obj {
                let empty = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
                if !empty && !allowed.contains(&k.as_str()) {
                    return Err((
                        vec!["expect".into(), k.clone()],
                        if allowed.is_empty() {
                            format!("`{kind}` steps have no expectations")
                        } else {
                            format!("`{kind}` steps expect only {}", allowed.join(", "))
                        },
                    ));
                }
            }
        }
        for (j, r) in expect.regex.iter().enumerate() {
            let re = regex::Regex::new(r).map_err(|e| {
                (
                    vec!["expect".into(), "regex".into(), j.to_string()],
                    format!("bad regex: {e}"),
                )
            })?;
            expect.compiled.push(re);
        }
        let action = match kind {
            "say" => Action::Say {
                text: self.say.unwrap_or_default(),
                session: self.session,
                max_tokens: self.max_tokens,
            },
            "remember" => Action::Remember(self.remember.unwrap_or_default()),
            "close" => Action::Close {
                session: self.session,
            },
            "check" => Action::Check(self.check.unwrap_or_default()),
            "learn" => {
                let mut l = self.learn.ok_or((vec![], "missing learn".to_string()))?;
                l.corpus = l.corpus.map(|p| dir.join(p));
                if let Some(c) = l.corpus.as_ref().filter(|c| !c.exists()) {
                    return Err((
                        vec!["learn".into(), "corpus".into()],
                        format!("{} does not exist", c.display()),
                    ));
                }
                Action::Learn(l)
            }
            "feedback" => Action::Feedback {
                up: self.feedback.as_deref() == Some("up"),
                note: self.note,
            },
            _ => Action::Wait(self.wait_ms.unwrap_or_default()),
        };
        Ok(Step {
            action,
            expect,
            line: None,
        })
    }
}

/// Checks `json` against [`SCHEMA`]; the first error (in document order) as its JSON
/// pointer's segments and a message.
fn validate(json: &serde_json::Value) -> Result<(), (Vec<String>, String)> {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA)
        .map_err(|e| (vec![], format!("scenarios/schema.json: {e}")))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| (vec![], format!("scenarios/schema.json: {e}")))?;
    let Some(e) = validator.iter_errors(json).next() else {
        return Ok(());
    };
    let mut pointer: Vec<String> = e
        .instance_path()
        .to_string()
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut message = e.to_string();
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = e.kind() {
        // Point at the unknown key itself, and say what was expected.
        if let Some(k) = unexpected.first() {
            pointer.push(k.clone());
            message = if pointer.len() == 3 && pointer[0] == "steps" {
                format!(
                    "unknown key `{k}` (a step's action is one of {})",
                    ACTIONS.join(", ")
                )
            } else {
                format!("unknown key `{k}`")
            };
        }
    }
    Err((pointer, message))
}

/// `steps[2].expect.regex` for the pointer `/steps/2/expect/regex`.
fn field_name(pointer: &[String]) -> String {
    let mut out = String::new();
    for seg in pointer {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where the value at `pointer` is written (its key's line for table entries), or
/// the deepest ancestor found.
fn line_of(text: &str, pointer: &[String]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut array: Option<&toml::de::DeArray> = None;
    let mut span: Option<std::ops::Range<usize>> = None;
    for seg in pointer {
        let next = if let Some(t) = table {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == seg.as_str())
                .map(|(k, v)| {
                    // A key's own line reads better than its value's (tables span many).
                    span = Some(k.span());
                    v
                })
        } else if let Some(a) = array {
            seg.parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .inspect(|v| {
                    span = Some(v.span());
                })
        } else {
            None
        };
        let Some(v) = next else { break };
        table = None;
        array = None;
        match v.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    span.map(|s| line_at(text, s.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn a_valid_scenario_reads_into_steps() {
        let s = parse(
            r#"
name = "ok"
seed = 3
[[steps]]
say = "hola"
expect = { contains = "a", regex = ["^h", "o$"], tool_called = { name = "generate_image", args = { prompt = "x" } } }
[[steps]]
check = { window = { turns = 2 } }
[[steps]]
feedback = "up"
note = "good"
"#,
        )
        .unwrap();
        assert_eq!(s.seed, 3);
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[0].expect.contains, vec!["a"]);
        assert_eq!(s.steps[0].expect.compiled.len(), 2);
        // A step's line is its `[[steps]]` header.
        assert_eq!(s.steps[0].line, Some(4));
        assert_eq!(s.steps[2].line, Some(9));
        assert!(matches!(
            s.steps[2].action,
            Action::Feedback { up: true, .. }
        ));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            // wrong type
            (
                "name = \"x\"\n[[steps]]\nsay = 5\n",
                3,
                "steps[0].say",
                "not of type",
            ),
            // unknown step kind
            (
                "name = \"x\"\n[[steps]]\nsay = \"a\"\n[[steps]]\nlern = 3\n",
                5,
                "steps[1].lern",
                "unknown key `lern`",
            ),
            // bad regex
            (
                "name = \"x\"\n[[steps]]\nsay = \"a\"\nexpect = { regex = \"(\" }\n",
                4,
                "steps[0].expect.regex[0]",
                "bad regex",
            ),
            // two actions
            (
                "name = \"x\"\n[[steps]]\nsay = \"a\"\nwait_ms = 3\n",
                4,
                "steps[0].wait_ms",
                "one action",
            ),
            // expectation that does not fit the action
            (
                "name = \"x\"\n[[steps]]\nwait_ms = 3\nexpect = { contains = \"a\" }\n",
                4,
                "steps[0].expect.contains",
                "no expectations",
            ),
            // TOML syntax
            ("name = \"x\"\n[[steps]\n", 2, "", ""),
        ];
        for (text, line, field, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("t.toml:{line}:")), "{e}");
        }
        // A whole-file error has no line.
        let e = parse("name = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (None, ""), "{e}");
        assert!(e.message.contains("steps"), "{e}");
    }
}
