//! A JSON Schema compiled into the nodes the call grammar walks ([`Node`]): the keywords
//! tool schemas use (`type` and type lists, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`/`maxItems`, `minLength`/`maxLength`,
//! `minimum`/`maximum` and their exclusive forms, `multipleOf` on integers, `enum`,
//! `const`, `anyOf`/`oneOf` whose branches start differently). A keyword that constrains
//! what the grammar does not model (`pattern`, `format`, `$ref`, `allOf`, `not`, branches
//! that start alike) is named by [`compile`]'s error: the caller decides whether to run
//! such a tool unconstrained, and the registry's validation still checks every call.

use serde_json::{Map, Value};

/// Index of a node in [`Nodes`].
pub type NodeId = u32;

/// The most digits of a number's fraction (integers stay within `i64`): both keep a
/// number finite.
pub const MAX_FRACTION_DIGITS: usize = 6;

/// What a value must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Any JSON value (a property of an object that allows more than it names).
    Any,
    Null,
    Bool,
    Integer {
        min: i128,
        max: i128,
        multiple_of: Option<i128>,
    },
    /// A number without exponent, at most [`MAX_FRACTION_DIGITS`] after the point.
    Number {
        min: Option<(f64, bool)>,
        max: Option<(f64, bool)>,
    },
    String {
        min_chars: usize,
        max_chars: Option<usize>,
    },
    /// One of these exact JSON texts (`enum`, `const`), written compactly.
    Literal(Vec<Vec<u8>>),
    Array {
        items: NodeId,
        min: usize,
        max: Option<usize>,
    },
    Object {
        /// Named properties, in the schema's order.
        props: Vec<(String, NodeId)>,
        required: Vec<bool>,
        /// The schema of other keys, or none when `additionalProperties` is false.
        additional: Option<NodeId>,
    },
    /// Branches told apart by their first byte.
    Union(Vec<NodeId>),
}

/// The root of compiled nodes.
pub const ROOT: NodeId = 0;
/// Any value; an object of any keys and values; an array of any values (what [`Node::Any`]
/// opens into on `{` and `[`).
pub const ANY: NodeId = 1;
pub const ANY_OBJECT: NodeId = 2;
pub const ANY_ARRAY: NodeId = 3;
/// A number without bounds (what [`Node::Any`] opens into on a digit or `-`).
pub const ANY_NUMBER: NodeId = 4;

/// The compiled nodes; the root is node [`ROOT`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nodes(pub Vec<Node>);

impl Nodes {
    pub fn get(&self, id: NodeId) -> &Node {
        &self.0[id as usize]
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.0.push(n);
        (self.0.len() - 1) as NodeId
    }
}

/// Keywords that only document (or that the grammar can ignore without letting an invalid
/// value through).
const IGNORED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Compiles `schema` (the JSON Schema of a tool's arguments); the root is [`ROOT`].
pub fn compile(schema: &Value) -> Result<Nodes, String> {
    let mut nodes = Nodes(vec![
        Node::Any, // the root's place, filled below
        Node::Any,
        Node::Object {
            props: Vec::new(),
            required: Vec::new(),
            additional: Some(ANY),
        },
        Node::Array {
            items: ANY,
            min: 0,
            max: None,
        },
        Node::Number {
            min: None,
            max: None,
        },
    ]);
    let root = node(schema, &mut nodes, "")?;
    nodes.0[ROOT as usize] = root;
    Ok(nodes)
}

/// Nodes whose root is any JSON object (for a schema the grammar cannot enforce).
pub fn any_object() -> Nodes {
    let mut nodes = compile(&Value::Bool(true)).unwrap_or_default();
    nodes.0[ROOT as usize] = nodes.get(ANY_OBJECT).clone();
    nodes
}

/// The node of `s` (children pushed into `nodes`); `at` names the place for errors.
fn node(s: &Value, nodes: &mut Nodes, at: &str) -> Result<Node, String> {
    let obj = match s {
        Value::Bool(true) => return Ok(Node::Any),
        Value::Bool(false) => return Err(format!("{}: a schema that allows nothing", here(at))),
        Value::Object(o) => o,
        _ => return Err(format!("{}: a schema must be an object", here(at))),
    };
    for k in obj.keys() {
        if !IGNORED.contains(&k.as_str()) && !KNOWN.contains(&k.as_str()) {
            return Err(format!(
                "{}: `{k}` is not supported by the call grammar",
                here(at)
            ));
        }
    }
    if let Some(v) = obj.get("const") {
        return Ok(Node::Literal(vec![compact(v)]));
    }
    if let Some(v) = obj.get("enum") {
        let vs = v
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{}: `enum` must be a non-empty array", here(at)))?;
        return Ok(Node::Literal(vs.iter().map(compact).collect()));
    }
    if let Some(b) = obj.get("anyOf").or_else(|| obj.get("oneOf")) {
        let branches = b
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{}: `anyOf` must be a non-empty array", here(at)))?;
        let mut ids = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            let n = node(b, nodes, &format!("{at}/anyOf/{i}"))?;
            ids.push(nodes.push(n));
        }
        return union(ids, nodes, at);
    }
    let types: Vec<&str> = match obj.get("type") {
        None => return typed_any(obj, nodes, at),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(format!("{}: `type` must be a string or a list", here(at))),
    };
    if types.is_empty() {
        return Err(format!("{}: `type` names no type", here(at)));
    }
    let mut ids = Vec::new();
    for t in &types {
        let n = of_type(t, obj, nodes, at)?;
        if types.len() == 1 {
            return Ok(n);
        }
        ids.push(nodes.push(n));
    }
    union(ids, nodes, at)
}

/// Every keyword [`node`] reads.
const KNOWN: &[&str] = &[
    "type",
    "const",
    "enum",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

fn here(at: &str) -> &str {
    if at.is_empty() {
        "the schema"
    } else {
        at
    }
}

/// A schema without `type`: an object when it names properties, any value otherwise.
fn typed_any(obj: &Map<String, Value>, nodes: &mut Nodes, at: &str) -> Result<Node, String> {
    if obj.contains_key("properties") {
        of_type("object", obj, nodes, at)
    } else {
        Ok(Node::Any)
    }
}

fn of_type(t: &str, obj: &Map<String, Value>, nodes: &mut Nodes, at: &str) -> Result<Node, String> {
    let count = |k: &str| -> Result<Option<usize>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| format!("{}: `{k}` must be a count", here(at))),
        }
    };
    let bound = |k: &str| -> Result<Option<f64>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{}: `{k}` must be a number", here(at))),
        }
    };
    Ok(match t {
        "null" => Node::Null,
        "boolean" => Node::Bool,
        "string" => Node::String {
            min_chars: count("minLength")?.unwrap_or(0),
            max_chars: count("maxLength")?,
        },
        "integer" => {
            // Integer bounds: exclusive ones move by one; none is the i64 range (what a
            // JSON parser keeps exact), which also bounds the digits.
            let lo = [
                bound("minimum")?.map(f64::ceil),
                bound("exclusiveMinimum")?.map(|x| x.floor() + 1.0),
            ]
            .into_iter()
            .flatten()
            .fold(i64::MIN as f64, f64::max);
            let hi = [
                bound("maximum")?.map(f64::floor),
                bound("exclusiveMaximum")?.map(|x| x.ceil() - 1.0),
            ]
            .into_iter()
            .flatten()
            .fold(i64::MAX as f64, f64::min);
            let multiple_of = match bound("multipleOf")? {
                None => None,
                Some(m) if m >= 1.0 && m.fract() == 0.0 => Some(m as i128),
                Some(m) => {
                    return Err(format!(
                        "{}: `multipleOf` {m} on an integer must be a whole number",
                        here(at)
                    ))
                }
            };
            if lo > hi {
                return Err(format!("{}: no integer fits the bounds", here(at)));
            }
            Node::Integer {
                min: lo as i128,
                max: hi as i128,
                multiple_of,
            }
        }
        "number" => {
            if obj.contains_key("multipleOf") {
                return Err(format!(
                    "{}: `multipleOf` on a number is not supported by the call grammar",
                    here(at)
                ));
            }
            let pick = |inc: Option<f64>, exc: Option<f64>| match (inc, exc) {
                (Some(i), Some(e)) if e >= i => Some((e, true)),
                (Some(i), _) => Some((i, false)),
                (None, Some(e)) => Some((e, true)),
                (None, None) => None,
            };
            let min = pick(bound("minimum")?, bound("exclusiveMinimum")?);
            let max = match (bound("maximum")?, bound("exclusiveMaximum")?) {
                (Some(i), Some(e)) if e <= i => Some((e, true)),
                (Some(i), _) => Some((i, false)),
                (None, Some(e)) => Some((e, true)),
                (None, None) => None,
            };
            Node::Number { min, max }
        }
        "array" => {
            let items = match obj.get("items") {
                None => ANY,
                Some(s) => {
                    let n = node(s, nodes, &format!("{at}/items"))?;
                    nodes.push(n)
                }
            };
            let (min, max) = (count("minItems")?.unwrap_or(0), count("maxItems")?);
            if max.is_some_and(|m| m < min) {
                return Err(format!("{}: `maxItems` is below `minItems`", here(at)));
            }
            Node::Array { items, min, max }
        }
        "object" => object(obj, nodes, at)?,
        other => return Err(format!("{}: unknown type `{other}`", here(at))),
    })
}

fn object(obj: &Map<String, Value>, nodes: &mut Nodes, at: &str) -> Result<Node, String> {
    let mut props = Vec::new();
    if let Some(p) = obj.get("properties") {
        let p = p
            .as_object()
            .ok_or_else(|| format!("{}: `properties` must be an object", here(at)))?;
        for (name, s) in p {
            if name.is_empty() || name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
                return Err(format!(
                    "{}: property name {name:?} needs escaping, which the call grammar does not write",
                    here(at)
                ));
            }
            let n = node(s, nodes, &format!("{at}/{name}"))?;
            props.push((name.clone(), nodes.push(n)));
        }
    }
    let mut required = vec![false; props.len()];
    if let Some(r) = obj.get("required") {
        let r = r
            .as_array()
            .ok_or_else(|| format!("{}: `required` must be a list", here(at)))?;
        for name in r {
            let name = name.as_str().unwrap_or_default();
            match props.iter().position(|(p, _)| p == name) {
                Some(i) => required[i] = true,
                None => {
                    return Err(format!(
                        "{}: required property `{name}` is not among `properties`",
                        here(at)
                    ))
                }
            }
        }
    }
    let additional = match obj.get("additionalProperties") {
        Some(Value::Bool(false)) => None,
        None | Some(Value::Bool(true)) => Some(ANY),
        Some(s) => {
            let n = node(s, nodes, &format!("{at}/additionalProperties"))?;
            Some(nodes.push(n))
        }
    };
    Ok(Node::Object {
        props,
        required,
        additional,
    })
}

/// The first bytes a value of `n` may start with, as a 4-bit class set: `"`, a digit or
/// `-`, `{`, `[`, or a letter (`true`, `false`, `null`). `Any` starts with all of them.
fn starts(n: &Node, nodes: &Nodes) -> u8 {
    const STR: u8 = 1;
    const NUM: u8 = 2;
    const OBJ: u8 = 4;
    const ARR: u8 = 8;
    const WORD: u8 = 16;
    match n {
        Node::Any => STR | NUM | OBJ | ARR | WORD,
        Node::Null | Node::Bool => WORD,
        Node::Integer { .. } | Node::Number { .. } => NUM,
        Node::String { .. } => STR,
        Node::Array { .. } => ARR,
        Node::Object { .. } => OBJ,
        Node::Literal(vs) => vs.iter().fold(0, |acc, v| {
            acc | match v.first() {
                Some(b'"') => STR,
                Some(b'{') => OBJ,
                Some(b'[') => ARR,
                Some(b) if b.is_ascii_alphabetic() => WORD,
                _ => NUM,
            }
        }),
        Node::Union(ids) => ids.iter().fold(0, |a, &i| a | starts(nodes.get(i), nodes)),
    }
}

/// A union whose branches start with different bytes (so the first byte picks one), or an
/// error naming the place.
fn union(ids: Vec<NodeId>, nodes: &mut Nodes, at: &str) -> Result<Node, String> {
    let mut seen = 0u8;
    for &i in &ids {
        let s = starts(nodes.get(i), nodes);
        if s & seen != 0 {
            return Err(format!(
                "{}: branches that start alike are not supported by the call grammar",
                here(at)
            ));
        }
        seen |= s;
    }
    Ok(Node::Union(ids))
}

/// `v` as compact JSON bytes (what the grammar lets the model write for a literal).
fn compact(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The node a union branch or a value starts with byte `b`, if any.
pub fn branch_for(nodes: &Nodes, ids: &[NodeId], b: u8) -> Option<NodeId> {
    ids.iter().copied().find(|&i| {
        let class = match b {
            b'"' => 1,
            b'-' | b'0'..=b'9' => 2,
            b'{' => 4,
            b'[' => 8,
            b't' | b'f' | b'n' => 16,
            _ => 0,
        };
        starts(nodes.get(i), nodes) & class != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_image_tools_schema_compiles_into_an_object_of_bounded_fields() {
        let manifest: Value =
            serde_json::from_str(include_str!("../../../tools/generate_image.json")).unwrap();
        let nodes = compile(&manifest["parameters"]).unwrap();
        let Node::Object {
            props,
            required,
            additional,
        } = nodes.get(0)
        else {
            panic!("{:?}", nodes.get(0))
        };
        assert_eq!(props[0].0, "prompt");
        assert_eq!(required.iter().filter(|r| **r).count(), 1);
        assert!(additional.is_none());
        let width = props.iter().find(|(n, _)| n == "width").unwrap().1;
        assert_eq!(
            nodes.get(width),
            &Node::Integer {
                min: 64,
                max: 1024,
                multiple_of: Some(8)
            }
        );
    }

    #[test]
    fn what_the_grammar_cannot_guarantee_is_refused_by_name() {
        for (schema, says) in [
            (json!({"type": "string", "pattern": "^a"}), "`pattern`"),
            (json!({"type": "object", "required": ["x"]}), "`x`"),
            (
                json!({"anyOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}),
                "start alike",
            ),
            (
                json!({"type": "integer", "minimum": 5, "maximum": 4}),
                "no integer",
            ),
        ] {
            let e = compile(&schema).unwrap_err();
            assert!(e.contains(says), "{schema}: {e}");
        }
        assert!(compile(&json!({"type": ["string", "null"]})).is_ok());
    }
}
