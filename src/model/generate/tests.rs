//! Decoding's specifications: sampling, the answer's rules (no repeats, the template's
//! space, never empty), and the rules that hold an answer to the memory it copies.

use super::*;
use rand::Rng;

/// Drives a greedy [`Sequence`] after `prompt` through `ids` (one-hot logits),
/// collecting the stream.
fn stream_of(tok: &ThauTokenizer, prompt: &[u32], ids: &[u32]) -> (String, Generation) {
    let params = SamplingParams {
        max_new_tokens: ids.len(),
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    let mut seq = Sequence::new(prompt, &params, &[], 4096).unwrap();
    let decode = |ids: &[u32]| tok.decode(ids);
    let mut streamed = String::new();
    for &id in ids {
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[id as usize] = 1.0;
        seq.accept(&logits, &decode, &mut |s| {
            streamed.push_str(s);
            true
        })
        .unwrap();
    }
    let g = seq
        .finish(&decode, &mut |s| {
            streamed.push_str(s);
            true
        })
        .unwrap();
    (streamed, g)
}

/// The one-pass scalar argmax the vectorised one replaced.
fn argmax_reference(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0 as u32
}

#[test]
fn argmax_picks_the_first_largest_like_the_scalar_scan() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for len in [1usize, 5, 16, 17, 100, 8192, 8195] {
        let mut l: Vec<f32> = (0..len).map(|_| rng.random::<f32>() * 10.0 - 5.0).collect();
        assert_eq!(argmax(&l), argmax_reference(&l), "len {len}");
        // Ties: the first one wins, wherever it falls (a lane, the tail).
        let last = len - 1;
        l[last] = 100.0;
        l[len / 2] = 100.0;
        assert_eq!(argmax(&l), argmax_reference(&l), "len {len}, ties");
        l[len / 3] = f32::NAN;
        assert_eq!(argmax(&l), argmax_reference(&l), "len {len}, NaN");
    }
    assert_eq!(argmax(&[f32::NEG_INFINITY; 20]), 0);
    assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN]), 1);
}

#[test]
fn the_repetition_penalty_spares_the_prompt_and_counts_an_answered_token_once() {
    let params = SamplingParams {
        max_new_tokens: 4,
        temperature: 0.0,
        repetition_penalty: 2.0,
        no_repeat_ngram: 0,
        ..Default::default()
    };
    // Token 1 is in the prompt (a recalled memory's word): greedy still copies it.
    let mut seq = Sequence::new(&[1, 1, 1], &params, &[], 64).unwrap();
    let decode = |ids: &[u32]| -> Result<String> { Ok(format!("{ids:?}")) };
    let logits = [0.0f32, 3.0, 2.0, 1.0];
    seq.accept(&logits, &decode, &mut |_| true).unwrap();
    // Once answered, 1 is penalised (3 / 2 < 2); a token answered twice is divided
    // once, not once per occurrence.
    seq.accept(&logits, &decode, &mut |_| true).unwrap();
    assert_eq!(seq.out, [1, 2]);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(sample(&[0.0, 3.0, 1.4], &params, &[1, 1, 1], &mut rng), 1);
}

#[test]
fn a_chat_answer_does_not_end_before_its_first_token() {
    let params = SamplingParams {
        max_new_tokens: 4,
        temperature: 0.0,
        ..Default::default()
    };
    let decode = |ids: &[u32]| -> Result<String> { Ok(format!("{ids:?}")) };
    // A model that puts its weight on ending at once: its second choice comes first,
    // then the end it wanted.
    let mut logits = vec![0.0f32; 64];
    logits[EOT_ID as usize] = 5.0;
    logits[40] = 1.0;
    let answer = |prompt: &[u32]| {
        let mut seq = Sequence::new(prompt, &params, &[EOT_ID], 64).unwrap();
        while !seq.is_done() {
            seq.accept(&logits, &decode, &mut |_| true).unwrap();
        }
        seq.out.clone()
    };
    assert_eq!(answer(&[USER_ID, 30, EOT_ID, ASSISTANT_ID]), [40]);
    // A raw continuation may end at once.
    assert_eq!(answer(&[30, 31]), Vec::<u32>::new());
}

#[test]
fn top_k_selection_samples_only_the_k_best_in_order() {
    let logits: Vec<f32> = (0..1000)
        .map(|i| ((i * 37) % 1000) as f32 / 100.0)
        .collect();
    let mut best: Vec<usize> = (0..1000).collect();
    best.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 5,
        top_p: 1.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let t = sample(&logits, &params, &[], &mut rng) as usize;
        assert!(best[..5].contains(&t), "{t} is not among the 5 best");
        seen.insert(t);
    }
    assert_eq!(seen.len(), 5, "all five best are drawn");
    // top_k 1 is greedy.
    let one = SamplingParams { top_k: 1, ..params };
    assert_eq!(sample(&logits, &one, &[], &mut rng) as usize, best[0]);
}

#[test]
fn the_incremental_stream_adds_up_to_the_whole_decoding_across_split_characters() {
    let text = "el zorro rojo corre por la nieve y la ballena azul nada en el mar. ";
    let tok = ThauTokenizer::train(std::iter::once(text.repeat(30)), 300).unwrap();
    // Characters the tokenizer never saw are split into byte tokens, so pieces of
    // one character arrive in separate steps.
    let answer = "la niña ve 🦊 y 北 en el mar, ¿qué más? él corre.";
    let ids = tok.encode(answer).unwrap();
    assert!(ids.len() > answer.chars().count() / 2, "{ids:?}");
    let (streamed, g) = stream_of(&tok, &[0], &ids);
    assert_eq!(g.ids, ids);
    assert_eq!(g.text, tok.decode(&ids).unwrap());
    assert_eq!(streamed, g.text, "the stream adds up to the whole decoding");
    assert!(
        g.text.contains("🦊") && g.text.contains("niña"),
        "{}",
        g.text
    );
}

#[test]
fn an_answer_never_repeats_a_run_of_its_own_tokens() {
    // "15 16 17 19 15 16": 17 would repeat "15 16 17".
    assert_eq!(repeats(&[15, 16, 17, 19, 15, 16], 3), vec![17]);
    assert!(repeats(&[15, 16, 17, 19, 15, 16], 0).is_empty());
    assert!(repeats(&[15, 16, 17, 19, 15, 16], 4).is_empty());
    // A tool call's JSON may repeat itself.
    assert!(repeats(&[TOOL_OPEN_ID, 15, 16, 17, 15, 16], 3).is_empty());
    // Greedy decoding takes the next best token instead.
    let params = SamplingParams {
        temperature: 0.0,
        repetition_penalty: 1.0,
        no_repeat_ngram: 3,
        ..Default::default()
    };
    let mut logits = vec![0.0f32; 20];
    (logits[17], logits[18]) = (2.0, 1.0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(
        sample(&logits, &params, &[15, 16, 17, 19, 15, 16], &mut rng),
        18
    );
    assert_eq!(
        sample(&logits, &params, &[15, 16, 17, 19, 15, 14], &mut rng),
        17
    );
    let off = SamplingParams {
        no_repeat_ngram: 0,
        ..params
    };
    assert_eq!(
        sample(&logits, &off, &[15, 16, 17, 19, 15, 16], &mut rng),
        17
    );
}

#[test]
fn an_answer_to_a_chat_turn_is_shown_without_the_templates_space() {
    let tok = ThauTokenizer::train(std::iter::once("la niña corre. ".repeat(30)), 300).unwrap();
    let answer = "la niña  corre.";
    let ids = tok.encode_turn(answer).unwrap();
    let (streamed, g) = stream_of(&tok, &[tok.special.user, tok.special.assistant], &ids);
    assert_eq!(g.text, answer);
    assert_eq!(streamed, answer);
    // Plain text after any other prompt keeps its space.
    let (streamed, g) = stream_of(&tok, &[tok.special.eot], &ids);
    assert_eq!(g.text, format!(" {answer}"));
    assert_eq!(streamed, g.text);
}

/// The answer decoded after `memory` and `question` with the memory read through
/// `tok`'s lexicon, by a model whose logits at each step of the answer are `model`'s.
fn answered(
    tok: &ThauTokenizer,
    memory: &str,
    question: &str,
    params: SamplingParams,
    model: &dyn Fn(usize) -> Vec<f32>,
) -> String {
    use crate::model::tokenizer::{memory_block, Message, Role};
    let prompt = tok
        .chat_prompt(&[
            Message::new(Role::System, memory_block(&[memory])),
            Message::new(Role::User, question.to_string()),
        ])
        .unwrap();
    let params = SamplingParams {
        max_new_tokens: 64,
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..params
    };
    let lexicon = Arc::new(Lexicon::of(tok));
    let mut seq = Sequence::new(&prompt, &params, &[EOT_ID], 4096)
        .unwrap()
        .with_reading(Some(lexicon));
    let decode = |ids: &[u32]| tok.decode(ids);
    let mut step = 0;
    while !seq.is_done() {
        seq.accept(&model(step), &decode, &mut |_| true).unwrap();
        step += 1;
        assert!(step < 64);
    }
    seq.finish(&decode, &mut |_| true).unwrap().text
}

/// A model that writes `answer` and then chooses to end, whatever it is shown (past
/// its end, the memory's own next token is what the sequence must have chosen, so any
/// logits do), with `finish_copies` on or off and no copy bias.
fn ended_after(
    tok: &ThauTokenizer,
    memory: &str,
    question: &str,
    answer: &str,
    finish: bool,
) -> String {
    let script = tok.encode_turn(answer).unwrap();
    let params = SamplingParams {
        finish_copies: finish,
        // The scripted answer is what the model chose, however weakly.
        copy_bias: 0.0,
        answer_bias: 0.0,
        ..Default::default()
    };
    let model = |step: usize| {
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[script.get(step).copied().unwrap_or(EOT_ID) as usize] = 1.0;
        logits
    };
    answered(tok, memory, question, params, &model)
}

/// A tokenizer that knows the words of [`CALENDAR`]
/// (and of the questions the tests ask about it, so that words are whole tokens).
fn calendar_tokenizer() -> ThauTokenizer {
    let asked = " Memories: How long are months? Hello there. Hi. ";
    ThauTokenizer::train(
        std::iter::once(format!("{CALENDAR}{asked}").repeat(20)),
        400,
    )
    .unwrap()
}

const CALENDAR: &str = "The calendar used in most of the world is the Gregorian calendar. \
                        It was introduced in 1582. Months have 28 to 31 days. ";

#[test]
fn a_model_without_a_choice_copies_the_memory_sentence_that_matches_its_question() {
    let tok = calendar_tokenizer();
    let hi = tok.encode_turn("Hi").unwrap();
    assert_eq!(hi.len(), 1, "\" Hi\" is one token");
    let hi = hi[0];
    // A model that weakly prefers to end, and to say "Hi" if it must say something.
    let model = |_: usize| {
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[EOT_ID as usize] = 0.5;
        logits[hi as usize] = 0.3;
        logits
    };
    let ask = |question: &str, on: bool| {
        let params = SamplingParams {
            copy_bias: if on { DEFAULT_COPY_BIAS } else { 0.0 },
            answer_bias: if on { DEFAULT_ANSWER_BIAS } else { 0.0 },
            ..Default::default()
        };
        answered(&tok, CALENDAR.trim(), question, params, &model)
    };
    // The copy starts at the sentence that shares most words with the question, ends
    // with it, and takes the next one, which refers back.
    assert_eq!(
        ask("How long are months?", true),
        "Months have 28 to 31 days."
    );
    assert_eq!(
        ask("When did the Gregorian calendar start?", true),
        "The calendar used in most of the world is the Gregorian calendar. It was introduced in 1582."
    );
    // Without the biases, or with nothing in memory that the question names, the model
    // says what it chose.
    let said = tok.decode(&[hi]).unwrap().trim_start().to_string();
    assert_eq!(ask("How long are months?", false), said);
    assert_eq!(ask("Hello there", true), said);
}

#[test]
fn an_answer_copying_a_memory_ends_with_its_sentence_and_the_one_that_refers_back() {
    let tok = calendar_tokenizer();
    let memory = CALENDAR.trim();
    let q = "When did the Gregorian calendar start?";
    let copied = "The calendar used in most of the world is the Gregorian";
    // Ended mid-sentence: the copy runs to the sentence's end and into the next one,
    // which refers back; not into a third one.
    let want = "The calendar used in most of the world is the Gregorian calendar. It was introduced in 1582.";
    assert_eq!(ended_after(&tok, memory, q, copied, true), want);
    // Off, or an answer in the model's own words: it ends where the model chose.
    assert_eq!(ended_after(&tok, memory, q, copied, false), copied);
    assert_eq!(
        ended_after(&tok, memory, q, "In 1582, I think", true),
        "In 1582, I think"
    );
}

#[test]
fn a_call_begun_in_the_prompt_always_closes_within_the_token_budget() {
    use crate::model::tokenizer::{TOOL_CLOSE, TOOL_CLOSE_ID};
    let tok = calendar_tokenizer();
    let schema = serde_json::json!({"type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"]});
    let grammar = Arc::new(
        CallGrammar::new([("weather", &schema)], tok.token_bytes(), TOOL_CLOSE_ID).unwrap(),
    );
    let mut prompt = tok
        .chat_prompt(&[crate::model::tokenizer::Message::new(
            crate::model::tokenizer::Role::User,
            "Months?".to_string(),
        )])
        .unwrap();
    prompt.extend(tok.encode_turn("<TOOL:weather>").unwrap());
    // A model that would write "the" forever: inside a string, or as a free key.
    let the = tok.encode("the").unwrap()[0];
    for budget in [22, 30, 45] {
        let params = SamplingParams {
            max_new_tokens: budget,
            temperature: 0.0,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let mut seq = Sequence::new(&prompt, &params, &[EOT_ID], 4096)
            .unwrap()
            .with_grammar(Some(grammar.clone()));
        let decode = |ids: &[u32]| tok.decode(ids);
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[the as usize] = 5.0;
        // As a server does: the answer stops where the call closes.
        let mut shown = String::new();
        let mut until_closed = |piece: &str| {
            shown.push_str(piece);
            !shown.contains(TOOL_CLOSE)
        };
        while !seq.is_done() {
            seq.accept(&logits, &decode, &mut until_closed).unwrap();
        }
        let g = seq.finish(&decode, &mut |_| true).unwrap();
        assert!(g.ids.len() <= budget);
        // What follows the call is the model's again (a server stops there).
        let (args, _) = g
            .text
            .split_once(TOOL_CLOSE)
            .unwrap_or_else(|| panic!("{budget}: {}", g.text));
        let v: serde_json::Value = serde_json::from_str(args).unwrap();
        assert!(
            jsonschema::validator_for(&schema).unwrap().is_valid(&v),
            "{v}"
        );
    }
}
