//! The work behind the model commands, separate from argument parsing so that tests and
//! other front ends can call it: [`train`] (`thau train`, `thau eval`), [`grow`]
//! (`thau grow`), [`ages`] (`thau model ages`), [`memory`] (`thau memory`), [`remember`] (documents into a running THAU's memory), [`learn`]
//! (`thau learn`), [`keep_learning`] (`thau serve --learn`), [`chat`] (`thau chat`), [`stats`] (`thau stats --plot`) and [`tune`] (`thau feedback`,
//! `thau tune`).

pub mod ages;
pub mod chat;
pub mod grow;
pub mod keep_learning;
pub mod learn;
pub mod memory;
pub mod remember;
pub mod stats;
pub mod train;
pub mod tune;

use crate::config::ThauConfig;
use crate::home::Home;
use crate::runtime::Runtime;

/// Runs `f` inside an actix system with the runtime started (the commands that talk to the
/// actors: `thau status`, `chat`, `serve`, `learn`, `generate`, and the server benchmarks).
pub fn with_runtime<F, Fut, T>(home: Home, config: ThauConfig, f: F) -> crate::Result<T>
where
    F: FnOnce(Runtime) -> Fut,
    Fut: std::future::Future<Output = crate::Result<T>>,
{
    let system = actix::System::new();
    let result = system.block_on(async move {
        let rt = Runtime::start(home, config)?;
        f(rt).await
    });
    actix::System::current().stop();
    result
}
