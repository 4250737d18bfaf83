//! [`ToolCallParser`]: an incremental parser for `<TOOL:name>{json}</TOOL>` in streamed
//! model output. Text is fed as it is decoded, in pieces of any size (a tag or a JSON string
//! may be split anywhere); the parser hands back [`ParseEvent`]s: text that is safe to
//! show, complete calls (name and parsed JSON arguments), and malformed calls as errors.
//!
//! What it accepts: `<TOOL:` then a name of letters, digits, `_` or `-` (whitespace around
//! it tolerated), `>`, optional whitespace, one JSON object — braces inside strings and
//! escaped quotes are handled — optional whitespace and `</TOOL>`. A payload over
//! [`ToolCallParser::max_payload`] bytes is rejected without being buffered further (the
//! rest of it up to `</TOOL>` is dropped). The parser is purely syntactic: whether the tool
//! exists and its arguments fit its schema is the registry's business
//! ([`super::ToolRegistry::check`]).

use serde::Serialize;

/// Opens a call.
pub const OPEN: &str = "<TOOL:";
/// Closes a call.
pub const CLOSE: &str = "</TOOL>";
/// Longest tool name.
pub const MAX_NAME: usize = 64;
/// Default largest JSON payload, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// A syntactically complete call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawCall {
    pub name: String,
    pub arguments: serde_json::Value,
}

/// Why a call could not be used; shown to the user and fed back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ToolCallError {
    #[error("malformed tool name `{name}`: use letters, digits, `_` or `-` (at most {MAX_NAME})")]
    BadName { name: String },
    #[error("the arguments of `{name}` are not a JSON object: {detail}")]
    BadJson { name: String, detail: String },
    #[error("the arguments of `{name}` exceed {limit} bytes")]
    Oversize { name: String, limit: usize },
    #[error("the call to `{name}` is not closed with {CLOSE}")]
    MissingClose { name: String },
    #[error("the output ended inside a tool call (`{name}`)")]
    Unterminated { name: String },
    #[error("unknown tool `{name}` (known: {known})")]
    UnknownTool { name: String, known: String },
    #[error("invalid arguments for `{name}`: {}", errors.join("; "))]
    Schema { name: String, errors: Vec<String> },
}

/// What the parser found in the text so far.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseEvent {
    /// Ordinary text (never part of a call).
    Text(String),
    Call(RawCall),
    Invalid(ToolCallError),
}

#[derive(Debug)]
enum State {
    /// Outside any call.
    Text,
    /// After `<TOOL:`, reading the name up to `>`.
    Name { name: String },
    /// After `>`, before the `{`.
    BeforeJson { name: String },
    /// Inside the JSON object.
    Json {
        name: String,
        json: String,
        depth: usize,
        in_string: bool,
        escaped: bool,
    },
    /// After the JSON object, expecting `</TOOL>`.
    Close {
        name: String,
        arguments: serde_json::Value,
        matched: usize,
    },
    /// Dropping an oversize payload up to `</TOOL>`.
    Skip { matched: usize },
}

/// The incremental parser; one per model response.
#[derive(Debug)]
pub struct ToolCallParser {
    state: State,
    /// Text held back because it may be the start of `<TOOL:`.
    pending: String,
    pub max_payload: usize,
}

impl Default for ToolCallParser {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD)
    }
}

impl ToolCallParser {
    pub fn new(max_payload: usize) -> Self {
        ToolCallParser {
            state: State::Text,
            pending: String::new(),
            max_payload,
        }
    }

    /// Parses a whole text at once.
    pub fn parse_all(text: &str) -> Vec<ParseEvent> {
        let mut p = ToolCallParser::default();
        let mut out = p.push(text);
        out.extend(p.finish());
        out
    }

    /// Feeds the next piece of output.
    pub fn push(&mut self, piece: &str) -> Vec<ParseEvent> {
        let mut out = Vec::new();
        let mut text = String::new();
        for c in piece.chars() {
            self.step(c, &mut text, &mut out);
        }
        if !text.is_empty() {
            out.push(ParseEvent::Text(text));
        }
        merge_text(out)
    }

    /// Feeds a piece and returns only the text in it that is safe to show now (calls and
    /// held-back tag starts left out): what a stream of deltas sends.
    pub fn visible(&mut self, piece: &str) -> String {
        self.push(piece)
            .into_iter()
            .filter_map(|e| match e {
                ParseEvent::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The output ended: releases held-back text; an open call is an error.
    pub fn finish(&mut self) -> Vec<ParseEvent> {
        let state = std::mem::replace(&mut self.state, State::Text);
        let pending = std::mem::take(&mut self.pending);
        match state {
            State::Text if pending.is_empty() => vec![],
            State::Text => vec![ParseEvent::Text(pending)],
            State::Skip { .. } => vec![],
            State::Name { name }
            | State::BeforeJson { name }
            | State::Json { name, .. }
            | State::Close { name, .. } => {
                vec![ParseEvent::Invalid(ToolCallError::Unterminated { name })]
            }
        }
    }

    fn step(&mut self, c: char, text: &mut String, out: &mut Vec<ParseEvent>) {
        let flush = |text: &mut String, out: &mut Vec<ParseEvent>| {
            if !text.is_empty() {
                out.push(ParseEvent::Text(std::mem::take(text)));
            }
        };
        match &mut self.state {
            State::Text => {
                self.pending.push(c);
                if self.pending.ends_with(OPEN) {
                    let before = self.pending.len() - OPEN.len();
                    text.push_str(&self.pending[..before]);
                    self.pending.clear();
                    flush(text, out);
                    self.state = State::Name {
                        name: String::new(),
                    };
                } else {
                    // Hold back only what may still become `<TOOL:`.
                    let cut = self.pending.len() - longest_open_prefix(&self.pending);
                    text.push_str(&self.pending[..cut]);
                    self.pending.drain(..cut);
                }
            }
            State::Name { name } => {
                if c == '>' {
                    let n = name.trim().to_string();
                    self.state = if valid_name(&n) {
                        State::BeforeJson { name: n }
                    } else {
                        out.push(ParseEvent::Invalid(ToolCallError::BadName { name: n }));
                        State::Text
                    };
                } else if name.chars().count() < MAX_NAME + 8
                    && (c.is_whitespace() || !c.is_control())
                {
                    // Room for whitespace around the longest name; checked at `>`.
                    name.push(c);
                } else {
                    let n = std::mem::take(name);
                    out.push(ParseEvent::Invalid(ToolCallError::BadName { name: n }));
                    self.state = State::Text;
                }
            }
            State::BeforeJson { name } => {
                if c == '{' {
                    self.state = State::Json {
                        name: std::mem::take(name),
                        json: "{".into(),
                        depth: 1,
                        in_string: false,
                        escaped: false,
                    };
                } else if !c.is_whitespace() {
                    out.push(ParseEvent::Invalid(ToolCallError::BadJson {
                        name: std::mem::take(name),
                        detail: format!("expected `{{`, found `{c}`"),
                    }));
                    self.state = State::Text;
                    self.step(c, text, out);
                }
            }
            State::Json {
                name,
                json,
                depth,
                in_string,
                escaped,
            } => {
                if json.len() + c.len_utf8() > self.max_payload {
                    out.push(ParseEvent::Invalid(ToolCallError::Oversize {
                        name: std::mem::take(name),
                        limit: self.max_payload,
                    }));
                    self.state = State::Skip { matched: 0 };
                    return;
                }
                json.push(c);
                if *in_string {
                    match (c, *escaped) {
                        (_, true) => *escaped = false,
                        ('\\', false) => *escaped = true,
                        ('"', false) => *in_string = false,
                        _ => {}
                    }
                    return;
                }
                match c {
                    '"' => *in_string = true,
                    '{' | '[' => *depth += 1,
                    '}' | ']' => *depth -= 1,
                    _ => {}
                }
                if *depth == 0 {
                    let name = std::mem::take(name);
                    self.state = match serde_json::from_str::<serde_json::Value>(json) {
                        Ok(v) if v.is_object() => State::Close {
                            name,
                            arguments: v,
                            matched: 0,
                        },
                        Ok(_) => {
                            out.push(ParseEvent::Invalid(ToolCallError::BadJson {
                                name,
                                detail: "not an object".into(),
                            }));
                            State::Skip { matched: 0 }
                        }
                        Err(e) => {
                            out.push(ParseEvent::Invalid(ToolCallError::BadJson {
                                name,
                                detail: e.to_string(),
                            }));
                            State::Skip { matched: 0 }
                        }
                    };
                }
            }
            State::Close {
                name,
                arguments,
                matched,
            } => {
                if *matched == 0 && c.is_whitespace() {
                    return;
                }
                if CLOSE[*matched..].starts_with(c) {
                    *matched += c.len_utf8();
                    if *matched == CLOSE.len() {
                        out.push(ParseEvent::Call(RawCall {
                            name: std::mem::take(name),
                            arguments: std::mem::take(arguments),
                        }));
                        self.state = State::Text;
                    }
                } else {
                    let name = std::mem::take(name);
                    let seen = CLOSE[..*matched].to_string();
                    out.push(ParseEvent::Invalid(ToolCallError::MissingClose { name }));
                    self.state = State::Text;
                    // What followed the JSON is ordinary text again.
                    for s in seen.chars().chain(std::iter::once(c)) {
                        self.step(s, text, out);
                    }
                }
            }
            State::Skip { matched } => {
                if CLOSE[*matched..].starts_with(c) {
                    *matched += c.len_utf8();
                    if *matched == CLOSE.len() {
                        self.state = State::Text;
                    }
                } else {
                    *matched = usize::from(c == '<');
                }
            }
        }
    }
}

/// Whether `n` can name a tool: letters, digits, `_` or `-`, at most [`MAX_NAME`].
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Length of the longest suffix of `s` that is a proper prefix of [`OPEN`].
fn longest_open_prefix(s: &str) -> usize {
    (1..OPEN.len())
        .rev()
        .find(|&k| {
            s.len() >= k && s.is_char_boundary(s.len() - k) && OPEN.starts_with(&s[s.len() - k..])
        })
        .unwrap_or(0)
}

/// Joins neighbouring text events.
fn merge_text(events: Vec<ParseEvent>) -> Vec<ParseEvent> {
    let mut out: Vec<ParseEvent> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(ParseEvent::Text(a)), ParseEvent::Text(b)) => a.push_str(&b),
            (_, e) => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_of(events: &[ParseEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ParseEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn calls(events: &[ParseEvent]) -> Vec<RawCall> {
        events
            .iter()
            .filter_map(|e| match e {
                ParseEvent::Call(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn errors(events: &[ParseEvent]) -> Vec<ToolCallError> {
        events
            .iter()
            .filter_map(|e| match e {
                ParseEvent::Invalid(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Feeds `text` in pieces of `n` characters.
    fn streamed(text: &str, n: usize) -> Vec<ParseEvent> {
        let mut p = ToolCallParser::default();
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(n) {
            out.extend(p.push(&piece.iter().collect::<String>()));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn a_call_split_at_every_boundary_parses_the_same() {
        let text = "Claro. <TOOL:generate_image>{\"prompt\": \"un gato {azul} con \\\"sombrero\\\" </TOOL>\", \"seed\": 7}</TOOL> ¡Listo!";
        let whole = ToolCallParser::parse_all(text);
        let expected = RawCall {
            name: "generate_image".into(),
            arguments: json!({"prompt": "un gato {azul} con \"sombrero\" </TOOL>", "seed": 7}),
        };
        assert_eq!(calls(&whole), vec![expected.clone()]);
        assert_eq!(text_of(&whole), "Claro.  ¡Listo!");
        for n in 1..=12 {
            let ev = streamed(text, n);
            assert_eq!(calls(&ev), vec![expected.clone()], "pieces of {n}");
            assert_eq!(text_of(&ev), "Claro.  ¡Listo!", "pieces of {n}");
            assert!(errors(&ev).is_empty());
        }
    }

    #[test]
    fn whitespace_is_tolerated_and_plain_text_passes_through() {
        let ev =
            ToolCallParser::parse_all("<TOOL: generate_image >\n  {\"prompt\":\"x\"}  \n</TOOL>");
        assert_eq!(calls(&ev)[0].name, "generate_image");
        let ev = streamed("a < b and <TOO many> tags, 3<4", 2);
        assert_eq!(text_of(&ev), "a < b and <TOO many> tags, 3<4");
        assert!(calls(&ev).is_empty() && errors(&ev).is_empty());
        // Text ending in what could start a tag is released at the end.
        assert_eq!(text_of(&ToolCallParser::parse_all("see <TOO")), "see <TOO");
    }

    #[test]
    fn malformed_calls_are_errors_and_never_calls() {
        type Is = fn(&ToolCallError) -> bool;
        let cases: [(&str, Is); 6] = [
            ("<TOOL:generate_image>{\"prompt\": \"x\"", |e| {
                matches!(e, ToolCallError::Unterminated { .. })
            }),
            ("<TOOL:generate_image>{\"prompt\": \"x\"} and more", |e| {
                matches!(e, ToolCallError::MissingClose { .. })
            }),
            ("<TOOL:bad name!>{}</TOOL>", |e| {
                matches!(e, ToolCallError::BadName { .. })
            }),
            ("<TOOL:generate_image>prompt=x</TOOL>", |e| {
                matches!(e, ToolCallError::BadJson { .. })
            }),
            ("<TOOL:generate_image>{\"prompt\": x}</TOOL>", |e| {
                matches!(e, ToolCallError::BadJson { .. })
            }),
            ("<TOOL:generate_image>{\"prompt\": \"x\"}", |e| {
                matches!(e, ToolCallError::Unterminated { .. })
            }),
        ];
        for (text, is) in cases {
            for n in [1, 3, 100] {
                let ev = streamed(text, n);
                assert!(calls(&ev).is_empty(), "{text}");
                let errs = errors(&ev);
                assert_eq!(errs.len(), 1, "{text}: {ev:?}");
                assert!(is(&errs[0]), "{text}: {errs:?}");
            }
        }
        // After a missing close, the text that followed is shown (less the whitespace
        // that may precede `</TOOL>`).
        let ev = ToolCallParser::parse_all("<TOOL:t>{\"a\":1} and more");
        assert_eq!(text_of(&ev), "and more");
    }

    #[test]
    fn oversize_payloads_are_dropped_and_parsing_goes_on() {
        let big = "x".repeat(100);
        let text = format!("<TOOL:t>{{\"p\":\"{big}\"}}</TOOL>after <TOOL:t>{{\"p\":1}}</TOOL>");
        let mut p = ToolCallParser::new(50);
        let mut ev = p.push(&text);
        ev.extend(p.finish());
        assert!(matches!(
            errors(&ev)[..],
            [ToolCallError::Oversize { limit: 50, .. }]
        ));
        assert_eq!(
            calls(&ev),
            vec![RawCall {
                name: "t".into(),
                arguments: json!({"p": 1})
            }]
        );
        assert_eq!(text_of(&ev), "after ");
    }
}
