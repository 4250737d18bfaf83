//! Crash safety: `thau learn` killed with SIGKILL at random moments and started again.
//! After every kill the newest checkpoint loads, no episode committed before the kill is
//! missing, the long-term store opens with every learned fact intact, and the session
//! resumes (same id, budgets carried over, no question asked twice). 4 kills here; 20
//! with THAU_FULL_TESTS=1.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::learning::{prepared, tiny_checkpoint};
use rand::{Rng, SeedableRng};
use thau::commands::learn::{interrupted, LearnReport};
use thau::config::ThauConfig;
use thau::home::Home;

/// Committed episodes (id, session, kind, item), read beside the running process.
fn episodes(home: &Home) -> Vec<(String, String, String, Option<String>)> {
    let db = home.memory().join(thau::memory::EPISODIC_DB);
    if !db.exists() {
        return Vec::new();
    }
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    // The schema may not exist yet if the process was caught while creating it.
    let Ok(mut st) = c.prepare("SELECT id, session, kind, metadata FROM episodes") else {
        return Vec::new();
    };
    st.query_map([], |r| {
        let meta: String = r.get(3)?;
        let item = serde_json::from_str::<serde_json::Value>(&meta)
            .ok()
            .and_then(|m| m.get("item")?.as_str().map(str::to_string));
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, item))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The newest checkpoint's step, after checking that it loads whole.
fn newest_step(home: &Home) -> u64 {
    let dir = thau::model::checkpoint::newest(&home.checkpoints())
        .unwrap()
        .expect("a checkpoint exists");
    let ck = thau::model::checkpoint::load(&dir, &Device::Cpu, true)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(ck.optimizer.is_some() && ck.trainer.is_some());
    ck.trainer.unwrap()["step"].as_u64().unwrap()
}

/// Opens the long-term store (as the restarted process will) and returns how many learned
/// facts it holds; each must be a question and answer of the corpus, as each studied one
/// (`studied:TOPIC`) must, and every other memory a passage of a corpus file
/// (`file#position`).
fn learned_facts(home: &Home, facts: &BTreeSet<String>) -> usize {
    let cfg = ThauConfig::default();
    let lt =
        thau::memory::open_long_term(&home.memory(), &home.checkpoints(), &cfg.memory).unwrap();
    let store = &lt.vectors;
    let n = store.count().unwrap();
    let (points, _) = store.scroll(None, n.max(1), false).unwrap();
    assert_eq!(points.len(), n);
    let mut learned = 0;
    for p in &points {
        if p.payload.source == thau::actors::gap_detector::LEARNED_SOURCE {
            assert!(facts.contains(&p.payload.text), "{:?}", p.payload.text);
            learned += 1;
        } else if p
            .payload
            .source
            .starts_with(thau::commands::remember::STUDIED_SOURCE)
        {
            assert!(facts.contains(&p.payload.text), "{:?}", p.payload.text);
        } else {
            assert!(p.payload.source.contains('#'), "{:?}", p.payload.source);
        }
    }
    learned
}

fn learn_cmd(home: &Path, corpus: &Path, minutes: f64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thau"));
    c.arg("--home")
        .arg(home)
        .args(["learn", "--json", "--seed", "3", "--minutes"])
        .arg(minutes.to_string())
        .arg("--corpus")
        .arg(corpus)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn learn_survives_sigkill_and_resumes_its_session() {
    let full = std::env::var_os("THAU_FULL_TESTS").is_some();
    let (kills, minutes) = if full { (20, 1.0) } else { (4, 0.3) };
    let (dir, corpus_dir, home) = prepared();
    let root = dir.path().join("home");
    // Questions spread over several runs, so that kills land mid-questioning.
    let q = home.agents().join("questioner.toml");
    let text = std::fs::read_to_string(&q).unwrap();
    std::fs::write(&q, text.replace("interval_ms = 30", "interval_ms = 150")).unwrap();
    tiny_checkpoint(&home, &corpus_dir, &common::learning::settings());
    let kb = thau::learn::source::KnowledgeBase::load(
        &corpus_dir,
        &thau::learn::source::Templates::default(),
    )
    .unwrap();
    let facts: BTreeSet<String> = kb
        .items
        .iter()
        .map(|i| format!("{} {}", i.question, i.answer))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (mut step, mut learned, mut elapsed) = (newest_step(&home), 0, 0.0);
    let mut session: Option<String> = None;
    let mut resumable = 0;
    for k in 0..kills {
        let mut child = learn_cmd(&root, &corpus_dir, minutes)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.random_range(500..3000));
        let t = Instant::now();
        while t.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let committed = episodes(&home);
        assert!(
            child.try_wait().unwrap().is_none(),
            "kill {k}: the session ended before its budget"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Nothing committed before the kill is gone.
        let after: BTreeSet<String> = episodes(&home).into_iter().map(|e| e.0).collect();
        for e in &committed {
            assert!(after.contains(&e.0), "kill {k}: episode {} lost", e.0);
        }
        // The newest checkpoint loads, and never goes back.
        let s = newest_step(&home);
        assert!(s >= step, "kill {k}: checkpoint step {step} -> {s}");
        step = s;
        // The long-term store opens, and keeps every learned fact.
        let n = learned_facts(&home, &facts);
        assert!(n >= learned, "kill {k}: learned facts {learned} -> {n}");
        learned = n;
        // The session is waiting to be resumed, under one id, with its time carried over.
        let open = interrupted(&home).unwrap();
        assert!(open.len() <= 1, "{open:?}");
        if let Some(j) = open.first() {
            match &session {
                Some(s) => assert_eq!(&j.session, s, "kill {k}"),
                None => session = Some(j.session.clone()),
            }
            assert!(j.elapsed_s >= elapsed, "kill {k}");
            elapsed = j.elapsed_s;
            assert_eq!(j.resumes, resumable, "kill {k}");
            resumable += 1;
        }
        eprintln!(
            "kill {k} after {wait:?}: {} episodes committed, checkpoint step {step}, {learned} learned facts, session time {elapsed:.1} s",
            committed.len()
        );
    }
    // The last run is left alone: it finishes the same session.
    let out = learn_cmd(&root, &corpus_dir, minutes)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let r: LearnReport = serde_json::from_slice(&out.stdout).unwrap();
    let session = session.expect("some kill came after the session started");
    assert_eq!(r.session, session);
    assert_eq!(r.resumes, resumable);
    assert_eq!(r.stopped_by, "time");
    assert!(r.seconds >= minutes * 60.0, "{}", r.seconds);
    assert!(r.step_after >= step);
    assert!(interrupted(&home).unwrap().is_empty());
    assert_eq!(thau::commands::learn::sessions(&home).unwrap().len(), 1);
    // Every question of the session was asked once, however often it was cut short.
    let asked: Vec<String> = episodes(&home)
        .into_iter()
        .filter(|e| e.1 == session && e.2 == "question")
        .filter_map(|e| e.3)
        .collect();
    let unique: BTreeSet<&String> = asked.iter().collect();
    assert_eq!(unique.len(), asked.len(), "a question was asked twice");
    assert_eq!(asked.len(), kb.items.len());
    assert_eq!(r.questions_asked, asked.len());
    assert!(learned_facts(&home, &facts) >= learned);
}
