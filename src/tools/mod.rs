//! Tools the model may call: the incremental [`parser::ToolCallParser`] for
//! `<TOOL:name>{json}</TOOL>` in model output, the [`ToolRegistry`] of manifests
//! (`tools/*.json`: name, description, the JSON Schema of the arguments, the actor that
//! runs it) that checks calls with the `jsonschema` crate, the keyword [`intent`] fallback
//! for a model too young to write calls, and the [`image`] backends of the ImageTool.
//!
//! Adding a tool: a manifest in `tools/`, listed in [`BUILTIN_TOOLS`], and an actor that
//! runs it, wired in the ToolRouter's dispatch.

pub mod dataset;
pub mod image;
pub mod intent;
pub mod parser;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::grammar::CallGrammar;
use crate::model::tokenizer::{ThauTokenizer, TOOL_CLOSE_ID};

pub use parser::{ParseEvent, RawCall, ToolCallError, ToolCallParser};

/// The repository's `tools/*.json`, compiled in.
pub const BUILTIN_TOOLS: [(&str, &str); 1] = [(
    "generate_image",
    include_str!("../../tools/generate_image.json"),
)];

/// A tool's manifest (`tools/NAME.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolManifest {
    pub name: String,
    pub description: String,
    /// The actor that runs it (an `agents/NAME.toml` name).
    pub actor: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A call whose tool exists and whose arguments fit its schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: serde_json::Value,
}

/// What the registry made of model output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolEvent {
    Text { text: String },
    Call { call: ToolCall },
    Invalid { error: ToolCallError },
}

/// Every known tool with its compiled schema.
pub struct ToolRegistry {
    tools: BTreeMap<String, (ToolManifest, jsonschema::Validator)>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolRegistry {
    /// The built-in tools.
    pub fn builtin() -> Result<ToolRegistry, String> {
        Self::from_manifests(
            BUILTIN_TOOLS
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string())),
        )
    }

    /// Tools from `(file name, JSON text)` pairs; errors name the file.
    pub fn from_manifests(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ToolRegistry, String> {
        let mut tools = BTreeMap::new();
        for (file, text) in files {
            let m: ToolManifest =
                serde_json::from_str(&text).map_err(|e| format!("tools/{file}.json: {e}"))?;
            if m.name != file {
                return Err(format!(
                    "tools/{file}.json: its name is `{}`; a manifest is named after its tool",
                    m.name
                ));
            }
            let v = jsonschema::validator_for(&m.parameters)
                .map_err(|e| format!("tools/{file}.json: invalid schema: {e}"))?;
            tools.insert(m.name.clone(), (m, v));
        }
        Ok(ToolRegistry { tools })
    }

    pub fn manifests(&self) -> impl Iterator<Item = &ToolManifest> {
        self.tools.values().map(|(m, _)| m)
    }

    pub fn get(&self, name: &str) -> Option<&ToolManifest> {
        self.tools.get(name).map(|(m, _)| m)
    }

    /// Checks a parsed call: the tool exists and the arguments fit its schema.
    pub fn check(&self, raw: RawCall) -> Result<ToolCall, ToolCallError> {
        let Some((_, validator)) = self.tools.get(&raw.name) else {
            return Err(ToolCallError::UnknownTool {
                name: raw.name,
                known: self.tools.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let errors: Vec<String> = validator
            .iter_errors(&raw.arguments)
            .map(|e| {
                // Name the argument: "/width: 100 is not a multiple of 8".
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(ToolCallError::Schema {
                name: raw.name,
                errors,
            });
        }
        Ok(ToolCall {
            name: raw.name,
            arguments: raw.arguments,
        })
    }

    /// Parser events with every call checked.
    pub fn resolve(&self, events: Vec<ParseEvent>) -> Vec<ToolEvent> {
        events
            .into_iter()
            .map(|e| match e {
                ParseEvent::Text(text) => ToolEvent::Text { text },
                ParseEvent::Invalid(error) => ToolEvent::Invalid { error },
                ParseEvent::Call(raw) => match self.check(raw) {
                    Ok(call) => ToolEvent::Call { call },
                    Err(error) => ToolEvent::Invalid { error },
                },
            })
            .collect()
    }

    /// The grammar that decodes calls to these tools over `tok`'s vocabulary
    /// ([`crate::model::grammar`]): a call can then only name one of them and hold
    /// arguments its schema accepts.
    pub fn grammar(&self, tok: &ThauTokenizer) -> Result<CallGrammar, String> {
        CallGrammar::new(
            self.tools
                .values()
                .map(|(m, _)| (m.name.as_str(), &m.parameters)),
            tok.token_bytes(),
            TOOL_CLOSE_ID,
        )
    }

    /// Parses and checks a whole model output.
    pub fn scan(&self, output: &str) -> Vec<ToolEvent> {
        self.resolve(ToolCallParser::parse_all(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_are_checked_against_the_manifest_schema() {
        let reg = ToolRegistry::builtin().unwrap();
        let ok =
            reg.scan("<TOOL:generate_image>{\"prompt\": \"a red fox\", \"width\": 256}</TOOL>");
        assert_eq!(
            ok,
            vec![ToolEvent::Call {
                call: ToolCall {
                    name: "generate_image".into(),
                    arguments: json!({"prompt": "a red fox", "width": 256}),
                }
            }]
        );
        for bad in [
            "{}",
            "{\"prompt\": 3}",
            "{\"prompt\": \"\"}",
            "{\"prompt\": \"x\", \"width\": 100000}",
            "{\"prompt\": \"x\", \"width\": 250}",
            "{\"prompt\": \"x\", \"steps\": 3}",
        ] {
            let ev = reg.scan(&format!("<TOOL:generate_image>{bad}</TOOL>"));
            assert!(
                matches!(&ev[..], [ToolEvent::Invalid { error: ToolCallError::Schema { errors, .. } }] if !errors.is_empty()),
                "{bad}: {ev:?}"
            );
        }
        let ev = reg.scan("<TOOL:launch_rockets>{\"count\": 3}</TOOL>");
        assert!(matches!(
            &ev[..],
            [ToolEvent::Invalid { error: ToolCallError::UnknownTool { name, known } }]
                if name == "launch_rockets" && known == "generate_image"
        ));
    }

    #[test]
    fn bad_manifests_are_refused_with_their_file() {
        let err = ToolRegistry::from_manifests([("x".to_string(), "{".to_string())]).unwrap_err();
        assert!(err.contains("tools/x.json"), "{err}");
        let wrong_name =
            r#"{"name":"y","description":"d","actor":"a","parameters":{"type":"object"}}"#;
        let err =
            ToolRegistry::from_manifests([("x".to_string(), wrong_name.to_string())]).unwrap_err();
        assert!(err.contains("named after"), "{err}");
        let bad_schema =
            r#"{"name":"x","description":"d","actor":"a","parameters":{"type":"no-such-type"}}"#;
        assert!(ToolRegistry::from_manifests([("x".to_string(), bad_schema.to_string())]).is_err());
    }
}
