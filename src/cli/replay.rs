//! `thau replay`: checks every scenario file first (a malformed one stops the run), then
//! replays them one after another on one actix system, naming each on standard error as
//! it starts. The report says which failed: it is printed, then the command exits 1.

use serde::Serialize;
use thau::config::Override;
use thau::home::Home;
use thau::replay::ScenarioOutcome;
use thau::{Result, ThauError};

use super::args::ReplayArgs;

/// Every scenario's outcome, in the order replayed.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Replayed(pub Vec<ScenarioOutcome>);

impl Replayed {
    /// `Failed` when a scenario failed.
    pub fn failure(&self) -> Option<ThauError> {
        let failed = self.0.iter().filter(|o| !o.passed).count();
        (failed > 0)
            .then(|| ThauError::Failed(format!("{failed} of {} scenarios failed", self.0.len())))
    }
}

/// `thau replay`: `home` is the `--home` given, if one was (each scenario gets a fresh
/// data directory otherwise); `overrides` are the `--set` flags.
pub fn replay(
    home: Option<Home>,
    overrides: Vec<Override>,
    a: ReplayArgs,
    json: bool,
) -> Result<Replayed> {
    use thau::replay::{collect, load_all, replay, report, ReplayOptions};
    let files = collect(&a.paths)?;
    let scenarios = load_all(&files).map_err(|errors| {
        ThauError::Invalid(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    if a.record.is_some() && scenarios.len() != 1 {
        return Err(ThauError::Invalid(
            "--record writes one scenario: give one file".into(),
        ));
    }
    let opts = ReplayOptions {
        home: home.map(|h| h.root),
        url: a.url,
        api_key: std::env::var("THAU_API_KEY").ok().filter(|k| !k.is_empty()),
        env: std::env::vars().collect(),
        overrides,
    };
    let cache = tempfile::tempdir().map_err(|e| ThauError::io(std::env::temp_dir(), e))?;
    let system = actix::System::new();
    let outcomes = system.block_on(async {
        let mut outcomes = Vec::new();
        for sc in &scenarios {
            if !json {
                eprintln!("replaying {} ({})", sc.name, sc.file.display());
            }
            outcomes.push(replay(sc, &opts, Some(cache.path())).await);
        }
        outcomes
    });
    if let Some(f) = &a.junit {
        let xml = report::junit(&outcomes).map_err(ThauError::Runtime)?;
        thau::fsutil::atomic_write(f, xml.as_bytes())?;
    }
    if let Some(f) = &a.transcript {
        let all: serde_json::Map<String, serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    serde_json::Value::from(o.transcript.clone()),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&all).unwrap_or_default() + "\n";
        thau::fsutil::atomic_write(f, text.as_bytes())?;
    }
    if let (Some(f), Some(sc), Some(o)) = (&a.record, scenarios.first(), outcomes.first()) {
        let text = report::record(sc, o).map_err(ThauError::Runtime)?;
        thau::fsutil::atomic_write(f, text.as_bytes())?;
    }
    Ok(Replayed(outcomes))
}
