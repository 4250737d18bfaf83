//! Configuration: [`ThauConfig`] is built in layers — built-in defaults < `thau.toml` in the
//! data directory < `THAU_*` environment variables < command-line flags — and
//! [`parse_toml`] turns any TOML file into a typed value with errors that name the file,
//! line and field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result, ThauError};

/// The `[memory]` section is the memory stores' own settings type: the stores sit below the
/// configuration and never import it.
pub use crate::memory::MemorySection;

/// Name of the configuration file inside the data directory.
pub const CONFIG_FILE: &str = "thau.toml";
/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "THAU_";
/// Environment variable naming the data directory.
pub const HOME_ENV: &str = "THAU_HOME";
/// Data directory used when neither `--home` nor `$THAU_HOME` is given.
pub const DEFAULT_HOME: &str = "thau-data";

/// The effective configuration of a THAU data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThauConfig {
    /// Log filter for `tracing` (e.g. `info`, `thau=debug`).
    pub log: String,
    /// Compute device for training, learning, growth and inference: `cpu`, `cuda` or
    /// `cuda:N` (needs a build with the `cuda` feature; see [`crate::model::device`]).
    pub device: String,
    /// Seed for everything random (training order, initialisation, sampling).
    pub seed: u64,
    pub model: ModelSection,
    pub paths: PathsSection,
    pub server: ServerSection,
    pub memory: MemorySection,
}

/// Which model the runtime serves and trains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Current age of the model (0, 1, 3, 6, 12 or 15).
    pub age: u32,
    /// Vocabulary size of the BPE tokenizer trained at age 0.
    pub vocab_size: usize,
    /// Longest sequence the model attends over.
    pub context_length: usize,
    /// A `llama`-architecture GGUF file for the Inference actor to serve instead of the
    /// newest checkpoint (empty: serve the checkpoint).
    pub gguf: String,
    /// Give a model `thau train` starts from nothing a copy head
    /// ([`crate::model::copy`]), so it can copy answers from recalled memories. `thau
    /// learn` has its own setting (`copy_head` in `agents/learner.toml`, on by default).
    pub copy_head: bool,
}

/// Where the runtime finds its settings folders. Empty means "inside the data directory,
/// or the copy built into the binary when that folder does not exist".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathsSection {
    pub agents_dir: String,
}

/// The HTTP server (`thau serve`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub addr: String,
    /// WebSocket chat sessions open at once; more are refused with 503.
    pub max_sessions: usize,
    /// Chat turns per session (or per client without one) per minute; 0 = unlimited.
    pub turns_per_minute: u32,
    /// Learn while serving (`thau serve --learn`): learning sessions run in the server.
    pub learn: bool,
    /// Length of each background learning session, in minutes (one follows another).
    pub learn_minutes: f64,
    /// What the background sessions learn from (as `thau learn --corpus`).
    pub learn_corpus: String,
}

impl Default for ThauConfig {
    fn default() -> Self {
        ThauConfig {
            log: "warn".into(),
            device: "cpu".into(),
            seed: 42,
            model: ModelSection::default(),
            paths: PathsSection::default(),
            server: ServerSection::default(),
            memory: MemorySection::default(),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            age: 0,
            vocab_size: 8192,
            context_length: 256,
            gguf: String::new(),
            copy_head: false,
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            addr: "127.0.0.1:8000".into(),
            max_sessions: 64,
            turns_per_minute: 60,
            learn: false,
            learn_minutes: 20.0,
            learn_corpus: "data/corpus".into(),
        }
    }
}

/// Resolves the data directory: `--home` flag, else `$THAU_HOME`, else `./thau-data`.
pub fn resolve_home(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(HOME_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_HOME),
    }
}

/// One `KEY=VALUE` override given on the command line (dotted key, TOML value).
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
}

impl ThauConfig {
    /// Loads the layered configuration of `home`: defaults, then `home/thau.toml` if it
    /// exists, then `THAU_*` variables from `env`, then `flags`.
    pub fn load(
        home: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[Override],
    ) -> Result<ThauConfig> {
        let mut tree = toml::Value::try_from(ThauConfig::default())
            .map_err(|e| ThauError::Runtime(format!("default config: {e}")))?;
        let file = home.join(CONFIG_FILE);
        if file.exists() {
            let text = read_text(&file)?;
            // Parse the file on its own first so errors point at its own lines.
            let _: ThauConfig = parse_toml_str(&file, &text)?;
            let user: toml::Value = parse_toml_str(&file, &text)?;
            merge(&mut tree, user);
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let leaves = leaf_paths(&tree);
        for path in &leaves {
            let name = format!("{ENV_PREFIX}{}", path.join("_").to_uppercase());
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == name) {
                set_leaf(&mut tree, path, v, &name)?;
            }
        }
        for o in flags {
            let path: Vec<String> = o.key.split('.').map(str::to_string).collect();
            if !leaves.contains(&path) {
                return Err(ThauError::Invalid(format!(
                    "--set {}: unknown configuration key (see `thau config show`)",
                    o.key
                )));
            }
            set_leaf(&mut tree, &path, &o.value, &format!("--set {}", o.key))?;
        }
        let text = toml::to_string(&tree)
            .map_err(|e| ThauError::Runtime(format!("config serialisation: {e}")))?;
        Ok(parse_toml_str(&file, &text)?)
    }

    /// The configuration as TOML text, as `thau config show` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Deep-merges `over` into `base` (tables merge key by key; other values replace).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Dotted paths of every non-table value of `tree`.
fn leaf_paths(tree: &toml::Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    fn walk(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    prefix.push(k.clone());
                    walk(v, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Replaces the leaf at `path` with `raw`, read as the same type the leaf has now.
fn set_leaf(tree: &mut toml::Value, path: &[String], raw: &str, origin: &str) -> Result<()> {
    let mut slot = tree;
    for k in path {
        slot = slot
            .get_mut(k.as_str())
            .ok_or_else(|| ThauError::Invalid(format!("{origin}: unknown key")))?;
    }
    let bad = |what: &str| ThauError::Invalid(format!("{origin}: `{raw}` is not {what}"));
    *slot = match slot {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        _ => return Err(bad("a plain value")),
    };
    Ok(())
}

/// Reads a UTF-8 text file, naming it in the error.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a TOML file into `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text(path)?;
    parse_toml_str(path, &text)
}

/// Parses TOML `text` (read from `path`) into `T`; errors carry file, line, column and the
/// field they concern.
pub fn parse_toml_str<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let (line, column) = line_col(text, offset);
        let message = e.message().trim().to_string();
        ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            column,
            field: field_of(&message, text, offset),
            message,
        }
    })
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The field a TOML error concerns: named in the message (`missing field `x``,
/// `unknown field `x``), else the key written on the offending line.
fn field_of(message: &str, text: &str, offset: usize) -> String {
    if let Some(start) = message.find("field `") {
        let rest = &message[start + 7..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    let start = text[..text.floor_char_boundary(offset)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().trim_matches('"').to_string(),
        None => line.trim().trim_matches(['[', ']']).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "seed = 7\n[model]\nvocab_size = 4096\n",
        )
        .unwrap();
        let env = vec![("THAU_MODEL_VOCAB_SIZE".to_string(), "2048".to_string())];
        let c = ThauConfig::load(dir.path(), env.clone(), &[]).unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.model.vocab_size, 2048);
        assert_eq!(c.model.context_length, 256);
        let flags = [Override {
            key: "model.vocab_size".into(),
            value: "1024".into(),
        }];
        let c = ThauConfig::load(dir.path(), env, &flags).unwrap();
        assert_eq!(c.model.vocab_size, 1024);
    }

    #[test]
    fn bad_values_name_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(CONFIG_FILE);
        std::fs::write(&f, "seed = 1\n[model]\nage = \"old\"\n").unwrap();
        let e = ThauConfig::load(dir.path(), vec![], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("thau.toml:3:"), "{msg}");
        assert!(msg.contains("`age`"), "{msg}");
        let env = vec![("THAU_SEED".to_string(), "many".to_string())];
        std::fs::remove_file(&f).unwrap();
        let e = ThauConfig::load(dir.path(), env, &[]).unwrap_err();
        assert!(e.to_string().contains("THAU_SEED"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "[model]\nwidth = 3\n").unwrap();
        let e = ThauConfig::load(dir.path(), vec![], &[]).unwrap_err();
        assert!(e.to_string().contains("`width`"), "{e}");
    }
}
