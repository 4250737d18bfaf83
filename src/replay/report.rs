//! What a replay prints and writes: the pass/fail [`table`] with each difference,
//! [`junit`] XML for CI systems, and [`record`], the actual transcript as a new scenario
//! whose expectations are what happened.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde_json::Value;

use super::scenario::{Action, Scenario};
use super::ScenarioOutcome;

/// The pass/fail table: a line per scenario, a line per unmet expectation, a summary.
pub fn table(outcomes: &[ScenarioOutcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    for o in outcomes {
        let failed = o.steps.iter().filter(|s| !s.passed).count();
        out.push_str(&format!(
            "{}  {:width$}  {:>3} steps  {:>3} failed  {:>6.1}s  {}\n",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.steps.len(),
            failed,
            o.seconds,
            o.file.display(),
        ));
        if let Some(e) = &o.error {
            out.push_str(&format!("      could not run: {e}\n"));
        }
        for s in o.steps.iter().filter(|s| !s.passed) {
            for f in &s.failures {
                out.push_str(&format!(
                    "      step {} ({}{}): {f}\n",
                    s.index,
                    s.action,
                    s.line.map(|l| format!(", line {l}")).unwrap_or_default()
                ));
            }
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    out.push_str(&format!(
        "{passed} passed, {} failed\n",
        outcomes.len() - passed
    ));
    out
}

/// A JUnit report: a suite per scenario, a test case per step.
pub fn junit(outcomes: &[ScenarioOutcome]) -> Result<String, String> {
    let mut report = Report::new("thau replay");
    for o in outcomes {
        let mut suite = TestSuite::new(o.name.as_str());
        suite.set_time(Duration::from_secs_f64(o.seconds));
        if let Some(e) = &o.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(e.as_str());
            let mut case = TestCase::new("setup", status);
            case.set_classname(o.file.display().to_string());
            suite.add_test_case(case);
        }
        for s in &o.steps {
            let status = if s.passed {
                TestCaseStatus::success()
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(s.failures.join("; "));
                st
            };
            let name = format!(
                "step {} ({}{})",
                s.index,
                s.action,
                s.line.map(|l| format!(", line {l}")).unwrap_or_default()
            );
            let mut case = TestCase::new(name, status);
            case.set_classname(o.file.display().to_string());
            case.set_time(Duration::from_secs_f64(s.seconds));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| e.to_string())
}

/// The actual transcript as a scenario: the same model, settings and actions, with each
/// step expecting what it got this time (the exact reply and tool calls, the memory counts).
pub fn record(sc: &Scenario, outcome: &ScenarioOutcome) -> Result<String, String> {
    use toml::Value as T;
    let mut root = toml::Table::new();
    root.insert("name".into(), T::String(format!("{} (recorded)", sc.name)));
    root.insert(
        "description".into(),
        T::String(format!(
            "Recorded by `thau replay --record` from {}.",
            sc.file.display()
        )),
    );
    root.insert("seed".into(), T::Integer(sc.seed as i64));
    let abs = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let mut model = sc.model.clone();
    model.checkpoint = model.checkpoint.map(|p| abs(&p).into());
    if let Some(t) = &mut model.train {
        t.corpus = t.corpus.as_ref().map(|p| abs(p).into());
    }
    root.insert(
        "model".into(),
        T::try_from(&model).map_err(|e| e.to_string())?,
    );
    root.insert(
        "settings".into(),
        T::try_from(&sc.settings).map_err(|e| e.to_string())?,
    );
    let mut steps = Vec::new();
    for (step, seen) in sc.steps.iter().zip(&outcome.transcript) {
        let mut t = toml::Table::new();
        let mut expect = toml::Table::new();
        match &step.action {
            Action::Say {
                text,
                session,
                max_tokens,
            } => {
                t.insert("say".into(), T::String(text.clone()));
                if let Some(s) = session {
                    t.insert("session".into(), T::String(s.clone()));
                }
                if let Some(m) = max_tokens {
                    t.insert("max_tokens".into(), T::Integer(*m as i64));
                }
                if let Some(e) = seen["error"].as_str() {
                    expect.insert("error".into(), T::String(e.to_string()));
                } else if let Some(r) = seen["reply"].as_str() {
                    expect.insert("equals".into(), T::String(r.to_string()));
                    match seen["tool_calls"].as_array().and_then(|c| c.first()) {
                        Some(call) => {
                            let mut tc = toml::Table::new();
                            tc.insert(
                                "name".into(),
                                T::String(call["name"].as_str().unwrap_or_default().into()),
                            );
                            tc.insert("args".into(), json_to_toml(&call["arguments"]));
                            expect.insert("tool_called".into(), T::Table(tc));
                        }
                        None => {
                            expect.insert("no_tool".into(), T::Boolean(true));
                        }
                    }
                }
            }
            Action::Remember(text) => {
                t.insert("remember".into(), T::String(text.clone()));
            }
            Action::Close { session } => {
                t.insert("close".into(), T::Boolean(true));
                if let Some(s) = session {
                    t.insert("session".into(), T::String(s.clone()));
                }
            }
            Action::Check(c) => {
                let mut c2 = toml::Table::new();
                if let Some(e) = &c.episodes {
                    let n = seen["check"]["episodes"]["count"].as_i64().unwrap_or(0);
                    let mut m = toml::Table::new();
                    m.insert("kind".into(), T::String(e.kind.clone()));
                    m.insert("min".into(), T::Integer(n));
                    m.insert("max".into(), T::Integer(n));
                    c2.insert("episodes".into(), T::Table(m));
                }
                if let Some(r) = &c.recall {
                    let n = seen["check"]["recall"]["hits"]
                        .as_array()
                        .map_or(0, Vec::len);
                    let mut m = toml::Table::new();
                    m.insert("query".into(), T::String(r.query.clone()));
                    m.insert("min_hits".into(), T::Integer(n as i64));
                    c2.insert("recall".into(), T::Table(m));
                }
                if let Some(w) = &c.window {
                    let mut m = toml::Table::new();
                    if let Some(s) = &w.session {
                        m.insert("session".into(), T::String(s.clone()));
                    }
                    let n = seen["check"]["window"]["turns"].as_i64().unwrap_or(0);
                    m.insert("turns".into(), T::Integer(n));
                    c2.insert("window".into(), T::Table(m));
                }
                t.insert("check".into(), T::Table(c2));
            }
            Action::Learn(l) => {
                t.insert("learn".into(), T::try_from(l).map_err(|e| e.to_string())?);
            }
            Action::Feedback { up, note } => {
                t.insert(
                    "feedback".into(),
                    T::String(if *up { "up" } else { "down" }.into()),
                );
                if let Some(n) = note {
                    t.insert("note".into(), T::String(n.clone()));
                }
            }
            Action::Wait(ms) => {
                t.insert("wait_ms".into(), T::Integer(*ms as i64));
            }
        }
        if !expect.is_empty() {
            t.insert("expect".into(), T::Table(expect));
        }
        steps.push(T::Table(t));
    }
    root.insert("steps".into(), T::Array(steps));
    toml::to_string_pretty(&root).map_err(|e| e.to_string())
}

/// A JSON value as TOML (nulls, which TOML lacks, become empty strings).
fn json_to_toml(v: &Value) -> toml::Value {
    match v {
        Value::Null => toml::Value::String(String::new()),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .unwrap_or_else(|| toml::Value::Float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect()),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
    }
}
