//! [`Matcher`]: a pushdown automaton over bytes that accepts exactly the JSON values of a
//! compiled schema ([`super::schema`]), written the way THAU's calls are written — no
//! whitespace except one optional space after `:` and after `,` (`{"prompt": "…", "seed":
//! 7}`), numbers without exponent. It accepts a byte only when some completion of what it
//! has read is a valid value, so a model steered by it can always finish a call.

use super::number;
use super::schema::{
    branch_for, Node, NodeId, Nodes, ANY_ARRAY, ANY_NUMBER, ANY_OBJECT, MAX_FRACTION_DIGITS, ROOT,
};

/// The longest key of an object that allows keys it does not name.
const MAX_FREE_KEY: usize = 64;
/// The longest number text (an `i64` has 20 characters with its sign).
const MAX_NUMBER: usize = 32;

/// Chunks [`Matcher::closing`] writes before it gives up (each completes a part).
const MAX_CLOSING_STEPS: usize = 4096;

/// The JSON literals a `true`/`false`/`null` value may be.
const WORDS: [&[u8]; 3] = [b"true", b"false", b"null"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjPhase {
    /// After `{`: a key or `}`.
    Open,
    /// Inside a key's quotes.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `:` (`space`: the optional space is written): a value.
    Value { space: bool },
    /// After a value: `,` or `}`.
    Next,
    /// After `,`: a key (after the optional space).
    Comma { space: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrPhase {
    /// After `[`: a value or `]`.
    Open,
    Next,
    Comma {
        space: bool,
    },
}

/// A string being read, after its opening quote: valid UTF-8 (no overlong forms, no
/// surrogates, raw or escaped), no control bytes, the escapes JSON knows, between `min` and
/// `max` characters.
#[derive(Debug, Clone, PartialEq)]
struct Text {
    min: usize,
    max: Option<usize>,
    chars: usize,
    /// After `\`: 1; inside `\uXXXX`: the hex digits still to come + 1.
    escape: u8,
    /// After `\uD`: the next hex digit must keep the code point below the surrogates.
    surrogate: bool,
    /// UTF-8 continuation bytes still to come, and the range the next one must be in.
    cont: u8,
    next: (u8, u8),
    /// The bytes written inside the quotes.
    bytes: Vec<u8>,
}

/// What a byte did to a [`Text`].
enum Step {
    Reject,
    Go,
    /// The closing quote.
    Close,
}

impl Text {
    fn new(min: usize, max: Option<usize>) -> Text {
        Text {
            min,
            max,
            chars: 0,
            escape: 0,
            surrogate: false,
            cont: 0,
            next: (0x80, 0xBF),
            bytes: Vec::new(),
        }
    }

    fn feed(&mut self, b: u8) -> Step {
        let ok = |c: bool| if c { Step::Go } else { Step::Reject };
        if self.cont > 0 {
            let (lo, hi) = self.next;
            self.cont -= 1;
            self.next = (0x80, 0xBF);
            self.bytes.push(b);
            return ok((lo..=hi).contains(&b));
        }
        if self.escape == 1 {
            self.escape = if b == b'u' { 5 } else { 0 };
            self.bytes.push(b);
            return ok(b"\"\\/bfnrtu".contains(&b));
        }
        if self.escape > 1 {
            // The first hex digit of `\uXXXX` is `escape == 5`.
            let first = self.escape == 5;
            let fits = b.is_ascii_hexdigit() && (!self.surrogate || (b'0'..=b'7').contains(&b));
            self.surrogate = first && (b == b'd' || b == b'D');
            self.escape = if self.escape == 2 { 0 } else { self.escape - 1 };
            self.bytes.push(b);
            return ok(fits);
        }
        if b == b'"' {
            return if self.chars < self.min {
                Step::Reject
            } else {
                Step::Close
            };
        }
        if self.max.is_some_and(|m| self.chars >= m) || b < 0x20 {
            return Step::Reject;
        }
        self.chars += 1;
        self.bytes.push(b);
        // UTF-8: the lead byte says how many continuation bytes follow, and the range of
        // the first one (which rules out overlong forms, surrogates and code points past
        // U+10FFFF).
        (self.cont, self.next) = match b {
            b'\\' => {
                self.escape = 1;
                (0, (0x80, 0xBF))
            }
            0x00..=0x7F => (0, (0x80, 0xBF)),
            0xC2..=0xDF => (1, (0x80, 0xBF)),
            0xE0 => (2, (0xA0, 0xBF)),
            0xED => (2, (0x80, 0x9F)),
            0xE1..=0xEF => (2, (0x80, 0xBF)),
            0xF0 => (3, (0x90, 0xBF)),
            0xF1..=0xF3 => (3, (0x80, 0xBF)),
            0xF4 => (3, (0x80, 0x8F)),
            _ => return Step::Reject,
        };
        Step::Go
    }
}

impl Text {
    /// The bytes that end this string soonest: the character under way, `a`s up to its
    /// shortest length, the closing quote.
    fn closing(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.cont > 0 {
            out.push(self.next.0);
            out.extend(std::iter::repeat_n(0x80, self.cont as usize - 1));
        } else if self.escape == 1 {
            out.push(b'n');
        } else if self.escape > 1 {
            // `0` is a hex digit that also keeps `\uD…` below the surrogates.
            out.extend(std::iter::repeat_n(b'0', self.escape as usize - 1));
        }
        out.extend(std::iter::repeat_n(
            b'a',
            self.min.saturating_sub(self.chars),
        ));
        out.push(b'"');
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Str(Text),
    Num {
        node: NodeId,
        text: Vec<u8>,
    },
    /// One of the candidate texts, `pos` bytes in.
    Lit {
        candidates: Vec<Vec<u8>>,
        pos: usize,
    },
    Obj {
        node: NodeId,
        /// Named properties already written (by index).
        seen: Vec<bool>,
        phase: ObjPhase,
        key: Vec<u8>,
        /// The node of the value after the current key.
        value: NodeId,
    },
    Arr {
        node: NodeId,
        count: usize,
        phase: ArrPhase,
    },
}

/// Where a value of the schema is being read.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    stack: Vec<Frame>,
    /// The root value is complete.
    done: bool,
}

impl Matcher {
    pub fn new() -> Self {
        Matcher {
            stack: Vec::new(),
            done: false,
        }
    }

    /// Whether the root value is complete (a number or a literal at the end may still
    /// be open: [`Matcher::can_end`] says whether it could end here).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the value could end here: it is complete, or only frames that end without
    /// a closing byte (a number, a literal) are open and end validly.
    pub fn can_end(&self, nodes: &Nodes) -> bool {
        let mut m = self.clone();
        while !m.done {
            if !m.end_open_frame(nodes) {
                return false;
            }
        }
        true
    }

    /// Ends the innermost frame if it may end without a closing byte; `false` otherwise.
    fn end_open_frame(&mut self, nodes: &Nodes) -> bool {
        let ends = match self.stack.last() {
            Some(Frame::Num { node, text }) => number::complete(text, nodes.get(*node)),
            Some(Frame::Lit { candidates, pos }) => candidates.iter().any(|c| c.len() == *pos),
            _ => false,
        };
        if ends {
            self.stack.pop();
            self.value_ended(nodes);
        }
        ends
    }

    /// The bytes of the string value being written (inside its quotes), if one is open.
    pub fn open_string(&self) -> Option<&[u8]> {
        match self.stack.last() {
            Some(Frame::Str(t)) => Some(&t.bytes),
            _ => None,
        }
    }

    /// The shortest bytes (near enough: each open part closed the shortest way) that
    /// complete the value from here; `None` if none was found. Decoding writes them when a
    /// call would otherwise not end within its token budget, so a call the client required
    /// always parses.
    pub fn closing(&self, nodes: &Nodes) -> Option<Vec<u8>> {
        let mut m = self.clone();
        let mut out = Vec::new();
        for _ in 0..MAX_CLOSING_STEPS {
            if m.can_end(nodes) {
                return Some(out);
            }
            let chunk = match m.stack.last() {
                None => min_text(nodes, ROOT),
                Some(Frame::Str(t)) => t.closing(),
                Some(Frame::Num { node, text }) => {
                    let node = nodes.get(*node);
                    if number::complete(text, node) {
                        m.end_open_frame(nodes);
                        continue;
                    }
                    let b = b"0123456789.".iter().find(|&&b| {
                        let mut t = text.clone();
                        t.push(b);
                        number::feasible(&t, node)
                    })?;
                    vec![*b]
                }
                Some(Frame::Lit { candidates, pos }) => {
                    if candidates.iter().any(|c| c.len() == *pos) {
                        m.end_open_frame(nodes);
                        continue;
                    }
                    candidates.iter().min_by_key(|c| c.len())?[*pos..].to_vec()
                }
                Some(Frame::Obj {
                    node,
                    seen,
                    phase,
                    key,
                    value,
                }) => object_closing(nodes, *node, seen, *phase, key, *value)?,
                Some(Frame::Arr { node, count, phase }) => {
                    let Node::Array { items, min, .. } = nodes.get(*node) else {
                        return None;
                    };
                    match phase {
                        ArrPhase::Open | ArrPhase::Next if count >= min => b"]".to_vec(),
                        ArrPhase::Next => b",".to_vec(),
                        _ => min_text(nodes, *items),
                    }
                }
            };
            for b in chunk {
                if !m.feed(nodes, b) {
                    return None;
                }
                out.push(b);
            }
        }
        None
    }

    /// Feeds one byte; `false` (and an unspecified state) when no valid value goes on so.
    pub fn feed(&mut self, nodes: &Nodes, b: u8) -> bool {
        if self.done {
            return false;
        }
        let Some(top) = self.stack.last_mut() else {
            return self.start_value(nodes, ROOT, b);
        };
        match top {
            Frame::Str(t) => match t.feed(b) {
                Step::Reject => false,
                Step::Go => true,
                Step::Close => {
                    self.stack.pop();
                    self.value_ended(nodes);
                    true
                }
            },
            Frame::Num { node, text } => {
                let node = *node;
                if b.is_ascii_digit() || b == b'.' || b == b'-' {
                    text.push(b);
                    return text.len() <= MAX_NUMBER && number::feasible(text, nodes.get(node));
                }
                self.end_open_frame(nodes) && self.feed(nodes, b)
            }
            Frame::Lit { candidates, pos } => {
                let p = *pos;
                if candidates.iter().any(|c| c.get(p) == Some(&b)) {
                    candidates.retain(|c| c.get(p) == Some(&b));
                    *pos += 1;
                    return true;
                }
                self.end_open_frame(nodes) && self.feed(nodes, b)
            }
            Frame::Obj { .. } => self.feed_object(nodes, b),
            Frame::Arr { .. } => self.feed_array(nodes, b),
        }
    }

    /// Opens a value of `node` with its first byte `b`.
    fn start_value(&mut self, nodes: &Nodes, node: NodeId, b: u8) -> bool {
        let frame = match nodes.get(node) {
            Node::Union(ids) => {
                return match branch_for(nodes, ids, b) {
                    Some(id) => self.start_value(nodes, id, b),
                    None => false,
                }
            }
            Node::Any => match b {
                b'"' => {
                    // The opening quote is this byte: the frame starts inside the string.
                    self.stack.push(Frame::Str(Text::new(0, None)));
                    return true;
                }
                b'{' => return self.start_value(nodes, ANY_OBJECT, b),
                b'[' => return self.start_value(nodes, ANY_ARRAY, b),
                b'-' | b'0'..=b'9' => return self.push_number(nodes, ANY_NUMBER, b),
                _ => Frame::Lit {
                    candidates: WORDS.iter().map(|w| w.to_vec()).collect(),
                    pos: 0,
                },
            },
            Node::Null => Frame::Lit {
                candidates: vec![b"null".to_vec()],
                pos: 0,
            },
            Node::Bool => Frame::Lit {
                candidates: vec![b"true".to_vec(), b"false".to_vec()],
                pos: 0,
            },
            Node::Literal(vs) => Frame::Lit {
                candidates: vs.clone(),
                pos: 0,
            },
            Node::Integer { .. } | Node::Number { .. } => return self.push_number(nodes, node, b),
            Node::String {
                min_chars,
                max_chars,
            } => {
                if b != b'"' {
                    return false;
                }
                self.stack
                    .push(Frame::Str(Text::new(*min_chars, *max_chars)));
                return true;
            }
            Node::Array { .. } => {
                if b != b'[' {
                    return false;
                }
                self.stack.push(Frame::Arr {
                    node,
                    count: 0,
                    phase: ArrPhase::Open,
                });
                return true;
            }
            Node::Object { props, .. } => {
                if b != b'{' {
                    return false;
                }
                self.stack.push(Frame::Obj {
                    node,
                    seen: vec![false; props.len()],
                    phase: ObjPhase::Open,
                    key: Vec::new(),
                    value: node,
                });
                return true;
            }
        };
        // A literal: its first byte goes through the frame.
        self.stack.push(frame);
        self.feed(nodes, b)
    }

    /// Opens a number of `node` (an `Integer` or `Number`) with its first byte.
    fn push_number(&mut self, nodes: &Nodes, node: NodeId, b: u8) -> bool {
        self.stack.push(Frame::Num {
            node,
            text: Vec::new(),
        });
        self.feed(nodes, b)
    }

    /// A value ended inside the innermost container (or at the root).
    fn value_ended(&mut self, _nodes: &Nodes) {
        match self.stack.last_mut() {
            None => self.done = true,
            Some(Frame::Obj { phase, .. }) => *phase = ObjPhase::Next,
            Some(Frame::Arr { phase, count, .. }) => {
                *count += 1;
                *phase = ArrPhase::Next;
            }
            // Strings, numbers and literals hold no values.
            Some(_) => {}
        }
    }

    fn feed_object(&mut self, nodes: &Nodes, b: u8) -> bool {
        let Some(Frame::Obj {
            node,
            seen,
            phase,
            key,
            value,
        }) = self.stack.last_mut()
        else {
            return false;
        };
        let Node::Object {
            props,
            required,
            additional,
        } = nodes.get(*node)
        else {
            return false;
        };
        let can_close = required.iter().zip(seen.iter()).all(|(r, s)| !r || *s);
        let more_keys = additional.is_some() || seen.iter().any(|s| !s);
        match *phase {
            ObjPhase::Open | ObjPhase::Comma { space: true } => match b {
                b'"' => {
                    *phase = ObjPhase::Key;
                    key.clear();
                    true
                }
                b'}' if *phase == ObjPhase::Open && can_close => self.close_container(nodes),
                _ => false,
            },
            ObjPhase::Comma { space: false } => match b {
                b' ' => {
                    *phase = ObjPhase::Comma { space: true };
                    true
                }
                b'"' => {
                    *phase = ObjPhase::Key;
                    key.clear();
                    true
                }
                _ => false,
            },
            ObjPhase::Key => {
                let named = |k: &[u8]| props.iter().position(|(p, _)| p.as_bytes() == k);
                if b == b'"' {
                    let slot = match named(key.as_slice()) {
                        Some(i) if !seen[i] => {
                            seen[i] = true;
                            props[i].1
                        }
                        Some(_) => return false,
                        None => match additional {
                            Some(a) if !key.is_empty() => *a,
                            _ => return false,
                        },
                    };
                    *value = slot;
                    *phase = ObjPhase::Colon;
                    return true;
                }
                if b < 0x20 || b == b'\\' || key.len() >= MAX_FREE_KEY.max(longest(props)) {
                    return false;
                }
                key.push(b);
                // A prefix of a property not yet written, or any ASCII key where others
                // are allowed (a model's own keys are identifiers; ASCII keeps them valid
                // UTF-8 without a second decoder).
                (additional.is_some() && b < 0x80)
                    || props
                        .iter()
                        .zip(seen.iter())
                        .any(|((p, _), s)| !s && p.as_bytes().starts_with(key))
            }
            ObjPhase::Colon => {
                let ok = b == b':';
                if ok {
                    *phase = ObjPhase::Value { space: false };
                }
                ok
            }
            ObjPhase::Value { space } => {
                if b == b' ' && !space {
                    *phase = ObjPhase::Value { space: true };
                    return true;
                }
                let v = *value;
                self.start_value(nodes, v, b)
            }
            ObjPhase::Next => match b {
                b',' if more_keys => {
                    *phase = ObjPhase::Comma { space: false };
                    true
                }
                b'}' if can_close => self.close_container(nodes),
                _ => false,
            },
        }
    }

    fn feed_array(&mut self, nodes: &Nodes, b: u8) -> bool {
        let Some(Frame::Arr { node, count, phase }) = self.stack.last_mut() else {
            return false;
        };
        let Node::Array { items, min, max } = nodes.get(*node) else {
            return false;
        };
        let items = *items;
        match *phase {
            ArrPhase::Open if b == b']' => *min == 0 && self.close_container(nodes),
            ArrPhase::Next => match b {
                b',' if max.is_none_or(|m| *count < m) => {
                    *phase = ArrPhase::Comma { space: false };
                    true
                }
                b']' if *count >= *min => self.close_container(nodes),
                _ => false,
            },
            ArrPhase::Comma { space: false } if b == b' ' => {
                *phase = ArrPhase::Comma { space: true };
                true
            }
            ArrPhase::Open | ArrPhase::Comma { .. } => {
                if max.is_some_and(|m| *count >= m) {
                    return false;
                }
                self.start_value(nodes, items, b)
            }
        }
    }

    /// Pops the innermost object or array on its closing byte.
    fn close_container(&mut self, nodes: &Nodes) -> bool {
        self.stack.pop();
        self.value_ended(nodes);
        true
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Self::new()
    }
}

/// The shortest text of a value of `id`: `0`, `""` (padded to its shortest length), the
/// shortest literal, a container with only what it requires.
fn min_text(nodes: &Nodes, id: NodeId) -> Vec<u8> {
    match nodes.get(id) {
        Node::Any => b"0".to_vec(),
        Node::Null => b"null".to_vec(),
        Node::Bool => b"true".to_vec(),
        Node::Integer {
            min,
            max,
            multiple_of,
        } => {
            let m = multiple_of.unwrap_or(1).max(1);
            let v = if *min <= 0 && 0 <= *max {
                0
            } else if *min > 0 {
                (min + m - 1) / m * m
            } else {
                max.div_euclid(m) * m
            };
            v.to_string().into_bytes()
        }
        n @ Node::Number { min, max } => {
            let text = |v: f64| {
                let s = format!("{v:.6}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            };
            let step = 10f64.powi(-(MAX_FRACTION_DIGITS as i32));
            let mut tries = vec!["0".to_string()];
            for (bound, toward) in [(min, step), (max, -step)] {
                if let Some((v, exclusive)) = bound {
                    tries.push(text(if *exclusive { v + toward } else { *v }));
                }
            }
            tries
                .into_iter()
                .find(|t| number::complete(t.as_bytes(), n))
                .unwrap_or_else(|| "0".into())
                .into_bytes()
        }
        Node::String { min_chars, .. } => {
            let mut s = vec![b'"'];
            s.extend(std::iter::repeat_n(b'a', *min_chars));
            s.push(b'"');
            s
        }
        Node::Literal(vs) => vs
            .iter()
            .min_by_key(|v| v.len())
            .cloned()
            .unwrap_or_default(),
        Node::Array { items, min, .. } => {
            let parts: Vec<Vec<u8>> = (0..*min).map(|_| min_text(nodes, *items)).collect();
            [b"[".to_vec(), parts.join(&b","[..]), b"]".to_vec()].concat()
        }
        Node::Object {
            props, required, ..
        } => {
            let parts: Vec<Vec<u8>> = props
                .iter()
                .zip(required)
                .filter(|(_, r)| **r)
                .map(|((k, v), _)| member(k.as_bytes(), nodes, *v))
                .collect();
            [b"{".to_vec(), parts.join(&b","[..]), b"}".to_vec()].concat()
        }
        Node::Union(ids) => ids
            .iter()
            .map(|i| min_text(nodes, *i))
            .min_by_key(Vec::len)
            .unwrap_or_default(),
    }
}

/// `"key":value`, the value shortest.
fn member(key: &[u8], nodes: &Nodes, value: NodeId) -> Vec<u8> {
    let parts: [&[u8]; 4] = [b"\"", key, b"\":", &min_text(nodes, value)];
    parts.concat()
}

/// The next bytes that close an object soonest from `phase`: the key under way (a named
/// property it begins, else a free key), the value, then each required property not yet
/// written, then `}`.
fn object_closing(
    nodes: &Nodes,
    node: NodeId,
    seen: &[bool],
    phase: ObjPhase,
    key: &[u8],
    value: NodeId,
) -> Option<Vec<u8>> {
    let Node::Object {
        props,
        required,
        additional,
    } = nodes.get(node)
    else {
        return None;
    };
    let unseen = |need: bool| {
        props
            .iter()
            .zip(required)
            .zip(seen)
            .find(|((_, r), s)| !**s && (**r || !need))
            .map(|((p, _), _)| p)
    };
    let can_close = required.iter().zip(seen).all(|(r, s)| !r || *s);
    // A key to write after `,` or `{`: a required one, else any named, else a free one.
    let next_key = || -> Option<Vec<u8>> {
        if let Some((p, v)) = unseen(true).or_else(|| unseen(false)) {
            Some(member(p.as_bytes(), nodes, *v))
        } else {
            additional.map(|a| member(b"k", nodes, a))
        }
    };
    Some(match phase {
        ObjPhase::Open if can_close => b"}".to_vec(),
        ObjPhase::Open | ObjPhase::Comma { .. } => next_key()?,
        ObjPhase::Next if can_close => b"}".to_vec(),
        ObjPhase::Next => [b",".to_vec(), next_key()?].concat(),
        ObjPhase::Colon => [b":".to_vec(), min_text(nodes, value)].concat(),
        ObjPhase::Value { .. } => min_text(nodes, value),
        ObjPhase::Key => {
            let named = props
                .iter()
                .zip(required)
                .zip(seen)
                .filter(|(((p, _), _), s)| !**s && p.as_bytes().starts_with(key))
                .min_by_key(|(((p, _), r), _)| (!**r, p.len()))
                .map(|(((p, v), _), _)| (p, *v));
            match (named, additional) {
                (Some((p, v)), _) => {
                    let rest = &p.as_bytes()[key.len()..];
                    let parts: [&[u8]; 3] = [rest, b"\":", &min_text(nodes, v)];
                    parts.concat()
                }
                (None, Some(a)) => {
                    let pad: &[u8] = if key.is_empty() { b"k" } else { b"" };
                    let parts: [&[u8]; 3] = [pad, b"\":", &min_text(nodes, *a)];
                    parts.concat()
                }
                (None, None) => return None,
            }
        }
    })
}

/// The longest property name.
fn longest(props: &[(String, NodeId)]) -> usize {
    props.iter().map(|(p, _)| p.len()).max().unwrap_or(0)
}
