//! `thau replay` end to end: every shipped scenario passes; two replays write identical
//! transcripts; malformed files fail with file, line and field and exit 2; an unmet
//! expectation exits 1 and shows the difference; `--record` writes a scenario that replays
//! green; `--url` replays through a running server's WebSocket the same as locally.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::replay::run::prepare_home;
use thau::replay::scenario::Scenario;
use thau::runtime::Runtime;

mod common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thau"))
        .arg("replay")
        .args(args)
        .current_dir(repo())
        .env_remove("THAU_HOME")
        .env_remove("THAU_API_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_shipped_scenario_passes_with_a_junit_report() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("replay.xml");
    let out = replay(&["scenarios", "--json", "--junit", junit.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outcomes.len() >= 8, "{} scenarios", outcomes.len());
    let steps: usize = outcomes
        .iter()
        .map(|o| o["steps"].as_array().unwrap().len())
        .sum();
    for o in &outcomes {
        assert_eq!(o["passed"], true, "{o}");
        assert!(o["error"].is_null(), "{o}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), outcomes.len(), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), steps, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

/// Every shipped scenario, replayed here or not (those in `scenarios/long/` need a model
/// trained by a recipe first), is a valid scenario file.
#[test]
fn every_shipped_scenario_is_valid() {
    let mut n = 0;
    for dir in ["scenarios", "scenarios/long"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 9, "{n} scenarios");
}

#[test]
fn two_replays_write_identical_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "scenarios/chat_en.toml",
        "scenarios/chat_es.toml",
        "scenarios/tools_es.toml",
        "scenarios/memory.toml",
        "scenarios/feedback.toml",
        "scenarios/bad_input.toml",
    ];
    let mut transcripts = Vec::new();
    for run in 0..2 {
        let t = dir.path().join(format!("t{run}.json"));
        let mut args = files.to_vec();
        args.extend(["--transcript", t.to_str().unwrap()]);
        let out = replay(&args);
        assert!(out.status.success(), "{}", text(&out));
        transcripts.push(std::fs::read(&t).unwrap());
    }
    assert_eq!(transcripts[0], transcripts[1]);
    let t: Value = serde_json::from_slice(&transcripts[0]).unwrap();
    // Real content: replies, tool calls and memory counts, not empty records.
    let chat = t["chat_en"].as_array().unwrap();
    assert!(chat[0]["reply"].as_str().unwrap().contains("THAU"), "{t}");
    assert_eq!(
        t["tools_es"][0]["tool_calls"][0]["arguments"]["prompt"],
        "un gato en la playa"
    );
    assert_eq!(t["memory"][8]["check"]["episodes"]["count"], 4);
}

#[test]
fn malformed_scenarios_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("wrong_type.toml", "name = \"x\"\n\n[[steps]]\nsay = 42\n", ":4: steps[0].say:", "not of type"),
        (
            "unknown_step.toml",
            "name = \"x\"\n[[steps]]\nsay = \"hi\"\n[[steps]]\nteleport = true\n",
            ":5: steps[1].teleport:",
            "unknown key `teleport`",
        ),
        (
            "bad_regex.toml",
            "name = \"x\"\n[[steps]]\nsay = \"hi\"\nexpect = { regex = [\"ok\", \"a(b\"] }\n",
            ":4: steps[0].expect.regex[1]:",
            "bad regex",
        ),
        (
            "wrong_expectation.toml",
            "name = \"x\"\n[[steps]]\nremember = \"a fact\"\nexpect = { gaps_found = 2 }\n",
            ":4: steps[0].expect.gaps_found:",
            "no expectations",
        ),
        ("syntax.toml", "name = \"x\"\n[[steps]\nsay = 1\n", ":2:", ""),
        (
            "missing_corpus.toml",
            "name = \"x\"\n[model.train]\ncorpus = \"nowhere\"\nsteps = 3\n[[steps]]\nsay = \"hi\"\n",
            ":3: model.train.corpus:",
            "does not exist",
        ),
    ];
    for (file, body, at, msg) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, body).unwrap();
        let out = replay(&[path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        assert!(
            err.contains(&format!("{}{at}", path.display())),
            "{file}: {err}"
        );
        assert!(err.contains(msg), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
    }
}

/// A scenario on the shipped greetings model, written into `dir`.
fn scenario(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let corpus = repo().join("scenarios/data/greetings.jsonl");
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nseed = 7\n[model.train]\ncorpus = \"{}\"\nsteps = 1200\nlr = 0.01\n\
             [settings]\ntemperature = 0.0\nmax_tokens = 16\n{steps}",
            corpus.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn unmet_expectations_exit_1_with_the_difference_and_record_replays_green() {
    let dir = tempfile::tempdir().unwrap();
    let failing = scenario(
        dir.path(),
        "failing",
        "[[steps]]\nsay = \"Hello, who are you?\"\nexpect = { contains = \"zebra\" }\n\
         [[steps]]\nsay = \"Draw a cat\"\nexpect = { no_tool = true }\n",
    );
    let junit = dir.path().join("j.xml");
    let out = replay(&[
        failing.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  failing"), "{stdout}");
    assert!(
        stdout.contains("step 0 (say, line 10): reply lacks \"zebra\"; reply: \""),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected no tool call; calls: [{\"name\":\"generate_image\""),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .matches("<failure")
            .count(),
        2
    );

    // --record writes what happened as a scenario, which then passes as it is.
    let recorded = dir.path().join("recorded.toml");
    let out = replay(&[
        failing.to_str().unwrap(),
        "--record",
        recorded.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let body = std::fs::read_to_string(&recorded).unwrap();
    assert!(
        body.contains("equals = ") && body.contains("[steps.expect.tool_called]"),
        "{body}"
    );
    let out = replay(&[recorded.to_str().unwrap()]);
    assert!(out.status.success(), "{body}\n{}", text(&out));
}

#[actix::test]
async fn a_replay_through_the_websocket_matches_the_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "[[steps]]\nsay = \"Hello, who are you?\"\nexpect = { contains = \"THAU\", no_tool = true }\n\
         [[steps]]\nsay = \"Draw a red fox in the snow\"\nsession = \"pics\"\n\
         expect = { tool_called = { name = \"generate_image\", args = { prompt = \"a red fox in the snow\" } } }\n\
         [[steps]]\nfeedback = \"up\"\nexpect = { ratings = 1 }\n\
         [[steps]]\nremember = \"The lighthouse keeper is called Marta.\"\n\
         [[steps]]\ncheck = { recall = { query = \"lighthouse keeper\", min_hits = 1, contains = \"Marta\" }, episodes = { kind = \"feedback\", min = 1 } }\n";
    let path = scenario(dir.path(), "remote", steps);
    let local_t = dir.path().join("local.json");
    let out = replay(&[
        path.to_str().unwrap(),
        "--transcript",
        local_t.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // A server on the same model.
    let sc = Scenario::load(&path).unwrap();
    let home = Home::new(dir.path().join("server-home"));
    prepare_home(&sc, &home, None).unwrap();
    let rt = Arc::new(Runtime::start(home, ThauConfig::default()).unwrap());
    let (addr_rx, server) = common::start_server(rt.clone(), Some("k"));
    let remote_t = dir.path().join("remote.json");
    let (p, t) = (path.clone(), remote_t.clone());
    let out = tokio::task::spawn_blocking(move || {
        let addr = addr_rx.recv().unwrap();
        Command::new(env!("CARGO_BIN_EXE_thau"))
            .args([
                "replay",
                p.to_str().unwrap(),
                "--transcript",
                t.to_str().unwrap(),
            ])
            .args(["--url", &format!("ws://{addr}")])
            .env("THAU_API_KEY", "k")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.stop().await;
    assert!(out.status.success(), "{}", text(&out));
    let (local, remote) = (
        std::fs::read_to_string(&local_t).unwrap(),
        std::fs::read_to_string(&remote_t).unwrap(),
    );
    assert_eq!(local, remote);

    // Steps that need the local actors are refused up front against a server.
    let learn = scenario(
        dir.path(),
        "learn_remote",
        "[[steps]]\nlearn = { questions = 2 }\n",
    );
    let out = replay(&[learn.to_str().unwrap(), "--url", "ws://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("steps[0] at line 10 (learn)"),
        "{}",
        text(&out)
    );
}

#[test]
fn thau_chat_streams_answers_and_runs_slash_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(dir.path(), "chat_home", "[[steps]]\nwait_ms = 0\n");
    let home = Home::new(dir.path().join("home"));
    prepare_home(&Scenario::load(&path).unwrap(), &home, None).unwrap();
    let saved = dir.path().join("saved.json");
    let script = format!(
        "Hello, who are you?\n/tools\n/feedback up nice\n/memory\n/bogus\n\
         Draw a red fox in the snow\n/history\n/save {}\n/quit\nnever read\n",
        saved.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_thau"))
        .args(["--home", home.root.to_str().unwrap(), "chat"])
        .args(["--temperature", "0", "--max-tokens", "16", "--seed", "7"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for want in [
        "I am THAU",
        "generate_image: ",
        "thanks: 1 ratings so far",
        "short-term window: 2 turns",
        "unknown command /bogus (try /help)",
        "[tool generate_image {\"prompt\":\"a red fox in the snow\"}] ok",
        "/home/images/img-",
        "Assistant: I am THAU",
        "saved 2 exchanges",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("never read"));
    let saved: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(saved["exchanges"].as_array().unwrap().len(), 2, "{saved}");
    assert_eq!(
        saved["exchanges"][1]["tool_calls"][0]["name"],
        "generate_image"
    );

    // The answer is streamed: the same chat, run in-process on a terminal that records
    // what each flush delivered, gets the answer in several pieces, never whole at once.
    let delivered = actix::System::new().block_on(async {
        let config = ThauConfig::load(&home.root, std::iter::empty(), &[]).unwrap();
        let rt = Runtime::start(home.clone(), config).unwrap();
        let opts = thau::commands::chat::ChatOptions {
            session: None,
            max_tokens: Some(16),
            temperature: Some(0.0),
            seed: Some(7),
            memory: None,
        };
        let mut input = std::io::Cursor::new(b"Hello, who are you?\n".to_vec());
        let mut out = Flushes::default();
        thau::commands::chat::chat(&rt, &opts, &mut input, &mut out, false)
            .await
            .unwrap();
        rt.shutdown().await;
        out.flush().unwrap();
        out.delivered
    });
    let all = delivered.concat();
    assert!(all.contains("I am THAU"), "{all}");
    let answer_pieces = delivered
        .iter()
        .filter(|c| !c.trim().is_empty() && !c.starts_with("THAU chat"))
        .count();
    assert!(
        answer_pieces >= 2 && !delivered.iter().any(|c| c.contains("I am THAU, a model")),
        "the answer arrived whole, not streamed: {delivered:?}"
    );
}

/// A terminal that records what each flush delivered (the unflushed rest on the next).
#[derive(Default)]
struct Flushes {
    pending: Vec<u8>,
    delivered: Vec<String>,
}

impl std::io::Write for Flushes {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let piece = std::mem::take(&mut self.pending);
            self.delivered
                .push(String::from_utf8_lossy(&piece).into_owned());
        }
        Ok(())
    }
}
