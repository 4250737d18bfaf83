//! Answers grounded in memory (the issue "THAU knows what it learned"): a chat turn's prompt
//! holds the memories recalled for it (not when switched off), within the token budget and
//! best first; `thau memory add` cuts documents into passages, stores each once and refuses
//! what is not text; `thau eval answers` scores the three ways of answering.

mod common;

use std::process::Command;

use common::{json, thau};

use thau::actors::long_term_memory::{Memorize, NewMemory};
use thau::chat::{chat_turn, ChatRequest};
use thau::config::ThauConfig;
use thau::runtime::Runtime;

const DEN: &str = "The red fox 7 sleeps in a den.";
const SNOW: &str = "Snow falls on the hills.";

fn memory(text: &str) -> NewMemory {
    NewMemory {
        text: text.into(),
        source: "test".into(),
        importance: 0.5,
        id: None,
        keys: Vec::new(),
    }
}

fn ask(memory: Option<bool>) -> ChatRequest {
    ChatRequest {
        session: None,
        message: "Where does the red fox 7 sleep?".into(),
        max_tokens: Some(4),
        temperature: Some(0.0),
        seed: Some(1),
        memory,
        token: None,
    }
}

#[actix::test]
async fn a_chat_prompt_holds_the_recalled_memories_unless_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let long = rt.addrs.long_term_memory.clone().unwrap();
    long.send(Memorize(vec![memory(SNOW), memory(DEN)]))
        .await
        .unwrap()
        .unwrap();
    let with = chat_turn(&rt, ask(None), false, None).await.unwrap();
    assert_eq!(with.memories[0].text, DEN, "{:?}", with.memories);
    assert!(with.memories.windows(2).all(|w| w[0].score >= w[1].score));
    let without = chat_turn(&rt, ask(Some(false)), false, None).await.unwrap();
    assert!(without.memories.is_empty());
    // The memories are in the prompt: it is longer by at least the den sentence.
    assert!(
        with.prompt_tokens >= without.prompt_tokens + 8,
        "{} vs {}",
        with.prompt_tokens,
        without.prompt_tokens
    );
    rt.shutdown().await;

    // A budget too small for any memory keeps them all out; a limit of one keeps the best.
    let mut cfg = ThauConfig::default();
    cfg.memory.recall_tokens = 3;
    let rt = Runtime::start(home.clone(), cfg).unwrap();
    let r = chat_turn(&rt, ask(None), false, None).await.unwrap();
    assert!(r.memories.is_empty(), "{:?}", r.memories);
    assert_eq!(r.prompt_tokens, without.prompt_tokens);
    rt.shutdown().await;
    let mut cfg = ThauConfig::default();
    cfg.memory.recall_limit = 1;
    let rt = Runtime::start(home.clone(), cfg).unwrap();
    let r = chat_turn(&rt, ask(None), false, None).await.unwrap();
    assert_eq!(r.memories.len(), 1);
    assert_eq!(r.memories[0].text, DEN);
    // Switched off in the configuration, a request can still ask for memories.
    rt.shutdown().await;
    let mut cfg = ThauConfig::default();
    cfg.memory.recall = false;
    let rt = Runtime::start(home, cfg).unwrap();
    assert!(chat_turn(&rt, ask(None), false, None)
        .await
        .unwrap()
        .memories
        .is_empty());
    assert!(!chat_turn(&rt, ask(Some(true)), false, None)
        .await
        .unwrap()
        .memories
        .is_empty());
    rt.shutdown().await;
}

/// "Remember that…" in one conversation is in long-term memory at once, from that
/// conversation, and the next conversation's prompt recalls it.
#[actix::test]
async fn a_fact_taught_in_conversation_is_recalled_in_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    let teach = |text: &str| ChatRequest {
        session: Some("teacher".into()),
        message: text.into(),
        ..ask(None)
    };
    let r = chat_turn(&rt, teach("Remember that Pim lives in Varno"), false, None)
        .await
        .unwrap();
    assert_eq!(r.reply, "I will remember that: Pim lives in Varno.");
    assert_eq!(r.taught.len(), 1, "{r:?}");
    let id: uuid::Uuid = r.taught[0].parse().unwrap();
    let long = rt.addrs.long_term_memory.clone().unwrap();
    let p = long
        .send(thau::actors::long_term_memory::GetMemory(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.payload.text.as_str(), p.payload.source.as_str()),
        ("Pim lives in Varno.", "taught:teacher#0")
    );
    // Taught twice, stored once.
    let again = chat_turn(&rt, teach("remember: Pim lives in Varno."), false, None)
        .await
        .unwrap();
    assert_eq!(again.taught, r.taught);
    let r = chat_turn(&rt, teach("Recuerda que Pim come truchas"), false, None)
        .await
        .unwrap();
    assert_eq!(r.reply, "Lo recordaré: Pim come truchas.");

    // Another conversation asks: the taught fact is in its prompt.
    let question = ChatRequest {
        session: Some("learner".into()),
        message: "Where does Pim live?".into(),
        ..ask(None)
    };
    let r = chat_turn(&rt, question, false, None).await.unwrap();
    assert_eq!(
        r.memories[0].text, "Pim lives in Varno.",
        "{:?}",
        r.memories
    );
    assert!(r.taught.is_empty());
    rt.shutdown().await;
}

#[test]
fn memory_add_stores_passages_once_and_refuses_what_is_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("es")).unwrap();
    let long_para = common::paragraphs(1, |_| {
        (0..30)
            .map(|i| format!("El faro número {i} alumbra la costa de Quendralia cada noche."))
            .collect::<Vec<_>>()
            .join(" ")
    });
    std::fs::write(
        docs.join("es/faros.md"),
        format!("# Faros\n\n{long_para}\nLa isla exporta pimienta azul desde el puerto de Villa Tresmares."),
    )
    .unwrap();
    std::fs::write(docs.join("empty.txt"), "  \n").unwrap();
    std::fs::write(docs.join("photo.txt"), b"\x89PNG\r\n\x1a\n\0\0").unwrap();
    std::fs::write(docs.join("latin1.txt"), b"Caf\xe9 con leche en Tresmares.").unwrap();
    let huge = std::fs::File::create(docs.join("huge.txt")).unwrap();
    huge.set_len(50 << 20).unwrap();
    drop(huge);

    let docs_arg = docs.to_str().unwrap();
    let first = json(&thau(
        &home,
        &["--json", "memory", "add", "--file", docs_arg],
    ));
    assert_eq!(first["files"], 1, "{first}");
    let passages = first["passages"].as_u64().unwrap();
    assert!(
        passages >= 5,
        "a long paragraph becomes sentence windows: {first}"
    );
    assert_eq!(first["new"].as_u64(), Some(passages));
    let refused: Vec<String> = first["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    for (file, why) in [
        ("empty.txt", "empty"),
        ("photo.txt", "binary"),
        ("latin1.txt", "UTF-8"),
        ("huge.txt", "MiB"),
    ] {
        assert!(
            refused.iter().any(|r| r.contains(file) && r.contains(why)),
            "{file}: {refused:?}"
        );
    }
    // Read again: nothing new is stored.
    let again = json(&thau(
        &home,
        &["--json", "memory", "add", "--file", docs_arg],
    ));
    assert_eq!(
        (again["new"].as_u64(), again["known"].as_u64()),
        (Some(0), Some(passages))
    );
    // A text of its own, and what long-term memory now recalls.
    let text = json(&thau(
        &home,
        &[
            "--json",
            "memory",
            "add",
            "Glassfern beetles glow green at dusk.",
        ],
    ));
    assert_eq!(text["new"], 1);
    let stats = json(&thau(
        &home,
        &["--json", "memory", "stats", "--store", "long"],
    ));
    assert_eq!(
        stats["long"]["points"].as_u64(),
        Some(passages + 1),
        "{stats}"
    );
    let hits = json(&thau(
        &home,
        &[
            "--json",
            "memory",
            "search",
            "¿qué exporta la isla?",
            "--store",
            "long",
            "--limit",
            "1",
        ],
    ));
    let top = hits[0]["text"].as_str().unwrap();
    assert!(top.contains("pimienta azul"), "{top}");
    assert!(hits[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("es/faros.md#"));
    // Nothing readable at all is an error that says why (exit 2).
    let out = thau(
        &home,
        &[
            "memory",
            "add",
            "--file",
            docs.join("empty.txt").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = thau(&home, &["memory", "add", " "]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn eval_answers_scores_memory_closed_book_and_retrieval_alone() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::home_with_model(dir.path());
    let root = home.root.to_str().unwrap().to_string();
    let facts = dir.path().join("facts.md");
    std::fs::write(
        &facts,
        "The lighthouse of Brindlewick was built in 1788 by Oda Fenn.\n\nThe glassfern beetle glows green at dusk.",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_thau"))
        .args([
            "--home",
            &root,
            "memory",
            "add",
            "--file",
            facts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qa = dir.path().join("qa.jsonl");
    std::fs::write(
        &qa,
        concat!(
            r#"{"question":"who built the Brindlewick lighthouse?","expect":["Oda Fenn"],"answer":"Oda Fenn built it.","lang":"en"}"#,
            "\n",
            r#"{"question":"¿De qué color brilla el escarabajo glassfern?","expect":["verde","green"],"lang":"es"}"#,
            "\n"
        ),
    )
    .unwrap();
    let r = json(&thau(
        &home.root,
        &[
            "--json",
            "eval",
            "answers",
            "--qa",
            qa.to_str().unwrap(),
            "--max-tokens",
            "3",
        ],
    ));
    let modes: Vec<&str> = r["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        vec!["memory", "closed_book", "retrieval_only"],
        "{r}"
    );
    assert_eq!(r["questions"], 2);
    // Memory holds both facts: recall@3 finds each, and the best retrieved sentence states it.
    assert_eq!(r["recall_at_3"]["overall"]["accuracy"], 1.0, "{r}");
    let baseline = &r["modes"][2];
    assert_eq!(baseline["overall"]["correct"], 2, "{baseline}");
    assert_eq!(baseline["by_lang"]["es"]["n"], 1);
    assert_eq!(
        r["items"][0]["answers"]["retrieval_only"][0],
        "The lighthouse of Brindlewick was built in 1788 by Oda Fenn."
    );
    // Every answer went through the chat path and was scored.
    for m in &r["modes"].as_array().unwrap()[..2] {
        assert_eq!(m["overall"]["n"], 2, "{m}");
    }
    // The evaluation leaves no conversation behind.
    let stats = json(&thau(
        &home.root,
        &["--json", "memory", "stats", "--store", "short"],
    ));
    assert_eq!(stats["short"]["conversations"], 0, "{stats}");
    // --closed-book runs the weights alone; a bad file names its line.
    let r = json(&thau(
        &home.root,
        &[
            "--json",
            "eval",
            "answers",
            "--qa",
            qa.to_str().unwrap(),
            "--closed-book",
            "--max-tokens",
            "2",
        ],
    ));
    assert_eq!(r["modes"].as_array().unwrap().len(), 1);
    assert!(r["recall_at_3"].is_null());
    std::fs::write(&qa, "{\"question\": 3}\n").unwrap();
    let out = thau(
        &home.root,
        &["eval", "answers", "--qa", qa.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

/// Names and codes of the copy task: every fact is "The code of NAME is CODE.", and a name
/// gets a different code in every world, so no weight can hold a code: it is in the
/// memories or nowhere.
const NAMES: [&str; 12] = [
    "Ana", "Bruno", "Carla", "Dario", "Elena", "Fabio", "Gema", "Hugo", "Ines", "Jorge", "Lola",
    "Mario",
];
const CODES: [&str; 12] = [
    "river", "stone", "cloud", "maple", "tiger", "lemon", "piano", "rocket", "candle", "violet",
    "harbor", "pepper",
];

/// A world of `n` facts, names and codes drawn without repetition by `rng`.
fn world(rng: &mut u64, n: usize) -> Vec<(usize, usize)> {
    let mut next = |m: usize| {
        // xorshift: enough randomness for a test, and no extra dependency.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % m as u64) as usize
    };
    let (mut names, mut codes) = (Vec::new(), Vec::new());
    while names.len() < n {
        let (a, b) = (next(NAMES.len()), next(CODES.len()));
        if !names.contains(&a) && !codes.contains(&b) {
            names.push(a);
            codes.push(b);
        }
    }
    names.into_iter().zip(codes).collect()
}

fn fact(n: usize, c: usize) -> String {
    format!("The code of {} is {}.", NAMES[n], CODES[c])
}

fn question(n: usize) -> String {
    format!("What is the code of {}?", NAMES[n])
}

/// The world as the learning loop sees a corpus: one passage per fact, and a question
/// item whose answer is the fact.
fn knowledge(facts: &[(usize, usize)]) -> thau::learn::source::KnowledgeBase {
    use thau::learn::source::{KnowledgeBase, KnowledgeItem, Passage};
    KnowledgeBase {
        items: facts
            .iter()
            .map(|&(n, c)| KnowledgeItem::new("codes", "en", &question(n), &fact(n, c), vec![]))
            .collect(),
        passages: facts
            .iter()
            .map(|&(n, c)| Passage {
                topic: "codes".into(),
                lang: "en".into(),
                source: "codes.md".into(),
                text: fact(n, c),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn a_tiny_model_trained_open_book_answers_a_fact_that_is_only_in_its_memory() {
    use candle_core::Device;
    use thau::learn::openbook::Shelf;
    use thau::model::data::{Corpus, Example};
    use thau::model::generate::{generate, SamplingParams};
    use thau::model::tokenizer::{memory_block, Message, Role, ThauTokenizer};
    use thau::model::train::{TrainOptions, Trainer};
    use thau::model::ModelConfig;

    const WORLDS: usize = 160;
    const FACTS: usize = 3;
    const STEPS: usize = 600;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    // Training: open-book items made by the learning loop's own shelf, world by world.
    let mut examples: Vec<Example> = Vec::new();
    for _ in 0..WORLDS {
        let kb = knowledge(&world(&mut rng, FACTS));
        let shelf = Shelf::new(&kb).unwrap();
        examples.extend(kb.items.iter().filter_map(|i| shelf.example(i)));
    }
    assert_eq!(examples.len(), WORLDS * FACTS, "every fact has its passage");
    let corpus = Corpus {
        examples,
        files: Vec::new(),
    };
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), 400).unwrap();
    let mut cfg = ModelConfig::tiny(tok.vocab_size());
    (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.max_seq_len) = (64, 4, 128, 64);
    // The copy head, as `thau learn` gives a model it starts.
    cfg.copy_head = true;
    let opts = TrainOptions {
        batch_size: 16,
        seq_len: 64,
        lr: 3e-3,
        warmup: 30,
        total_steps: STEPS as u64,
        heldout: 0.0,
        chats_apart: true,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, tok.clone(), &corpus, opts, &Device::Cpu).unwrap();
    for _ in 0..STEPS {
        trainer.step().unwrap();
    }

    // New worlds, never trained on: is the answer read from the memories?
    let params = SamplingParams {
        max_new_tokens: 12,
        temperature: 0.0,
        ..Default::default()
    };
    let answer = |messages: &[Message]| {
        let prompt = tok.chat_prompt(messages).unwrap();
        generate(
            trainer.model(),
            &tok,
            &prompt,
            &params,
            &[tok.special.eot],
            None,
            &mut |_| true,
        )
        .unwrap()
        .text
    };
    let (mut open, mut closed, mut asked) = (0, 0, 0);
    for _ in 0..8 {
        let facts = world(&mut rng, FACTS);
        let kb = knowledge(&facts);
        let shelf = Shelf::new(&kb).unwrap();
        for (item, &(_, c)) in kb.items.iter().zip(&facts) {
            let passages = shelf.passages_for(item, asked % 2 == 0);
            let user = Message::new(Role::User, item.question.clone());
            let with = answer(&[
                Message::new(Role::System, memory_block(&passages)),
                user.clone(),
            ]);
            let without = answer(&[user]);
            open += usize::from(with.contains(CODES[c]));
            closed += usize::from(without.contains(CODES[c]));
            asked += 1;
        }
    }
    // A code is one of 12: guessing finds 1 in 12, so half is six times chance. Measured:
    // 15 of 24 with the copy head's induction start (tied query and key), 20 of 24 with
    // an untied random start — which on the shipped corpus answered half as many held-out
    // questions after a 10-minute session (7.2% against 13.1%), so the start stays tied.
    assert!(
        open * 2 >= asked,
        "with memory {open} of {asked} answers hold the code"
    );
    assert!(
        closed * 4 < asked,
        "closed-book {closed} of {asked}: the code should not be in the weights"
    );
}
