//! The self-learning loop on a tiny model: the Learner's rounds lower the loss on gap items,
//! the GapDetector opens gaps from real scores and closes them only on held-out
//! paraphrases, and a whole session runs several iterations through the actors' messages.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use thau::actors::episodic_memory::ListEpisodes;
use thau::actors::gap_detector::{GapStatus, Probe};
use thau::actors::learner::StartStudy;
use thau::commands::learn::{learn, LearnRequest};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::learn::source::{KnowledgeBase, Templates};
use thau::learn::study::{probe_loss, replay_corpus, LearnSettings, Study};
use thau::memory::episodic::EpisodeFilter;
use thau::memory::EpisodeKind;
use thau::model::tokenizer::ThauTokenizer;
use thau::model::train::{TrainOptions, Trainer};
use thau::model::ModelConfig;
use thau::runtime::Runtime;

/// A small corpus: facts with paraphrases, and two passages.
fn corpus(dir: &Path) {
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
fn tiny_checkpoint(home: &Home, corpus_dir: &Path, settings: &LearnSettings) {
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

fn settings() -> LearnSettings {
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
fn agents(home: &Home) {
    let dir = home.agents();
    let learner = std::fs::read_to_string(dir.join("learner.toml")).unwrap();
    let learner = learner
        .replace("steps_per_round = 6", "steps_per_round = 3")
        .replace("batch_size = 8", "batch_size = 4")
        .replace("items_per_round = 4", "items_per_round = 2")
        .replace("lr = 0.001", "lr = 0.005")
        .replace("seq_len = 128", "seq_len = 32")
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

#[test]
fn study_rounds_lower_the_loss_on_gap_items_and_keep_replaying() {
    let dir = tempfile::tempdir().unwrap();
    corpus(&dir.path().join("corpus"));
    let home = Home::new(dir.path().join("home"));
    let s = settings();
    tiny_checkpoint(&home, &dir.path().join("corpus"), &s);
    let kb = KnowledgeBase::load(&dir.path().join("corpus"), &Templates::default()).unwrap();
    let mut study = Study::open(&home.checkpoints(), &kb, s, 1).unwrap();
    let gaps: Vec<_> = kb
        .items
        .iter()
        .filter(|i| i.topic == "colours")
        .cloned()
        .collect();
    let before = probe_loss(study.trainer.model(), &study.trainer.tokenizer, &gaps).unwrap();
    study.add(gaps.clone());
    assert!(study.ready());
    let mut last = None;
    for _ in 0..8 {
        let r = study.round().unwrap();
        assert_eq!(r.gap_rows, 2 * 3);
        assert_eq!(r.replay_rows, 2 * 3);
        assert!(!r.items.is_empty());
        last = Some(r);
    }
    let after = probe_loss(study.trainer.model(), &study.trainer.tokenizer, &gaps).unwrap();
    assert!(after < before - 0.3, "probe loss {before} -> {after}");
    // Every second round saved a checkpoint.
    assert!(last.unwrap().checkpoint.is_some());
    assert!(thau::model::checkpoint::latest(&home.age_checkpoint(0))
        .unwrap()
        .is_some());
}

#[actix::test]
async fn the_gap_detector_scores_through_inference_and_opens_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    corpus(&corpus_dir);
    let home = Home::new(dir.path().join("home"));
    home.init().unwrap();
    agents(&home);
    tiny_checkpoint(&home, &corpus_dir, &settings());
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let learner = rt.addrs.learner.clone().unwrap();
    learner
        .send(StartStudy {
            session: "t".into(),
            corpus: corpus_dir.clone(),
            seed: 1,
        })
        .await
        .unwrap()
        .unwrap();
    let gaps = rt.addrs.gap_detector.clone().unwrap();
    let kb = KnowledgeBase::load(&corpus_dir, &Templates::default()).unwrap();
    let out = gaps
        .send(Probe {
            session: "t".into(),
            item: kb.items[0].clone(),
        })
        .await
        .unwrap()
        .unwrap();
    // An untrained model is lost: several nats per token, a gap above floor 0.
    assert!(out.score.mean_nll > 2.0, "{out:?}");
    assert!(out.gap);
    assert!(out.score.tokens > 3);
    let status = gaps.send(GapStatus).await.unwrap().unwrap();
    assert_eq!(status.opened, 1);
    assert_eq!(status.open_by_topic.get(&kb.items[0].topic), Some(&1));
    rt.shutdown().await;
}

#[actix::test]
async fn a_session_runs_the_loop_through_the_actors() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    corpus(&corpus_dir);
    let home = Home::new(dir.path().join("home"));
    home.init().unwrap();
    agents(&home);
    tiny_checkpoint(&home, &corpus_dir, &settings());
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    let req = LearnRequest {
        minutes: None,
        questions: Some(16),
        corpus: corpus_dir.clone(),
        seed: 3,
    };
    let stop = AtomicBool::new(false);
    let mut ticks = 0;
    let r = learn(&rt, &req, &stop, &mut |_| ticks += 1).await.unwrap();
    assert!(ticks > 0);
    assert_eq!(r.questions_asked, 16);
    assert_eq!(r.stopped_by, "questions");
    assert!(r.gaps.opened >= 4, "{:?}", r.gaps);
    assert!(r.rounds >= 2, "rounds {}", r.rounds);
    assert!(r.step_after > r.step_before);
    assert!(
        r.probe_loss_after < r.probe_loss_before,
        "{} -> {}",
        r.probe_loss_before,
        r.probe_loss_after
    );
    assert!(!r.curve.is_empty());
    // The session is recorded for `thau stats`, and every step left an episode.
    let sessions = thau::commands::learn::sessions(&home).unwrap();
    assert_eq!(sessions.len(), 1);
    let eps = episodic
        .send(ListEpisodes {
            filter: EpisodeFilter::default(),
            limit: 1000,
            offset: 0,
        })
        .await
        .unwrap()
        .unwrap();
    let count = |k: EpisodeKind| eps.iter().filter(|e| e.kind == k).count();
    assert_eq!(count(EpisodeKind::Question), 16);
    assert_eq!(count(EpisodeKind::Gap) as u64, r.gaps.opened);
    assert_eq!(count(EpisodeKind::TrainingRun) as u64, r.rounds);
    rt.shutdown().await;
}

#[test]
fn the_learn_bench_runs_both_arms_from_the_same_weights() {
    use thau::learn::bench::{learn_bench, LearnBenchPlan};
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let plan = LearnBenchPlan {
        steps: 8,
        batch_size: 4,
        seq_len: 32,
        eval_every: 4,
        probe_items: 6,
        vocab_size: 300,
        lr: 5e-3,
        tiny: true,
        ..Default::default()
    };
    let r = learn_bench(dir.path(), &plan, &mut |_| {}).unwrap();
    assert_eq!(r.uniform.curve.len(), 3);
    assert_eq!(r.gap_steered.curve.len(), 3);
    // Same initial weights, same probe set: the same loss at step 0.
    assert_eq!(r.uniform.curve[0], r.gap_steered.curve[0]);
    assert!(r.uniform.final_loss() < r.uniform.curve[0].1);
    assert!(r.gap_steered.final_loss() < r.gap_steered.curve[0].1);
    if let Some(ratio) = r.step_ratio {
        assert!(ratio > 0.0 && ratio <= 1.0);
    }
}
