//! Memory stores against real files in temp directories: contents survive a restart, a
//! writer killed mid-way loses nothing it committed, migrations are idempotent, export →
//! import round-trips, bad queries and ids give clear errors, the actors file evicted turns
//! as episodes, and `thau memory` speaks JSON and exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use thau::commands::memory::{self as mem, Counts, Stores};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::memory::edge::EdgeStore;
use thau::memory::embed::{dot, BertEmbedder, Embedder, HashEmbedder, ThauEmbedder};
use thau::memory::episodic::{EpisodeFilter, EpisodicStore, MIGRATIONS};
use thau::memory::vector::{MemoryPoint, PayloadFilter, PointPayload, VectorStore};
use thau::memory::{Episode, EpisodeKind, MemoryError, StoreKind};
use uuid::Uuid;

/// Env var that turns a test process into a child writer for the crash tests.
const CHILD: &str = "THAU_TEST_MEMORY_CHILD";

fn point(text: &str, source: &str, importance: f32) -> MemoryPoint {
    MemoryPoint {
        id: Uuid::new_v4(),
        payload: PointPayload {
            text: text.into(),
            source: source.into(),
            importance,
            created_at: Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap(),
            keys: Vec::new(),
        },
        vector: HashEmbedder::default().embed_one(text).unwrap(),
    }
}

#[test]
fn episodes_survive_a_restart_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sqlite");
    let ep = Episode::new(
        "s1",
        "test",
        EpisodeKind::Gap,
        "La fotosíntesis convierte luz en azúcar",
    )
    .with_importance(0.9)
    .with_metadata(serde_json::json!({"topic": "biology"}));
    {
        let mut st = EpisodicStore::open(&path).unwrap();
        assert_eq!(st.schema_version().unwrap(), MIGRATIONS.len() as u32);
        st.put(&ep).unwrap();
        // Running the migrations again applies nothing.
        assert!(st.migrate().unwrap().is_empty());
    }
    let mut st = EpisodicStore::open(&path).unwrap();
    assert!(st.migrate().unwrap().is_empty());
    let back = st.get(ep.id).unwrap();
    assert_eq!(back, ep);
    // Accents are folded by the FTS tokenizer: "fotosintesis" finds "fotosíntesis".
    let hits = st
        .search("fotosintesis", &EpisodeFilter::default(), 5)
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].episode.id, ep.id);
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn search_ranks_by_relevance_importance_and_recency() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = EpisodicStore::open(&dir.path().join("e.sqlite")).unwrap();
    let old = Utc::now() - chrono::Duration::days(60);
    let mut stale = Episode::new("s", "t", EpisodeKind::Answer, "the moon orbits the earth");
    stale.created_at = old;
    let fresh = Episode::new("s", "t", EpisodeKind::Answer, "the moon orbits the earth");
    let vital = Episode::new("s", "t", EpisodeKind::Answer, "the moon orbits the earth")
        .with_importance(1.0);
    let other = Episode::new("s2", "t", EpisodeKind::Question, "rivers flow to the sea");
    st.put_many(&[stale.clone(), fresh.clone(), vital.clone(), other.clone()])
        .unwrap();
    let hits = st
        .search("moon orbit", &EpisodeFilter::default(), 10)
        .unwrap();
    let ids: Vec<Uuid> = hits.iter().map(|h| h.episode.id).collect();
    assert_eq!(ids, vec![vital.id, fresh.id, stale.id]);
    // Filters restrict by session and kind.
    let f = EpisodeFilter {
        session: Some("s2".into()),
        kind: Some(EpisodeKind::Question),
    };
    assert_eq!(st.list(&f, 10, 0).unwrap(), vec![other]);
    assert!(st.search("moon", &f, 10).unwrap().is_empty());
}

#[test]
fn bad_queries_ids_and_records_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = EpisodicStore::open(&dir.path().join("e.sqlite")).unwrap();
    // FTS syntax in user text is taken as words, never as a query language.
    st.put(&Episode::new(
        "s",
        "t",
        EpisodeKind::Feedback,
        "NEAR AND OR \"quoted\"",
    ))
    .unwrap();
    assert_eq!(
        st.search("NEAR( \"x", &EpisodeFilter::default(), 5)
            .unwrap()
            .len(),
        1
    );
    let e = st
        .search("  ?!* ", &EpisodeFilter::default(), 5)
        .unwrap_err();
    assert!(matches!(e, MemoryError::BadQuery(_)), "{e}");
    let e = thau::memory::parse_id("12-34").unwrap_err();
    assert!(e.to_string().contains("UUID"), "{e}");
    let missing = Uuid::new_v4();
    let e = st.get(missing).unwrap_err();
    assert!(
        matches!(e, MemoryError::NotFound { .. }) && e.to_string().contains(&missing.to_string())
    );
    assert!(matches!(
        st.forget(missing),
        Err(MemoryError::NotFound { .. })
    ));
    let bad = Episode::new("s", "t", EpisodeKind::Gap, "x").with_importance(3.0);
    assert!(matches!(st.put(&bad), Err(MemoryError::BadRecord(_))));
    // A batch with one bad episode stores none of them.
    let good = Episode::new("s", "t", EpisodeKind::Gap, "fine");
    assert!(st.put_many(&[good.clone(), bad]).is_err());
    assert!(matches!(st.get(good.id), Err(MemoryError::NotFound { .. })));
}

#[test]
fn long_term_points_survive_a_restart_filter_and_lock_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vectors");
    let a = point("water boils at one hundred degrees", "corpus", 0.9);
    let b = point("the cat sleeps in the sun", "chat", 0.2);
    let c = point("water freezes at zero degrees", "chat", 0.6);
    {
        let mut st = EdgeStore::open(&vdir, 384).unwrap();
        st.upsert(vec![a.clone(), b.clone(), c.clone()]).unwrap();
        // One owner per directory: a second open fails clearly.
        let e = EdgeStore::open(&vdir, 384).unwrap_err();
        assert!(matches!(e, MemoryError::InUse { .. }), "{e}");
        st.flush().unwrap();
    }
    let mut st = EdgeStore::open(&vdir, 384).unwrap();
    assert_eq!(st.count().unwrap(), 3);
    let back = st.get(a.id).unwrap();
    assert_eq!(back.payload, a.payload);
    assert!(dot(&back.vector, &a.vector) > 0.999);
    let q = HashEmbedder::default()
        .embed_one("water boils hundred")
        .unwrap();
    let hits = st.search(&q, 3, &PayloadFilter::default(), false).unwrap();
    assert_eq!(hits[0].point.id, a.id);
    let chat_only = PayloadFilter {
        source: Some("chat".into()),
        min_importance: None,
    };
    let hits = st.search(&q, 3, &chat_only, false).unwrap();
    assert_eq!(hits[0].point.id, c.id);
    assert!(hits.iter().all(|h| h.point.payload.source == "chat"));
    let important = PayloadFilter {
        source: None,
        min_importance: Some(0.5),
    };
    let ids: Vec<Uuid> = st
        .search(&q, 3, &important, false)
        .unwrap()
        .iter()
        .map(|h| h.point.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&b.id));
    // Bad input.
    assert!(matches!(
        st.search(&q[..10], 3, &PayloadFilter::default(), false),
        Err(MemoryError::BadQuery(_))
    ));
    assert!(matches!(
        st.search(&q, 0, &PayloadFilter::default(), false),
        Err(MemoryError::BadQuery(_))
    ));
    assert!(matches!(
        st.delete(Uuid::new_v4()),
        Err(MemoryError::NotFound { .. })
    ));
    st.delete(b.id).unwrap();
    assert_eq!(st.count().unwrap(), 2);
    drop(st);
    // A store made for another embedder size is refused, not mixed.
    let e = EdgeStore::open(&vdir, 512).unwrap_err();
    assert!(e.to_string().contains("384"), "{e}");
}

/// The child side of the crash tests: writes one item at a time and prints its id once the
/// write has returned (committed), until killed.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CHILD) else {
        return; // Only runs as a child of the crash tests.
    };
    let (kind, dir) = spec.split_once(':').unwrap();
    let dir = Path::new(dir);
    match kind {
        "episodic" => {
            let mut st = EpisodicStore::open(&dir.join("e.sqlite")).unwrap();
            for i in 0.. {
                let e = Episode::new("crash", "child", EpisodeKind::ChatTurn, format!("turn {i}"));
                st.put(&e).unwrap();
                println!("{}", e.id);
            }
        }
        "long" => {
            let mut st = EdgeStore::open(&dir.join("vectors"), 384).unwrap();
            for i in 0.. {
                let p = point(&format!("memory number {i}"), "crash", 0.5);
                st.upsert(vec![p.clone()]).unwrap();
                println!("{}", p.id);
            }
        }
        other => panic!("unknown child kind {other}"),
    }
}

/// Starts the child writer, reads `n` committed ids, kills it with SIGKILL.
fn kill_writer_after(kind: &str, dir: &Path, n: usize) -> Vec<Uuid> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{kind}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ids = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while ids.len() < n {
        let line = lines.next().expect("child ended early").unwrap();
        if let Ok(id) = Uuid::parse_str(line.trim()) {
            ids.push(id);
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush.
    child.wait().unwrap();
    ids
}

#[test]
fn a_killed_episodic_writer_loses_nothing_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let ids = kill_writer_after("episodic", dir.path(), 200);
    let st = EpisodicStore::open(&dir.path().join("e.sqlite")).unwrap();
    for id in &ids {
        st.get(*id).unwrap();
    }
    assert!(st.count().unwrap() >= ids.len() as u64);
}

#[test]
fn a_killed_vector_writer_loses_nothing_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let ids = kill_writer_after("long", dir.path(), 100);
    // The killed process's lock is released by the kernel; the WAL replays on open.
    let st = EdgeStore::open(&dir.path().join("vectors"), 384).unwrap();
    for id in &ids {
        st.get(*id).unwrap();
    }
    assert!(st.count().unwrap() >= ids.len());
}

fn home_with_memories(dir: &Path) -> (Home, ThauConfig) {
    let home = Home::new(dir);
    home.init().unwrap();
    let config = ThauConfig::load(dir, Vec::new(), &[]).unwrap();
    let mut stores = Stores::new(&home, &config);
    let mut eps = vec![
        Episode::new(
            "s1",
            "questioner",
            EpisodeKind::Question,
            "¿Por qué el cielo es azul?",
        ),
        Episode::new(
            "s1",
            "learner",
            EpisodeKind::TrainingRun,
            "trained 100 steps",
        )
        .with_metadata(serde_json::json!({"loss": 3.5})),
    ];
    eps[0].importance = 0.8;
    stores.episodic().unwrap().put_many(&eps).unwrap();
    let vs = stores.long().unwrap();
    vs.upsert(vec![
        point("the sky is blue because of scattering", "corpus", 0.7),
        point("el cielo es azul", "chat", 0.4),
    ])
    .unwrap();
    vs.flush().unwrap();
    let mut st = stores.short_write().unwrap();
    st.push("c1", thau::model::tokenizer::Role::User, "hola")
        .unwrap();
    st.push(
        "c1",
        thau::model::tokenizer::Role::Assistant,
        "hola, ¿qué tal?",
    )
    .unwrap();
    (home, config)
}

#[test]
fn export_then_import_round_trips_every_store() {
    let a = tempfile::tempdir().unwrap();
    let (home_a, cfg_a) = home_with_memories(a.path());
    let file = a.path().join("export.jsonl");
    let counts = mem::export_file(&mut Stores::new(&home_a, &cfg_a), None, &file).unwrap();
    assert_eq!(
        counts,
        Counts {
            short: 2,
            episodic: 2,
            long: 2
        }
    );
    let b = tempfile::tempdir().unwrap();
    let home_b = Home::new(b.path());
    home_b.init().unwrap();
    let cfg_b = ThauConfig::load(b.path(), Vec::new(), &[]).unwrap();
    let f = std::fs::File::open(&file).unwrap();
    let imported = mem::import_from(
        &mut Stores::new(&home_b, &cfg_b),
        None,
        &mut BufReader::new(f),
    )
    .unwrap();
    assert_eq!(imported, counts);
    // Exporting the copy gives the same lines (order within a store is by id/time).
    let again = b.path().join("again.jsonl");
    mem::export_file(&mut Stores::new(&home_b, &cfg_b), None, &again).unwrap();
    let sorted = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&file), sorted(&again));
    // Importing twice changes nothing (ids are kept, so records replace themselves).
    let f = std::fs::File::open(&file).unwrap();
    mem::import_from(
        &mut Stores::new(&home_b, &cfg_b),
        Some(StoreKind::Episodic),
        &mut BufReader::new(f),
    )
    .unwrap();
    let st = mem::stats(&mut Stores::new(&home_b, &cfg_b), None).unwrap();
    assert_eq!(st.episodic.unwrap().episodes, 2);
    assert_eq!(st.long.unwrap().points, 2);
}

#[test]
fn a_bad_import_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    home.init().unwrap();
    let cfg = ThauConfig::load(dir.path(), Vec::new(), &[]).unwrap();
    let good = serde_json::to_string(&thau::memory::MemoryRecord::Episodic(Episode::new(
        "s",
        "t",
        EpisodeKind::Gap,
        "ok",
    )))
    .unwrap();
    let text = format!("{good}\n{{\"store\":\"episodic\",\"id\":42}}\n");
    let e =
        mem::import_from(&mut Stores::new(&home, &cfg), None, &mut text.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let st = mem::stats(&mut Stores::new(&home, &cfg), Some(StoreKind::Episodic)).unwrap();
    assert_eq!(st.episodic.unwrap().episodes, 0);
}

#[test]
fn merged_search_draws_from_all_three_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (home, cfg) = home_with_memories(dir.path());
    let mut stores = Stores::new(&home, &cfg);
    let hits = mem::search(
        &mut stores,
        None,
        "cielo azul",
        10,
        &PayloadFilter::default(),
    )
    .unwrap();
    let stores_hit: std::collections::BTreeSet<StoreKind> = hits.iter().map(|h| h.store).collect();
    assert!(stores_hit.contains(&StoreKind::Episodic), "{hits:?}");
    assert!(stores_hit.contains(&StoreKind::Long), "{hits:?}");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let hits = mem::search(&mut stores, None, "hola", 10, &PayloadFilter::default()).unwrap();
    assert_eq!(hits[0].store, StoreKind::Short);
}

#[actix::test]
async fn the_memory_actors_file_evicted_turns_and_recall_across_stores() {
    use thau::actors::episodic_memory::{ListEpisodes, SearchEpisodes};
    use thau::actors::long_term_memory::{Memorize, NewMemory};
    use thau::actors::short_term_memory::{AddTurn, GetWindow};
    use thau::model::tokenizer::Role;
    use thau::runtime::Runtime;

    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    home.init().unwrap();
    let mut cfg = ThauConfig::default();
    cfg.memory.short_term_tokens = 6; // words, as no tokenizer is trained here
    let rt = Runtime::start(home.clone(), cfg).unwrap();
    let short = rt.addrs.short_term_memory.clone().unwrap();
    let episodic = rt.addrs.episodic_memory.clone().unwrap();
    let long = rt.addrs.long_term_memory.clone().unwrap();
    for (i, text) in ["uno dos tres", "cuatro cinco seis", "siete ocho nueve"]
        .iter()
        .enumerate()
    {
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        short
            .send(AddTurn {
                conversation: "c".into(),
                role,
                text: text.to_string(),
            })
            .await
            .unwrap()
            .unwrap();
    }
    let w = short.send(GetWindow("c".into())).await.unwrap().unwrap();
    assert_eq!(w.tokens, 6);
    assert_eq!(w.turns.len(), 2);
    // The evicted first turn arrives in episodic memory (sent before we ask, same mailbox
    // order from one sender is not guaranteed across actors, so poll briefly).
    let mut filed = Vec::new();
    for _ in 0..50 {
        filed = episodic
            .send(ListEpisodes {
                filter: EpisodeFilter::default(),
                limit: 10,
                offset: 0,
            })
            .await
            .unwrap()
            .unwrap();
        if !filed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(filed.len(), 1);
    assert_eq!(filed[0].content, "uno dos tres");
    assert_eq!(filed[0].kind, EpisodeKind::ChatTurn);
    assert_eq!(filed[0].session, "c");
    let hits = episodic
        .send(SearchEpisodes {
            query: "dos".into(),
            filter: EpisodeFilter::default(),
            limit: 5,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hits.len(), 1);
    long.send(Memorize(vec![NewMemory {
        text: "siete mares".into(),
        source: "chat".into(),
        importance: 0.5,
        id: None,
        keys: Vec::new(),
    }]))
    .await
    .unwrap()
    .unwrap();
    let recall = rt.recall("siete dos", 10).await.unwrap();
    let stores: std::collections::BTreeSet<StoreKind> = recall.iter().map(|h| h.store).collect();
    assert_eq!(stores.len(), 3, "{recall:?}");
    // A bad query is reported, not swallowed.
    assert!(rt.recall("?!", 10).await.is_err());
    rt.shutdown().await;
    // After shutdown (flush), the stores reopen with everything in them.
    let cfg = ThauConfig::default();
    let mut stores = Stores::new(&home, &cfg);
    let st = mem::stats(&mut stores, None).unwrap();
    assert_eq!(st.short.unwrap().turns, 2);
    assert_eq!(st.episodic.unwrap().episodes, 1);
    assert_eq!(st.long.unwrap().points, 1);
}

#[test]
fn the_model_embedder_and_a_local_bert_load_and_embed() {
    use candle_core::{DType, Device};
    let dir = tempfile::tempdir().unwrap();
    // THAU's own hidden states, from a tiny untrained checkpoint.
    let text = common::paragraphs(20, |i| format!("El agua {i} hierve. Water {i} boils."));
    let t = common::tiny(dir.path(), &[("w.txt", text)], 64, 32);
    let varmap =
        thau::model::transformer::init_weights(&t.cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let weights = thau::model::transformer::tensors_of(&varmap).unwrap();
    let ckdir = dir.path().join("checkpoints");
    thau::model::checkpoint::save(
        &ckdir.join("age_0"),
        1,
        &t.cfg,
        &t.tok,
        &weights,
        None,
        None,
    )
    .unwrap();
    let e = ThauEmbedder::from_checkpoints(&ckdir).unwrap();
    assert_eq!(e.dim(), t.cfg.d_model);
    let v = e.embed(&["El agua hierve", "Water boils", ""]).unwrap();
    assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
    assert!(dot(&v[0], &v[1]) < 0.9999);

    // A BERT-family sentence-transformer directory, made here with random weights.
    let bert_dir = dir.path().join("bert");
    write_tiny_bert(&bert_dir);
    let b = BertEmbedder::load(&bert_dir).unwrap();
    assert_eq!(b.dim(), 32);
    let v = b.embed(&["hello world", "world hello there"]).unwrap();
    assert_eq!(v[0].len(), 32);
    assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
    // A directory without the files is a clear error.
    let e = BertEmbedder::load(dir.path()).err().unwrap();
    assert!(e.to_string().contains("config.json"), "{e}");
}

/// config.json, tokenizer.json (WordLevel) and model.safetensors of a 1-layer BERT.
fn write_tiny_bert(dir: &Path) {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "vocab_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "max_position_embeddings": 32, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "classifier_dropout": null, "model_type": "bert"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg: candle_transformers::models::bert::Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "there",
    ]
    .iter()
    .enumerate()
    .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
    .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// Runs against a real Qdrant server when `THAU_QDRANT_URL` is set (e.g.
/// `THAU_QDRANT_URL=http://localhost:6334 cargo test --test memory qdrant_server`).
#[test]
fn qdrant_server_backend_round_trip() {
    let Ok(url) = std::env::var("THAU_QDRANT_URL") else {
        eprintln!("SKIPPED qdrant_server_backend_round_trip: set THAU_QDRANT_URL to a Qdrant server (gRPC, e.g. http://localhost:6334) to run it");
        return;
    };
    use thau::memory::server::ServerStore;
    use thau::memory::vector::CollectionSpec;
    let mut spec = CollectionSpec::builtin(384);
    spec.name = format!("thau_test_{}", Uuid::new_v4().simple());
    let mut st = ServerStore::connect(&url, spec).unwrap();
    let a = point("water boils at one hundred degrees", "corpus", 0.9);
    let b = point("the cat sleeps", "chat", 0.1);
    st.upsert(vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(st.count().unwrap(), 2);
    assert_eq!(st.get(a.id).unwrap().payload, a.payload);
    let hits = st
        .search(
            &a.vector,
            2,
            &PayloadFilter {
                source: Some("chat".into()),
                min_importance: None,
            },
            false,
        )
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].point.id, b.id);
    let (page, _) = st.scroll(None, 10, true).unwrap();
    assert_eq!(page.len(), 2);
    st.delete(b.id).unwrap();
    assert_eq!(st.count().unwrap(), 1);
    st.drop_collection().unwrap();
}
