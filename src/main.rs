//! The `thau` command: parses the arguments, hands the command to its module in [`cli`],
//! prints the report it returns (JSON with `--json`, else text) and sets the exit code
//! (0 success, 1 failure, 2 bad usage: [`cli::exit_code`]). The work lives in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use thau::config::{resolve_home, ThauConfig};
use thau::home::Home;
use thau::Result;

use cli::args::{Cli, Command, ModelCommand};
use cli::report::Report;

/// Training allocates and frees tensors of tens of megabytes every step; glibc's malloc
/// returns them to the kernel each time (page faults, TLB shootdowns: a third of a training
/// step here). mimalloc keeps them for reuse (for longer than its default: `thau::alloc`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `thau memory list | head` must end quietly when the reader goes away, as other Unix
    // tools do, instead of panicking on a write to a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    thau::alloc::tune();
    let args = Cli::parse();
    let home = Home::new(resolve_home(args.global.home.as_deref()));
    let config = match ThauConfig::load(&home.root, std::env::vars(), &args.global.set) {
        Ok(mut c) => {
            if let Some(url) = &args.global.qdrant_url {
                c.memory.qdrant_url = url.clone();
            }
            c
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    cli::init_logging(&config);
    match run(args, home, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

/// Runs the command, prints its report, and returns the error it ended with (a report
/// can say the command failed: it is printed first).
fn run(args: Cli, home: Home, config: ThauConfig) -> Result<()> {
    use cli::{bench, learn, memory, model, replay, serve, tool};
    let json = args.global.json;
    let report: Box<dyn Report> = match args.command {
        Command::Init => Box::new(model::init(&home)?),
        Command::Status => Box::new(serve::status(home, config)?),
        Command::Config { command } => Box::new(cli::config::run(command, config)),
        Command::Model {
            command: ModelCommand::Ages,
        } => Box::new(model::ages(&config)),
        Command::Train(a) => Box::new(model::train(&home, &config, a, json)?),
        Command::Eval(a) => model::eval(home, config, a)?,
        Command::Generate(a) => Box::new(model::generate(home, config, a, json)?),
        Command::Grow(a) => Box::new(model::grow(&home, &config, &a)?),
        Command::Export { command } => model::export(&home, command)?,
        Command::Import { command } => Box::new(model::import(&home, command)?),
        Command::Bench(a) => bench::run(home, config, a)?,
        Command::Memory { command } => memory::run(command, &home, &config)?,
        Command::Tool { command } => tool::run(command, &home, &config)?,
        Command::Serve(a) => Box::new(serve::serve(home, config, a, json)?),
        Command::Chat(a) => Box::new(serve::chat(home, config, a)?),
        Command::Learn(a) => Box::new(learn::learn(home, config, a, json)?),
        Command::Stats(a) => Box::new(learn::stats(&home, &a)?),
        Command::Feedback(a) => Box::new(learn::feedback(&home, &config, a)?),
        Command::Tune { command } => learn::tune(command, &home, &config)?,
        Command::Replay(a) => {
            let home = args.global.home.is_some().then_some(home);
            Box::new(replay::replay(home, args.global.set, a, json)?)
        }
    };
    report.print(json);
    report.outcome()
}
