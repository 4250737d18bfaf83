//! The `thau` command: parses arguments, wires the library's parts together and sets the
//! exit code (0 success, 1 failure, 2 bad usage). The work lives in the library modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use thau::config::{resolve_home, Override, ThauConfig};
use thau::home::Home;
use thau::runtime::Runtime;
use thau::{Result, ThauError};

/// Exit code of a command that failed at run time.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a command given bad arguments or configuration.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "thau", version, about = "THAU: a language model trained from scratch that keeps learning on its own", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug, Clone)]
struct Global {
    /// Data directory (default: $THAU_HOME, else ./thau-data).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Override a configuration key for this run, e.g. `--set model.vocab_size=4096`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_override)]
    set: Vec<Override>,
}

fn parse_override(s: &str) -> std::result::Result<Override, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    Ok(Override {
        key: k.trim().to_string(),
        value: v.to_string(),
    })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the data directory with a default configuration (idempotent).
    Init,
    /// Show actors (running, restarts), the model and the stores.
    Status,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (defaults < thau.toml < THAU_* < --set).
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = Home::new(resolve_home(cli.global.home.as_deref()));
    let config = match ThauConfig::load(&home.root, std::env::vars(), &cli.global.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(&config);
    match run(cli, home, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = match e {
                ThauError::Config(_) | ThauError::Invalid(_) => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr so that `--json` output on stdout stays parseable.
fn init_logging(config: &ThauConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli, home: Home, config: ThauConfig) -> Result<()> {
    let json = cli.global.json;
    match cli.command {
        Command::Init => {
            let report = home.init()?;
            if json {
                print_json(&report);
            } else if report.created.is_empty() {
                println!(
                    "{} is already initialised; nothing changed",
                    home.root.display()
                );
            } else {
                println!("initialised {}", home.root.display());
                for p in &report.created {
                    println!("  created {}", p.display());
                }
            }
            Ok(())
        }
        Command::Status => with_runtime(home, config, |rt| async move {
            let report = thau::status::report(&rt).await;
            rt.shutdown().await;
            if json {
                print_json(&report);
            } else {
                print_status(&report);
            }
            Ok(())
        }),
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            if json {
                print_json(&config);
            } else {
                print!("{}", config.to_toml());
            }
            Ok(())
        }
    }
}

/// Runs `f` inside an actix system with the runtime started.
fn with_runtime<F, Fut>(home: Home, config: ThauConfig, f: F) -> Result<()>
where
    F: FnOnce(Runtime) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let system = actix::System::new();
    let result = system.block_on(async move {
        let rt = Runtime::start(home, config)?;
        f(rt).await
    });
    actix::System::current().stop();
    result
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

fn print_status(r: &thau::status::StatusReport) {
    println!(
        "home: {}{}",
        r.home,
        if r.initialised {
            ""
        } else {
            " (not initialised: run `thau init`)"
        }
    );
    println!(
        "\n{:<18} {:<8} {:>8} {:>8}  note",
        "actor", "state", "restarts", "handled"
    );
    for a in &r.actors {
        let state = match (a.enabled, a.running) {
            (false, _) => "disabled",
            (true, true) => "running",
            (true, false) => "down",
        };
        println!(
            "{:<18} {:<8} {:>8} {:>8}  {}",
            a.name, state, a.restarts, a.handled, a.note
        );
    }
    let m = &r.model;
    println!(
        "\nmodel: age {}, {}, checkpoint {}",
        m.age,
        m.params
            .map_or("no parameters yet".to_string(), |p| format!(
                "{p} parameters"
            )),
        m.checkpoint.as_deref().unwrap_or("none")
    );
    let s = &r.stores;
    println!(
        "stores: {} checkpoint ages, {} images, {} saved actor states",
        s.checkpoints, s.images, s.actor_states
    );
}
