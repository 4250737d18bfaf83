//! The model commands through the `thau` binary: train → eval → generate → status on a
//! small corpus, reproducible generation, and clear errors with the right exit codes.

mod common;

use std::path::Path;

use common::{json, thau};

fn small_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for i in 0..60 {
        text.push_str(&format!(
            "El río número {i} baja de la montaña y llega al mar. The river {i} flows to the sea.\n\n"
        ));
    }
    std::fs::write(dir.join("rivers.md"), text).unwrap();
    let qa: String = (0..40)
        .map(|i| format!("{{\"question\":\"¿Adónde va el río {i}?\",\"answer\":\"Al mar.\"}}\n"))
        .collect();
    std::fs::write(dir.join("qa.jsonl"), qa).unwrap();
}

#[test]
fn train_eval_generate_and_status_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data) = (dir.path().join("home"), dir.path().join("corpus"));
    small_corpus(&data);
    let data = data.to_str().unwrap();
    let small = ["--steps", "2", "--batch", "2", "--seq-len", "32", "--json"];
    let r = json(&thau(
        &home,
        &[&["train", "--data", data][..], &small[..]].concat(),
    ));
    assert_eq!(r["steps"], 2);
    assert_eq!(r["age"], 0);
    let ck = Path::new(r["checkpoint"].as_str().unwrap());
    assert!(ck.join("model.safetensors").is_file() && ck.join("tokenizer.json").is_file());
    let curve = r["curve"].as_array().unwrap();
    assert!(
        curve.len() >= 2
            && curve
                .iter()
                .all(|c| c["heldout_loss"].as_f64().is_some_and(f64::is_finite))
    );

    // A second run resumes the checkpoint and continues the step count.
    let r2 = json(&thau(
        &home,
        &[&["train", "--data", data][..], &small[..]].concat(),
    ));
    assert_eq!(r2["total_steps"], 4);
    assert!(r2["resumed_from"].is_string());

    let e = json(&thau(&home, &["eval", "--data", data, "--json"]));
    assert!(e["loss"].as_f64().unwrap() > 0.0 && e["perplexity"].as_f64().unwrap() > 1.0);

    let gen = |seed: &str| {
        json(&thau(
            &home,
            &[
                "generate",
                "¿Adónde va el río?",
                "--max-tokens",
                "6",
                "--seed",
                seed,
                "--temperature",
                "1.0",
                "--json",
            ],
        ))
    };
    let (a, b) = (gen("9"), gen("9"));
    assert_eq!(a["ids"], b["ids"], "same seed, same tokens");
    assert!(a["ids"].as_array().unwrap().len() <= 6);

    let s = json(&thau(&home, &["status", "--json"]));
    assert!(s["model"]["params"].as_u64().unwrap() > 1_000_000);
    assert!(s["model"]["checkpoint"].as_str().unwrap().contains("age_0"));

    // Growth to age 1 is exact and `thau train --age 1` continues from it.
    let g = json(&thau(&home, &["grow", "--to", "1", "--json"]));
    assert_eq!(
        (g["from_age"].as_u64(), g["to_age"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(g["max_logit_diff"].as_f64().unwrap() < 1e-4, "{g}");
    assert!(g["params_after"].as_u64() > g["params_before"].as_u64());
    let r3 = json(&thau(
        &home,
        &[&["train", "--age", "1", "--data", data][..], &small[..]].concat(),
    ));
    assert_eq!(r3["age"], 1);
    assert_eq!(
        r3["total_steps"], 6,
        "continues the step count of the grown checkpoint"
    );
    let out = thau(&home, &["grow", "--to", "1"]);
    assert_eq!(out.status.code(), Some(2), "already age 1");
}

#[test]
fn bad_input_gives_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("broken.txt"), b"caf\xe9 au lait").unwrap();
    let out = thau(
        &home,
        &["train", "--data", data.to_str().unwrap(), "--steps", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.txt") && err.contains("byte 3"),
        "{err}"
    );

    let out = thau(&home, &["generate", "hola", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model loaded"));

    let out = thau(&home, &["eval", "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint"));

    let out = thau(&home, &["train", "--steps", "1", "--minutes", "1"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects conflicting flags");

    // The device setting is read by every command that runs the model: a GPU asked of a
    // build without CUDA (this one) is refused saying so, before anything runs.
    small_corpus(&data);
    let without = "built without the cuda feature";
    for args in [
        &[
            "--set",
            "device=cuda",
            "train",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "1",
        ][..],
        &["--set", "device=cuda:1", "generate", "hola"],
        &["--set", "device=cuda", "learn", "--minutes", "1"],
        &["--set", "device=cuda", "grow", "--to", "1"],
    ] {
        let out = thau(&home, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(without) && err.contains("--features cuda"),
            "{args:?}: {err}"
        );
    }
    let out = thau(&home, &["--set", "device=tpu", "generate", "hola"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}

/// `thau learn` on a data directory a running server holds says so and points at
/// `serve --learn`; a marker left by a server that is gone does not stop anything.
#[test]
fn learn_against_a_served_home_names_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(thau(&home, &["init"]).status.success());
    // This test's own process stands in for the running server.
    let marker = serde_json::json!({"pid": std::process::id(), "addr": "http://127.0.0.1:8000"});
    std::fs::write(home.join("serve.json"), marker.to_string()).unwrap();
    let out = thau(&home, &["learn", "--minutes", "0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds this data directory") && err.contains("thau serve --learn"),
        "{err}"
    );
    let h = thau::home::Home::new(&home);
    assert_eq!(
        h.served_by(),
        Some((std::process::id(), "http://127.0.0.1:8000".to_string()))
    );
    // A process id no process has (above Linux's largest): the marker is stale.
    std::fs::write(home.join("serve.json"), r#"{"pid": 4194305, "addr": "x"}"#).unwrap();
    assert_eq!(h.served_by(), None);
}

#[test]
fn model_ages_lists_the_six_ages() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(&thau(dir.path(), &["model", "ages", "--json"]));
    let ages: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["age"].as_u64().unwrap())
        .collect();
    assert_eq!(ages, [0, 1, 3, 6, 12, 15]);
    assert!(v.as_array().unwrap().iter().all(|r| r["head_dim"] == 64));
}

#[test]
fn memory_commands_speak_json_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    json(&thau(&home, &["init", "--json"]));
    let ep = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let pt = "77e55044-10b1-426f-9247-bb680e5fe0c8";
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        format!(
            concat!(
                "{{\"store\":\"episodic\",\"id\":\"{}\",\"session\":\"s1\",\"actor\":\"cli\",\"kind\":\"question\",",
                "\"content\":\"¿Por qué el cielo es azul?\",\"importance\":0.7,",
                "\"created_at\":\"2026-11-20T10:00:00Z\",\"updated_at\":\"2026-11-20T10:00:00Z\"}}\n",
                "{{\"store\":\"long\",\"id\":\"{}\",\"text\":\"the sky is blue because air scatters blue light\",",
                "\"source\":\"corpus\",\"importance\":0.5,\"created_at\":\"2026-11-20T10:00:00Z\"}}\n",
                "{{\"store\":\"short\",\"conversation\":\"c1\",\"role\":\"user\",\"text\":\"hola cielo\",",
                "\"tokens\":2,\"at\":\"2026-11-20T10:00:00Z\"}}\n"
            ),
            ep, pt
        ),
    )
    .unwrap();
    let counts = json(&thau(
        &home,
        &["memory", "import", file.to_str().unwrap(), "--json"],
    ));
    assert_eq!(
        counts,
        serde_json::json!({"short": 1, "episodic": 1, "long": 1})
    );
    let stats = json(&thau(&home, &["memory", "stats", "--json"]));
    assert_eq!(stats["episodic"]["episodes"], 1);
    assert_eq!(stats["episodic"]["schema_version"], 1);
    assert_eq!(stats["long"]["points"], 1);
    assert_eq!(stats["long"]["vector_size"], 384);
    assert_eq!(stats["short"]["turns"], 1);
    let hits = json(&thau(&home, &["memory", "search", "cielo azul", "--json"]));
    let stores: Vec<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["store"].as_str().unwrap())
        .collect();
    assert!(
        stores.contains(&"episodic") && stores.contains(&"short"),
        "{hits}"
    );
    let hits = json(&thau(
        &home,
        &["memory", "search", "blue sky", "--store", "long", "--json"],
    ));
    assert_eq!(hits[0]["id"], pt);
    let shown = json(&thau(&home, &["memory", "show", ep, "--json"]));
    assert_eq!(shown["store"], "episodic");
    assert_eq!(shown["kind"], "question");
    let listed = json(&thau(
        &home,
        &["memory", "list", "--store", "episodic", "--json"],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // Export to stdout is JSONL, one line per entry.
    let out = thau(&home, &["memory", "export"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    // Bad input: exit code 2 and a message naming the problem.
    for (args, needle) in [
        (
            vec!["memory", "show", "not-a-uuid", "--store", "episodic"],
            "UUID",
        ),
        (
            vec!["memory", "show", "5f0c8e1a-0000-4000-8000-000000000000"],
            "no entry",
        ),
        (vec!["memory", "search", "?!*"], "no word"),
        (
            vec!["memory", "list", "--kind", "dream"],
            "unknown episode kind",
        ),
    ] {
        let out = thau(&home, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"store\":\"nowhere\"}\n").unwrap();
    let out = thau(&home, &["memory", "import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    let f = json(&thau(&home, &["memory", "forget", ep, "--json"]));
    assert_eq!(f["store"], "episodic");
    assert_eq!(thau(&home, &["memory", "show", ep]).status.code(), Some(2));
}

#[test]
fn feedback_tune_tool_and_stats_plot_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(thau(&home, &["init"]).status.success());
    for i in 0..5 {
        let out = json(&thau(
            &home,
            &["feedback", &format!("turn-{i}"), "down", "--json"],
        ));
        assert_eq!(out["change"].is_null(), i < 4, "{out}");
    }
    let t = json(&thau(&home, &["tune", "--json"]));
    assert_eq!(t["values"]["temperature"], 0.72);
    let id = t["state"]["log"][0]["id"].as_u64().unwrap().to_string();
    let r = json(&thau(&home, &["tune", "revert", &id, "--json"]));
    assert_eq!(
        (r["to"].as_f64(), r["cause"].as_str()),
        (Some(0.8), Some("revert"))
    );
    assert_eq!(thau(&home, &["tune", "revert", &id]).status.code(), Some(2));
    assert_eq!(
        thau(&home, &["feedback", "t", "sideways"]).status.code(),
        Some(2)
    );

    let g = json(&thau(
        &home,
        &[
            "tool",
            "run",
            "generate_image",
            r#"{"prompt":"un faro","width":64,"height":64,"seed":1}"#,
            "--json",
        ],
    ));
    assert_eq!(
        (g["width"].as_u64(), g["fallback"].as_bool()),
        (Some(64), Some(true))
    );
    assert!(Path::new(g["path"].as_str().unwrap()).is_file());
    let bad = thau(
        &home,
        &[
            "tool",
            "run",
            "generate_image",
            r#"{"prompt":"x","width":63}"#,
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/width"));
    assert_eq!(
        thau(&home, &["tool", "run", "nope", "{}"]).status.code(),
        Some(2)
    );
    // No session yet: nothing to plot is a clear error.
    let plot = thau(
        &home,
        &[
            "stats",
            "--plot",
            dir.path().join("c.png").to_str().unwrap(),
        ],
    );
    assert_eq!(plot.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&plot.stderr).contains("nothing to plot"));
}

/// Exit codes: 1 when a command could not complete at run time (here: the address to
/// serve on is taken), 2 when it was used wrongly (a bad flag value, a missing file); the
/// message says which.
#[test]
fn runtime_failures_exit_1_and_bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = thau(&home, &["serve", "--addr", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");

    let out = thau(&home, &["bench", "serve", "--sessions", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--sessions takes counts above 0"), "{err}");
    let missing = dir.path().join("nowhere.toml");
    let out = thau(&home, &["replay", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}
