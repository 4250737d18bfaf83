//! Actor settings: one TOML file per actor in `agents/` ([`AgentSpec`]), the list of actor
//! kinds ([`ActorKind`]) and the copies of the repository's `agents/*.toml` built into the
//! binary ([`BUILTIN_AGENTS`]) so that `thau` works from any directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{parse_toml_str, read_text};
use crate::error::{ConfigError, Result};

/// Largest mailbox an actor may ask for.
pub const MAX_MAILBOX: usize = 65_536;
/// Most threads a sync-arbiter actor may ask for.
pub const MAX_SYNC_THREADS: usize = 16;

/// Every actor THAU knows, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActorKind {
    EpisodicMemory,
    LongTermMemory,
    ShortTermMemory,
    Inference,
    ImageTool,
    ToolRouter,
    GapDetector,
    Learner,
    Questioner,
    Tuner,
}

impl ActorKind {
    pub const ALL: [ActorKind; 10] = [
        ActorKind::EpisodicMemory,
        ActorKind::LongTermMemory,
        ActorKind::ShortTermMemory,
        ActorKind::Inference,
        ActorKind::ImageTool,
        ActorKind::ToolRouter,
        ActorKind::GapDetector,
        ActorKind::Learner,
        ActorKind::Questioner,
        ActorKind::Tuner,
    ];

    /// The actor's name: its `agents/NAME.toml` file stem.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::EpisodicMemory => "episodic_memory",
            ActorKind::LongTermMemory => "long_term_memory",
            ActorKind::ShortTermMemory => "short_term_memory",
            ActorKind::Inference => "inference",
            ActorKind::ImageTool => "image_tool",
            ActorKind::ToolRouter => "tool_router",
            ActorKind::GapDetector => "gap_detector",
            ActorKind::Learner => "learner",
            ActorKind::Questioner => "questioner",
            ActorKind::Tuner => "tuner",
        }
    }

    pub fn from_name(name: &str) -> Option<ActorKind> {
        ActorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// CPU-heavy actors run on sync-arbiter threads, never on the async arbiters.
    pub fn is_sync(self) -> bool {
        matches!(
            self,
            ActorKind::Inference | ActorKind::Learner | ActorKind::ImageTool
        )
    }
}

/// The repository's `agents/*.toml`, compiled in.
pub const BUILTIN_AGENTS: [(&str, &str); 10] = [
    (
        "episodic_memory",
        include_str!("../../agents/episodic_memory.toml"),
    ),
    (
        "long_term_memory",
        include_str!("../../agents/long_term_memory.toml"),
    ),
    (
        "short_term_memory",
        include_str!("../../agents/short_term_memory.toml"),
    ),
    ("inference", include_str!("../../agents/inference.toml")),
    ("image_tool", include_str!("../../agents/image_tool.toml")),
    ("tool_router", include_str!("../../agents/tool_router.toml")),
    (
        "gap_detector",
        include_str!("../../agents/gap_detector.toml"),
    ),
    ("learner", include_str!("../../agents/learner.toml")),
    ("questioner", include_str!("../../agents/questioner.toml")),
    ("tuner", include_str!("../../agents/tuner.toml")),
];

/// One actor's settings, from `agents/NAME.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Whether the runtime starts this actor.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Mailbox capacity of an async actor (sync actors use actix's fixed queue).
    #[serde(default = "default_mailbox")]
    pub mailbox: usize,
    /// Threads of a sync-arbiter actor (each holds its own state).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// The actor's own parameters; each actor reads the keys it knows.
    #[serde(default)]
    pub params: toml::Table,
}

fn default_enabled() -> bool {
    true
}
fn default_mailbox() -> usize {
    64
}
fn default_threads() -> usize {
    1
}

impl AgentSpec {
    /// Parses one agent file's text, checking bounds; errors name file, line and field.
    pub fn parse(file: &Path, text: &str) -> Result<AgentSpec, ConfigError> {
        let spec: AgentSpec = parse_toml_str(file, text)?;
        let bound = |field: &str, value: usize, max: usize| -> Result<(), ConfigError> {
            if (1..=max).contains(&value) {
                return Ok(());
            }
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(field))
                .map_or(1, |i| i + 1);
            Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                line,
                column: 1,
                field: field.to_string(),
                message: format!("{value} is out of range 1..={max}"),
            })
        };
        bound("mailbox", spec.mailbox, MAX_MAILBOX)?;
        bound("threads", spec.threads, MAX_SYNC_THREADS)?;
        Ok(spec)
    }
}

/// Reads every `*.toml` of `dir` (or the built-in copies when `dir` is `None`), keyed by
/// actor kind. A file whose name is not an actor is an error, so typos do not go unseen.
pub fn load_agents(dir: Option<&Path>) -> Result<BTreeMap<ActorKind, AgentSpec>> {
    let mut out = BTreeMap::new();
    let files: Vec<(PathBuf, String)> = match dir {
        None => BUILTIN_AGENTS
            .iter()
            .map(|(n, t)| {
                (
                    PathBuf::from(format!("<built-in>/agents/{n}.toml")),
                    t.to_string(),
                )
            })
            .collect(),
        Some(dir) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| crate::error::ThauError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            paths
                .into_iter()
                .map(|p| Ok((p.clone(), read_text(&p)?)))
                .collect::<Result<_, ConfigError>>()?
        }
    };
    for (path, text) in files {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let kind = ActorKind::from_name(stem).ok_or_else(|| ConfigError::Invalid {
            file: path.clone(),
            line: 1,
            column: 1,
            field: "<file name>".into(),
            message: format!(
                "`{stem}` is not an actor; known: {}",
                ActorKind::ALL.map(|k| k.name()).join(", ")
            ),
        })?;
        out.insert(kind, AgentSpec::parse(&path, &text)?);
    }
    Ok(out)
}
