//! The self-learning loop on a tiny model: the Learner's rounds lower the loss on gap items,
//! the GapDetector opens gaps from real scores and closes them only on held-out
//! paraphrases, and a whole session runs several iterations through the actors' messages.

mod common;
use std::sync::atomic::AtomicBool;

use common::learning::{corpus, prepared, settings, tiny_checkpoint};

use thau::actors::episodic_memory::ListEpisodes;
use thau::actors::gap_detector::LEARNED_SOURCE;
use thau::actors::gap_detector::{GapStatus, Probe};
use thau::actors::learner::StartStudy;
use thau::actors::long_term_memory::ListMemories;
use thau::commands::learn::{learn, LearnRequest};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::learn::source::{KnowledgeBase, Templates};
use thau::learn::study::{probe_loss, Study};
use thau::memory::episodic::EpisodeFilter;
use thau::memory::EpisodeKind;
use thau::runtime::Runtime;

#[test]
fn study_rounds_lower_the_loss_on_gap_items_and_keep_replaying() {
    let dir = tempfile::tempdir().unwrap();
    corpus(&dir.path().join("corpus"));
    let home = Home::new(dir.path().join("home"));
    let s = settings();
    tiny_checkpoint(&home, &dir.path().join("corpus"), &s);
    let kb = KnowledgeBase::load(&dir.path().join("corpus"), &Templates::default()).unwrap();
    let mut study = Study::open(&home.checkpoints(), &kb, s, 1, &candle_core::Device::Cpu).unwrap();
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
    let (_dir, corpus_dir, home) = prepared();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let learner = rt.addrs.learner.clone().unwrap();
    learner
        .send(StartStudy {
            session: "t".into(),
            corpus: corpus_dir.clone(),
            seed: 1,
            closing: Default::default(),
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
    let (_dir, corpus_dir, home) = prepared();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    let req = LearnRequest {
        minutes: None,
        questions: Some(16),
        corpus: corpus_dir.clone(),
        seed: 3,
        teacher: None,
        resume: true,
        accuracy: None,
    };
    let stop = AtomicBool::new(false);
    let mut ticks = 0;
    let r = learn(&rt, &req, &stop, &mut |_| ticks += 1).await.unwrap();
    assert!(ticks > 0);
    assert_eq!(r.questions_asked, 16);
    assert_eq!(r.stopped_by, "questions");
    // Several of 16 (the running per-topic thresholds open those above the topic's norm).
    assert!(r.gaps.opened >= 3, "{:?}", r.gaps);
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
    // `thau stats --plot` draws its curves into a PNG of the promised size.
    let png_path = home.runs().join("curves.png");
    let plot = thau::commands::stats::plot_sessions(&sessions, &png_path).unwrap();
    assert_eq!(plot.points, r.curve.len());
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let info = decoder.read_info().unwrap();
    assert_eq!(
        (info.info().width, info.info().height),
        thau::commands::stats::PLOT_SIZE
    );
    assert!(thau::commands::stats::plot_sessions(&[], &png_path).is_err());
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
    // Gaps close, and each closed gap's fact reaches long-term memory as recallable
    // knowledge: the question and its answer, marked as learned.
    assert!(r.gaps.closed >= 1, "no gap closed: {:?}", r.gaps);
    assert_eq!(count(EpisodeKind::GapClosed) as u64, r.gaps.closed);
    let long = rt.addrs.long_term_memory.clone().unwrap();
    let (points, _) = long
        .send(ListMemories {
            after: None,
            limit: 1000,
        })
        .await
        .unwrap()
        .unwrap();
    let facts: Vec<_> = points
        .iter()
        .filter(|p| p.payload.source == LEARNED_SOURCE)
        .collect();
    assert_eq!(facts.len() as u64, r.gaps.closed, "{facts:?}");
    let kb = KnowledgeBase::load(&corpus_dir, &Templates::default()).unwrap();
    for f in &facts {
        assert!(
            kb.items
                .iter()
                .any(|i| f.payload.text == format!("{} {}", i.question, i.answer)),
            "not a fact of the corpus: {:?}",
            f.payload.text
        );
    }
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

/// The teacher's JSON item, wrapped in the reply shape of the API at `path`.
fn teacher_reply(path: &str, item: &str, length_cut: bool) -> String {
    if path == "/api/chat" {
        serde_json::json!({"model": "m", "message": {"role": "assistant", "content": item},
                           "done": true, "done_reason": if length_cut { "length" } else { "stop" }})
        .to_string()
    } else {
        serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": item},
                           "finish_reason": if length_cut { "length" } else { "stop" }}]})
        .to_string()
    }
}

const GOOD_ITEM: &str = r#"{"question": "What colour is a ripe banana?", "answer": "A ripe banana is yellow, sometimes with small brown spots.", "paraphrases": ["Which colour does a banana have when it is ripe?"]}"#;

#[test]
fn the_http_teacher_speaks_ollama_and_openai_and_reports_failures() {
    use thau::learn::teacher::{HttpTeacher, Rejection};
    let (url, asked) = common::json_server(|path, _| (200, teacher_reply(path, GOOD_ITEM, false)));
    for api in ["ollama", "openai"] {
        let t = HttpTeacher::new(format!("{api}:tiny-model@{url}").parse().unwrap());
        let p = t.propose("colours", "en").unwrap();
        assert_eq!(p.question, "What colour is a ripe banana?");
        assert_eq!(p.paraphrases.len(), 1);
        assert!(!p.cut_off);
    }
    let log = asked.lock().unwrap().clone();
    assert_eq!(log[0].0, "/api/chat");
    assert_eq!(log[1].0, "/v1/chat/completions");
    for (_, body) in &log {
        assert_eq!(body["model"], "tiny-model");
        assert!(body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("colours"));
    }
    // Failures become named rejections, never panics.
    let (bad, _) = common::json_server(|path, _| match path {
        "/api/chat" => (200, teacher_reply(path, "this is not JSON", false)),
        _ => (500, "{}".into()),
    });
    let t = HttpTeacher::new(format!("ollama:m@{bad}").parse().unwrap());
    assert_eq!(t.propose("x", "en").unwrap_err().kind(), "malformed");
    let t = HttpTeacher::new(format!("openai:m@{bad}").parse().unwrap());
    assert_eq!(
        t.propose("x", "en").unwrap_err(),
        Rejection::HttpStatus { status: 500 }
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = HttpTeacher::new(format!("ollama:m@http://{closed}").parse().unwrap());
    assert_eq!(t.propose("x", "en").unwrap_err().kind(), "unreachable");
}

#[actix::test]
async fn a_session_keeps_going_when_the_teacher_fails_or_is_filtered() {
    let (_dir, corpus_dir, home) = prepared();
    let q = std::fs::read_to_string(home.agents().join("questioner.toml")).unwrap();
    std::fs::write(
        home.agents().join("questioner.toml"),
        q.replace("teacher_every = 3", "teacher_every = 2"),
    )
    .unwrap();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    // One good item, then a refusal, a truncated answer and garbage, in turn.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let (url, _) = common::json_server(move |path, _| {
        let item = match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 4 {
            0 => GOOD_ITEM.to_string(),
            1 => r#"{"question": "Why?", "answer": "I'm sorry, but I cannot help with that request today."}"#.into(),
            2 => r#"{"question": "What is snow?", "answer": "Snow is frozen water that falls from the"}"#.into(),
            _ => "garbage".into(),
        };
        (200, teacher_reply(path, &item, false))
    });
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let req = LearnRequest {
        minutes: None,
        questions: Some(20),
        corpus: corpus_dir.clone(),
        seed: 5,
        teacher: Some(format!("ollama:m@{url}").parse().unwrap()),
        resume: true,
        accuracy: None,
    };
    let r = learn(&rt, &req, &AtomicBool::new(false), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(r.questions_asked, 20);
    assert_eq!(r.teacher_accepted, 1, "{:?}", r.teacher_rejected);
    let rejected: u64 = r.teacher_rejected.values().sum();
    assert!(rejected >= 2, "{:?}", r.teacher_rejected);
    assert!(
        r.teacher_rejected.contains_key("refusal"),
        "{:?}",
        r.teacher_rejected
    );
    rt.shutdown().await;

    // An unreachable teacher: every call is a rejection; the corpus carries the session.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let req = LearnRequest {
        teacher: Some(format!("openai:m@http://{closed}").parse().unwrap()),
        questions: Some(10),
        ..req
    };
    let r = learn(&rt, &req, &AtomicBool::new(false), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(r.questions_asked, 10);
    assert_eq!(r.teacher_accepted, 0);
    assert!(
        r.teacher_rejected.get("unreachable").copied().unwrap_or(0) >= 1,
        "{:?}",
        r.teacher_rejected
    );
    rt.shutdown().await;
}

#[actix::test]
async fn the_tuner_moves_knobs_on_feedback_and_gap_signals_logs_and_reverts() {
    use thau::actors::tuner::{Feedback, LearningSignal, RevertTuning, TuningStatus};
    use thau::learn::tuning::{Cause, Knob, Rating};
    use thau::learn::LearnEvent;
    let (_dir, _corpus_dir, home) = prepared();
    let specs = thau::runtime::agent_specs(&home, &ThauConfig::default()).unwrap();
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let tuner = rt.addrs.tuner.clone().unwrap();
    // The running Tuner owns the state (once started): the command line is told so.
    let fresh = tuner.send(TuningStatus).await.unwrap().unwrap();
    assert!(fresh.log.is_empty());
    let busy = thau::commands::tune::feedback(&home, &specs, "t0", Rating::Up, None).unwrap_err();
    assert!(busy.to_string().contains("in use"), "{busy}");
    let mut last = None;
    for i in 0..5 {
        let out = tuner
            .send(Feedback {
                session: "s".into(),
                turn: format!("t{i}"),
                rating: Rating::Down,
                note: Some("rambling".into()),
            })
            .await
            .unwrap()
            .unwrap();
        last = out.change.or(last);
    }
    let c = last.expect("five thumbs down lower the temperature");
    assert_eq!((c.knob, c.from, c.to), (Knob::Temperature, 0.8, 0.72));
    // Gaps that never close raise the percentile (20 in this home's gap_detector.toml).
    for i in 0..12 {
        tuner.do_send(LearningSignal(LearnEvent::GapOpened {
            item: format!("i{i}"),
            topic: "colours".into(),
            mean_nll: 5.0,
        }));
    }
    let t = tuner.send(TuningStatus).await.unwrap().unwrap();
    assert_eq!(t.value(Knob::GapPercentile), Some(25.0));
    assert_eq!(t.log.len(), 2);
    assert_eq!(t.log[1].cause, Cause::GapClosure);
    let r = tuner.send(RevertTuning(c.id)).await.unwrap().unwrap();
    assert_eq!(
        (r.knob, r.to, r.reverts),
        (Knob::Temperature, 0.8, Some(c.id))
    );
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    let feedback = episodic
        .send(ListEpisodes {
            filter: EpisodeFilter {
                kind: Some(EpisodeKind::Feedback),
                ..Default::default()
            },
            limit: 100,
            offset: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(feedback.len(), 5);
    assert!(rt.shutdown().await.is_empty());
    // The GapDetector took the new percentile (its flushed state says so).
    let percentile = |home: &Home| {
        let snap: serde_json::Value = serde_json::from_slice(
            &std::fs::read(home.runs().join("actors").join("gap_detector.json")).unwrap(),
        )
        .unwrap();
        snap["state"]["thresholds"]["config"]["percentile"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(percentile(&home), 25.0);
    // Offline, the command line takes feedback; a restart re-applies the tuned values.
    let out = thau::commands::tune::feedback(&home, &specs, "t9", Rating::Up, None).unwrap();
    assert_eq!(out.ratings.get("up"), Some(&1));
    std::fs::remove_file(home.runs().join("actors").join("gap_detector.json")).unwrap();
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    assert!(rt.shutdown().await.is_empty());
    assert_eq!(percentile(&home), 25.0);
    let back = thau::commands::tune::revert(&home, &specs, t.log[1].id).unwrap();
    assert_eq!(back.to, 20.0);
}

/// An interrupted session is resumed only from its own corpus; `--new-session` (resume
/// off) drops it and starts anew.
#[actix::test]
async fn an_interrupted_session_is_resumed_only_from_its_corpus() {
    use thau::commands::learn::{interrupted, Journal};
    let (_dir, corpus_dir, home) = prepared();
    tiny_checkpoint(&home, &corpus_dir, &settings());
    let old = Journal {
        session: "learn-old".into(),
        started_at: chrono::Utc::now(),
        corpus: "/elsewhere".into(),
        seed: 1,
        elapsed_s: 3.0,
        resumes: 0,
        fresh_model: false,
        step_before: 0,
        probe_loss_before: 5.0,
        accuracy_before: None,
    };
    let runs = home.runs().join("learn");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(
        runs.join("learn-old.open.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    assert_eq!(interrupted(&home).unwrap().len(), 1);
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let mut req = LearnRequest {
        minutes: None,
        questions: Some(4),
        corpus: corpus_dir.clone(),
        seed: 3,
        teacher: None,
        resume: true,
        accuracy: None,
    };
    let stop = AtomicBool::new(false);
    let err = learn(&rt, &req, &stop, &mut |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("learn-old")
            && err.contains("--corpus /elsewhere")
            && err.contains("--new-session"),
        "{err}"
    );
    req.resume = false;
    let r = learn(&rt, &req, &stop, &mut |_| {}).await.unwrap();
    assert_eq!((r.resumes, r.questions_asked), (0, 4));
    assert_ne!(r.session, "learn-old");
    assert!(interrupted(&home).unwrap().is_empty());
    rt.shutdown().await;
}
