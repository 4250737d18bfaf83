//! The data directory ([`Home`]): where THAU keeps everything it learns and remembers.
//!
//! ```text
//! <home>/
//!   thau.toml        configuration (see `thau config show`)
//!   agents/          per-actor settings, copied from the built-in defaults by `thau init`
//!   checkpoints/     age_N/ model checkpoints (weights, config, tokenizer, optimizer)
//!   memory/          episodic SQLite database and the embedded vector store
//!   images/          pictures produced by the ImageTool, with JSON sidecars
//!   logs/            log files
//!   runs/            per-session records (learning sessions, benchmarks, actor state)
//! ```

use std::path::PathBuf;

use crate::config::CONFIG_FILE;
use crate::error::{Result, ThauError};
use crate::fsutil::atomic_write;
use crate::runtime::agents::BUILTIN_AGENTS;

/// Sub-directories every data directory has.
pub const LAYOUT: [&str; 6] = ["agents", "checkpoints", "memory", "images", "logs", "runs"];

/// A THAU data directory.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

/// What `thau init` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    pub home: PathBuf,
    /// Files and folders created by this call (empty when everything existed already).
    pub created: Vec<PathBuf>,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn agents(&self) -> PathBuf {
        self.root.join("agents")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// Checkpoint directory of one age.
    pub fn age_checkpoint(&self, age: u32) -> PathBuf {
        self.checkpoints().join(format!("age_{age}"))
    }
    /// Written by a running `thau serve` (its process id and address), removed when it
    /// stops: other commands say the server holds the stores, instead of a lock error.
    pub fn serve_marker(&self) -> PathBuf {
        self.root.join("serve.json")
    }

    /// The running server that holds this data directory, if any: `(pid, address)` from
    /// [`Home::serve_marker`] when that process is alive (a marker a crash left is ignored).
    pub fn served_by(&self) -> Option<(u32, String)> {
        let text = std::fs::read_to_string(self.serve_marker()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
        let addr = v["addr"].as_str().unwrap_or_default().to_string();
        process_alive(pid).then_some((pid, addr))
    }

    pub fn memory(&self) -> PathBuf {
        self.root.join("memory")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Whether `thau init` has been run here.
    pub fn is_initialised(&self) -> bool {
        self.config_file().is_file()
    }

    /// Creates the layout, a default `thau.toml` and the default agent settings, keeping
    /// every file that already exists (so a second call changes nothing).
    pub fn init(&self) -> Result<InitReport> {
        let mut created = Vec::new();
        for dir in
            std::iter::once(self.root.clone()).chain(LAYOUT.iter().map(|d| self.root.join(d)))
        {
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(|e| ThauError::io(&dir, e))?;
                created.push(dir);
            }
        }
        let cfg = self.config_file();
        if !cfg.exists() {
            atomic_write(&cfg, default_config_text().as_bytes())?;
            created.push(cfg);
        }
        for (name, text) in BUILTIN_AGENTS {
            let p = self.agents().join(format!("{name}.toml"));
            if !p.exists() {
                atomic_write(&p, text.as_bytes())?;
                created.push(p);
            }
        }
        Ok(InitReport {
            home: self.root.clone(),
            created,
        })
    }
}

/// The `thau.toml` that `thau init` writes: every key with its default, commented.
fn default_config_text() -> String {
    format!(
        "# THAU configuration. Layers: built-in defaults < this file < THAU_* environment\n\
         # variables (THAU_SEED, THAU_MODEL_AGE, ...) < command-line flags.\n\
         # `thau config show` prints the effective values.\n\n{}",
        crate::config::ThauConfig::default().to_toml()
    )
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    false
}
