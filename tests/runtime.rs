//! The actor runtime: every actor starts and answers, a panicking actor is restarted while
//! the others keep answering, malformed agent files are reported precisely, shutdown saves
//! state, and `thau status --json` has the documented fields.

use std::process::Command;

use thau::config::ThauConfig;
use thau::home::Home;
use thau::runtime::agents::ActorKind;
use thau::runtime::events::EventKind;
use thau::runtime::Runtime;

fn fresh_home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    home.init().unwrap();
    (dir, home)
}

#[actix::test]
async fn every_actor_starts_and_answers_a_ping() {
    let (_d, home) = fresh_home();
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    assert_eq!(rt.running().len(), ActorKind::ALL.len());
    for kind in ActorKind::ALL {
        let pong = rt.ping(kind.name()).await.unwrap();
        assert_eq!(pong.actor, kind.name());
        assert_eq!(pong.restarts, 0);
    }
    rt.shutdown().await;
}

#[actix::test]
async fn a_panicking_actor_restarts_while_the_others_keep_answering() {
    let (_d, home) = fresh_home();
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    let mut events = rt.events.subscribe();
    // One async (supervised) actor and one sync-arbiter actor.
    let victims = ["questioner", "inference"];
    for (round, victim) in victims.iter().enumerate() {
        let err = rt.inject_fault(victim).await.unwrap_err().to_string();
        assert!(err.contains("panicked"), "{err}");
        let hit_so_far = &victims[..=round];
        for kind in ActorKind::ALL {
            let pong = rt.ping(kind.name()).await.unwrap_or_else(|e| {
                panic!(
                    "{} stopped answering after {victim} panicked: {e}",
                    kind.name()
                )
            });
            let expected = u64::from(hit_so_far.contains(&kind.name()));
            assert_eq!(pong.restarts, expected, "{}", kind.name());
        }
    }
    let mut restarted = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let EventKind::ActorRestarted { .. } = ev.kind {
            restarted.push(ev.actor);
        }
    }
    assert_eq!(restarted, ["questioner", "inference"]);
    rt.shutdown().await;
}

#[actix::test]
async fn shutdown_flushes_every_actor_state() {
    let (_d, home) = fresh_home();
    let runs = home.runs().join("actors");
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    let errors = rt.shutdown().await;
    assert!(errors.is_empty(), "{errors:?}");
    for kind in ActorKind::ALL {
        let p = runs.join(format!("{}.json", kind.name()));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(doc["actor"], kind.name());
    }
}

#[actix::test]
async fn a_request_that_sets_a_temperature_keeps_the_configured_sampling() {
    let (_d, home) = fresh_home();
    // The shipped file, with the copy bias turned down: what requests are laid over.
    let f = home.agents().join("inference.toml");
    let shipped = std::fs::read_to_string(&f).unwrap();
    assert!(
        shipped.contains("copy_bias"),
        "the shipped file documents copy_bias"
    );
    let tuned: String = shipped
        .lines()
        .map(|l| {
            if l.starts_with("copy_bias") {
                "copy_bias = 0.5"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&f, tuned).unwrap();
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    assert_eq!(rt.sampling().copy_bias, 0.5);
    rt.shutdown().await;
}

#[actix::test]
async fn disabled_actors_are_not_started() {
    let (_d, home) = fresh_home();
    let f = home.agents().join("questioner.toml");
    std::fs::write(&f, "enabled = false\n").unwrap();
    let rt = Runtime::start(home, ThauConfig::default()).unwrap();
    assert!(!rt.running().contains(&"questioner"));
    assert!(rt.ping("questioner").await.is_err());
    let st = rt.status().await;
    let q = st.iter().find(|a| a.name == "questioner").unwrap();
    assert!(!q.enabled && !q.running);
    rt.shutdown().await;
}

#[test]
fn malformed_agent_files_name_the_file_line_and_field() {
    let (_d, home) = fresh_home();
    let f = home.agents().join("learner.toml");
    let cases = [
        (
            "enabled = true\nmailbox = \"big\"\n",
            "learner.toml:2:",
            "`mailbox`",
        ),
        (
            "enabled = true\nthreads = 0\n",
            "learner.toml:2:",
            "`threads`",
        ),
        (
            "enabled = true\nmailbx = 3\n",
            "learner.toml:2:",
            "`mailbx`",
        ),
        ("enabled = yes\n", "learner.toml:1:", "`enabled`"),
    ];
    for (text, at, field) in cases {
        std::fs::write(&f, text).unwrap();
        let err = match Runtime::start(home.clone(), ThauConfig::default()) {
            Ok(_) => panic!("accepted {text:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(at), "{text:?}: {err}");
        assert!(err.contains(field), "{text:?}: {err}");
    }
    std::fs::write(home.agents().join("nobody.toml"), "enabled = true\n").unwrap();
    std::fs::write(&f, "enabled = true\n").unwrap();
    let err = Runtime::start(home, ThauConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nobody.toml") && err.contains("not an actor"),
        "{err}"
    );
}

#[test]
fn status_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_thau");
    let home = dir.path().join("h");
    let init = Command::new(bin)
        .arg("--home")
        .arg(&home)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());
    let out = Command::new(bin)
        .args(["status", "--json", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["initialised"], true);
    let actors = v["actors"].as_array().unwrap();
    assert_eq!(actors.len(), ActorKind::ALL.len());
    for a in actors {
        for field in ["name", "enabled", "running", "restarts", "handled", "note"] {
            assert!(a.get(field).is_some(), "actor lacks {field}: {a}");
        }
        assert_eq!(a["running"], true);
    }
    for field in ["age", "params", "checkpoint"] {
        assert!(v["model"].get(field).is_some(), "model lacks {field}");
    }
    for field in ["checkpoints", "images", "actor_states"] {
        assert!(v["stores"][field].is_u64(), "stores lacks {field}");
    }
}

#[test]
fn init_is_idempotent_and_config_errors_exit_with_usage_code() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_thau");
    let home = dir.path().join("h");
    for expect_created in [true, false] {
        let out = Command::new(bin)
            .args(["init", "--json", "--home"])
            .arg(&home)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(!v["created"].as_array().unwrap().is_empty(), expect_created);
    }
    std::fs::write(home.join("thau.toml"), "seed = \"x\"\n").unwrap();
    let out = Command::new(bin)
        .args(["config", "show", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("thau.toml:1:") && err.contains("`seed`"),
        "{err}"
    );
}

#[actix::test]
async fn the_learner_applies_the_growth_policy_from_its_agent_file() {
    use thau::actors::learner::ShouldGrow;
    use thau::model::policy::Decision;
    let (_d, home) = fresh_home();
    let rt = Runtime::start(home.clone(), ThauConfig::default()).unwrap();
    let learner = rt.addrs.learner.clone().unwrap();
    let flat: Vec<f64> = std::iter::repeat_n(4.0, 10).collect();
    let ask = |examples, accuracy| ShouldGrow {
        age: 0,
        heldout: flat.clone(),
        examples_seen: examples,
        probe_accuracy: accuracy,
    };
    let grow = learner.send(ask(50_000, Some(0.5))).await.unwrap().unwrap();
    assert!(matches!(grow, Decision::Grow { .. }), "{grow:?}");
    // Age 0 needs 20000 examples and F1 0.30 in agents/learner.toml.
    let stay = learner.send(ask(50_000, Some(0.2))).await.unwrap().unwrap();
    assert!(matches!(stay, Decision::Stay { .. }), "{stay:?}");
    rt.shutdown().await;

    std::fs::write(
        home.agents().join("learner.toml"),
        "[params]\nplateau_window = \"five\"\n",
    )
    .unwrap();
    let err = Runtime::start(home, ThauConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("learner.toml") && err.contains("plateau_window"),
        "{err}"
    );
}
