//! What clients of the Ollama and OpenAI APIs send, as THAU reads it: messages whose
//! content may be absent, `null` or a list of parts, with images and calls of the
//! client's tools; the tools themselves and which one must be called; stop strings; and
//! the JSON an answer must be. Pure parsing: each function turns the client's JSON into
//! THAU's types or a [`WireError`] that names the field.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::tokenizer::{Message, Role};
use crate::tools::parser::{valid_name, ToolCallError};

/// Most stop strings a request may set (OpenAI allows 4; Ollama clients send a few).
pub const MAX_STOPS: usize = 16;
/// Longest stop string, in characters.
pub const MAX_STOP_CHARS: usize = 64;
/// Most tools a request may bring.
pub const MAX_TOOLS: usize = 64;

/// A request field THAU cannot use, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn err(m: impl Into<String>) -> WireError {
    WireError(m.into())
}

/// One message as either API sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub role: String,
    /// A string, `null`/absent (an assistant turn that only calls tools), or (OpenAI) a
    /// list of parts of which the text ones are read.
    #[serde(default)]
    pub content: Option<Value>,
    /// Ollama's pictures, base64: THAU reads text only, so they are left out.
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    /// The calls an assistant turn made (OpenAI: arguments as a JSON string; Ollama: as
    /// an object).
    #[serde(default)]
    pub tool_calls: Option<Vec<WireCall>>,
}

/// A call in an assistant turn.
#[derive(Debug, Clone, Deserialize)]
pub struct WireCall {
    pub function: WireFunction,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// A conversation in THAU's chat template, and how many parts of it THAU could not read
/// (pictures and other non-text parts).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub unread_parts: usize,
}

/// The client's messages as THAU's: `developer` is a system turn; an assistant's calls
/// are written in THAU's call format after its text, as its chat template holds them.
pub fn conversation(ms: &[WireMessage]) -> Result<Conversation, WireError> {
    let mut out = Conversation {
        messages: Vec::with_capacity(ms.len()),
        unread_parts: 0,
    };
    for (i, m) in ms.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(err(format!(
                    "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                )))
            }
        };
        let mut text = match &m.content {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                        _ => out.unread_parts += 1,
                    }
                }
                texts.join("\n")
            }
            Some(_) => {
                return Err(err(format!(
                    "messages[{i}].content must be a string, null or a list of parts"
                )))
            }
        };
        out.unread_parts += m.images.as_ref().map_or(0, Vec::len);
        for c in m.tool_calls.iter().flatten() {
            text.push_str(
                &call_text(&c.function)
                    .map_err(|e| err(format!("messages[{i}].tool_calls: {}", e.0)))?,
            );
        }
        out.messages.push(Message::new(role, text));
    }
    Ok(out)
}

/// A call as THAU writes it: `<TOOL:name>{json}</TOOL>`.
fn call_text(f: &WireFunction) -> Result<String, WireError> {
    check_name(&f.name)?;
    let args = match &f.arguments {
        // OpenAI sends the arguments as JSON text.
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|e| err(format!("the arguments of `{}` are not JSON: {e}", f.name)))?,
        Value::Null => json!({}),
        v => v.clone(),
    };
    Ok(format!("<TOOL:{}>{args}</TOOL>", f.name))
}

/// A name THAU's calls can hold (the parser's rule, [`valid_name`]).
fn check_name(name: &str) -> Result<(), WireError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(err(ToolCallError::BadName { name: name.into() }.to_string()))
    }
}

/// A tool the client offers: `{"type": "function", "function": {"name", "description",
/// "parameters"}}` in both APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTool {
    pub name: String,
    pub description: String,
    /// The JSON Schema of its arguments (`{"type": "object"}` when none is given).
    pub parameters: Value,
}

/// The `tools` field.
pub fn tools(v: &Value) -> Result<Vec<ClientTool>, WireError> {
    let Value::Array(list) = v else {
        return Err(err("`tools` must be a list"));
    };
    if list.len() > MAX_TOOLS {
        return Err(err(format!(
            "`tools` holds {} tools; at most {MAX_TOOLS}",
            list.len()
        )));
    }
    let mut out: Vec<ClientTool> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let f = t.get("function").unwrap_or(t);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(err(format!("tools[{i}].function.name is missing")));
        };
        check_name(name).map_err(|e| err(format!("tools[{i}]: {}", e.0)))?;
        if out.iter().any(|o| o.name == name) {
            return Err(err(format!("tools[{i}]: `{name}` is offered twice")));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(err(format!(
                    "tools[{i}].function.parameters must be a JSON Schema object"
                )))
            }
        };
        out.push(ClientTool {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            parameters,
        });
    }
    Ok(out)
}

/// What the answer must do with the tools (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No call: the tools are not offered.
    None,
    /// A call to one of the tools, whichever the model picks.
    Required,
    /// A call to this tool.
    Named(String),
}

/// The `tool_choice` field, checked against the offered tools.
pub fn tool_choice(v: Option<&Value>, offered: &[ClientTool]) -> Result<ToolChoice, WireError> {
    let choice = match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(err(format!(
                    "tool_choice `{other}` is not one of auto, none, required or a function"
                )))
            }
        },
        Some(o) => match o.pointer("/function/name").and_then(Value::as_str) {
            Some(n) => ToolChoice::Named(n.to_string()),
            None => return Err(err("tool_choice: a choice object names `function.name`")),
        },
    };
    match &choice {
        ToolChoice::Required if offered.is_empty() => {
            Err(err("tool_choice `required` needs `tools`"))
        }
        ToolChoice::Named(n) if !offered.iter().any(|t| &t.name == n) => Err(err(format!(
            "tool_choice names `{n}`, which is not among `tools`"
        ))),
        _ => Ok(choice),
    }
}

/// The system turn that tells the model which tools it may call and how.
pub fn tools_turn(tools: &[ClientTool]) -> Message {
    let mut s = String::from(
        "You can call these tools. To call one, write <TOOL:name>{JSON arguments}</TOOL> and nothing else in that turn.",
    );
    for t in tools {
        s.push_str(&format!("\n- {}", t.name));
        if !t.description.is_empty() {
            s.push_str(&format!(": {}", t.description));
        }
        s.push_str(&format!(" Arguments: {}", t.parameters));
    }
    Message::new(Role::System, s)
}

/// Stop strings: `"\n"` or `["\n", "User:"]` (both APIs).
pub fn stops(v: Option<&Value>) -> Result<Vec<String>, WireError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err("`stop` must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("`stop` must be a string or a list of strings")),
    };
    if list.len() > MAX_STOPS {
        return Err(err(format!(
            "`stop` holds {} strings; at most {MAX_STOPS}",
            list.len()
        )));
    }
    if let Some(s) = list
        .iter()
        .find(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS)
    {
        return Err(err(format!(
            "stop string {s:?}: 1 to {MAX_STOP_CHARS} characters"
        )));
    }
    Ok(list)
}

/// The JSON Schema an answer is held to: Ollama's `format` (`"json"` or a schema).
pub fn ollama_format(v: Option<&Value>) -> Result<Option<Value>, WireError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "object"}))),
        Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
        Some(_) => Err(err("`format` must be \"json\" or a JSON Schema object")),
    }
}

/// The JSON Schema an answer is held to: OpenAI's `response_format` (`text`,
/// `json_object`, or `json_schema` with its `schema`).
pub fn openai_format(v: Option<&Value>) -> Result<Option<Value>, WireError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => match v.pointer("/json_schema/schema") {
            Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
            _ => Err(err(
                "response_format json_schema needs `json_schema.schema`",
            )),
        },
        _ => Err(err(
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// Holds back the end of an answer that could still become a stop string, and cuts the
/// answer where one appears (the stop string itself is not part of the answer, as in
/// both APIs).
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// The answer so far, stop string excluded once one is found.
    text: String,
    /// Bytes of `text` already let through.
    shown: usize,
    hit: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        StopFilter {
            stops,
            ..Default::default()
        }
    }

    /// Takes the next piece; returns the text that can be shown now. After a stop
    /// string, nothing more.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        let from = self.text.len().saturating_sub(self.longest_stop());
        self.text.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                let at = floor_boundary(&self.text, from);
                self.text[at..].find(s.as_str()).map(|i| at + i)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            self.hit = true;
            return self.release(self.text.len());
        }
        // Keep back the longest end of the text that begins a stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .skip(1)
                    .map(|(i, _)| &s[..i])
                    .filter(|p| self.text.ends_with(p))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0);
        self.release(self.text.len() - keep)
    }

    /// The answer ended: whatever was held back.
    pub fn finish(&mut self) -> String {
        self.release(self.text.len())
    }

    /// Whether a stop string ended the answer.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// The answer (without its stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self, upto: usize) -> String {
        let upto = upto.max(self.shown);
        let s = self.text[self.shown..upto].to_string();
        self.shown = upto;
        s
    }

    fn longest_stop(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Value) -> Vec<WireMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn null_absent_and_array_content_and_the_developer_role_are_read() {
        let c = conversation(&msgs(json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hola"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "¿qué es?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Lima\"}"}}]},
            {"role": "tool", "content": "18 C", "tool_call_id": "c1"},
            {"role": "assistant"},
            {"role": "user", "content": "", "images": ["iVBORw0KGgo="]}
        ])))
        .unwrap();
        let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, Tool, Assistant, User]);
        assert_eq!(c.messages[1].content, "hola\n¿qué es?");
        assert_eq!(
            c.messages[2].content,
            r#"<TOOL:get_weather>{"city":"Lima"}</TOOL>"#
        );
        assert_eq!(c.messages[4].content, "");
        assert_eq!(c.unread_parts, 2, "the picture part and the Ollama image");
        // Ollama sends arguments as an object.
        let o = conversation(&msgs(json!([{"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}])))
        .unwrap();
        assert_eq!(o.messages[0].content, r#"<TOOL:f>{"a":1}</TOOL>"#);
    }

    #[test]
    fn bad_roles_contents_and_call_arguments_are_named() {
        for (v, says) in [
            (
                json!([{"role": "wizard", "content": "x"}]),
                "messages[0].role",
            ),
            (
                json!([{"role": "user", "content": 5}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]),
                "messages[1].tool_calls",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [{"function": {"name": "a b", "arguments": "{}"}}]}]),
                "tool name `a b`",
            ),
        ] {
            let e = conversation(&msgs(v)).unwrap_err();
            assert!(e.0.contains(says), "{e}");
        }
    }

    #[test]
    fn tools_and_tool_choice_are_checked_against_each_other() {
        let t = tools(
            &json!([{"type": "function", "function": {"name": "get_weather",
            "description": "The weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]),
        )
        .unwrap();
        assert_eq!(t[0].name, "get_weather");
        assert_eq!(tool_choice(None, &t).unwrap(), ToolChoice::Auto);
        assert_eq!(
            tool_choice(
                Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
                &t
            )
            .unwrap(),
            ToolChoice::Named("get_weather".into())
        );
        assert!(tool_choice(
            Some(&json!({"type": "function", "function": {"name": "nope"}})),
            &t
        )
        .is_err());
        assert!(tool_choice(Some(&json!("required")), &[]).is_err());
        assert!(tool_choice(Some(&json!("sometimes")), &t).is_err());
        assert!(tools(&json!([{"function": {"name": "x"}}, {"function": {"name": "x"}}])).is_err());
        assert!(tools(&json!({"name": "x"})).is_err());
        let turn = tools_turn(&t);
        assert!(
            turn.content
                .contains("- get_weather: The weather Arguments: {"),
            "{}",
            turn.content
        );
    }

    #[test]
    fn stop_strings_cut_the_answer_even_across_pieces_and_hold_back_only_a_possible_start() {
        let mut f = StopFilter::new(vec!["\nUser:".into(), "END".into()]);
        let mut shown = String::new();
        for p in ["Hello", " wor", "ld\nUs", "er: more"] {
            shown.push_str(&f.push(p));
        }
        assert_eq!(shown, "Hello world");
        assert!(f.hit());
        assert_eq!(f.text(), "Hello world");
        assert_eq!(f.push("again"), "");
        // A held-back start that never becomes a stop string is let through at the end.
        let mut f = StopFilter::new(vec!["ENDING".into()]);
        assert_eq!(f.push("it is the EN"), "it is the ");
        assert_eq!(f.finish(), "EN");
        assert!(!f.hit());
        // No stops: everything passes at once; multi-byte text is cut on boundaries.
        let mut f = StopFilter::new(vec!["ñ".into()]);
        assert_eq!(f.push("año"), "a");
        assert_eq!(f.text(), "a");
    }

    #[test]
    fn formats_become_schemas() {
        assert_eq!(
            ollama_format(Some(&json!("json"))).unwrap(),
            Some(json!({"type": "object"}))
        );
        assert_eq!(ollama_format(None).unwrap(), None);
        assert!(ollama_format(Some(&json!("yaml"))).is_err());
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            openai_format(Some(
                &json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s}})
            ))
            .unwrap(),
            Some(s)
        );
        assert_eq!(openai_format(Some(&json!({"type": "text"}))).unwrap(), None);
        assert!(openai_format(Some(&json!({"type": "xml"}))).is_err());
        assert_eq!(stops(Some(&json!("\n"))).unwrap(), ["\n"]);
        assert!(stops(Some(&json!([""]))).is_err());
        assert!(stops(Some(&json!(3))).is_err());
    }
}
