//! The call grammar's specifications: every call it lets through parses and validates
//! against its schema, it never leaves a call without a way to go on, and it refuses what
//! the schema refuses.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use std::sync::Arc;

use super::*;

/// The closing token's id in these tests (THAU's `</TOOL>` is id 7).
const CLOSE: u32 = 7;

/// A byte-level vocabulary: 8 special tokens, every single byte, and pieces of the kind a
/// BPE learns on calls (`{"`, `": "`, `prompt`, ` a`, …).
fn vocab() -> Vec<Option<Vec<u8>>> {
    let mut v: Vec<Option<Vec<u8>>> = vec![None; 8];
    v.extend((0..=255u8).map(|b| Some(vec![b])));
    for piece in [
        "{\"",
        "\":",
        "\": \"",
        "\", \"",
        "\"}",
        "}",
        "prompt",
        "width",
        "seed",
        " a",
        " fox",
        "generate",
        "_image",
        "generate_image>",
        ">{\"",
        "10",
        "256",
        "0.",
        "true",
        "null",
        "\\n",
        "\\u00e9",
        "é",
        "ñ",
        " }",
        "}}",
        "\"]",
        "[\"",
        "],",
        "-1",
        "1e5",
    ] {
        v.push(Some(piece.as_bytes().to_vec()));
    }
    v
}

fn image_schema() -> Value {
    let m: Value =
        serde_json::from_str(include_str!("../../../tools/generate_image.json")).unwrap();
    m["parameters"].clone()
}

/// A schema with every construct the grammar knows.
fn rich_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2, "maxLength": 8},
            "unit": {"enum": ["celsius", "fahrenheit", 3]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 2.5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
            "where": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "ok": {"type": "boolean"}},
                "required": ["ok"],
                "additionalProperties": false
            },
            "note": {"type": ["string", "null"]},
            "extra": {}
        },
        "required": ["city", "days"],
        "additionalProperties": false
    })
}

fn grammar() -> CallGrammar {
    let (image, rich) = (image_schema(), rich_schema());
    CallGrammar::new(
        [("generate_image", &image), ("weather", &rich)],
        vocab(),
        CLOSE,
    )
    .unwrap()
}

/// Feeds `text` (after `<TOOL:`) byte by byte, then the closing token; whether the whole
/// call is accepted.
fn accepts(g: &CallGrammar, text: &str) -> bool {
    let mut st = g.start();
    text.bytes().all(|b| g.step(&mut st, 8 + u32::from(b))) && g.step(&mut st, CLOSE)
}

#[test]
fn the_grammar_accepts_calls_written_the_way_thau_writes_them() {
    let g = grammar();
    for ok in [
        r#"generate_image>{"prompt": "a fox in the snow"}"#,
        r#"generate_image>{"prompt":"un zorro, \"rojo\" \u00e9 ñ","width": 256,"seed": 7}"#,
        r#"generate_image>{"guidance_scale": 7.5, "prompt": "x", "height": 1024}"#,
        r#"weather>{"city": "Lima", "days": 3, "unit": "celsius", "tags": ["a", "bcd"]}"#,
        r#"weather>{"days": 14, "city": "Oslo", "ratio": 2.5, "note": null, "extra": [1, {"k": true}]}"#,
        r#"weather>{"city": "Quito", "days": 1, "where": {"ok": false, "lat": -0.25}, "unit": 3}"#,
    ] {
        assert!(accepts(&g, ok), "{ok}");
    }
}

#[test]
fn the_grammar_refuses_what_the_schema_refuses_at_the_first_byte_that_breaks_it() {
    let g = grammar();
    for bad in [
        r#"draw_image>{"prompt": "x"}"#,                    // no such tool
        r#"generate_image>{}"#,                             // `prompt` is required
        r#"generate_image>{"prompt": ""}"#,                 // minLength 1
        r#"generate_image>{"prompt": "x", "width": 100}"#,  // not a multiple of 8
        r#"generate_image>{"prompt": "x", "width": 2048}"#, // over the maximum
        r#"generate_image>{"prompt": "x", "steps": 3}"#,    // no such property
        r#"generate_image>{"prompt": "x", "prompt": "y"}"#, // twice
        r#"generate_image>{"prompt": 3}"#,                  // not a string
        r#"generate_image>{"prompt": "x",}"#,               // trailing comma
        r#"generate_image>{"prompt": "x"  }"#,              // whitespace the calls never hold
        r#"generate_image>{"prompt": "x", "guidance_scale": 1e5}"#, // no exponents
        r#"generate_image> {"prompt": "x"}"#,
        r#"weather>{"city": "Lima", "days": 0}"#, // below the minimum
        r#"weather>{"city": "Lima", "days": 2, "unit": "kelvin"}"#, // not in the enum
        r#"weather>{"city": "Lima", "days": 2, "ratio": 0}"#, // exclusive minimum
        r#"weather>{"city": "Lima", "days": 2, "tags": []}"#, // minItems
        r#"weather>{"city": "Lima", "days": 2, "tags": ["abcd"]}"#, // item maxLength
        r#"weather>{"city": "Lima", "days": 2, "where": {"lat": 1}}"#, // nested required
        r#"weather>{"city": "Lima-Callao", "days": 2}"#, // maxLength
    ] {
        assert!(!accepts(&g, bad), "{bad}");
    }
    // Special tokens other than the closing one never fit inside a call.
    let mut st = g.start();
    assert!(!g.allows(&st, 1) && !g.allows(&st, CLOSE));
    assert!(g.step(&mut st, 8 + u32::from(b'g')));
}

/// Walks calls token by token, each time picking at random among the tokens the grammar
/// allows (leaning towards closing bytes so that walks end), and checks that the grammar
/// always allows some token and that every finished call validates against its schema.
#[test]
fn every_call_the_grammar_lets_a_model_finish_parses_and_validates() {
    let g = grammar();
    let validators = [
        (
            "generate_image",
            jsonschema::validator_for(&image_schema()).unwrap(),
        ),
        (
            "weather",
            jsonschema::validator_for(&rich_schema()).unwrap(),
        ),
    ];
    let vocab = vocab();
    let closing: Vec<u32> = (0..vocab.len() as u32)
        .filter(|&i| {
            vocab[i as usize]
                .as_ref()
                .is_some_and(|b| b.iter().all(|c| b"\"}]0123456789".contains(c)))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut finished = 0;
    for walk in 0..300 {
        let mut st = g.start();
        let mut text = Vec::new();
        let name = validators[walk % 2].0;
        for b in name.bytes().chain(*b">") {
            assert!(g.step(&mut st, 8 + u32::from(b)));
            text.push(b);
        }
        let mut closed = false;
        for _ in 0..200 {
            let allowed: Vec<u32> = (0..vocab.len() as u32)
                .filter(|&i| g.allows(&st, i))
                .collect();
            assert!(
                !allowed.is_empty(),
                "stuck after {}",
                String::from_utf8_lossy(&text)
            );
            if allowed.contains(&CLOSE) && (allowed.len() == 1 || rng.random_bool(0.5)) {
                closed = g.step(&mut st, CLOSE);
                assert!(closed);
                break;
            }
            let allowed: Vec<u32> = allowed.into_iter().filter(|&i| i != CLOSE).collect();
            let near_end: Vec<u32> = allowed
                .iter()
                .copied()
                .filter(|i| closing.contains(i))
                .collect();
            let pool = if !near_end.is_empty() && rng.random_bool(0.6) {
                &near_end
            } else {
                &allowed
            };
            let id = pool[rng.random_range(0..pool.len())];
            assert!(g.step(&mut st, id));
            text.extend(vocab[id as usize].as_ref().unwrap());
        }
        if !closed {
            continue;
        }
        finished += 1;
        let args = &text[name.len() + 1..];
        let v: Value = serde_json::from_slice(args)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&text)));
        let validator = &validators[walk % 2].1;
        assert!(validator.is_valid(&v), "{}", String::from_utf8_lossy(&text));
    }
    assert!(finished >= 150, "only {finished} of 300 walks finished");
}

#[test]
fn a_call_cut_short_anywhere_is_closed_the_shortest_way_and_validates() {
    let g = grammar();
    let open =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let tools = [
        ("generate_image", image_schema()),
        ("weather", rich_schema()),
        ("open", open.clone()),
    ];
    let g_open = CallGrammar::new([("open", &open)], vocab(), CLOSE).unwrap();
    let vocab = vocab();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for walk in 0..300 {
        let name = tools[walk % 3].0;
        let g = if name == "open" { &g_open } else { &g };
        let mut st = g.start();
        let mut text = Vec::new();
        // A random prefix of the name, or the name and a random stretch of arguments.
        let cut = rng.random_range(0..=name.len() + 1);
        for b in name.bytes().chain(*b">").take(cut) {
            assert!(g.step(&mut st, 8 + u32::from(b)));
            text.push(b);
        }
        if cut > name.len() {
            for _ in 0..rng.random_range(0..40) {
                let allowed: Vec<u32> = (8..vocab.len() as u32)
                    .filter(|&i| g.allows(&st, i))
                    .collect();
                let id = allowed[rng.random_range(0..allowed.len())];
                assert!(g.step(&mut st, id));
                text.extend(vocab[id as usize].as_ref().unwrap());
            }
        }
        // Out of budget: each token is the closing one, and the call ends.
        let mut closed = false;
        for _ in 0..200 {
            let Some(id) = g.closing_token(&st) else {
                panic!("no way to close {}", String::from_utf8_lossy(&text))
            };
            assert!(g.step(&mut st, id), "{}", String::from_utf8_lossy(&text));
            if id == CLOSE {
                closed = true;
                break;
            }
            text.extend(vocab[id as usize].as_ref().unwrap());
        }
        assert!(closed, "{}", String::from_utf8_lossy(&text));
        // From an empty name, the closing names the first tool.
        let at = text.iter().position(|&b| b == b'>').unwrap();
        let written = std::str::from_utf8(&text[..at]).unwrap();
        assert!(written.starts_with(&name[..cut.min(name.len())]));
        let schema = &tools.iter().find(|(n, _)| *n == written).unwrap().1;
        let v: Value = serde_json::from_slice(&text[at + 1..])
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&text)));
        assert!(
            jsonschema::validator_for(schema).unwrap().is_valid(&v),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    // Whole schemas close in their fewest bytes, and a call that still fits is left alone.
    let mut st = g_open.start();
    for b in b"open>".iter() {
        g_open.step(&mut st, 8 + u32::from(*b));
    }
    let m = match &st {
        CallState::Args { json, .. } => json.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        m.closing(&g_open.tools[0].nodes).unwrap(),
        br#"{"city":""}"#
    );
    // `{` leaves `"city":""}` (10 bytes) and `</TOOL>`: room in 12 tokens, not in 11.
    let brace = 8 + u32::from(b'{');
    assert!(g_open.leaves_room(&st, brace, 12));
    assert!(!g_open.leaves_room(&st, brace, 11));
    // The longest token that starts the way.
    let id = g_open.closing_token(&st).unwrap();
    assert_eq!(vocab[id as usize].as_deref(), Some(&b"{\""[..]));
}

#[test]
fn a_schema_the_grammar_cannot_enforce_is_named_and_its_calls_held_to_a_json_object() {
    let bad = json!({"type": "object", "properties": {"q": {"type": "string", "format": "email"}}});
    let image = image_schema();
    let g = CallGrammar::new([("mail", &bad), ("generate_image", &image)], vocab(), CLOSE).unwrap();
    assert_eq!(g.unenforced.len(), 1);
    assert!(g.unenforced[0].contains("tool `mail`") && g.unenforced[0].contains("format"));
    assert!(accepts(
        &g,
        r#"mail>{"q": "not an address", "n": [1, null]}"#
    ));
    assert!(!accepts(&g, r#"mail>["q"]"#) && !accepts(&g, r#"mail>{"q": }"#));
    // The other tool keeps its schema.
    assert!(!accepts(&g, r#"generate_image>{"prompt": 1}"#));
}

/// A model whose logits always favour the next byte of an invalid call — an empty prompt,
/// a width no schema allows, an unknown property, a missing close — still writes a call
/// that validates, greedy or sampled, on the path every decoder uses (`Sequence`).
#[test]
fn a_model_pushed_towards_an_invalid_call_cannot_write_one() {
    use crate::model::generate::SamplingParams;
    use crate::model::tokenizer::{TOOL_OPEN_ID, USER_ID};
    let g = Arc::new(grammar());
    let validator = jsonschema::validator_for(&image_schema()).unwrap();
    let adversary = br#"generate_image>{"prompt": "", "width": 100, "steps": 3, "seed": -4"#;
    let byte_id = |b: u8| 8 + u32::from(b);
    let base = [(byte_id(b'"'), 5.0), (byte_id(b'}'), 5.0), (CLOSE, 4.0)];
    for temperature in [0.0, 0.8] {
        let params = SamplingParams {
            temperature,
            max_new_tokens: 120,
            ..Default::default()
        };
        let prompt = [USER_ID, byte_id(b'x'), TOOL_OPEN_ID];
        let text = scripted(&g, &prompt, &params, &base, adversary, 20.0);
        // The model may go on writing after the call; the call is what comes before
        // `</TOOL>`.
        let (call, _) = text
            .split_once("</TOOL>")
            .unwrap_or_else(|| panic!("not closed: {text}"));
        let args = call.strip_prefix("generate_image>").unwrap();
        let v: Value = serde_json::from_str(args).unwrap();
        assert!(validator.is_valid(&v), "{text}");
        assert!(text.starts_with(r#"generate_image>{"prompt": ""#), "{text}");
    }
}

#[test]
fn the_span_extends_the_argument_along_the_users_words_only() {
    let g = grammar();
    let source = "¿Me dibujas a lighthouse in a storm, please?".as_bytes();
    let mut st = g.start();
    for b in br#"generate_image>{"prompt": ""# {
        assert!(g.step(&mut st, 8 + u32::from(*b)));
    }
    let span = |st: &CallState| g.span(st, source).extend;
    let byte = |b: u8| 8 + u32::from(b);
    // Outside a string: nothing.
    assert!(span(&g.start()).is_empty());
    // At the start of the argument: the first bytes of the source's words ("Me" after "¿").
    let first = span(&st);
    for b in *b"Mdalisp" {
        assert!(first.contains(&byte(b)), "{}", b as char);
    }
    assert!(!first.contains(&byte(b'z')) && !first.contains(&byte(b'e')));
    // "a" is followed by " lighthouse" and " storm": the space; and the piece " a" never.
    assert!(g.step(&mut st, byte(b'a')));
    assert_eq!(span(&st), [byte(b' ')]);
    assert!(!g.span(&st, source).mid_word);
    for b in *b" lig" {
        assert!(g.step(&mut st, byte(b)));
    }
    assert_eq!(span(&st), [byte(b'h')]);
    assert!(g.span(&st, source).mid_word);
    // Once the argument leaves the source, nothing is favoured.
    assert!(g.step(&mut st, byte(b'x')));
    assert!(span(&st).is_empty());
}

/// With the span bias, a model that would rather write a subject of its own ("a zebra")
/// copies the request's ("a fox"); without it, it writes its own.
#[test]
fn the_span_bias_turns_a_call_towards_the_requests_words() {
    use crate::model::generate::SamplingParams;
    use crate::model::tokenizer::{ASSISTANT_ID, EOT_ID, TOOL_OPEN_ID, USER_ID};
    let g = Arc::new(grammar());
    let byte_id = |b: u8| 8 + u32::from(b);
    let mut prompt = vec![USER_ID];
    prompt.extend(b" draw a fox".iter().map(|&b| byte_id(b)));
    prompt.extend([EOT_ID, ASSISTANT_ID, TOOL_OPEN_ID]);
    let wants = br#"generate_image>{"prompt": "a zebra"}"#;
    let call = |span_bias: f64| {
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 60,
            span_bias,
            subject_bias: 0.0,
            ..Default::default()
        };
        let base = [(byte_id(b'"'), 1.0), (CLOSE, 1.0)];
        scripted(&g, &prompt, &params, &base, wants, 2.0)
    };
    // The bias takes the argument along "a fox" (where the source ends, the model's own
    // wishes take over again).
    let copied = call(3.0);
    assert!(
        copied.starts_with(r#"generate_image>{"prompt": "a fox"#),
        "{copied}"
    );
    assert_eq!(call(0.0), r#"generate_image>{"prompt": "a zebra"}</TOOL>"#);
}

/// With the subject bias, the argument starts with the subject of the request, not with
/// another of its words ("me", "picture") nor with the model's own subject.
#[test]
fn the_subject_bias_starts_a_call_with_the_subject_of_the_request() {
    use crate::model::generate::SamplingParams;
    use crate::model::tokenizer::{ASSISTANT_ID, EOT_ID, TOOL_OPEN_ID, USER_ID};
    let g = Arc::new(grammar());
    let byte_id = |b: u8| 8 + u32::from(b);
    let mut prompt = vec![USER_ID];
    prompt.extend(
        b" show me a picture of an old fox, please"
            .iter()
            .map(|&b| byte_id(b)),
    );
    prompt.extend([EOT_ID, ASSISTANT_ID, TOOL_OPEN_ID]);
    let wants = br#"generate_image>{"prompt": "me a zebra"}"#;
    let call = |subject_bias: f64| {
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 60,
            span_bias: 3.0,
            subject_bias,
            ..Default::default()
        };
        let base = [(byte_id(b'"'), 1.0), (CLOSE, 1.0)];
        scripted(&g, &prompt, &params, &base, wants, 2.0)
    };
    let held = call(16.0);
    assert!(
        held.starts_with(r#"generate_image>{"prompt": "an old fox"#),
        "{held}"
    );
    // Without it, the span bias follows the request's words from wherever the model began.
    assert!(
        call(0.0).starts_with(r#"generate_image>{"prompt": "me a "#),
        "{}",
        call(0.0)
    );
    // Where the subject has ended, nothing more is favoured.
    let st = |written: &[u8]| {
        let mut st = g.start();
        for &b in br#"generate_image>{"prompt": ""#.iter().chain(written) {
            assert!(g.step(&mut st, byte_id(b)));
        }
        st
    };
    let source = b"show me a picture of an old fox, please";
    let subject = super::subject::of(std::str::from_utf8(source).unwrap()).unwrap();
    assert_eq!(&source[subject.clone()], b"an old fox");
    let next = g.subject_next(&st(b"an old"), source, &subject);
    assert!(next.contains(&byte_id(b' ')) && !next.contains(&byte_id(b'f')));
    assert!(g
        .subject_next(&st(b"an old fox"), source, &subject)
        .is_empty());
    assert!(g.subject_next(&st(b"a zebra"), source, &subject).is_empty());
}

#[test]
fn strings_hold_only_valid_utf8_and_the_escapes_json_knows() {
    let g = grammar();
    let call = |value: &[u8]| {
        let mut st = g.start();
        let text = [
            br#"generate_image>{"prompt": ""#.as_slice(),
            value,
            br#""}"#,
        ]
        .concat();
        text.iter().all(|&b| g.step(&mut st, 8 + u32::from(b))) && g.step(&mut st, CLOSE)
    };
    for ok in [
        "ñandú 🦀 日本".as_bytes(),
        br#"\u00e9 \n \" \\ \/"#,
        br"\uD7FF \uE000",
    ] {
        assert!(call(ok), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [
        b"\xED\xA0\x80".as_slice(), // a surrogate, raw
        b"\xC0\xAF",                // overlong
        b"\xE0\x80\xAF",            // overlong
        b"\xF4\x90\x80\x80",        // past U+10FFFF
        b"\xF5\x80\x80\x80",
        br"\uD800", // a surrogate, escaped
        br"\x41",   // not a JSON escape
        b"a\tb",    // a raw control byte
    ] {
        assert!(!call(bad), "{bad:?}");
    }
}

/// Decodes `prompt` under `g` with a scripted model: at step i its logits are 0 but for
/// `base` (token, logit), and `top` on the byte `script[i]` (on the end of turn once the
/// script is done). The text written, `</TOOL>` spelled out.
fn scripted(
    g: &Arc<CallGrammar>,
    prompt: &[u32],
    params: &crate::model::generate::SamplingParams,
    base: &[(u32, f32)],
    script: &[u8],
    top: f32,
) -> String {
    use crate::model::generate::Sequence;
    use crate::model::tokenizer::EOT_ID;
    let vocab = vocab();
    let decode = |ids: &[u32]| -> crate::model::Result<String> {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| match i {
                CLOSE => b"</TOOL>".to_vec(),
                i => vocab[i as usize].clone().unwrap_or_default(),
            })
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut seq = Sequence::new(prompt, params, &[EOT_ID], 4096)
        .unwrap()
        .with_grammar(Some(g.clone()));
    let mut step = 0;
    while !seq.is_done() {
        let mut logits = vec![0.0f32; vocab.len()];
        for &(t, l) in base {
            logits[t as usize] = l;
        }
        match script.get(step) {
            Some(&b) => logits[8 + usize::from(b)] = top,
            None => logits[EOT_ID as usize] = top,
        }
        seq.accept(&logits, &decode, &mut |_| true).unwrap();
        step += 1;
    }
    seq.finish(&decode, &mut |_| true).unwrap().text
}
