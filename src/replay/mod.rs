//! `thau replay`: scenario files ([`scenario::Scenario`], checked against
//! `scenarios/schema.json`) played against the actors in a fresh data directory — or a given
//! one, or a running server over its WebSocket — deterministically for their seed, with
//! per-step expectations. [`replay`] runs one scenario into a [`ScenarioOutcome`] (its step
//! results and its transcript); [`report`] prints tables, JUnit XML and recorded scenarios.

pub mod remote;
pub mod report;
pub mod run;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Override, ThauConfig};
use crate::error::{Result, ThauError};
use crate::home::Home;
use crate::runtime::Runtime;
use run::{prepare_home, run_steps, StepOutcome, Target};
use scenario::{Action, Scenario, ScenarioError};

/// Where and how scenarios run.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Run in this data directory (its model, its memories) instead of a fresh one.
    pub home: Option<PathBuf>,
    /// Replay against a running `thau serve` (`ws://HOST:PORT`).
    pub url: Option<String>,
    pub api_key: Option<String>,
    /// `THAU_*` variables and `--set` overrides, under each scenario's own.
    pub env: Vec<(String, String)>,
    pub overrides: Vec<Override>,
}

/// What one scenario did.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOutcome {
    pub name: String,
    pub file: PathBuf,
    pub passed: bool,
    pub seconds: f64,
    /// The model it talked to.
    pub model: String,
    /// Set when the scenario could not start (no model, a bad setting, no server).
    pub error: Option<String>,
    pub steps: Vec<StepOutcome>,
    /// What was said and seen at each step: identical across replays of the same scenario.
    pub transcript: Vec<Value>,
}

/// The scenario files under `paths`: files as given, directories' `*.toml` sorted by name.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| ThauError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(ThauError::Invalid(format!("{}: no such file", p.display())));
        }
    }
    if files.is_empty() {
        return Err(ThauError::Invalid("no scenario files given".into()));
    }
    Ok(files)
}

/// Reads every file: the scenarios, or every error.
pub fn load_all(files: &[PathBuf]) -> std::result::Result<Vec<Scenario>, Vec<ScenarioError>> {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for f in files {
        match Scenario::load(f) {
            Ok(s) => ok.push(s),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        Err(bad)
    }
}

/// Steps a remote replay cannot run (they need the local actors).
pub fn local_only_steps(sc: &Scenario) -> Vec<String> {
    sc.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| match &s.action {
            Action::Learn(_) | Action::Close { .. } => true,
            Action::Check(c) => c.window.is_some(),
            _ => false,
        })
        .map(|(i, s)| {
            format!(
                "steps[{i}]{} ({})",
                s.line.map(|l| format!(" at line {l}")).unwrap_or_default(),
                s.action.kind()
            )
        })
        .collect()
}

/// Runs one scenario, inside a running actix `System`; `cache` keeps trained
/// models between scenarios of one run.
pub async fn replay(sc: &Scenario, opts: &ReplayOptions, cache: Option<&Path>) -> ScenarioOutcome {
    let start = Instant::now();
    let mut transcript = Vec::new();
    let mut outcome = ScenarioOutcome {
        name: sc.name.clone(),
        file: sc.file.clone(),
        passed: false,
        seconds: 0.0,
        model: String::new(),
        error: None,
        steps: Vec::new(),
        transcript: Vec::new(),
    };
    let result = if let Some(url) = &opts.url {
        replay_remote(sc, url, opts, &mut transcript, &mut outcome).await
    } else {
        replay_local(sc, opts, cache, &mut transcript, &mut outcome).await
    };
    if let Err(e) = result {
        outcome.error = Some(e.to_string());
    }
    outcome.transcript = transcript;
    outcome.passed = outcome.error.is_none() && outcome.steps.iter().all(|s| s.passed);
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

async fn replay_remote(
    sc: &Scenario,
    url: &str,
    opts: &ReplayOptions,
    transcript: &mut Vec<Value>,
    outcome: &mut ScenarioOutcome,
) -> Result<()> {
    let local = local_only_steps(sc);
    if !local.is_empty() {
        return Err(ThauError::Invalid(format!(
            "these steps need the local actors, not --url: {}",
            local.join(", ")
        )));
    }
    let mut remote = remote::Remote::connect(url, opts.api_key.as_deref())?;
    outcome.model = format!("the server at {url}");
    // The remote calls block this thread; a replay runs nothing else beside them.
    outcome.steps = run_steps(sc, &mut Target::Remote(&mut remote), transcript).await;
    Ok(())
}

async fn replay_local(
    sc: &Scenario,
    opts: &ReplayOptions,
    cache: Option<&Path>,
    transcript: &mut Vec<Value>,
    outcome: &mut ScenarioOutcome,
) -> Result<()> {
    let tmp;
    let home = match &opts.home {
        Some(h) => {
            let home = Home::new(h);
            home.init()?;
            outcome.model = "the data directory's model".into();
            home
        }
        None => {
            tmp = tempfile::tempdir()
                .map_err(|e| ThauError::Runtime(format!("a temporary data directory: {e}")))?;
            let home = Home::new(tmp.path().join("home"));
            outcome.model = prepare_home(sc, &home, cache)?;
            home
        }
    };
    let mut overrides = opts.overrides.clone();
    for (key, v) in &sc.settings.config {
        overrides.push(Override {
            key: key.clone(),
            value: v.as_str().map_or_else(|| v.to_string(), str::to_string),
        });
    }
    let config = ThauConfig::load(&home.root, opts.env.clone(), &overrides)?;
    let rt = Runtime::start(home, config)?;
    outcome.steps = run_steps(sc, &mut Target::Local(&rt), transcript).await;
    for e in rt.shutdown().await {
        tracing::warn!(scenario = %sc.name, "shutdown: {e}");
    }
    Ok(())
}
