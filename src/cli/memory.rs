//! `thau memory stats|list|search|show|forget|export|import|add`: the work is in
//! `thau::commands::memory`; these return its reports. `thau memory export` without
//! `--output` streams the JSONL to standard output while it runs.

use std::path::PathBuf;

use serde::Serialize;
use thau::commands::memory::{self as mem, Counts, Stores};
use thau::config::ThauConfig;
use thau::home::Home;
use thau::memory::StoreKind;
use thau::{Result, ThauError};

use super::args::MemoryCommand;
use super::report::Report;

/// What `thau memory export` wrote.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct MemoryExported {
    pub counts: Counts,
    /// The JSONL went to standard output (so the summary goes to standard error).
    #[serde(skip)]
    pub to_stdout: bool,
}

/// What `thau memory import` read back.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct MemoryImported(pub Counts);

/// `thau memory export`: the stores as JSONL, into `output` (atomically) or onto standard
/// output.
pub fn export(
    stores: &mut Stores,
    store: Option<StoreKind>,
    output: Option<PathBuf>,
) -> Result<MemoryExported> {
    let counts = match &output {
        Some(path) => mem::export_file(stores, store, path)?,
        None => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            let c = mem::export_to(stores, store, &mut lock)?;
            std::io::Write::flush(&mut lock).map_err(|e| ThauError::io("<stdout>", e))?;
            c
        }
    };
    Ok(MemoryExported {
        counts,
        to_stdout: output.is_none(),
    })
}

/// `thau memory import`: a JSONL export read back from `input` (`-`: standard input).
pub fn import(
    stores: &mut Stores,
    store: Option<StoreKind>,
    input: &std::path::Path,
) -> Result<MemoryImported> {
    let counts = if input.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        mem::import_from(stores, store, &mut lock)?
    } else {
        let f = std::fs::File::open(input).map_err(|e| ThauError::io(input, e))?;
        mem::import_from(stores, store, &mut std::io::BufReader::new(f))?
    };
    Ok(MemoryImported(counts))
}

/// `thau memory ...`: runs the subcommand on the data directory's stores.
pub fn run(command: MemoryCommand, home: &Home, config: &ThauConfig) -> Result<Box<dyn Report>> {
    let mut stores = Stores::new(home, config);
    let stores = &mut stores;
    Ok(match command {
        MemoryCommand::Stats(s) => Box::new(mem::stats(stores, s.store)?),
        MemoryCommand::List {
            store,
            limit,
            offset,
            session,
            kind,
        } => {
            let args = mem::ListArgs {
                limit,
                offset,
                session,
                kind,
            };
            Box::new(mem::list(stores, store.store, &args)?)
        }
        MemoryCommand::Search {
            query,
            store,
            limit,
            source,
            min_importance,
        } => {
            let filter = thau::memory::vector::PayloadFilter {
                source,
                min_importance,
            };
            Box::new(mem::search(stores, store.store, &query, limit, &filter)?)
        }
        MemoryCommand::Show { id, store } => Box::new(mem::show(stores, store.store, &id)?),
        MemoryCommand::Forget { id, store } => Box::new(mem::forget(stores, store.store, &id)?),
        MemoryCommand::Export { store, output } => Box::new(export(stores, store.store, output)?),
        MemoryCommand::Import { input, store } => Box::new(import(stores, store.store, &input)?),
        MemoryCommand::Add { text, file, source } => {
            Box::new(mem::add(stores, text.as_deref(), &file, source.as_deref())?)
        }
    })
}
