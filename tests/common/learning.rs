//! A small learning setup shared by the learning and crash tests: a corpus of facts with
//! paraphrases, a tiny checkpoint, and agent files with tiny learning settings.

use std::path::Path;

use candle_core::Device;
use thau::home::Home;
use thau::learn::source::{KnowledgeBase, Templates};
use thau::learn::study::{replay_corpus, LearnSettings};
use thau::model::tokenizer::ThauTokenizer;
use thau::model::train::{TrainOptions, Trainer};
use thau::model::ModelConfig;

/// A small corpus: facts with paraphrases, and two passages.
pub fn corpus(dir: &Path) {
    let en = dir.join("en");
    std::fs::create_dir_all(&en).unwrap();
    let colours = [
        "red", "blue", "green", "yellow", "black", "white", "pink", "grey",
    ];
    let things = [
        "apple", "sky", "grass", "sun", "night", "snow", "rose", "stone",
    ];
    let mut qa = String::new();
    for (i, (c, t)) in colours.iter().zip(things).enumerate() {
        for k in 0..3 {
            let topic = if k == 0 { "colours" } else { "things" };
            qa.push_str(&format!(
                "{{\"question\":\"What colour is the {t} number {k}{i}?\",\"answer\":\"The {t} number {k}{i} is {c}.\",\"topic\":\"{topic}\",\"paraphrases\":[\"Which colour has the {t} number {k}{i}?\"]}}\n"
            ));
        }
    }
    std::fs::write(en.join("qa.jsonl"), qa).unwrap();
    std::fs::write(
        en.join("colours.md"),
        "# Colours\n\nColours are what the eye sees when light falls on things.\n\nRed, blue and green mix into every other colour.",
    )
    .unwrap();
}

/// A tiny model saved as a training checkpoint, so that the Learner resumes it.
pub fn tiny_checkpoint(home: &Home, corpus_dir: &Path, settings: &LearnSettings) {
    let kb = KnowledgeBase::load(corpus_dir, &Templates::default()).unwrap();
    let replay = replay_corpus(&kb);
    let texts: Vec<String> = replay.examples.iter().map(|e| e.text()).collect();
    let tok = ThauTokenizer::train(texts.into_iter(), 400).unwrap();
    let mut cfg = ModelConfig::tiny(tok.vocab_size());
    cfg.max_seq_len = 64;
    let opts = TrainOptions {
        batch_size: settings.batch_size,
        seq_len: settings.seq_len,
        lr: settings.lr,
        warmup: 2,
        heldout: 0.0,
        ..Default::default()
    };
    let t = Trainer::new(cfg, tok, &replay, opts, &Device::Cpu).unwrap();
    t.save(&home.age_checkpoint(0)).unwrap();
}

pub fn settings() -> LearnSettings {
    LearnSettings {
        steps_per_round: 3,
        batch_size: 4,
        replay_ratio: 0.5,
        items_per_round: 2,
        lr: 5e-3,
        seq_len: 32,
        checkpoint_every: 2,
        ..Default::default()
    }
}

/// agents/ with tiny learning settings and a quick Questioner.
pub fn agents(home: &Home) {
    let dir = home.agents();
    let learner = std::fs::read_to_string(dir.join("learner.toml")).unwrap();
    let learner = learner
        .replace("steps_per_round = 6", "steps_per_round = 3")
        .replace("batch_size = 8", "batch_size = 4")
        .replace("items_per_round = 4", "items_per_round = 2")
        .replace("lr = 0.001", "lr = 0.005")
        .replace("seq_len = 256", "seq_len = 32")
        .replace("checkpoint_every = 5", "checkpoint_every = 2");
    std::fs::write(dir.join("learner.toml"), learner).unwrap();
    let q = std::fs::read_to_string(dir.join("questioner.toml")).unwrap();
    std::fs::write(
        dir.join("questioner.toml"),
        // The test's questions share a template: only exact repeats count as duplicates.
        q.replace("interval_ms = 1000", "interval_ms = 30")
            .replace("max_similarity = 0.7", "max_similarity = 0.9999"),
    )
    .unwrap();
    // Every answer of an untrained model is a gap (floor 0, low percentile).
    let g = std::fs::read_to_string(dir.join("gap_detector.toml")).unwrap();
    std::fs::write(
        dir.join("gap_detector.toml"),
        g.replace("percentile = 60.0", "percentile = 20.0")
            .replace("floor = 1.0", "floor = 0.0"),
    )
    .unwrap();
}

/// A temp dir with the corpus and an initialised home with the tiny agent settings.
pub fn prepared() -> (tempfile::TempDir, std::path::PathBuf, Home) {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    corpus(&corpus_dir);
    let home = Home::new(dir.path().join("home"));
    home.init().unwrap();
    agents(&home);
    (dir, corpus_dir, home)
}
