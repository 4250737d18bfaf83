//! Constrained decoding of tool calls: once the model opens `<TOOL:`, only a registered
//! tool's name can follow, then `>`, then JSON valid against that tool's schema, then
//! `</TOOL>` — a malformed or schema-invalid call cannot be written, rather than being
//! refused afterwards. The technique of llama.cpp's JSON-schema grammars, Outlines and
//! XGrammar: the schema becomes an automaton ([`matcher::Matcher`] over
//! [`schema::compile`]'s nodes) that says, for the state a call has reached, which tokens
//! (as byte strings) can continue it.
//!
//! Decoding asks [`CallGrammar::allows`] about the token it would pick first and only
//! masks the whole vocabulary when that token is refused ([`super::generate`]): most
//! tokens of a call are the model's own first choice, so the usual cost is one check of a
//! few bytes per token rather than a pass over 8,192 tokens. Inside a text argument that
//! is copying the user's words, finding the tokens that continue the copy
//! ([`CallGrammar::span`]) is one pass of prefix comparisons over the vocabulary; `thau
//! bench tools` measures the whole at 1.01–1.08× the unconstrained speed.

pub mod matcher;
pub mod number;
pub mod schema;
pub mod subject;

use std::ops::Range;

use matcher::Matcher;
use schema::Nodes;

/// A tool the grammar lets a model call: its name and the compiled schema of its
/// arguments.
#[derive(Debug, Clone)]
struct Tool {
    name: Vec<u8>,
    nodes: Nodes,
}

/// The grammar of `<TOOL:name>{json}</TOOL>` over one tokenizer's vocabulary.
#[derive(Debug, Clone)]
pub struct CallGrammar {
    tools: Vec<Tool>,
    /// Each token's bytes; `None` for special tokens (which no call may hold, but for the
    /// closing one).
    tokens: Vec<Option<Vec<u8>>>,
    close_id: u32,
    /// Why a tool's schema is not enforced (a keyword the grammar does not model): its
    /// calls are held to well-formed JSON only, and the registry's check does the rest.
    pub unenforced: Vec<String>,
}

/// How far a call has been written.
#[derive(Debug, Clone, PartialEq)]
pub enum CallState {
    /// After `<TOOL:`: the name's bytes so far.
    Name(Vec<u8>),
    /// After `>`: the arguments of tool `tool`.
    Args { tool: usize, json: Matcher },
    /// The call is closed.
    Closed,
}

impl CallGrammar {
    /// The grammar of calls to `tools` (`(name, JSON Schema of the arguments)`), over the
    /// vocabulary `tokens` (each token's bytes, `None` for special tokens), closed by the
    /// token `close_id`. A schema the grammar cannot enforce is noted in
    /// [`CallGrammar::unenforced`] and its tool's arguments held to any JSON object.
    pub fn new<'a>(
        tools: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
        tokens: Vec<Option<Vec<u8>>>,
        close_id: u32,
    ) -> Result<CallGrammar, String> {
        let mut unenforced = Vec::new();
        let tools = tools
            .into_iter()
            .map(|(name, schema)| {
                if name.is_empty() || name.contains('>') {
                    return Err(format!("tool name {name:?} cannot be written in a call"));
                }
                let nodes = schema::compile(schema).unwrap_or_else(|e| {
                    unenforced.push(format!("tool `{name}`: {e}"));
                    schema::any_object()
                });
                Ok(Tool {
                    name: name.as_bytes().to_vec(),
                    nodes,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if tools.is_empty() {
            return Err("no tool to call".into());
        }
        Ok(CallGrammar {
            tools,
            tokens,
            close_id,
            unenforced,
        })
    }

    /// The state right after `<TOOL:`.
    pub fn start(&self) -> CallState {
        CallState::Name(Vec::new())
    }

    /// Whether token `id` can come next in state `st`.
    pub fn allows(&self, st: &CallState, id: u32) -> bool {
        let mut s = st.clone();
        self.step(&mut s, id)
    }

    /// Advances `st` by token `id`; `false` when the token breaks the call (the state is
    /// then unspecified).
    pub fn step(&self, st: &mut CallState, id: u32) -> bool {
        if id == self.close_id {
            let ok = match st {
                CallState::Args { tool, json } => json.can_end(&self.tools[*tool].nodes),
                _ => false,
            };
            *st = CallState::Closed;
            return ok;
        }
        let Some(Some(bytes)) = self.tokens.get(id as usize) else {
            return false;
        };
        bytes.iter().all(|&b| self.feed(st, b))
    }

    fn feed(&self, st: &mut CallState, b: u8) -> bool {
        match st {
            CallState::Name(name) => {
                if b == b'>' {
                    return match self.tools.iter().position(|t| t.name == *name) {
                        Some(tool) => {
                            *st = CallState::Args {
                                tool,
                                json: Matcher::new(),
                            };
                            true
                        }
                        None => false,
                    };
                }
                name.push(b);
                self.tools.iter().any(|t| t.name.starts_with(name))
            }
            CallState::Args { tool, json } => json.feed(&self.tools[*tool].nodes, b),
            CallState::Closed => false,
        }
    }

    /// The bytes `ids` spell (special tokens spell nothing).
    pub fn text_of(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter_map(|&i| self.tokens.get(i as usize).and_then(Option::as_ref))
            .flatten()
            .copied()
            .collect()
    }

    /// Where the string argument open in `st` stands against `source` (the user's
    /// words): the tokens that would extend it as a span of `source` — its text so far
    /// occurs there from the start of a word, and the token's bytes follow that
    /// occurrence — and whether it stops inside a word there. Empty outside a string, or
    /// once the argument has left the source's words. Decoding favours the extending
    /// tokens and disfavours ending the argument inside a word
    /// ([`super::generate::SamplingParams::span_bias`]).
    pub fn span(&self, st: &CallState, source: &[u8]) -> Span {
        let Some(written) = st.open_string() else {
            return Span::default();
        };
        let ends: Vec<usize> = (0..=source.len().saturating_sub(written.len()))
            .filter(|&p| starts_word(source, p) && source[p..].starts_with(written))
            .map(|p| p + written.len())
            .collect();
        if ends.is_empty() {
            return Span::default();
        }
        let extend = self
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let t = t.as_deref().filter(|t| !t.is_empty())?;
                ends.iter()
                    .any(|&q| source[q..].starts_with(t))
                    .then_some(id as u32)
            })
            .collect();
        // Inside a word wherever the span occurs: a letter or digit comes next.
        let mid_word = !written.is_empty() && ends.iter().all(|&q| word_goes_on(source, q));
        Span { extend, mid_word }
    }

    /// The tokens that go on copying `subject` (a range of `source`, the user's words:
    /// [`subject::of`]) into the string argument open in `st`, while what is written so far
    /// is the subject's beginning: those whose bytes its rest starts with. Empty outside a
    /// string, once the argument has left the subject, and at its end. Decoding favours
    /// them ([`super::generate::SamplingParams::subject_bias`]).
    pub fn subject_next(&self, st: &CallState, source: &[u8], subject: &Range<usize>) -> Vec<u32> {
        let Some(written) = st.open_string() else {
            return Vec::new();
        };
        let Some(wanted) = source.get(subject.clone()) else {
            return Vec::new();
        };
        let Some(rest) = wanted.strip_prefix(written).filter(|rest| !rest.is_empty()) else {
            return Vec::new();
        };
        self.tokens
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let t = t.as_deref().filter(|t| !t.is_empty())?;
                rest.starts_with(t).then_some(id as u32)
            })
            .collect()
    }

    /// The shortest bytes that close the call in `st` (before `</TOOL>`): its name's
    /// rest, then the arguments closed soonest ([`Matcher::closing`]). `None` once closed,
    /// or when no way is found.
    fn closing(&self, st: &CallState) -> Option<Vec<u8>> {
        match st {
            CallState::Name(name) => {
                let t = self.tools.iter().find(|t| t.name.starts_with(name))?;
                let args = Matcher::new().closing(&t.nodes)?;
                Some([&t.name[name.len()..], b">", &args].concat())
            }
            CallState::Args { tool, json } => json.closing(&self.tools[*tool].nodes),
            CallState::Closed => None,
        }
    }

    /// Whether, after token `id` in `st`, the call can still close within `left − 1`
    /// tokens (a token spells at least one byte, and `</TOOL>` takes one). Decoding
    /// replaces a pick that leaves no room by [`CallGrammar::closing_token`], so a call
    /// always ends within its token budget and parses.
    pub fn leaves_room(&self, st: &CallState, id: u32, left: usize) -> bool {
        let mut after = st.clone();
        if !self.step(&mut after, id) {
            return false;
        }
        match self.closing(&after) {
            Some(bytes) => bytes.len() + 1 < left,
            // Closed (or no way known, where no other pick would help).
            None => true,
        }
    }

    /// The token that begins the shortest way to close the call in `st`: the longest
    /// token spelling a start of it, or `</TOOL>` when the arguments are complete.
    pub fn closing_token(&self, st: &CallState) -> Option<u32> {
        let bytes = self.closing(st)?;
        if bytes.is_empty() {
            return Some(self.close_id);
        }
        self.tokens
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let t = t
                    .as_deref()
                    .filter(|t| !t.is_empty() && bytes.starts_with(t))?;
                Some((t.len(), id as u32))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// The tokens whose bytes start with `b` (the closing quote of a string).
    pub fn starting_with(&self, b: u8) -> impl Iterator<Item = u32> + '_ {
        self.tokens
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.as_ref().is_some_and(|t| t.first() == Some(&b)))
            .map(|(id, _)| id as u32)
    }

    /// Sets every logit whose token cannot come next in `st` to −∞.
    pub fn mask(&self, st: &CallState, logits: &mut [f32]) {
        for (id, l) in logits.iter_mut().enumerate() {
            if *l != f32::NEG_INFINITY && !self.allows(st, id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// A string argument against the user's words ([`CallGrammar::span`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// Tokens that go on copying the user's words.
    pub extend: Vec<u32>,
    /// The argument so far ends inside one of the user's words.
    pub mid_word: bool,
}

impl CallState {
    /// The bytes of the string argument being written, if the call is inside one.
    pub fn open_string(&self) -> Option<&[u8]> {
        match self {
            CallState::Args { json, .. } => json.open_string(),
            _ => None,
        }
    }
}

/// Whether a word starts at byte `p` of `text`: its first byte, or one after a character
/// that is not a letter or digit.
fn starts_word(text: &[u8], p: usize) -> bool {
    if p == 0 {
        return true;
    }
    // The character that ends at p − 1 (UTF-8: back over continuation bytes).
    let start = (p.saturating_sub(4)..p)
        .rev()
        .find(|&i| text[i] & 0xC0 != 0x80)
        .unwrap_or(p - 1);
    std::str::from_utf8(&text[start..p])
        .ok()
        .and_then(|s| s.chars().next())
        .is_none_or(|c| !c.is_alphanumeric())
}

/// Whether the character at byte `q` of `text` is a letter or digit.
fn word_goes_on(text: &[u8], q: usize) -> bool {
    let rest = &text[q.min(text.len())..];
    let head = &rest[..rest.len().min(4)];
    // The first character, whichever of its 1 to 4 bytes `head` holds whole.
    (1..=head.len())
        .find_map(|n| std::str::from_utf8(&head[..n]).ok())
        .and_then(|s| s.chars().next())
        .is_some_and(char::is_alphanumeric)
}

#[cfg(test)]
mod tests;
